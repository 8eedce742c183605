"""What every BEiT-3 task shares: the model built from a preset, initialisation from a checkpoint, the official
optimiser recipe (AdamW groups, layer-wise lr decay or head boost, per-step warmup + cosine) and the evaluation loop.

Subclasses set ``head`` (their row of the task table, which gives the key metric), build their head model and hand
it to ``attach_model`` at the end of their ``__init__``, and implement the steps. EMA and throughput logging are
callbacks the task adds itself (``configure_callbacks``); the tokenizer comes from the DataModule once, in ``setup``.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, ClassVar

import lightning as L
import torch
from torchmetrics import Metric

from beit3_lightning.callbacks.ema import EMA
from beit3_lightning.callbacks.skipped import SkippedSamples
from beit3_lightning.callbacks.throughput import Throughput
from beit3_lightning.checkpoint_io import use_atomic_checkpoint_io
from beit3_lightning.data.tokenizer import Beit3Tokenizer
from beit3_lightning.data.transforms import IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD
from beit3_lightning.modeling import Beit3Config
from beit3_lightning.modeling.checkpoint import TOKENIZER_KEY, CheckpointError, first_non_finite, load_checkpoint
from beit3_lightning.modeling.heads import Beit3TaskModel
from beit3_lightning.optim import build_scheduler, param_groups
from beit3_lightning.task_table import DATASETS, datasets_of_head
from beit3_lightning.tasks.schedule import steps_per_epoch, total_training_steps

log = logging.getLogger(__name__)


class Beit3Task(L.LightningModule):
    """Base LightningModule of the BEiT-3 tasks.

    Args:
        model: backbone preset, ``tiny``/``base``/``large`` or a registry-style name (``beit3_base_patch16_480``).
        img_size: input resolution (the vision position table is resized when a checkpoint differs); linked from
            the DataModule by the CLI.
        vocab_size: rows of the text embedding; official checkpoints have 64010. ``None``: the preset's.
        drop_path: stochastic depth rate of the last layer (linear from 0 over the layers).
        init_from: official ``.pth`` (pretrained or fine-tuned), Lightning ``.ckpt`` or ``.safetensors`` to start
            from; ``None`` trains from scratch (random init as the reference).
        grad_checkpointing: recompute layer activations in backward (less memory, ~30% slower).
        lr: peak learning rate (before per-group scales).
        weight_decay: AdamW weight decay (0 for biases, norms, position table A, CLS token, logit scale).
        layer_decay: layer-wise lr decay; 1.0 disables it.
        head_lr_scale: lr multiplier of ``head.*`` when ``layer_decay`` is 1 (the reference's
            ``--task_head_lr_weight``; VQAv2 uses 20).
        betas, eps: AdamW.
        warmup_epochs: linear warmup from 0, in epochs (converted with the trainer's steps per epoch).
        warmup_steps: warmup in optimiser steps; overrides ``warmup_epochs`` when >= 0.
        min_lr: floor of the cosine schedule.
        ema_decay: keep an exponential moving average of the weights (saved in checkpoints; not used for
            evaluation, as the reference). ``None`` disables it.
        attn_impl: ``auto`` (SDPA, explicit softmax for half precision on CPU where it is faster), ``sdpa`` or
            ``math`` (torchscale's explicit softmax).
        compile: ``torch.compile`` the encoder layers (inductor; one graph shared by the layers, compiled on the
            first step and again once for the first new input shape). Same weights and checkpoints; incremental
            caption decoding stays eager. See the README's speed section for what it gains on your hardware.
    """

    # The head this task trains (a key of the task table's HEADS); its datasets give the key metric.
    head: ClassVar[str] = ""
    key_metric: ClassVar[str] = ""
    key_metric_mode: ClassVar[str] = "max"
    # Factor applied to a metric that computes a single value (NLVR2's accuracy fraction → percent, as the reference).
    metric_scale: ClassVar[float] = 1.0
    # Normalisation of the task's input images (to show them in TensorBoard): mean = std = 0.5 for VL tasks.
    image_mean: ClassVar[tuple[float, float, float]] = IMAGENET_INCEPTION_MEAN
    image_std: ClassVar[tuple[float, float, float]] = IMAGENET_INCEPTION_STD

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.head:  # one source of truth: the task table's datasets of this head
            specs = {(DATASETS[name].key_metric, DATASETS[name].key_metric_mode) for name in datasets_of_head(cls.head)}
            if len(specs) != 1:
                raise TypeError(f"{cls.__name__}: the datasets of head {cls.head!r} disagree on the key metric {specs}")
            cls.key_metric, cls.key_metric_mode = specs.pop()

    def __init__(
        self,
        model: str = "tiny",
        img_size: int | None = None,
        vocab_size: int | None = None,
        drop_path: float = 0.1,
        init_from: str | None = None,
        grad_checkpointing: bool = False,
        lr: float = 5e-4,
        weight_decay: float = 0.05,
        layer_decay: float = 0.9,
        head_lr_scale: float = 1.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        warmup_epochs: float = 5.0,
        warmup_steps: int = -1,
        min_lr: float = 1e-6,
        ema_decay: float | None = None,
        attn_impl: str = "auto",
        compile: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters()
        overrides: dict[str, Any] = {"drop_path_rate": drop_path, "attn_impl": attn_impl}
        if img_size is not None:
            overrides["img_size"] = img_size
        if vocab_size is not None:
            overrides["vocab_size"] = vocab_size
        self.config = Beit3Config.from_name(model, **overrides)
        self.model: Beit3TaskModel | None = None
        # Decodes token ids in TensorBoard panels and generated captions; handed over by the DataModule in setup.
        self.tokenizer: Beit3Tokenizer | None = None

    # ----- model --------------------------------------------------------------------------------------------
    def attach_model(self, model: Beit3TaskModel) -> None:
        """Install the task's head model: initial weights, gradient checkpointing, frozen unused parts."""
        hp = self.hparams
        self.model = model
        if hp.init_from:
            self.load_init_checkpoint(hp.init_from)
        if hp.grad_checkpointing:
            self.model.set_grad_checkpointing(True)
        if hp.compile:
            self.model.beit3.compile_layers()
        # Parameters this task never reaches stay frozen so DDP needs no find_unused_parameters (heads/base.py).
        self.model.freeze_unused_parameters_()

    def load_init_checkpoint(self, path: str) -> None:
        """Start from a checkpoint: the backbone must match exactly; a head it lacks keeps its fresh init,
        and heads of other tasks (pretraining heads, another task's head) are ignored with a report."""
        report = load_checkpoint(self.model, path, backbone_only=True)
        log.info("initialised %s from %s\n%s", type(self).__name__, path, report)

    # ----- optimisation -------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        groups = param_groups(
            self.model,
            weight_decay=hp.weight_decay,
            layer_decay=hp.layer_decay,
            num_layers=self.model.get_num_layers(),
            no_weight_decay=self.model.no_weight_decay(),
            head_lr_scale=hp.head_lr_scale,
        )
        optimizer = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas), eps=hp.eps)
        total = max(total_training_steps(self.trainer), 1)
        warmup = hp.warmup_steps if hp.warmup_steps >= 0 else round(hp.warmup_epochs * steps_per_epoch(self.trainer))
        scheduler = self.build_lr_scheduler(optimizer, total, min(warmup, total - 1))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def build_lr_scheduler(self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int):
        """The per-step lr schedule: linear warmup then cosine to ``min_lr`` (segmentation overrides it: poly)."""
        return build_scheduler(
            optimizer, total_steps=total_steps, warmup_steps=warmup_steps, min_lr=self.hparams.min_lr
        )

    def configure_callbacks(self) -> list[L.Callback]:
        """Callbacks every run of this task needs, whatever the trainer config: throughput logging, the visible count
        of skipped bad samples (``data/skipped``), and EMA when ``ema_decay`` is set (its weights are saved in
        checkpoints as ``model_ema`` and restored on resume)."""
        callbacks: list[L.Callback] = [Throughput(), SkippedSamples()]
        if self.hparams.ema_decay:
            callbacks.append(EMA(self.hparams.ema_decay))
        return callbacks

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.tokenizer is not None:
            # Which tokenizer the ids meant: load_model warns when it is given another one (same name, other file).
            checkpoint[TOKENIZER_KEY] = self._tokenizer_record()
        # The CLI links ``num_classes`` to every task and records None for tasks without classes; `beit3 validate
        # --ckpt_path` re-parses the saved hyperparameters, and RetrievalTask & co. reject an unknown argument.
        hparams = checkpoint.get("hyper_parameters", {})
        accepted = init_parameter_names(type(self))
        for key in [k for k, v in hparams.items() if v is None and not k.startswith("_") and k not in accepted]:
            del hparams[key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # `beit3 validate/test --ckpt_path` restores through Lightning, not load_checkpoint: check the weights here.
        bad = first_non_finite(checkpoint.get("state_dict") or {})
        if bad is not None:
            raise CheckpointError(f"the checkpoint holds non-finite values in {bad}; it cannot be evaluated or resumed")

    def _tokenizer_record(self) -> dict[str, Any]:
        if getattr(self, "_tokenizer_info", None) is None or self._tokenizer_info["path"] != str(self.tokenizer.path):
            from beit3_lightning.hub import file_sha256

            path = str(self.tokenizer.path)
            self._tokenizer_info = {"path": path, "sha256": file_sha256(path), "vocab_size": self.tokenizer.vocab_size}
        return dict(self._tokenizer_info)

    # ----- data ----------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        use_atomic_checkpoint_io(self.trainer)  # a kill or a full disk never leaves a broken last.ckpt
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None:
            self.attach_data(datamodule)

    def attach_data(self, datamodule: L.LightningDataModule) -> None:
        """Take what the task needs from its DataModule, once per run (subclasses add answers, references)."""
        if hasattr(datamodule, "tokenizer"):
            self.tokenizer = datamodule.tokenizer

    # ----- helpers for subclasses ----------------------------------------------------------------------------
    def log_train_loss(self, loss: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """Check and log the training loss; returns it for backward."""
        self.check_finite(loss, batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["image"]))
        return loss

    # ----- evaluation: subclasses implement ``eval_step`` and set ``val_metric`` / ``test_metric`` -------------------
    def eval_step(self, batch: dict[str, Any], metric: Metric, stage: str) -> None:
        raise NotImplementedError

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.eval_step(batch, self.val_metric, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.eval_step(batch, self.test_metric, "test")

    def on_validation_epoch_end(self) -> None:
        self.log_metric_dict("val", self.val_metric)

    def on_test_epoch_end(self) -> None:
        self.log_metric_dict("test", self.test_metric)

    def log_metric_dict(self, stage: str, metric: Metric) -> dict[str, torch.Tensor]:
        """Compute an epoch metric (a value or a dict of values), log it as ``{stage}/{name}``, reset it."""
        values = metric.compute()
        if not isinstance(values, dict):
            values = {self.key_metric: values * self.metric_scale}
        values = {f"{stage}/{name}": value for name, value in values.items()}
        self.log_dict(values, prog_bar=stage == "val", sync_dist=False)
        key = f"{stage}/{self.key_metric}"
        if stage == "val" and key in values:
            # TensorBoard's HPARAMS tab shows hp_metric next to the hyper-parameters: make it the key metric.
            self.log("hp_metric", values[key], sync_dist=False)
        metric.reset()
        return values

    def check_finite(self, loss: torch.Tensor, batch: dict[str, Any]) -> None:
        """Stop on a non-finite loss, naming the step and the batch's sample ids (nothing broken gets saved)."""
        if not torch.isfinite(loss):
            ids = batch.get("index", batch.get("qid", batch.get("image_id")))
            ids = ids.tolist() if isinstance(ids, torch.Tensor) else ids
            raise FloatingPointError(
                f"non-finite loss {loss.item()} at global step {self.global_step} (epoch {self.current_epoch}); "
                f"batch sample ids: {ids}. Lower the lr, enable gradient clipping, or check these samples."
            )

    # ----- TensorBoard sample panels (callbacks/tensorboard.py) -------------------------------------------------
    def describe_batch(self, batch: dict[str, Any], num_samples: int) -> list[tuple[torch.Tensor, str]]:
        """``(normalised image (3, H, W), markdown "predicted vs true")`` for the first ``num_samples`` items of
        an evaluation batch; subclasses run their model on them. The base task has nothing to show."""
        return []

    def decode_text(self, tokens: torch.Tensor) -> str:
        """Text of a token-id row through the task's tokenizer (the ids themselves without one)."""
        if self.tokenizer is None:
            return str(tokens.tolist())
        return self.tokenizer.decode(tokens)


def first_items(batch: dict[str, Any], n: int) -> dict[str, Any]:
    """The first ``n`` items of a collated batch (tensors and lists sliced along the batch dimension)."""
    return {key: value[:n] if isinstance(value, torch.Tensor | list) else value for key, value in batch.items()}


def panel_text(**fields: str) -> str:
    """Markdown lines ``**name:** value`` (TensorBoard renders text panels as markdown; two trailing spaces
    break the line)."""
    return "  \n".join(f"**{name.replace('_', ' ')}:** {value}" for name, value in fields.items())


def init_parameter_names(cls: type) -> set[str]:
    """Names of the ``__init__`` arguments of a task class and of its bases (subclasses pass ``**kwargs`` on)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if issubclass(klass, Beit3Task):
            names |= set(inspect.signature(klass.__init__).parameters)
    return names
