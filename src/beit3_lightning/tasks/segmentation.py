"""Semantic segmentation: UperNet on the BEiT-3 vision expert, trained with the BEiT recipe of mmseg
(``configs/beit/upernet_beit-base_8x2_640x640_160k_ade20k``: AdamW, layer-wise lr decay, linear warmup then poly
decay per iteration, cross-entropy on the decode head plus 0.4 × the auxiliary head)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from beit3_lightning.metrics import SegmentationMetric
from beit3_lightning.modeling.heads import Beit3ForSemanticSegmentation
from beit3_lightning.modeling.heads.segmentation import IGNORE_INDEX, resize
from beit3_lightning.modeling.segmentation_inference import segment_probabilities
from beit3_lightning.optim import build_scheduler
from beit3_lightning.segmentation_colors import colorize
from beit3_lightning.tasks.base import Beit3Task, first_items, panel_text


def segmentation_loss(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits (B, K, h, w) upsampled bilinearly to the label size (B, H, W), averaged over the
    labelled pixels (mmseg's ``avg_non_ignore=True``); 0 (with a gradient path) when every pixel is ignored."""
    logits = resize(logits, label.shape[-2:]).float()
    total = F.cross_entropy(logits, label, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (label != IGNORE_INDEX).sum().clamp(min=1)


class SegmentationTask(Beit3Task):
    """Per-pixel classification into ``num_classes`` classes, scored by mIoU.

    Args:
        num_classes: classes K (linked from the DataModule by the CLI: 150 for ADE20k).
        out_indices: the 4 backbone layers feeding the neck (default: base 3, 5, 7, 11; large 7, 11, 15, 23).
        channels: UperNet width (default: the embedding width, as the BEiT recipes).
        aux_channels: auxiliary FCN head width (default min(256, embedding width)); 0 drops the auxiliary head.
        aux_loss_weight: weight of the auxiliary head's cross-entropy (0.4 in the recipes).
        inference: ``slide`` (windows of the crop every ``stride`` pixels, overlaps averaged) or ``whole`` (images
            no larger than the crop, padded to it).
        stride: sliding-window stride (default two thirds of the crop: 341 at 512, 426 at 640).
        test_scales: image scale factors averaged at validation / test / predict (e.g. [0.5, 0.75, 1.0, 1.25, 1.5,
            1.75] for the multi-scale numbers); ``[1.0]`` is single-scale.
        test_flip: also average the mirrored images.
        poly_power: exponent of the poly decay after warmup (1.0: linear to ``min_lr``).
        class_names: names of the classes, for TensorBoard panels and predictors; default: the DataModule's. They
            are saved in checkpoints, so ``load_model(ckpt).segment`` knows them on another machine.
        **kwargs: the shared recipe of :class:`Beit3Task` (model, init_from, lr, layer_decay, warmup_steps, ...);
            ``img_size`` is the training crop.
    """

    head = "segmentation"

    def __init__(
        self,
        num_classes: int = 150,
        out_indices: tuple[int, int, int, int] | None = None,
        channels: int | None = None,
        aux_channels: int | None = None,
        aux_loss_weight: float = 0.4,
        inference: Literal["slide", "whole"] = "slide",
        stride: int | None = None,
        test_scales: Sequence[float] = (1.0,),
        test_flip: bool = False,
        poly_power: float = 1.0,
        class_names: list[str] | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.attach_model(
            Beit3ForSemanticSegmentation(
                self.config, num_classes=num_classes, out_indices=out_indices, channels=channels,
                aux_channels=aux_channels,
            )
        )  # fmt: skip
        self.class_names: list[str] | None = list(class_names) if class_names is not None else None
        self.val_metric = SegmentationMetric(num_classes)
        self.test_metric = SegmentationMetric(num_classes)

    @property
    def crop_size(self) -> int:
        return self.config.img_size

    def build_lr_scheduler(self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int):
        """Linear warmup then poly decay to ``min_lr`` (mmseg ``LinearLR`` + ``PolyLR``), per optimiser step."""
        hp = self.hparams
        return build_scheduler(
            optimizer, total_steps=total_steps, warmup_steps=warmup_steps, min_lr=hp.min_lr, schedule="poly",
            power=hp.poly_power,
        )  # fmt: skip

    def attach_data(self, datamodule) -> None:
        super().attach_data(datamodule)
        names = getattr(datamodule, "class_names", None)
        if names is not None and self.class_names is None:
            self.class_names = list(names)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.class_names is not None:
            checkpoint.setdefault("hyper_parameters", {})["class_names"] = list(self.class_names)

    # ----- training ------------------------------------------------------------------------------------------
    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model(image)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        out = self(batch["image"])  # logits (B, K, S/4, S/4), aux_logits (B, K, S/16, S/16)
        label = batch["label"]  # (B, S, S), IGNORE_INDEX where unlabelled or padded
        loss_decode = segmentation_loss(out["logits"], label)
        loss = loss_decode
        if "aux_logits" in out:
            loss_aux = segmentation_loss(out["aux_logits"], label)
            loss = loss + self.hparams.aux_loss_weight * loss_aux
            self.log("train/loss_aux", loss_aux, batch_size=len(label))
        self.log("train/loss_decode", loss_decode, batch_size=len(label))
        return self.log_train_loss(loss, batch)

    # ----- evaluation ----------------------------------------------------------------------------------------
    def logits_fn(self, crops: torch.Tensor) -> torch.Tensor:
        return self.model(crops, with_aux=False)["logits"]

    def probabilities(self, image: torch.Tensor, out_size: Sequence[int]) -> torch.Tensor:
        """Class probabilities (1, K, *out_size) of one normalised image (1, 3, h, w) with the test settings."""
        hp = self.hparams
        return segment_probabilities(
            self.logits_fn, image, crop=self.crop_size, mode=hp.inference, stride=hp.stride,
            scales=tuple(hp.test_scales), flip=hp.test_flip, out_size=out_size,
        )  # fmt: skip

    def predict_label_maps(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        """One (H, W) map of predicted class ids per item, at the size of its label (the original image).

        Items of a batch may differ in size (the collate pads them); each is cut to its valid region first.
        """
        images = batch["image"]
        image_hw = batch.get("image_hw")
        out_hw = batch.get("label_hw", image_hw)
        maps = []
        for i in range(len(images)):
            h, w = (int(v) for v in image_hw[i]) if image_hw is not None else images.shape[-2:]
            size = [int(v) for v in out_hw[i]] if out_hw is not None else [h, w]
            probs = self.probabilities(images[i : i + 1, :, :h, :w], size)
            maps.append(probs[0].argmax(0))
        return maps

    def eval_step(self, batch: dict[str, Any], metric: SegmentationMetric, stage: str) -> None:
        label_hw = batch.get("label_hw")
        for i, predicted in enumerate(self.predict_label_maps(batch)):
            h, w = predicted.shape
            truth = batch["label"][i, :h, :w] if label_hw is not None else batch["label"][i]
            metric.update(predicted, truth)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """``{"index", "label_map"}`` per image (uint8, or int16 beyond 256 classes); ``beit3 predict`` writes PNGs."""
        dtype = torch.uint8 if self.model.num_classes <= 256 else torch.int16
        return [
            {"index": int(index), "label_map": label_map.to(dtype).cpu()}
            for index, label_map in zip(batch["index"], self.predict_label_maps(batch))
        ]

    def describe_batch(self, batch: dict[str, Any], num_samples: int) -> list[tuple[torch.Tensor, str]]:
        """image | truth | prediction side by side, with the image's pixel accuracy and mIoU."""
        batch = first_items(batch, num_samples)
        panels = []
        for i, predicted in enumerate(self.predict_label_maps(batch)):
            h, w = predicted.shape
            image_hw = batch.get("image_hw")
            ih, iw = (int(v) for v in image_hw[i]) if image_hw is not None else batch["image"].shape[-2:]
            image = resize(batch["image"][i : i + 1, :, :ih, :iw], (h, w))[0]  # normalised (3, h, w)
            truth = batch["label"][i, :h, :w]
            panels.append((self._panel(image, truth, predicted), self._panel_caption(truth, predicted)))
        return panels

    def _panel(self, image: torch.Tensor, truth: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
        """(3, h, 3w) in the task's normalised space (the TensorBoard callback denormalises it)."""
        k = self.model.num_classes
        mean = torch.tensor(self.image_mean).view(3, 1, 1)
        std = torch.tensor(self.image_std).view(3, 1, 1)

        def as_normalised(label_map: torch.Tensor) -> torch.Tensor:
            colors = torch.from_numpy(colorize(label_map.cpu().numpy(), k)).permute(2, 0, 1).float() / 255.0
            return ((colors - mean) / std).to(image)

        return torch.cat([image, as_normalised(truth), as_normalised(predicted)], dim=-1)

    def _panel_caption(self, truth: torch.Tensor, predicted: torch.Tensor) -> str:
        labelled = truth != IGNORE_INDEX
        accuracy = (predicted[labelled] == truth[labelled]).float().mean().item() * 100 if labelled.any() else 0.0
        names = self.class_names

        def classes(label_map: torch.Tensor) -> str:
            ids = [int(c) for c in np.unique(label_map.cpu().numpy()) if c != IGNORE_INDEX]
            return ", ".join(names[c] if names and c < len(names) else str(c) for c in ids)

        return panel_text(
            panels="image | truth | prediction", pixel_accuracy=f"{accuracy:.1f}%", true_classes=classes(truth),
            predicted_classes=classes(predicted),
        )  # fmt: skip
