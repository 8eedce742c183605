"""``EMA``: an exponential moving average of the task model's weights, kept beside the training run.

unilm ``beit3/run_beit3_finetuning.py`` (``--model_ema``, timm ``ModelEma``) updates it after every optimiser step,
saves it in the checkpoint under ``model_ema`` and never evaluates with it; so does this callback. A task with
``ema_decay`` set adds it by itself (``Beit3Task.configure_callbacks``).
"""

from __future__ import annotations

from typing import Any

import lightning as L

from beit3_lightning.ema import ModelEma

# The checkpoint entry of the averaged weights (the reference's name).
EMA_CHECKPOINT_KEY = "model_ema"


class EMA(L.Callback):
    """Keeps ``ModelEma(pl_module.model, decay)``: updated once per optimiser step (not per micro-batch under
    gradient accumulation), written to every checkpoint as ``model_ema`` and restored from it on resume.

    Args:
        decay: averaging factor per optimiser step (ema ← decay·ema + (1 − decay)·model).
    """

    def __init__(self, decay: float = 0.9999) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.ema: ModelEma | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Built before a checkpoint is restored (Lightning restores after setup), so resuming can fill it.
        if self.ema is None:
            self.ema = ModelEma(pl_module.model, decay=self.decay)

    def on_before_zero_grad(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        # Runs once per optimiser step, right after it.
        if self.ema is not None:
            self.ema.update(pl_module.model)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.ema is not None:
            checkpoint[EMA_CHECKPOINT_KEY] = self.ema.state_dict()

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if EMA_CHECKPOINT_KEY not in checkpoint:
            return
        if self.ema is None:
            self.ema = ModelEma(pl_module.model, decay=self.decay)
        self.ema.load_state_dict(checkpoint[EMA_CHECKPOINT_KEY])
