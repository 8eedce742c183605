"""Image–text retrieval with a dual encoder and a contrastive loss (unilm ``BEiT3ForRetrieval``, ``RetrievalHandler``).

Zero-shot retrieval evaluates an ITC checkpoint as is (``docs/reference.md#zero-shot-retrieval``).
"""

from __future__ import annotations

from typing import Any

import torch

from beit3_lightning.losses import ClipLoss
from beit3_lightning.metrics import ImageTextRetrievalRecall
from beit3_lightning.modeling.heads import Beit3ForRetrieval
from beit3_lightning.tasks.base import Beit3Task, first_items, panel_text

# Texts ranked for each image in the TensorBoard panels.
PANEL_TOP_K = 5


class RetrievalTask(Beit3Task):
    """Image-only and text-only passes → normalised embeddings → symmetric InfoNCE over every process's batch.

    Evaluation gathers every process's embeddings before ranking (the reference scores each GPU's shard alone).
    Zero-shot retrieval: ``beit3 test`` with ``init_from`` an ITC checkpoint and no fine-tuning.

    Args:
        **kwargs: the shared recipe of :class:`Beit3Task` (official: lr 2e-4 COCO / 1e-4 Flickr30k,
            layer_decay 0.65, drop_path 0.2, gradient checkpointing).
    """

    head = "retrieval"

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.attach_model(Beit3ForRetrieval(self.config))
        self.clip_loss = ClipLoss()
        self.val_metric = ImageTextRetrievalRecall()
        self.test_metric = ImageTextRetrievalRecall()

    def forward(self, image=None, text_description=None, padding_mask=None):
        return self.model(image=image, text_description=text_description, padding_mask=padding_mask)

    def _gather(self, features: torch.Tensor) -> torch.Tensor:
        # Gradients flow back to this process's slice (Lightning's all_gather with sync_grads).
        return self.all_gather(features, sync_grads=True)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        image_emb, text_emb = self(batch["image"], batch["language_tokens"], batch["padding_mask"])
        gather = self._gather if self.trainer.world_size > 1 else None
        out = self.clip_loss(
            image_emb.float(), text_emb.float(), self.model.logit_scale, gather_fn=gather, rank=self.global_rank
        )
        self.log("train/logit_scale", self.model.logit_scale.exp(), batch_size=len(image_emb))
        return self.log_train_loss(out.loss, batch)

    def eval_step(self, batch: dict[str, Any], metric: ImageTextRetrievalRecall, stage: str) -> None:
        image_emb, text_emb = self(batch["image"], batch["language_tokens"], batch["padding_mask"])
        metric.update(
            batch["image_id"], image_feats=image_emb.float(), text_feats=text_emb.float(), text_ids=batch["index"]
        )

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        image_emb, text_emb = self(batch["image"], batch["language_tokens"], batch["padding_mask"])
        return {
            "index": batch["index"],
            "image_id": batch["image_id"],
            "image_emb": image_emb.float().cpu(),
            "text_emb": text_emb.float().cpu(),
        }

    def describe_batch(self, batch: dict[str, Any], num_samples: int) -> list[tuple[torch.Tensor, str]]:
        """For each image (the query), its top-5 texts among the shown items, the correct ones marked, and its own
        text."""
        batch = first_items(batch, num_samples)
        image_emb, text_emb = self(batch["image"], batch["language_tokens"], batch["padding_mask"])
        similarity = image_emb.float() @ text_emb.float().T  # (n, n)
        ranked = similarity.topk(min(PANEL_TOP_K, similarity.shape[1]), dim=-1).indices.tolist()
        image_ids = batch["image_id"].tolist()
        panels = []
        for i, texts in enumerate(ranked):
            fields = {
                f"top {rank + 1}": self.decode_text(batch["language_tokens"][j])
                + (" [correct]" if image_ids[j] == image_ids[i] else "")
                for rank, j in enumerate(texts)
            }
            panels.append((batch["image"][i], panel_text(true=self.decode_text(batch["language_tokens"][i]), **fields)))
        return panels
