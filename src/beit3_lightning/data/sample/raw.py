"""``generate_sample_raw``: write one task's sample data in the official raw download layout."""

from __future__ import annotations

import os
from pathlib import Path

from ...task_table import DATASETS, resolve

# Every dataset of the task table has a sample (coco_captioning and coco_retrieval share the COCO + Karpathy layout).
SAMPLE_DATASETS: tuple[str, ...] = tuple(DATASETS)


def check_dataset_name(dataset: str) -> str:
    """Return ``dataset`` or raise a ValueError listing the valid names."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown sample dataset {dataset!r}; choose one of {', '.join(SAMPLE_DATASETS)}")
    return dataset


def generate_sample_raw(dataset: str, root: str | os.PathLike[str]) -> Path:
    """Write the raw files of ``dataset`` under ``root`` (deterministic: same bytes every run) and return root."""
    out = Path(root)
    out.mkdir(parents=True, exist_ok=True)
    resolve(DATASETS[check_dataset_name(dataset)].sample_generator)(out)
    return out
