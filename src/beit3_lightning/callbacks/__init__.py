"""Callbacks the ``beit3`` CLI adds by default: prediction files and TensorBoard sample panels."""

from beit3_lightning.callbacks.predictions import PredictionWriter
from beit3_lightning.callbacks.tensorboard import TensorBoardSamples

__all__ = ["PredictionWriter", "TensorBoardSamples"]
