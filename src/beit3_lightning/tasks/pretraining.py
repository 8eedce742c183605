"""BEiT-3 pretraining: masked data modeling on monomodal images, monomodal texts and image-text pairs.

One objective over three kinds of batches (the paper's "mask then predict"): masked text tokens are predicted over
the text vocabulary (``mlm_head``), masked patches over the visual tokenizer's codebook (``mim_head``). A step
processes one batch of each kind (``PretrainDataModule``); the loss is the weighted mean of the per-kind losses
(a pair's loss is its text loss plus its image loss). Logged per kind: loss and masked-token accuracies
(``train|val/<kind>_loss``, ``<kind>_mlm_acc``, ``<kind>_mim_acc``); ``val/loss`` (the weighted mean, lower is
better) chooses ``best.ckpt``.

The saved backbone keeps the official key names (``model.beit3.*``): ``init_from`` of any fine-tuning task loads it
unchanged, and ``init_from`` here continues from an official pretrained checkpoint with zero missing backbone keys.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from beit3_lightning.callbacks.tensorboard import tensorboard_experiment
from beit3_lightning.data.masking import IGNORE_INDEX
from beit3_lightning.data.pretraining import PRETRAIN_KINDS
from beit3_lightning.modeling.heads import OFFICIAL_CODEBOOK_SIZE, Beit3ForPretraining
from beit3_lightning.modeling.visual_tokenizers import check_grid_matches
from beit3_lightning.tasks.base import Beit3Task

# What each kind predicts.
PREDICTS = {"images": ("mim",), "texts": ("mlm",), "pairs": ("mlm", "mim")}
# Items of the first validation batch of each kind shown in TensorBoard.
PANEL_ITEMS = 4


class PretrainingTask(Beit3Task):
    """Masked data modeling (the BEiT-3 paper, section 2.3).

    Args:
        codebook_size: codes of the visual tokenizer (the MIM head's outputs; linked from the DataModule).
        loss_weights: weight of each kind's loss (``images``, ``texts``, ``pairs``; default 1 each).
        **kwargs: the shared recipe of :class:`Beit3Task` (the paper: AdamW betas (0.9, 0.98), eps 1e-6).
    """

    head = "pretraining"

    def __init__(
        self, codebook_size: int = OFFICIAL_CODEBOOK_SIZE, loss_weights: dict[str, float] | None = None, **kwargs: Any
    ):
        kwargs.setdefault("layer_decay", 1.0)  # pretraining trains every layer at the same rate
        super().__init__(**kwargs)
        self.loss_weights = {kind: 1.0 for kind in PRETRAIN_KINDS}
        unknown = set(loss_weights or {}) - set(PRETRAIN_KINDS)
        if unknown:
            raise ValueError(f"loss_weights: unknown kind(s) {sorted(unknown)}; use {', '.join(PRETRAIN_KINDS)}")
        self.loss_weights.update(loss_weights or {})
        self.attach_model(Beit3ForPretraining(self.config, codebook_size=codebook_size))
        # Frozen and outside the module tree (not in the state dict, not trained): set from the DataModule.
        self._visual_tokenizer: list[Any] = []
        self.val_kinds: tuple[str, ...] = ()
        self.val_metrics = torch.nn.ModuleDict(
            {
                f"{kind}_{name}": MeanMetric()
                for kind in PRETRAIN_KINDS
                for name in ("loss", *(f"{target}_acc" for target in PREDICTS[kind]))
            }
        )
        self._panels: list[tuple[str, dict[str, Any], dict[str, torch.Tensor]]] = []

    # ----- data --------------------------------------------------------------------------------------------------
    def attach_data(self, datamodule) -> None:
        super().attach_data(datamodule)
        tokenizer = datamodule.visual_tokenizer
        if tokenizer.codebook_size != self.model.codebook_size:
            raise ValueError(
                f"the visual tokenizer has {tokenizer.codebook_size} codes but the model's MIM head predicts "
                f"{self.model.codebook_size}; codebook_size comes from the data (the CLI links it): remove it "
                "from the model config"
            )
        check_grid_matches(tokenizer, self.config.img_size, self.config.patch_size)
        self._visual_tokenizer = [tokenizer]
        self.val_kinds = datamodule.val_kinds() if hasattr(datamodule, "val_kinds") else ()

    @property
    def visual_tokenizer(self):
        if not self._visual_tokenizer:
            raise RuntimeError("PretrainingTask needs a visual tokenizer: train it with a PretrainDataModule")
        return self._visual_tokenizer[0]

    @torch.no_grad()
    def visual_targets(self, batch: dict[str, Any]) -> torch.Tensor:
        """Code ids (B, N): pre-computed ones from the index, else the frozen tokenizer on the un-normalised image
        (bf16 autocast on GPUs that support it: a ViT-B forward per image)."""
        if "visual_tokens" in batch:
            return batch["visual_tokens"]
        tokenizer = self.visual_tokenizer.to(self.device)
        images = batch["image"].float() * 0.5 + 0.5  # undo the mean = std = 0.5 normalisation → [0, 1]
        use_bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            return tokenizer.get_codebook_indices(images)

    # ----- the objective -----------------------------------------------------------------------------------------
    def kind_outputs(self, kind: str, batch: dict[str, Any]) -> dict[str, Any]:
        """Logits, targets, the kind's loss and its masked-token accuracies for one batch."""
        text_mask = batch["mlm_labels"] != IGNORE_INDEX if "mlm_labels" in batch else None
        image_mask = batch.get("image_mask")
        logits = self.model(
            image=batch.get("image"),
            image_mask=image_mask,
            text_ids=batch.get("language_tokens"),
            padding_mask=batch.get("padding_mask"),
            text_mask=text_mask,
        )
        targets = {}
        if "mim" in logits:
            targets["mim"] = self.visual_targets(batch)[image_mask]  # (n_masked,)
        if "mlm" in logits:
            targets["mlm"] = batch["mlm_labels"][text_mask]  # (n_masked,)
        losses = {name: F.cross_entropy(logits[name].float(), targets[name]) for name in PREDICTS[kind]}
        accuracy = {name: (logits[name].argmax(-1) == targets[name]).float().mean() for name in PREDICTS[kind]}
        return {"logits": logits, "targets": targets, "loss": sum(losses.values()), "accuracy": accuracy}

    def weighted_loss(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        weights = {kind: self.loss_weights[kind] for kind in losses}
        total = sum(weights.values())
        if total <= 0:
            raise ValueError(f"loss_weights of the kinds in this batch sum to {total}; give one a positive weight")
        return sum(weights[kind] * loss for kind, loss in losses.items()) / total

    def training_step(self, batch: dict[str, dict[str, Any]], batch_idx: int) -> torch.Tensor:
        losses = {}
        for kind, kind_batch in batch.items():
            out = self.kind_outputs(kind, kind_batch)
            losses[kind] = out["loss"]
            size = len(next(iter(kind_batch.values())))
            self.log(f"train/{kind}_loss", out["loss"], batch_size=size)
            for name, value in out["accuracy"].items():
                self.log(f"train/{kind}_{name}_acc", value, batch_size=size)
        loss = self.weighted_loss(losses)
        ids = {kind: b.get("index") for kind, b in batch.items()}
        self.check_finite(loss, {"index": ids})
        self.log("train/loss", loss, prog_bar=True, batch_size=sum(len(b["index"]) for b in batch.values()))
        return loss

    # ----- evaluation --------------------------------------------------------------------------------------------
    def _kind_of(self, dataloader_idx: int) -> str:
        kinds = self.val_kinds or tuple(PRETRAIN_KINDS)
        return kinds[dataloader_idx]

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        kind = self._kind_of(dataloader_idx)
        out = self.kind_outputs(kind, batch)
        self.val_metrics[f"{kind}_loss"].update(out["loss"], len(batch["index"]))
        for name, value in out["accuracy"].items():
            self.val_metrics[f"{kind}_{name}_acc"].update(value, len(out["targets"][name]))
        if batch_idx == 0 and not self.trainer.sanity_checking:
            predictions = {name: logits.argmax(-1) for name, logits in out["logits"].items()}
            self._panels.append((kind, batch, {"predictions": predictions, "targets": out["targets"]}))

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self.validation_step(batch, batch_idx, dataloader_idx)

    def _log_kind_metrics(self, stage: str) -> None:
        values, losses = {}, {}
        for kind in self.val_kinds or PRETRAIN_KINDS:
            for name in ("loss", *(f"{target}_acc" for target in PREDICTS[kind])):
                metric = self.val_metrics[f"{kind}_{name}"]
                if metric.update_count == 0:
                    continue
                value = metric.compute()
                scale = 100.0 if name.endswith("_acc") else 1.0
                values[f"{stage}/{kind}_{name}"] = value * scale
                if name == "loss":
                    losses[kind] = value
                metric.reset()
        if losses:
            self.log_dict(values)
            self.log(f"{stage}/loss", self.weighted_loss(losses), prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        self._log_kind_metrics("val")
        self._log_panels()

    def on_test_epoch_end(self) -> None:
        self._log_kind_metrics("test")
        self._panels.clear()

    # ----- TensorBoard: masked patches and words with the predictions --------------------------------------------
    def _log_panels(self) -> None:
        panels, self._panels = self._panels, []
        experiment = tensorboard_experiment(self.trainer) if self.trainer.is_global_zero else None
        if experiment is None:
            return
        from beit3_lightning.tasks.pretraining_panels import image_panel, text_panel

        step = self.global_step
        for kind, batch, out in panels:
            if "mim" in out["predictions"]:
                for i, picture in enumerate(image_panel(batch, out, PANEL_ITEMS)):
                    experiment.add_image(f"pretrain_{kind}/{i:02d}_masked_patches", picture, step)
            if "mlm" in out["predictions"]:
                for i, text in enumerate(text_panel(batch, out, self.decode_text, PANEL_ITEMS)):
                    experiment.add_text(f"pretrain_{kind}/{i:02d}_masked_words", text, step)
