"""``Beit3Predictor``: a task model in eval mode plus its processor, called on PIL images and strings.

Each task has a subclass with its own calls (``classify``, ``answer``, ``verify``, ``caption``, ``encode_image`` /
``encode_text`` / ``rank``). The base class defines every call so that using the wrong one says which to use
instead of failing with an ``AttributeError``. Inputs are processed and run in chunks of ``batch_size`` (with a
progress bar when there is more than one chunk), so long lists of file paths do not all sit in memory at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from tqdm import tqdm

from beit3_lightning.modeling.heads import Beit3TaskModel
from beit3_lightning.processor import Beit3Processor, ImageInput, TextInput
from beit3_lightning.task_table import HEADS

T = TypeVar("T")


class WrongTaskError(ValueError):
    """A predictor was asked for something its task model cannot do (e.g. ``caption()`` on a VQA model)."""


def broadcast_pairs(first: list[T], second: list[Any], names: tuple[str, str]) -> tuple[list[T], list[Any]]:
    """Pair two input lists one to one; a list of one is repeated to the other's length."""
    if len(first) == len(second):
        return first, second
    if len(first) == 1:
        return first * len(second), second
    if len(second) == 1:
        return first, second * len(first)
    raise ValueError(
        f"got {len(first)} {names[0]} and {len(second)} {names[1]}: pass as many of each, or a single one of either "
        "to pair it with all the others"
    )


class Beit3Predictor:
    """A BEiT-3 task model ready for inference (use :func:`beit3_lightning.inference.load_model` to build one).

    Attributes:
        model: the plain head model (``Beit3ForVisualQuestionAnswering`` etc.), in eval mode.
        processor: the :class:`Beit3Processor` matching the model's image size, task and tokenizer.
        task: the dataset name of the task (``vqav2``, ``coco_captioning``, ...).
        batch_size: images / texts per forward pass.
        source: the checkpoint file the weights came from, if any.
    """

    head: ClassVar[str] = ""

    def __init__(
        self,
        model: Beit3TaskModel,
        processor: Beit3Processor,
        task: str,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        source: str | Path | None = None,
        show_progress: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model.eval()
        self.processor = processor
        self.task = task
        self.batch_size = batch_size
        self.source = str(source) if source is not None else None
        self.show_progress = show_progress
        self.device = torch.device(device)
        self.model.to(self.device)

    def __repr__(self) -> str:
        config = self.model.config
        return (
            f"{type(self).__name__}(task={self.task!r}, model={type(self.model).__name__}, "
            f"embed_dim={config.embed_dim}, layers={config.num_layers}, img_size={config.img_size}, "
            f"device={self.device}, source={self.source!r})"
        )

    def to(self, device: str | torch.device) -> Beit3Predictor:
        """Move the model to ``device``; inputs follow it."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    # ----- helpers for the task calls ------------------------------------------------------------------------
    def chunks(self, items: Sequence[T], description: str) -> Iterator[tuple[int, Sequence[T]]]:
        """``(start, slice)`` over ``items`` in steps of ``batch_size``; a progress bar when there are several."""
        starts = range(0, len(items), self.batch_size)
        show = self.show_progress and len(starts) > 1
        for start in tqdm(starts, desc=description, unit="batch", disable=not show):
            yield start, items[start : start + self.batch_size]

    def images(self, images: ImageInput) -> list[Any]:
        """Validated list of single images (paths are opened chunk by chunk, later)."""
        return self.processor.image_list(images)

    def texts(self, text: TextInput) -> list[str]:
        """Validated list of strings."""
        return self.processor.text_list(text)

    @property
    def dtype(self) -> torch.dtype:
        """The model's floating-point type (``load_model(..., dtype=torch.bfloat16)``); images are cast to it.

        ONNX Runtime models have no parameters: they state the type of their image input (``input_dtype``)."""
        fixed = getattr(self.model, "input_dtype", None)
        return fixed if fixed is not None else next(self.model.parameters()).dtype

    def batch(self, **inputs: Any) -> dict[str, torch.Tensor]:
        """Processor output on the model's device, images in the model's dtype."""
        return {
            key: value.to(self.device, self.dtype) if value.is_floating_point() else value.to(self.device)
            for key, value in self.processor(**inputs).items()
        }

    def _wrong_call(self, call: str) -> WrongTaskError:
        spec = HEADS.get(self.head)
        what, calls = (spec.description, spec.calls) if spec is not None else ("a model", "its own methods")
        return WrongTaskError(
            f"{call}() does not fit this predictor: it holds {what} (task {self.task!r}); use "
            f"{calls}. Load a checkpoint fine-tuned for the task you need."
        )

    # ----- the task calls (overridden by the subclass of the matching task) ----------------------------------
    def classify(self, images: ImageInput, top_k: int = 5, labels: Sequence[str] | None = None) -> list:
        """ImageNet-style classification; see :class:`ImageClassificationPredictor`."""
        raise self._wrong_call("classify")

    def answer(self, images: ImageInput, questions: TextInput, top_k: int | None = None) -> list:
        """Visual question answering; see :class:`VQAPredictor`."""
        raise self._wrong_call("answer")

    def verify(self, image_a: ImageInput, image_b: ImageInput, statement: TextInput) -> list[tuple[bool, float]]:
        """NLVR2 statement verification; see :class:`NLVR2Predictor`."""
        raise self._wrong_call("verify")

    def caption(self, images: ImageInput, num_beams: int | None = None, max_len: int | None = None) -> list[str]:
        """Image captioning; see :class:`CaptioningPredictor`."""
        raise self._wrong_call("caption")

    def encode_image(self, images: ImageInput) -> torch.Tensor:
        """Image embeddings; see :class:`RetrievalPredictor`."""
        raise self._wrong_call("encode_image")

    def encode_text(self, texts: TextInput) -> torch.Tensor:
        """Text embeddings; see :class:`RetrievalPredictor`."""
        raise self._wrong_call("encode_text")

    def rank(self, images: ImageInput, texts: TextInput, top_k: int = 5) -> Any:
        """Image-text ranking; see :class:`RetrievalPredictor`."""
        raise self._wrong_call("rank")

    def segment(self, images: ImageInput) -> list:
        """Semantic segmentation; see :class:`SegmentationPredictor`."""
        raise self._wrong_call("segment")
