"""TensorBoard panels of validation samples: the image next to its predicted vs true answer / caption / class.

Scalars (train/loss, val/<metric>, lr, samples/s) are logged by the tasks and ``LearningRateMonitor``; this adds,
at every validation, ``val_samples/NN_image`` (the de-normalised input; NLVR2 shows its pair side by side) and
``val_samples/NN_text`` (markdown) for the first ``num_samples`` items of the first validation batch. The texts
come from the task's ``describe_batch(batch, num_samples)`` hook.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_warn

TAG_PREFIX = "val_samples"


def denormalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Undo ``Normalize(mean, std)`` on a (3, H, W) image and clamp to the displayable [0, 1]."""
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=image.device).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=image.device).view(-1, 1, 1)
    return (image.float() * std_t + mean_t).clamp(0.0, 1.0).cpu()


def shards_parameters(trainer: L.Trainer) -> bool:
    """True under FSDP or DeepSpeed ZeRO stage 3, where a module's weights exist only inside its wrapper."""
    return isinstance(trainer.strategy, FSDPStrategy) or bool(getattr(trainer.strategy, "zero_stage_3", False))


def tensorboard_experiment(trainer: L.Trainer) -> Any | None:
    """The ``SummaryWriter`` of the trainer's first TensorBoard logger, or None when there is none."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


class TensorBoardSamples(Callback):
    """Log ``num_samples`` validation images with predicted vs true labels to TensorBoard (global rank 0 only;
    nothing without a TensorBoard logger or when the task has no ``describe_batch``).

    Args:
        num_samples: items of the first validation batch to show (0 disables the panels).
        every_n_epochs: log at every n-th validation only (the model runs once more on these items).
    """

    def __init__(self, num_samples: int = 8, every_n_epochs: int = 1) -> None:
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs

    def _active(self, trainer: L.Trainer, pl_module: L.LightningModule, batch_idx: int, dataloader_idx: int) -> bool:
        return (
            self.num_samples > 0
            and trainer.is_global_zero
            and batch_idx == 0
            and dataloader_idx == 0
            and not trainer.sanity_checking
            and trainer.current_epoch % self.every_n_epochs == 0
            and hasattr(pl_module, "describe_batch")
            and tensorboard_experiment(trainer) is not None
        )

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self._active(trainer, pl_module, batch_idx, dataloader_idx):
            return
        if shards_parameters(trainer):
            # describe_batch calls the model outside the strategy's wrapper: sharded weights are not gathered there.
            rank_zero_warn("TensorBoardSamples: no sample panels under FSDP / DeepSpeed ZeRO-3 (sharded weights)")
            return
        # Rank 0 alone: outside the DDP wrapper a forward has no collective to wait for.
        with torch.no_grad(), trainer.precision_plugin.forward_context():
            samples = pl_module.describe_batch(batch, self.num_samples)
        experiment = tensorboard_experiment(trainer)
        mean, std = pl_module.image_mean, pl_module.image_std
        for i, (image, text) in enumerate(samples):
            experiment.add_image(f"{TAG_PREFIX}/{i:02d}_image", denormalize(image, mean, std), trainer.global_step)
            experiment.add_text(f"{TAG_PREFIX}/{i:02d}_text", text, trainer.global_step)
