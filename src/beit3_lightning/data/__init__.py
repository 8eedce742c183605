"""Data: tokenizer, transforms, datasets, DataModules, index builders, the embedded sample dataset.

Names are imported on first use (PEP 562): the tokenizer or the transforms do not pull in Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    "BadSampleError": "beit3_lightning.data.datasets",
    "Beit3DataModule": "beit3_lightning.data.datamodules",
    "Beit3Tokenizer": "beit3_lightning.data.tokenizer",
    "CaptioningDataModule": "beit3_lightning.data.datamodules",
    "CaptioningDataset": "beit3_lightning.data.datasets",
    "DatasetFormatError": "beit3_lightning.data.index.common",
    "ImageNetDataModule": "beit3_lightning.data.datamodules",
    "ImageNetDataset": "beit3_lightning.data.datasets",
    "ImageTransform": "beit3_lightning.data.transforms",
    "NLVR2DataModule": "beit3_lightning.data.datamodules",
    "PretrainDataModule": "beit3_lightning.data.pretraining_datamodule",
    "NLVR2Dataset": "beit3_lightning.data.datasets",
    "RetrievalDataModule": "beit3_lightning.data.datamodules",
    "RetrievalDataset": "beit3_lightning.data.datasets",
    "SAMPLE_DATASETS": "beit3_lightning.data.sample",
    "SegmentationDataModule": "beit3_lightning.data.datamodules",
    "SegmentationDataset": "beit3_lightning.data.segmentation",
    "SegmentationEvalTransform": "beit3_lightning.data.segmentation_transforms",
    "SegmentationTrainTransform": "beit3_lightning.data.segmentation_transforms",
    "TokenizerError": "beit3_lightning.data.tokenizer",
    "VQAv2DataModule": "beit3_lightning.data.datamodules",
    "VQAv2Dataset": "beit3_lightning.data.datasets",
    "build_transform": "beit3_lightning.data.transforms",
    "collate": "beit3_lightning.data.datasets",
    "segmentation_collate": "beit3_lightning.data.segmentation",
    "ensure_sample_dataset": "beit3_lightning.data.sample",
    "generate_sample_raw": "beit3_lightning.data.sample",
    "sample_tokenizer_path": "beit3_lightning.data.tokenizer",
    "text_segment": "beit3_lightning.data.tokenizer",
}

__all__ = [
    "SAMPLE_DATASETS",
    "BadSampleError",
    "Beit3DataModule",
    "CaptioningDataModule",
    "CaptioningDataset",
    "ImageNetDataModule",
    "ImageNetDataset",
    "ImageTransform",
    "NLVR2DataModule",
    "PretrainDataModule",
    "NLVR2Dataset",
    "RetrievalDataModule",
    "RetrievalDataset",
    "SegmentationDataModule",
    "SegmentationDataset",
    "SegmentationEvalTransform",
    "SegmentationTrainTransform",
    "VQAv2DataModule",
    "VQAv2Dataset",
    "build_transform",
    "collate",
    "Beit3Tokenizer",
    "DatasetFormatError",
    "TokenizerError",
    "ensure_sample_dataset",
    "generate_sample_raw",
    "sample_tokenizer_path",
    "text_segment",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'beit3_lightning.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
