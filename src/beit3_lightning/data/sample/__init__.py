"""Embedded sample datasets: small, deterministic, learnable scenes written in the official raw layouts.

``generate_sample_raw(dataset, root)`` writes only the raw files; ``ensure_sample_dataset(dataset, root)`` also
builds the official index files with the same builders ``beit3 prepare`` uses, so the whole data path runs on it.
"""

from .ensure import MARKER_NAME, SAMPLE_VERSION, ensure_sample_dataset, is_sample_dataset
from .raw import SAMPLE_DATASETS, generate_sample_raw

__all__ = [
    "MARKER_NAME",
    "SAMPLE_DATASETS",
    "SAMPLE_VERSION",
    "ensure_sample_dataset",
    "generate_sample_raw",
    "is_sample_dataset",
]
