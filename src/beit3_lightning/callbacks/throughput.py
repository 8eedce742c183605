"""``Throughput``: logs ``train/samples_per_sec``, the wall time between consecutive training batch ends (loading,
forward, backward and optimiser step together). Every task adds it by itself (``Beit3Task.configure_callbacks``)."""

from __future__ import annotations

import time
from typing import Any

import lightning as L


def batch_items(batch: dict[str, Any]) -> int:
    """Items in a training batch; a pretraining batch (a dict of batches, one per kind) counts all its kinds."""
    parts = [part for part in batch.values() if isinstance(part, dict)]
    if parts:
        return sum(batch_items(part) for part in parts)
    return len(batch["index"] if "index" in batch else next(iter(batch.values())))


class Throughput(L.Callback):
    """Samples per second of training, logged every batch (after the first of each epoch)."""

    def __init__(self) -> None:
        self._last_batch_end: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The first batch of an epoch also waits for the loader workers to start: not a throughput sample.
        self._last_batch_end = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if self._last_batch_end is not None:
            batch_size = batch_items(batch)
            rate = batch_size / max(now - self._last_batch_end, 1e-9)
            pl_module.log("train/samples_per_sec", rate, batch_size=batch_size)
        self._last_batch_end = now
