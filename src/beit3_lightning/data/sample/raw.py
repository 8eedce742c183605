"""``generate_sample_raw``: write one task's sample data in the official raw download layout."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .captions import generate_coco, generate_flickr30k, generate_nocaps
from .imagenet import generate_imagenet
from .nlvr2 import generate_nlvr2
from .vqav2 import generate_vqav2

# coco_captioning and coco_retrieval read the same COCO + Karpathy layout.
RAW_GENERATORS: dict[str, Callable[[Path], None]] = {
    "imagenet": generate_imagenet,
    "vqav2": generate_vqav2,
    "nlvr2": generate_nlvr2,
    "coco_captioning": generate_coco,
    "coco_retrieval": generate_coco,
    "flickr30k": generate_flickr30k,
    "nocaps": generate_nocaps,
}
SAMPLE_DATASETS: tuple[str, ...] = tuple(RAW_GENERATORS)


def check_dataset_name(dataset: str) -> str:
    """Return ``dataset`` or raise a ValueError listing the valid names."""
    if dataset not in RAW_GENERATORS:
        raise ValueError(f"unknown sample dataset {dataset!r}; choose one of {', '.join(SAMPLE_DATASETS)}")
    return dataset


def generate_sample_raw(dataset: str, root: str | os.PathLike[str]) -> Path:
    """Write the raw files of ``dataset`` under ``root`` (deterministic: same bytes every run) and return root."""
    out = Path(root)
    out.mkdir(parents=True, exist_ok=True)
    RAW_GENERATORS[check_dataset_name(dataset)](out)
    return out
