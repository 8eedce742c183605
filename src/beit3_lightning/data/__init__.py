"""Data: tokenizer, transforms, datasets, DataModules, index builders, the embedded sample dataset."""

from beit3_lightning.data.datamodules import (
    Beit3DataModule,
    CaptioningDataModule,
    ImageNetDataModule,
    NLVR2DataModule,
    RetrievalDataModule,
    VQAv2DataModule,
)
from beit3_lightning.data.datasets import (
    BadSampleError,
    CaptioningDataset,
    ImageNetDataset,
    NLVR2Dataset,
    RetrievalDataset,
    VQAv2Dataset,
    collate,
)
from beit3_lightning.data.index.common import DatasetFormatError
from beit3_lightning.data.sample import SAMPLE_DATASETS, ensure_sample_dataset, generate_sample_raw
from beit3_lightning.data.tokenizer import Beit3Tokenizer, TokenizerError, sample_tokenizer_path, text_segment
from beit3_lightning.data.transforms import ImageTransform, build_transform

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
    "NLVR2Dataset",
    "RetrievalDataModule",
    "RetrievalDataset",
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
