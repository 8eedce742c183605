"""``classify()``: ImageNet-style classification with an ``Beit3ForImageClassification`` model."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from beit3_lightning.inference.base import Beit3Predictor
from beit3_lightning.processor import ImageInput


def read_labels(labels: Sequence[str] | str | Path) -> list[str]:
    """Class names from a list or from a text file with one name per line (line i = class i)."""
    if isinstance(labels, (str, Path)):
        path = Path(labels)
        if not path.is_file():
            raise FileNotFoundError(f"label file not found: {path} (expected one class name per line)")
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [str(label) for label in labels]


IMAGENET1K_CLASSES = 1000


@cache
def imagenet1k_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in class-index order (package asset ``imagenet1k_classes.txt``)."""
    text = resources.files("beit3_lightning").joinpath("assets/imagenet1k_classes.txt").read_text(encoding="utf-8")
    return tuple(line for line in text.splitlines() if line)


class ImageClassificationPredictor(Beit3Predictor):
    """Top-k classes of images.

    Args:
        labels: class names (a list, or a text file with one name per line). Default: the ImageNet-1k names for
            1000-class models (the official checkpoints), class indices otherwise.
        **kwargs: see :class:`Beit3Predictor`.
    """

    head = "imageclassification"

    def __init__(self, *args: Any, labels: Sequence[str] | str | Path | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.num_classes = self.model.num_classes
        if labels is None and self.num_classes == IMAGENET1K_CLASSES:
            labels = list(imagenet1k_class_names())
        self.labels = self._checked_labels(labels) if labels is not None else None

    def _checked_labels(self, labels: Sequence[str] | str | Path) -> list[str]:
        names = read_labels(labels)
        if len(names) != self.num_classes:
            raise ValueError(f"got {len(names)} labels for a model with {self.num_classes} classes")
        return names

    @torch.no_grad()
    def logits(self, images: ImageInput) -> torch.Tensor:
        """Class logits (N, num_classes), float32 on the CPU."""
        items = self.images(images)
        out = [
            self.model(self.batch(images=chunk)["image"]).float().cpu() for _, chunk in self.chunks(items, "classify")
        ]
        return torch.cat(out)

    def classify(
        self, images: ImageInput, top_k: int = 5, labels: Sequence[str] | str | Path | None = None
    ) -> list[list[tuple[int | str, float]]]:
        """For each image, the ``top_k`` most likely classes as ``(class index or name, probability)``, best first.

        ``labels`` overrides the names given to ``load_model`` for this call.
        """
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        names = self._checked_labels(labels) if labels is not None else self.labels
        probs = self.logits(images).softmax(-1)
        top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        return [
            [(names[i] if names else i, p) for i, p in zip(indices.tolist(), values.tolist())]
            for indices, values in zip(top.indices, top.values)
        ]
