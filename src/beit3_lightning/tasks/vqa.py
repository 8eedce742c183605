"""VQAv2 as multi-label classification over the answer vocabulary (unilm ``BEiT3ForVisualQuestionAnswering`` and
``VQAHandler``)."""

from __future__ import annotations

from typing import Any

import torch

from beit3_lightning.data.references import MissingAnswersError
from beit3_lightning.losses import vqa_bce_loss
from beit3_lightning.metrics import VQAScore
from beit3_lightning.modeling.heads import Beit3ForVisualQuestionAnswering
from beit3_lightning.tasks.base import Beit3Task, first_items, panel_text


class VQATask(Beit3Task):
    """Fused image+question encoder → pooled vision CLS → MLP over the answers; BCE on soft scores.

    Args:
        num_classes: answers in the vocabulary (3129 for VQAv2; linked from the DataModule's ``answer2label.txt``).
        answers: the answer strings in label order; default: the DataModule's ``answer2label.txt``. They are saved
            in checkpoints, so ``load_model(ckpt).answer(...)`` works on a machine without the training data.
        **kwargs: the shared recipe of :class:`Beit3Task`. The official recipe uses ``layer_decay=1.0`` with
            ``head_lr_scale=20`` and AdamW betas (0.9, 0.98).
    """

    head = "vqav2"

    def __init__(self, num_classes: int = 3129, answers: list[str] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.attach_model(Beit3ForVisualQuestionAnswering(self.config, num_classes=num_classes))
        self.answers: list[str] | None = list(answers) if answers is not None else None  # label -> answer
        self.val_metric = VQAScore()
        self.test_metric = VQAScore()

    def forward(self, image: torch.Tensor, question: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        return self.model(image, question, padding_mask)

    def _logits(self, batch: dict[str, Any]) -> torch.Tensor:
        return self(batch["image"], batch["language_tokens"], batch["padding_mask"])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = vqa_bce_loss(self._logits(batch), batch["labels"])
        return self.log_train_loss(loss, batch)

    def eval_step(self, batch: dict[str, Any], metric: VQAScore, stage: str) -> None:
        if "labels" not in batch:
            raise MissingAnswersError(
                f"the VQAv2 {stage} split has no public answers to score; use `beit3 predict` to write the "
                "submission file, or `beit3 validate` to score rest_val"
            )
        logits = self._logits(batch)
        self.log(f"{stage}/loss", vqa_bce_loss(logits, batch["labels"]), batch_size=len(logits))
        metric.update(logits, batch["labels"])

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """``[{"question_id", "answer"}]`` — the EvalAI submission format (answers need ``label2ans``)."""
        best = self._logits(batch).argmax(-1).tolist()
        label2ans = self.label2ans()
        return [{"question_id": int(q), "answer": label2ans[a]} for q, a in zip(batch["qid"], best)]

    def attach_data(self, datamodule) -> None:
        super().attach_data(datamodule)
        if hasattr(datamodule, "label2ans") and self.answers is None:
            self.answers = datamodule.label2ans

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.answers is not None:  # the checkpoint answers on its own, without the data directory
            checkpoint.setdefault("hyper_parameters", {})["answers"] = list(self.answers)

    def label2ans(self) -> list[str]:
        """Answer strings in label order, from the DataModule's ``answer2label.txt``."""
        if self.answers is None:
            raise RuntimeError("VQA predictions need the answer vocabulary: run with a VQAv2DataModule")
        return self.answers

    def describe_batch(self, batch: dict[str, Any], num_samples: int) -> list[tuple[torch.Tensor, str]]:
        """Question, predicted answer (with its VQA score) and the best-scored true answer."""
        batch = first_items(batch, num_samples)
        predicted = self._logits(batch).argmax(-1).tolist()
        label2ans = self.label2ans()
        panels = []
        for i, answer in enumerate(predicted):
            fields = {"question": self.decode_text(batch["language_tokens"][i]), "predicted": label2ans[answer]}
            if "labels" in batch:
                scores = batch["labels"][i]
                fields["predicted"] += f" (VQA score {scores[answer].item():.1f})"
                fields["true"] = f"{label2ans[int(scores.argmax())]} (score {scores.max().item():.1f})"
            panels.append((batch["image"][i], panel_text(**fields)))
        return panels
