"""NLVR2: is a statement true of a pair of images (unilm ``BEiT3ForVisualReasoning`` and ``NLVR2Handler``)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from beit3_lightning.modeling.heads import Beit3ForVisualReasoning
from beit3_lightning.tasks.base import Beit3Task, first_items, panel_text


class NLVR2Task(Beit3Task):
    """Each image fused with the statement; [vision CLS, text CLS] of both images → MLP → true/false.

    Args:
        **kwargs: the shared recipe of :class:`Beit3Task` (official: lr 7e-4, layer_decay 0.65, wd 0.2).
    """

    head = "nlvr2"
    metric_scale = 100.0

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.attach_model(Beit3ForVisualReasoning(self.config, num_classes=2))
        # Percent, as the reference reports it; micro average = plain accuracy.
        self.val_metric = MulticlassAccuracy(num_classes=2, average="micro")
        self.test_metric = MulticlassAccuracy(num_classes=2, average="micro")

    def forward(self, image, image2, language_tokens, padding_mask) -> torch.Tensor:
        return self.model(image, image2, language_tokens, padding_mask)

    def _logits(self, batch: dict[str, Any]) -> torch.Tensor:
        return self(batch["image"], batch["image2"], batch["language_tokens"], batch["padding_mask"])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        logits = self._logits(batch)
        loss = F.cross_entropy(logits.float(), batch["label"])
        self.log("train/acc", (logits.argmax(-1) == batch["label"]).float().mean() * 100, batch_size=len(logits))
        return self.log_train_loss(loss, batch)

    def eval_step(self, batch: dict[str, Any], metric: MulticlassAccuracy, stage: str) -> None:
        logits = self._logits(batch)
        self.log(f"{stage}/loss", F.cross_entropy(logits.float(), batch["label"]), batch_size=len(logits))
        metric.update(logits, batch["label"])

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        probs = self._logits(batch).float().softmax(-1)[:, 1].tolist()
        return [{"index": int(i), "prob_true": p, "prediction": p > 0.5} for i, p in zip(batch["index"], probs)]

    def describe_batch(self, batch: dict[str, Any], num_samples: int) -> list[tuple[torch.Tensor, str]]:
        """The image pair side by side, the statement, predicted and true truth values."""
        batch = first_items(batch, num_samples)
        probs = self._logits(batch).float().softmax(-1)[:, 1].tolist()
        pairs = torch.cat([batch["image"], batch["image2"]], dim=-1)  # (n, 3, H, 2W): left | right
        return [
            (
                pairs[i],
                panel_text(
                    statement=self.decode_text(batch["language_tokens"][i]),
                    predicted=f"{p > 0.5} (P(true) = {p:.2f})",
                    true=str(bool(batch["label"][i])),
                ),
            )
            for i, p in enumerate(probs)
        ]
