"""``SkippedSamples``: bad samples replaced under ``skip_bad_samples`` are visible, not silent.

The running count goes to the progress bar and the loggers as ``data/skipped``; a run whose skip fraction passes the
DataModule's ``max_skip_fraction`` stops with an error; the end of each stage logs how many were skipped and which
files. Every task adds it by itself (``Beit3Task.configure_callbacks``); it does nothing for DataModules without
``skip_bad_samples``.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L

log = logging.getLogger(__name__)
# How many skipped files the end-of-stage summary names (the full list is in the DataModule's skip_log).
SUMMARY_FILES = 20


def _skipping_datamodule(trainer: L.Trainer) -> Any | None:
    datamodule = getattr(trainer, "datamodule", None)
    return datamodule if getattr(datamodule, "skip_bad_samples", False) else None


class SkippedSamples(L.Callback):
    """Logs ``data/skipped``, enforces ``max_skip_fraction`` and summarises the skips at the end of each stage."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        datamodule = _skipping_datamodule(trainer)
        if datamodule is not None:
            datamodule.check_skip_fraction()
            # Training only: one key in one loop (the count covers the evaluation splits read so far too).
            pl_module.log("data/skipped", float(datamodule.num_skipped), prog_bar=True, reduce_fx="max")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if (datamodule := _skipping_datamodule(trainer)) is not None:
            datamodule.check_skip_fraction()

    on_test_batch_end = on_validation_batch_end

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        datamodule = _skipping_datamodule(trainer)
        skipped = datamodule.skipped_samples() if datamodule is not None else []
        if skipped:
            names = "\n  ".join(skipped[:SUMMARY_FILES])
            more = f"\n  ... and {len(skipped) - SUMMARY_FILES} more (all in {datamodule.skip_log})"
            log.warning(
                "%d bad samples were skipped during %s:\n  %s%s",
                len(skipped), stage, names, more if len(skipped) > SUMMARY_FILES else "",
            )  # fmt: skip
