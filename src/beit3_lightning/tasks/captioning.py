"""Image captioning (COCO / NoCaps): masked-token training, beam-search decoding, CIDEr.

Follows unilm ``CaptioningDataset`` (masking), ``BertCaptioningLoss`` and ``CaptioningHandler`` (decoding, scoring).
"""

from __future__ import annotations

from typing import Any

import torch

from beit3_lightning.data.references import caption_references
from beit3_lightning.data.tokenizer import Beit3Tokenizer
from beit3_lightning.losses import CaptioningLoss
from beit3_lightning.metrics import CaptionMetric
from beit3_lightning.modeling.generation import beam_search
from beit3_lightning.modeling.heads import Beit3ForCaptioning
from beit3_lightning.tasks.base import Beit3Task, first_items, panel_text


class CaptioningTask(Beit3Task):
    """Fused encoder under the captioning mask → masked-token logits; captions by beam search with a k/v cache.

    Args:
        label_smoothing: label smoothing of the masked-token loss (0.1).
        drop_worst_ratio: fraction of the highest per-token losses dropped after ``drop_worst_after`` steps (0.2).
        drop_worst_after: optimiser step after which the worst tokens are dropped (12000).
        num_beams: beams of the decoder (3; 1 = greedy).
        max_len: decoding length limit in tokens, [CLS] and [SEP] included (the reference decodes with 64 unless
            told otherwise; its docs train with 32).
        length_penalty: hypothesis score = sum of log-probs / length^length_penalty (0.6).
        tokenizer_path: sentencepiece model to decode captions when no DataModule provides one (``load_model``).
        **kwargs: the shared recipe of :class:`Beit3Task` (official: lr 4e-5, layer_decay 1.0, drop_path 0.1).
    """

    head = "captioning"

    def __init__(
        self,
        label_smoothing: float = 0.1,
        drop_worst_ratio: float = 0.2,
        drop_worst_after: int = 12000,
        num_beams: int = 3,
        max_len: int = 64,
        length_penalty: float = 0.6,
        tokenizer_path: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.attach_model(Beit3ForCaptioning(self.config))
        self.loss_fn = CaptioningLoss(label_smoothing, drop_worst_ratio, drop_worst_after)
        if tokenizer_path:  # decoding without a DataModule (a DataModule's tokenizer replaces it in setup)
            self.tokenizer = Beit3Tokenizer(tokenizer_path)
        self.val_metric = CaptionMetric()
        self.test_metric = CaptionMetric()

    # ----- the tokenizer and the caption references come from the DataModule ---------------------------------
    def attach_data(self, datamodule) -> None:
        super().attach_data(datamodule)
        dataset, root, test_split = datamodule.task, datamodule.root, datamodule.test_split
        # Read lazily, at the first evaluation: the Karpathy file is large and a fit may never validate.
        self.val_metric.set_references(lambda: caption_references(dataset, root, "val"))
        self.test_metric.set_references(lambda: caption_references(dataset, root, test_split))

    # ----- training --------------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        masked_pos = batch["language_masked_pos"].bool()
        logits, _ = self.model(batch["image"], batch["masked_tokens"], batch["padding_mask"], masked_pos)
        target = batch["language_tokens"][masked_pos]  # (n_masked,)
        loss = self.loss_fn(logits.float(), target, self.global_step)
        accuracy = (logits.argmax(-1) == target).float().mean() * 100
        self.log("train/masked_token_acc", accuracy, batch_size=len(batch["image"]))
        return self.log_train_loss(loss, batch)

    # ----- decoding --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, images: torch.Tensor, num_beams: int | None = None, max_len: int | None = None) -> list[str]:
        """Captions for images (B, 3, H, W) by beam search with the key/value cache."""
        tokenizer = self.tokenizer
        if tokenizer is None:
            raise RuntimeError("captioning needs a tokenizer: pass tokenizer_path= or use a CaptioningDataModule")
        ids = beam_search(
            self.model,
            images,
            num_beams=num_beams or self.hparams.num_beams,
            max_len=max_len or self.hparams.max_len,
            length_penalty=self.hparams.length_penalty,
            mask_id=tokenizer.mask_token_id,
        )
        return tokenizer.batch_decode(ids)

    def eval_step(self, batch: dict[str, Any], metric: CaptionMetric, stage: str) -> None:
        metric.update(batch["image_id"], self.generate(batch["image"]))

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """``[{"image_id", "caption"}]`` — the submission format of COCO and NoCaps."""
        captions = self.generate(batch["image"])
        return [{"image_id": int(i), "caption": c} for i, c in zip(batch["image_id"], captions)]

    def describe_batch(self, batch: dict[str, Any], num_samples: int) -> list[tuple[torch.Tensor, str]]:
        """Generated caption and the reference captions of the image (from the validation references)."""
        batch = first_items(batch, num_samples)
        captions = self.generate(batch["image"])
        if getattr(self, "_panel_references", None) is None:  # read once: the Karpathy file is large
            references = self.val_metric.references
            self._panel_references = (references() if callable(references) else references) or {}
        panels = []
        for image, image_id, caption in zip(batch["image"], batch["image_id"].tolist(), captions):
            truth = " / ".join(self._panel_references.get(image_id, [])) or "(no reference)"
            panels.append((image, panel_text(image_id=str(image_id), predicted=caption, true=truth)))
        return panels
