"""Semantic segmentation data: the dataset over ``<task>.{train,val}.index.jsonl``, mask loading and the collate
that pads images of different sizes (evaluation keeps each image's aspect ratio, so a batch mixes sizes).

Items are ``{"image": float32 (3, h, w), "label": int64 (H, W), "index"}``; label values are trained class ids
0..K-1 or 255 (ignored). ``reduce_zero_label`` (ADE20k) is applied when the mask is loaded, as mmseg's
``LoadAnnotations``: value 0 (unlabeled) becomes 255 and every other value v becomes v - 1 (255 stays 255).
The transforms live in :mod:`beit3_lightning.data.segmentation_transforms` (re-exported here).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from beit3_lightning.data.datasets import BadSampleError, Beit3Dataset, collate
from beit3_lightning.data.index.common import DatasetFormatError
from beit3_lightning.data.index.segmentation import IGNORE_INDEX, mask_array
from beit3_lightning.data.segmentation_transforms import SegmentationEvalTransform, SegmentationTrainTransform
from beit3_lightning.task_table import datasets_of_head

__all__ = [
    "SEGMENTATION_TASKS",
    "SegmentationDataset",
    "SegmentationEvalTransform",
    "SegmentationTrainTransform",
    "load_mask",
    "read_class_info",
    "reduce_zero_label_mask",
    "segmentation_collate",
]

SEGMENTATION_TASKS = datasets_of_head("segmentation")  # ("ade20k", "segmentation")
SegmentationTask = Literal["ade20k", "segmentation"]


def read_class_info(index_dir: str | os.PathLike[str], dataset: str) -> dict[str, Any]:
    """``<index_dir>/<dataset>.classes.json``: ``{"dataset", "classes", "reduce_zero_label", "ignore_index"}``."""
    path = os.path.join(index_dir, f"{dataset}.classes.json")
    remedy = f"build it with `beit3 prepare {dataset} --data-root <raw data>` (or use generate_sample=True)"
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{dataset} class file {path} not found; {remedy}")
    try:
        with open(path, encoding="utf-8") as file:
            info = json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetFormatError(f"{path} is not valid JSON ({err}); {remedy}") from err
    classes = info.get("classes") if isinstance(info, dict) else None
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise DatasetFormatError(f"{path}: needs a non-empty list of class names under 'classes'; {remedy}")
    if not isinstance(info.get("reduce_zero_label"), bool) or info.get("ignore_index") != IGNORE_INDEX:
        raise DatasetFormatError(
            f"{path}: needs 'reduce_zero_label' (true/false) and 'ignore_index' {IGNORE_INDEX}; {remedy}"
        )
    return info


def reduce_zero_label_mask(mask: np.ndarray) -> np.ndarray:
    """mmseg ``reduce_zero_label`` on a uint8 mask: 0 → 255, v → v - 1, 255 → 255."""
    reduced = mask - np.uint8(1)  # uint8 arithmetic wraps 0 to 255
    reduced[mask == IGNORE_INDEX] = IGNORE_INDEX
    return reduced


def load_mask(path: str | os.PathLike[str], reduce_zero_label: bool) -> np.ndarray:
    """The (H, W) uint8 class ids of a single-channel PNG; BadSampleError naming the file when it cannot be used."""
    try:
        with Image.open(path) as image:
            mask = mask_array(image, path)
    except ValueError as err:  # a colour mask: the message already names the file
        raise BadSampleError(f"{err}.") from err
    except (OSError, Image.DecompressionBombError) as err:
        raise BadSampleError(f"Cannot load mask {path}: {type(err).__name__}: {err}.") from err
    return reduce_zero_label_mask(mask) if reduce_zero_label else mask


class SegmentationDataset(Beit3Dataset):
    """ADE20k or a user's own segmentation folders: ``{"image", "label"}`` per image (val and test read the val
    index). ``transform`` is a :class:`SegmentationTrainTransform` or :class:`SegmentationEvalTransform`, called with
    ``(image, mask)``. Class names and ``reduce_zero_label`` come from ``<task>.classes.json`` in ``index_dir``.
    """

    required_fields = ("image_path", "mask_path")
    text_field = None

    def __init__(self, root: str, split: str, *args: Any, task: SegmentationTask = "ade20k", **kwargs: Any) -> None:
        if task not in SEGMENTATION_TASKS:
            raise ValueError(f"Unknown segmentation task {task!r}; choose one of {SEGMENTATION_TASKS}")
        self.task = task
        self.split_files = {
            "train": [f"{task}.train.index.jsonl"],
            "val": [f"{task}.val.index.jsonl"],
            "test": [f"{task}.val.index.jsonl"],
        }
        index_dir = kwargs.get("index_dir") or root
        self.class_info = read_class_info(index_dir, task)
        self.class_names: list[str] = list(self.class_info["classes"])
        self.reduce_zero_label: bool = self.class_info["reduce_zero_label"]
        super().__init__(root, split, *args, **kwargs)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _validate(self, record: dict[str, Any], where: str) -> None:
        super()._validate(record, where)
        self._check_image_path(record, "mask_path", where)

    def load_label(self, relative_path: str, index: int) -> np.ndarray:
        """The item's trained class ids (0..K-1, 255); BadSampleError naming the file and index line."""
        path = os.path.join(self.root, relative_path)
        try:
            mask = load_mask(path, self.reduce_zero_label)
        except BadSampleError as err:
            raise BadSampleError(f"{str(err).rstrip('.')} (from {self.source_of(index)}).") from err.__cause__
        bad = mask[(mask >= self.num_classes) & (mask != IGNORE_INDEX)]
        if bad.size:  # changed since `beit3 prepare` checked it; would be a device-side assert in the loss
            raise BadSampleError(
                f"Mask {path} (from {self.source_of(index)}) has class id {int(bad[0])} but {self.task} has "
                f"{self.num_classes} classes (ids 0..{self.num_classes - 1}, {IGNORE_INDEX} = ignore)."
            )
        return mask

    def build_item(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        image = self.load_image(record["image_path"], index)
        mask = self.load_label(record["mask_path"], index)
        if mask.shape != (image.height, image.width):
            raise BadSampleError(
                f"Mask {os.path.join(self.root, record['mask_path'])} is {mask.shape[1]}x{mask.shape[0]} but its image "
                f"is {image.width}x{image.height} (from {self.source_of(index)})."
            )
        image_tensor, label = self.transform(image, mask)
        return {"image": image_tensor, "label": label}


def _pad_to(tensors: Sequence[torch.Tensor], value: float) -> torch.Tensor:
    """Stack tensors of shape (..., h, w), padding each bottom / right to the largest h and w with ``value``."""
    height = max(t.shape[-2] for t in tensors)
    width = max(t.shape[-1] for t in tensors)
    return torch.stack([F.pad(t, (0, width - t.shape[-1], 0, height - t.shape[-2]), value=value) for t in tensors])


def segmentation_collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """:func:`~beit3_lightning.data.datasets.collate`, with ``image`` and ``label`` padded to the batch's largest
    height and width (image 0 = the mean colour after normalisation, label 255 = ignored) and their valid sizes in
    ``image_hw`` / ``label_hw`` (LongTensor (B, 2): height, width). Same-size items are plainly stacked."""
    if not batch:
        raise ValueError("segmentation_collate got an empty batch")
    images = [item["image"] for item in batch]
    labels = [item["label"] for item in batch]
    merged = collate([{k: v for k, v in item.items() if k not in ("image", "label")} for item in batch])
    merged["image"] = _pad_to(images, 0.0)
    merged["label"] = _pad_to(labels, IGNORE_INDEX)
    merged["image_hw"] = torch.tensor([list(t.shape[-2:]) for t in images], dtype=torch.long)
    merged["label_hw"] = torch.tensor([list(t.shape[-2:]) for t in labels], dtype=torch.long)
    return merged
