"""Visual tokenizers for masked image modelling: images → one code id per patch (see ``base.py``)."""

from beit3_lightning.modeling.visual_tokenizers.base import VisualTokenizer, check_grid_matches, grid_size
from beit3_lightning.modeling.visual_tokenizers.loading import load_visual_tokenizer

__all__ = ["VisualTokenizer", "check_grid_matches", "grid_size", "load_visual_tokenizer"]
