"""Captioning indexes: ``coco_captioning.{train,val,test}.jsonl`` and ``nocaps.{val,test}.jsonl``.

As the reference ``CaptioningDataset`` builders:

* COCO train (Karpathy train + restval): one item per caption {"image_path", "text_segment": ids, "image_id": cocoid};
* COCO val/test: one item per image with ``"text_segment": null`` (generation targets come from the ground truth);
* NoCaps val/test: one item per image {"image_path": "val/<file_name>", "text_segment": null, "image_id": id}.
  NoCaps has no training split: training always uses ``coco_captioning.train.jsonl``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import (
    PathArg,
    TextEncoder,
    path_or_default,
    progress,
    read_json,
    require_fields,
    require_image,
    require_int,
    require_list,
    resolve_dirs,
    write_index_files,
)
from .karpathy import KarpathyImage, caption_ids, coco_image_path, read_karpathy

COCO_SPLITS: dict[str, tuple[str, ...]] = {"train": ("train", "restval"), "val": ("val",), "test": ("test",)}
NOCAPS_FILES: dict[str, str] = {"val": "nocaps_val_4500_captions.json", "test": "nocaps_test_image_info.json"}


def coco_captioning_items(
    images: list[KarpathyImage], split: str, tokenizer: TextEncoder, source: Path
) -> list[dict[str, Any]]:
    """Per-caption items for train, per-image items with null text for val/test."""
    items: list[dict[str, Any]] = []
    for image in progress(images, desc=f"coco_captioning {split}"):
        if image.split not in COCO_SPLITS[split]:
            continue
        cocoid = require_int(image.record, "cocoid", source, image.where)
        if split == "train":
            for ids in caption_ids(image, tokenizer, source):
                items.append({"image_path": image.image_path, "text_segment": ids, "image_id": cocoid})
        else:
            items.append({"image_path": image.image_path, "text_segment": None, "image_id": cocoid})
    return items


def build_coco_captioning_index(
    data_root: PathArg, tokenizer: TextEncoder, karpathy_path: PathArg | None = None, index_dir: PathArg | None = None
) -> list[Path]:
    """COCO captioning from ``train2014/``, ``val2014/`` and ``dataset_coco.json`` (default ``<data_root>/``)."""
    root, out_dir = resolve_dirs(data_root, index_dir)
    karpathy = path_or_default(karpathy_path, root / "dataset_coco.json")
    images = read_karpathy(karpathy, root, coco_image_path, ("filepath", "filename", "cocoid"))
    outputs = {
        out_dir / f"coco_captioning.{split}.jsonl": coco_captioning_items(images, split, tokenizer, karpathy)
        for split in COCO_SPLITS
    }
    return write_index_files(outputs)


def nocaps_items(data_root: Path, split: str, source: Path) -> list[dict[str, Any]]:
    """One item per image listed in a NoCaps image-info file."""
    items = []
    for index, record in enumerate(
        progress(require_list(read_json(source, "NoCaps file"), "images", source), "nocaps")
    ):
        where = f"images[{index}]"
        require_fields(record, ("id", "file_name"), source, where)
        image_id = require_int(record, "id", source, where)
        image_path = f"{split}/{record['file_name']}"
        require_image(data_root, image_path, source, f"{where} (id {image_id})")
        items.append({"image_path": image_path, "text_segment": None, "image_id": image_id})
    return items


def build_nocaps_index(data_root: PathArg, index_dir: PathArg | None = None) -> list[Path]:
    """NoCaps val/test from ``val/``, ``test/``, ``nocaps_val_4500_captions.json``, ``nocaps_test_image_info.json``."""
    root, out_dir = resolve_dirs(data_root, index_dir)
    outputs = {
        out_dir / f"nocaps.{split}.jsonl": nocaps_items(root, split, root / file_name)
        for split, file_name in NOCAPS_FILES.items()
    }
    return write_index_files(outputs)
