"""``load_visual_tokenizer``: a visual tokenizer from its file, by format.

* ``*.safetensors``: a k-means tokenizer (``beit3 prepare visual-tokenizer``), :class:`KMeansTokenizer`;
* ``*.pth`` / ``*.pt``: a BEiT v2 VQ-KD tokenizer (the released ``vqkd_encoder_*.pth`` files),
  :class:`VQKDTokenizer`, its configuration chosen from the file name.
"""

from __future__ import annotations

import os
from pathlib import Path

from beit3_lightning.modeling.visual_tokenizers.base import VisualTokenizer


def load_visual_tokenizer(path: str | os.PathLike[str]) -> VisualTokenizer:
    """The frozen (eval, no-grad) tokenizer stored at ``path``; FileNotFoundError / ValueError with the remedy."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"visual tokenizer {path} not found; fit one on your images with `beit3 prepare visual-tokenizer "
            "--images DIR --codebook-size K --out FILE`, or download BEiT v2's VQ-KD tokenizer "
            "(vqkd_encoder_base_decoder_3x768x12_clip-d5036aa7.pth from "
            "https://github.com/addf400/files/releases/download/BEiT-v2/)"
        )
    if path.suffix == ".safetensors":
        from beit3_lightning.modeling.visual_tokenizers.kmeans import KMeansTokenizer

        tokenizer = KMeansTokenizer.load(path)
    elif path.suffix in (".pth", ".pt"):
        from beit3_lightning.modeling.visual_tokenizers.vqkd import load_vqkd

        tokenizer = load_vqkd(path)
    else:
        raise ValueError(
            f"visual tokenizer {path}: unknown file type {path.suffix!r}; expected a k-means tokenizer "
            "(.safetensors) or a VQ-KD checkpoint (.pth)"
        )
    tokenizer.eval().requires_grad_(False)
    return tokenizer
