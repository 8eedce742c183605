"""Data: tokenizer, transforms, datasets, DataModules, index builders, the embedded sample dataset."""

from beit3_lightning.data.index.common import DatasetFormatError
from beit3_lightning.data.sample import SAMPLE_DATASETS, ensure_sample_dataset, generate_sample_raw
from beit3_lightning.data.tokenizer import Beit3Tokenizer, TokenizerError, sample_tokenizer_path, text_segment

__all__ = [
    "SAMPLE_DATASETS",
    "Beit3Tokenizer",
    "DatasetFormatError",
    "TokenizerError",
    "ensure_sample_dataset",
    "generate_sample_raw",
    "sample_tokenizer_path",
    "text_segment",
]
