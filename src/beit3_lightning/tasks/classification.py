"""ImageNet-1k classification (unilm ``BEiT3ForImageClassification`` trained like ``ImageNetHandler``, with Mixup)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from beit3_lightning.data.transforms import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from beit3_lightning.losses import label_smoothing_cross_entropy, soft_target_cross_entropy
from beit3_lightning.metrics import TopKAccuracy
from beit3_lightning.mixup import Mixup
from beit3_lightning.modeling.heads import Beit3ForImageClassification
from beit3_lightning.tasks.base import Beit3Task, first_items, panel_text


class ImageClassificationTask(Beit3Task):
    """Mean-pooled patch tokens → LayerNorm → linear classifier.

    Args:
        num_classes: classes of the head (linked from the DataModule by the CLI).
        label_smoothing: label-smoothed cross-entropy without Mixup (the reference's ``--label_smoothing`` 0.1).
        mixup, cutmix: Mixup / CutMix alphas; either > 0 switches to soft-target cross-entropy (docs: 0.8 / 1.0).
        cutmix_minmax: CutMix box ratio bounds instead of the alpha (rarely used).
        mixup_prob, mixup_switch_prob: probability of mixing a batch, and of CutMix instead of Mixup.
        **kwargs: the shared recipe of :class:`Beit3Task` (model, init_from, lr, layer_decay, ...).
    """

    head = "imageclassification"
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD

    def __init__(
        self,
        num_classes: int = 1000,
        label_smoothing: float = 0.1,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        cutmix_minmax: tuple[float, float] | None = None,
        mixup_prob: float = 1.0,
        mixup_switch_prob: float = 0.5,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.attach_model(Beit3ForImageClassification(self.config, num_classes=num_classes))
        self.mixup = None
        if mixup > 0 or cutmix > 0 or cutmix_minmax is not None:
            self.mixup = Mixup(
                mixup_alpha=mixup,
                cutmix_alpha=cutmix,
                cutmix_minmax=cutmix_minmax,
                prob=mixup_prob,
                switch_prob=mixup_switch_prob,
                label_smoothing=label_smoothing,
                num_classes=num_classes,
            )
        self.val_metric = TopKAccuracy(top_k=(1, 5))
        self.test_metric = TopKAccuracy(top_k=(1, 5))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        image, label = batch["image"], batch["label"]
        if self.mixup is not None:
            image, soft = self.mixup(image, label)
            loss = soft_target_cross_entropy(self(image).float(), soft)
        elif self.hparams.label_smoothing > 0:
            loss = label_smoothing_cross_entropy(self(image).float(), label, self.hparams.label_smoothing)
        else:
            loss = F.cross_entropy(self(image).float(), label)
        return self.log_train_loss(loss, batch)

    def eval_step(self, batch: dict[str, Any], metric: TopKAccuracy, stage: str) -> None:
        logits = self(batch["image"])
        self.log(f"{stage}/loss", F.cross_entropy(logits.float(), batch["label"]), batch_size=len(logits))
        metric.update(logits, batch["label"])

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        probs = self(batch["image"]).float().softmax(-1)
        top = probs.topk(min(5, probs.shape[-1]), dim=-1)
        return [
            {"index": int(i), "top5_labels": labels.tolist(), "top5_probs": p.tolist()}
            for i, labels, p in zip(batch["index"], top.indices, top.values)
        ]

    def describe_batch(self, batch: dict[str, Any], num_samples: int) -> list[tuple[torch.Tensor, str]]:
        """Predicted class (with its probability) and the true class."""
        batch = first_items(batch, num_samples)
        probs = self(batch["image"]).float().softmax(-1)
        best = probs.argmax(-1)
        return [
            (
                batch["image"][i],
                panel_text(
                    predicted=f"class {int(best[i])} (p = {probs[i, best[i]].item():.2f})",
                    true=f"class {int(batch['label'][i])}",
                ),
            )
            for i in range(len(best))
        ]
