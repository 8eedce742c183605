"""Callbacks: prediction files and TensorBoard sample panels (added by the ``beit3`` CLI), EMA and throughput
logging (added by each task itself through ``configure_callbacks``)."""

from beit3_lightning.callbacks.ema import EMA
from beit3_lightning.callbacks.predictions import PredictionWriter
from beit3_lightning.callbacks.skipped import SkippedSamples
from beit3_lightning.callbacks.tensorboard import TensorBoardSamples
from beit3_lightning.callbacks.throughput import Throughput

__all__ = ["EMA", "PredictionWriter", "SkippedSamples", "TensorBoardSamples", "Throughput"]
