"""Reading Karpathy split files (``dataset_coco.json``, ``dataset_flickr30k.json``) for captioning and retrieval."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import (
    DatasetFormatError,
    TextEncoder,
    encode_text,
    progress,
    read_json,
    require_fields,
    require_image,
    require_list,
)

KARPATHY_SPLITS = ("train", "restval", "val", "test")


@dataclass(frozen=True)
class KarpathyImage:
    """One validated Karpathy image record: where it is, its split, its raw record and its position in the file."""

    where: str
    image_path: str
    split: str
    record: dict[str, Any]


def read_karpathy(
    path: Path, data_root: Path, image_path: Callable[[dict[str, Any]], str], required: Sequence[str]
) -> list[KarpathyImage]:
    """Validate every image record (required fields, known split, image file present) before anything is built."""
    images = require_list(read_json(path, "Karpathy split file"), "images", path)
    checked = []
    for index, record in enumerate(progress(images, desc=f"check {path.name}")):
        where = f"images[{index}]"
        require_fields(record, ("split", "sentences", *required), path, where)
        where = f"images[{index}] ({record.get('filename', '?')})"
        if record["split"] not in KARPATHY_SPLITS:
            raise DatasetFormatError(
                f"{path}, {where}: split {record['split']!r} is not one of {', '.join(KARPATHY_SPLITS)}."
            )
        if not isinstance(record["sentences"], list):
            raise DatasetFormatError(f"{path}, {where}: 'sentences' must be a list of {{'raw': ...}} objects.")
        relative = image_path(record)
        require_image(data_root, relative, path, where)
        checked.append(KarpathyImage(where, relative, record["split"], record))
    return checked


def caption_ids(image: KarpathyImage, tokenizer: TextEncoder, source: Path) -> Iterator[list[int]]:
    """Token ids of each ``sentences[k].raw`` of one image."""
    for k, sentence in enumerate(image.record["sentences"]):
        where = f"{image.where}.sentences[{k}]"
        require_fields(sentence, ("raw",), source, where)
        yield encode_text(tokenizer, sentence["raw"], source, where)


def coco_image_path(record: dict[str, Any]) -> str:
    """``<filepath>/<filename>`` (e.g. ``val2014/COCO_val2014_000000391895.jpg``)."""
    return f"{record['filepath']}/{record['filename']}"


def flickr_image_path(record: dict[str, Any]) -> str:
    """``flickr30k-images/<filename>``."""
    return f"flickr30k-images/{record['filename']}"
