"""Helpers for the index builder tests: tiny images, JSON writers and a tokenizer with hand-computable ids."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image


class WordLengthTokenizer:
    """Token id = length of each whitespace word: ``"how many dogs?"`` -> ``[3, 4, 5]``."""

    def encode_ids(self, text: str) -> list[int]:
        return [len(word) for word in text.split()]


def write_image(path: Path, suffix_format: str = "PNG") -> Path:
    """A 4x4 image at ``path`` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (10, 20, 30)).save(path, format=suffix_format)
    return path


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def write_json_lines(path: Path, records: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
