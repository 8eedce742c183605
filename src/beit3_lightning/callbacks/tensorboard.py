"""TensorBoard panels of validation samples: the image with its predicted and true answer / caption / class.

Scalars (train/loss, val/<metric>, lr, samples/s) are logged by the tasks and ``LearningRateMonitor``; this adds,
at every validation, ``val_samples/NN_image``: one picture per sample, the de-normalised input (NLVR2: the pair side
by side; segmentation: image | truth | prediction) enlarged to a readable size with the prediction and the truth
written under it, and ``val_samples/NN_text``, the same text as markdown (to copy from). The samples are
``num_samples`` items spread evenly over the first validation batch (the validation loader is not shuffled, so the
same samples every epoch: progress is visible), described by the task's ``describe_batch(batch, num_samples)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_warn

TAG_PREFIX = "val_samples"
# Panels are enlarged (nearest neighbour, whole factors) to at least this width so that the text fits under them.
PANEL_MIN_WIDTH = 256


def spread_items(batch: Any, n: int) -> Any:
    """``n`` items spread evenly over a collated batch (first and last included): neighbouring items often share
    an image (VQA questions, captions), spread ones rarely do. Batches without a top-level ``image`` tensor (the
    pretraining mix) are returned as they are."""
    if not isinstance(batch, dict) or not isinstance(batch.get("image"), torch.Tensor):
        return batch
    size = len(batch["image"])
    if size <= n:
        return batch
    picked = np.linspace(0, size - 1, n).round().astype(int).tolist()

    def take(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.dim() > 0 and len(value) == size:
            return value[picked]
        if isinstance(value, list) and len(value) == size:
            return [value[i] for i in picked]
        return value

    return {key: take(value) for key, value in batch.items()}


def compose_panel(image: torch.Tensor, markdown: str) -> torch.Tensor:
    """(3, H, W) image in [0, 1] → (3, H', W') with the image enlarged and the text (markdown ``**name:** value``
    lines) written under it, black on white."""
    from PIL import Image, ImageDraw, ImageFont

    from beit3_lightning.inference.display import LINE_HEIGHT, wrap_text

    pixels = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    picture = Image.fromarray(pixels)
    factor = max(1, -(-PANEL_MIN_WIDTH // picture.width))
    picture = picture.resize((picture.width * factor, picture.height * factor), Image.NEAREST)
    font = ImageFont.load_default(size=12)
    lines = [
        wrapped
        for line in markdown.replace("**", "").split("  \n")
        for wrapped in (wrap_text(line, font, picture.width - 8) or [""])
    ]
    panel = Image.new("RGB", (picture.width, picture.height + 6 + LINE_HEIGHT * len(lines)), (255, 255, 255))
    panel.paste(picture, (0, 0))
    draw = ImageDraw.Draw(panel)
    for i, line in enumerate(lines):
        draw.text((4, picture.height + 4 + i * LINE_HEIGHT), line, fill=(0, 0, 0), font=font)
    return torch.from_numpy(np.asarray(panel).copy()).permute(2, 0, 1).float() / 255.0


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
            samples = pl_module.describe_batch(spread_items(batch, self.num_samples), self.num_samples)
        experiment = tensorboard_experiment(trainer)
        mean, std = pl_module.image_mean, pl_module.image_std
        for i, (image, text) in enumerate(samples):
            panel = compose_panel(denormalize(image, mean, std), text)
            experiment.add_image(f"{TAG_PREFIX}/{i:02d}_image", panel, trainer.global_step)
            experiment.add_text(f"{TAG_PREFIX}/{i:02d}_text", text, trainer.global_step)
