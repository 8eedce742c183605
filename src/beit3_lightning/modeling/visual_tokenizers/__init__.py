"""Visual tokenizers for masked image modelling (images in [0, 1] → one code id per patch); plain torch."""

from beit3_lightning.modeling.visual_tokenizers.base import VisualTokenizer, check_grid_matches, grid_size
from beit3_lightning.modeling.visual_tokenizers.kmeans import KMeansTokenizer
from beit3_lightning.modeling.visual_tokenizers.loading import load_visual_tokenizer
from beit3_lightning.modeling.visual_tokenizers.vqkd import (
    VQKD_PRESETS,
    VQKD_SKIPPED_GROUPS,
    VQKDConfig,
    VQKDTokenizer,
    load_vqkd,
)

__all__ = [
    "VQKD_PRESETS",
    "VQKD_SKIPPED_GROUPS",
    "KMeansTokenizer",
    "VQKDConfig",
    "VQKDTokenizer",
    "VisualTokenizer",
    "check_grid_matches",
    "grid_size",
    "load_visual_tokenizer",
    "load_vqkd",
]
