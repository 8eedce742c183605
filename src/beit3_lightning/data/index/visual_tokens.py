"""Pre-computed visual tokens: run a frozen visual tokenizer once over the pretraining images.

Tokenizing costs a ViT forward per image (VQ-KD is a ViT-B): done once here, training reads the ids from the index.
Each image is resized (squashed, no crop) to the tokenizer's resolution, as the evaluation transform does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from beit3_lightning.data.images import to_rgb_image

from .common import DatasetFormatError, progress

BATCH_SIZE = 32


def _load(path: Path, size: int) -> torch.Tensor:
    """(3, size, size) float in [0, 1]."""
    try:
        with Image.open(path) as image:
            rgb = to_rgb_image(image).resize((size, size), Image.BICUBIC)
    except (OSError, ValueError) as err:
        raise DatasetFormatError(f"cannot read image {path}: {err}; fix or remove it") from err
    return torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)


@torch.no_grad()
def add_visual_tokens(records: list[dict[str, Any]], root: Path, tokenizer_path: str, img_size: int | None) -> None:
    """Add ``"visual_tokens"`` (code ids, row-major over the patch grid) to every record with an ``image_path``."""
    from beit3_lightning.modeling.visual_tokenizers import load_visual_tokenizer

    tokenizer = load_visual_tokenizer(tokenizer_path)
    if img_size is not None and img_size != tokenizer.image_size:
        raise ValueError(
            f"the visual tokenizer {tokenizer_path} expects {tokenizer.image_size}px images but --img-size is "
            f"{img_size}; fit or choose a tokenizer for the model's image size"
        )
    starts = range(0, len(records), BATCH_SIZE)
    for start in progress(starts, "visual tokens", total=len(starts)):
        batch = records[start : start + BATCH_SIZE]
        images = torch.stack([_load(root / record["image_path"], tokenizer.image_size) for record in batch])
        codes = tokenizer.get_codebook_indices(images)  # (B, N)
        for record, row in zip(batch, codes.tolist()):
            record["visual_tokens"] = row
