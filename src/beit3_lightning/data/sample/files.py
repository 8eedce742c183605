"""Byte-stable writers for the sample generators (same input, same bytes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image


def save_image(image: Image.Image, path: Path, quality: int = 92) -> None:
    """Save as JPEG (no chroma subsampling, so 16-px colour cells stay clean) or PNG, chosen by the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in {".jpg", ".jpeg"}:
        image.save(path, format="JPEG", quality=quality, subsampling=0)
    else:
        image.save(path, format="PNG", optimize=False)


def write_json(path: Path, data: Any) -> None:
    """One JSON document (the official annotation files are single documents)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def write_json_lines(path: Path, records: list[dict[str, Any]]) -> None:
    """JSON lines (the lil-lab NLVR2 ``*.json`` files are one record per line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def coco_file_name(split: str, image_id: int) -> str:
    """``COCO_train2014_000000000042.jpg``."""
    return f"COCO_{split}_{image_id:012d}.jpg"
