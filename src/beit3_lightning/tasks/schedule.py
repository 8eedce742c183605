"""Length of the learning-rate schedule, computed without building the train loader.

Lightning's ``trainer.estimated_stepping_batches`` builds (and starts reading) the train loader before a checkpoint is
restored, which makes a mid-epoch resume start the epoch over. With our DataModules the number of batches comes from
the dataset size instead (``num_train_batches``); other data sources fall back to Lightning's estimate.
"""

from __future__ import annotations

import math

import lightning as L


def _datamodule_with_size(trainer: L.Trainer):
    datamodule = getattr(trainer, "datamodule", None)
    return datamodule if datamodule is not None and hasattr(datamodule, "num_train_batches") else None


def steps_per_epoch(trainer: L.Trainer) -> float:
    """Optimiser steps in one epoch (what ``warmup_epochs`` is converted with)."""
    datamodule = _datamodule_with_size(trainer)
    if datamodule is None:
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else 1
        return trainer.estimated_stepping_batches / epochs
    batches = datamodule.num_train_batches()
    limit = trainer.limit_train_batches
    batches = min(batches, int(limit)) if isinstance(limit, int) else int(batches * limit)
    return math.ceil(batches / trainer.accumulate_grad_batches)


def total_training_steps(trainer: L.Trainer) -> int:
    """Optimiser steps of the whole run, as ``trainer.estimated_stepping_batches`` counts them."""
    if _datamodule_with_size(trainer) is None:
        return int(trainer.estimated_stepping_batches)
    if trainer.max_epochs is None or trainer.max_epochs < 0:  # bounded by max_steps only
        return trainer.max_steps
    steps = int(steps_per_epoch(trainer)) * max(trainer.max_epochs, 1)
    return min(steps, trainer.max_steps) if trainer.max_steps != -1 else steps
