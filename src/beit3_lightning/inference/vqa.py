"""``answer()``: visual question answering with a ``Beit3ForVisualQuestionAnswering`` model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from beit3_lightning.data.datasets import load_answer2label
from beit3_lightning.inference.base import Beit3Predictor, broadcast_pairs
from beit3_lightning.processor import ImageInput, TextInput


class VQAPredictor(Beit3Predictor):
    """Answers questions about images (the answer with the highest score among the model's classes).

    Args:
        answers: the answer vocabulary: ``answer2label.txt`` (written by ``beit3 prepare vqav2``) or a list of
            answer strings in label order. Lightning checkpoints find it in their DataModule's directory.
        answers_hint: where the vocabulary was looked for, quoted in the error when it is missing.
        **kwargs: see :class:`Beit3Predictor`.
    """

    head = "vqav2"

    def __init__(
        self,
        *args: Any,
        answers: Sequence[str] | str | Path | None = None,
        answers_hint: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.num_classes = self.model.num_classes
        self.answers_hint = answers_hint
        self.label2ans: list[str] | None = None
        if answers is not None:
            self.set_answers(answers)

    def set_answers(self, answers: Sequence[str] | str | Path) -> None:
        """Install the answer vocabulary (file path or list of answers in label order)."""
        label2ans = load_answer2label(str(answers)) if isinstance(answers, (str, Path)) else [str(a) for a in answers]
        if len(label2ans) != self.num_classes:
            raise ValueError(
                f"the answer vocabulary has {len(label2ans)} answers but the model has {self.num_classes} classes: "
                "use the answer2label.txt the model was trained with"
            )
        self.label2ans = label2ans

    @torch.no_grad()
    def logits(self, images: ImageInput, questions: TextInput) -> torch.Tensor:
        """Answer logits (N, num_classes), float32 on the CPU; one image with many questions (or the reverse) is
        paired with each."""
        pairs = list(zip(*broadcast_pairs(self.images(images), self.texts(questions), ("images", "questions"))))
        out = []
        for _, chunk in self.chunks(pairs, "answer"):
            chunk_images, chunk_questions = zip(*chunk)
            batch = self.batch(images=list(chunk_images), text=list(chunk_questions))
            out.append(self.model(batch["image"], batch["language_tokens"], batch["padding_mask"]).float().cpu())
        return torch.cat(out)

    def answer(
        self, images: ImageInput, questions: TextInput, top_k: int | None = None
    ) -> list[str] | list[list[tuple[str, float]]]:
        """The best answer string for each (image, question) pair; with ``top_k``, the ``top_k`` best answers of
        each pair as ``(answer, score)``, best first. Scores are sigmoids in [0, 1], independent per answer (the
        model is trained with binary cross-entropy on soft VQA scores), so they need not sum to 1."""
        if self.label2ans is None:
            looked = f" (looked for {self.answers_hint})" if self.answers_hint else ""
            raise ValueError(
                f"answer() needs the answer vocabulary{looked}: pass answers='path/to/answer2label.txt' (or a list "
                "of answers in label order) to load_model, or call predictor.set_answers(...)"
            )
        logits = self.logits(images, questions)
        if top_k is None:
            return [self.label2ans[i] for i in logits.argmax(-1).tolist()]
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        best = logits.sigmoid().topk(min(top_k, logits.shape[-1]), dim=-1)
        return [
            [(self.label2ans[i], score) for i, score in zip(indices.tolist(), scores.tolist())]
            for indices, scores in zip(best.indices, best.values)
        ]
