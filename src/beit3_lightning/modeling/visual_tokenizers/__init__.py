"""Visual tokenizers of masked image modelling (images → one code id per patch); torch only."""

from beit3_lightning.modeling.visual_tokenizers.base import VisualTokenizer, check_grid_matches, grid_size
from beit3_lightning.modeling.visual_tokenizers.kmeans import KMeansTokenizer

__all__ = ["KMeansTokenizer", "VisualTokenizer", "check_grid_matches", "grid_size"]
