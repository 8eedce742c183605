"""Pretraining index: ``pretrain.{images,texts,pairs}.{train,val}.jsonl`` from a folder of raw pretraining data.

Raw layout under ``--data-root`` (each part optional, at least one present):

* ``images/``: unlabeled images, any depth (jpg, jpeg, png, webp, bmp, ...), for masked image modelling;
* ``texts/``: ``*.txt`` (one document per line) and ``*.jsonl`` (``{"text": ...}`` per line), for masked language
  modelling; a document longer than ``text_chunk_tokens`` tokens becomes several consecutive chunks;
* ``pairs.jsonl``: ``{"image_path": <path under the root>, "text": <caption>}`` per line (``image`` / ``caption``
  are accepted too), for masked modelling of image-text pairs.

A seeded random ``val_fraction`` of each kind (at least one record when there are two or more; pairs are held out by
image, so all captions of a validation picture are in ``val``) is held out as the ``val`` split. With a visual
tokenizer, every image's code ids (at the model resolution, resized without augmentation) are added as
``visual_tokens``, so training does not run the tokenizer; such runs train without crop / flip augmentation (the
codes belong to the unaugmented image).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

from .common import (
    DatasetFormatError,
    PathArg,
    TextEncoder,
    encode_text,
    progress,
    read_json_lines,
    require_image,
    resolve_dirs,
    write_index_files,
)
from .imagenet import IMAGE_EXTENSIONS

__all__ = ["DEFAULT_TEXT_CHUNK_TOKENS", "build_pretrain_index", "chunk_tokens", "find_images"]

# Tokens per text chunk: a 64-token text segment holds bos + 62 tokens + eos.
DEFAULT_TEXT_CHUNK_TOKENS = 62
RAW_LAYOUT = (
    'images/ (unlabeled images, any depth), texts/*.txt (one document per line) or texts/*.jsonl ({"text"}), '
    'pairs.jsonl ({"image_path", "text"} per line)'
)


def find_images(folder: PathArg) -> list[Path]:
    """Image files under ``folder`` (recursively, following links; extensions of :data:`IMAGE_EXTENSIONS` in any
    case), sorted by relative path so the order does not depend on the filesystem."""
    folder = Path(folder)
    found = [
        Path(dirpath) / name
        for dirpath, _, names in os.walk(folder, followlinks=True)
        for name in names
        if name.lower().endswith(IMAGE_EXTENSIONS)
    ]
    return sorted(found, key=lambda path: path.relative_to(folder).as_posix())


def chunk_tokens(ids: list[int], size: int) -> list[list[int]]:
    """Consecutive chunks of at most ``size`` ids (the last one may be shorter)."""
    if size < 1:
        raise ValueError(f"text chunk size must be >= 1, got {size}")
    return [ids[start : start + size] for start in range(0, len(ids), size)]


def _read_documents(folder: Path) -> list[tuple[Path, int, str]]:
    """(file, line, text) of every non-empty document in ``texts/``."""
    documents: list[tuple[Path, int, str]] = []
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".txt", ".jsonl") and p.is_file())
    if not files:
        raise DatasetFormatError(f"{folder} holds no *.txt or *.jsonl text files")
    for path in files:
        if path.suffix == ".jsonl":
            for line, record in read_json_lines(path, "pretraining text file", remedy="fix or remove that line"):
                if not isinstance(record.get("text"), str):
                    raise DatasetFormatError(f'{path}, line {line}: expected {{"text": <string>}}, got {record}')
                if record["text"].strip():
                    documents.append((path, line, record["text"]))
            continue
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as err:
            raise DatasetFormatError(f"{path} is not UTF-8 text ({err}); convert it to UTF-8") from err
        documents += [(path, number, text) for number, text in enumerate(lines, 1) if text.strip()]
    return documents


def _pair_records(root: Path, path: Path, tokenizer: TextEncoder, max_tokens: int) -> list[dict[str, Any]]:
    records = []
    for line, record in progress(read_json_lines(path, "pretraining pairs file", remedy="fix that line"), "pairs"):
        image = record.get("image_path", record.get("image"))
        text = record.get("text", record.get("caption"))
        if not isinstance(image, str) or text is None:
            raise DatasetFormatError(
                f'{path}, line {line}: expected {{"image_path": <path under the root>, "text": <caption>}}, '
                f"got keys {sorted(record)}"
            )
        require_image(root, image, path, f"line {line}")
        ids = encode_text(tokenizer, text, path, f"line {line}")
        records.append({"image_path": image, "text_segment": ids[:max_tokens]})
    return records


def _split(records: list[dict[str, Any]], val_fraction: float, rng: random.Random) -> tuple[list, list]:
    """(train, val): a seeded random ``val_fraction`` held out (>= 1 group when there are >= 2).

    Records that share an image (several captions of one picture) form one group and stay on one side, so the
    validation images are never trained on."""
    groups: dict[Any, list[int]] = {}
    for i, record in enumerate(records):
        groups.setdefault(record.get("image_path", i), []).append(i)
    if len(groups) < 2 or val_fraction <= 0:
        return records, []
    keys = list(groups)
    rng.shuffle(keys)
    num_val = max(1, round(val_fraction * len(keys)))
    held = {i for key in keys[:num_val] for i in groups[key]}
    return [r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held]


def build_pretrain_index(
    data_root: PathArg,
    tokenizer: TextEncoder,
    index_dir: PathArg | None = None,
    val_fraction: float = 0.05,
    text_chunk_tokens: int = DEFAULT_TEXT_CHUNK_TOKENS,
    seed: int = 0,
    visual_tokenizer: str | None = None,
    img_size: int | None = None,
) -> list[Path]:
    """Write the pretraining index files of every kind present under ``data_root``; returns their paths."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    root, out_dir = resolve_dirs(data_root, index_dir)
    if not root.is_dir():
        raise DatasetFormatError(f"pretraining data root {root} does not exist")
    kinds: dict[str, list[dict[str, Any]]] = {}
    if (root / "images").is_dir():
        images = find_images(root / "images")
        if not images:
            raise DatasetFormatError(f"{root / 'images'} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
        kinds["images"] = [{"image_path": path.relative_to(root).as_posix()} for path in images]
    if (root / "texts").is_dir():
        texts = []
        for path, line, text in progress(_read_documents(root / "texts"), "texts"):
            ids = encode_text(tokenizer, text, path, f"line {line}")
            texts += [{"text_segment": chunk} for chunk in chunk_tokens(ids, text_chunk_tokens)]
        kinds["texts"] = texts
    if (root / "pairs.jsonl").is_file():
        kinds["pairs"] = _pair_records(root, root / "pairs.jsonl", tokenizer, text_chunk_tokens)
    if not kinds:
        raise DatasetFormatError(f"{root} holds no pretraining data; expected {RAW_LAYOUT}")
    if visual_tokenizer is not None:
        from .visual_tokens import add_visual_tokens  # torch + the tokenizer: only for this option

        for kind in ("images", "pairs"):
            if kind in kinds:
                add_visual_tokens(kinds[kind], root, visual_tokenizer, img_size)
    outputs: dict[Path, list[dict[str, Any]]] = {}
    for kind, records in kinds.items():
        train, val = _split(records, val_fraction, random.Random(f"{seed}-{kind}"))
        outputs[out_dir / f"pretrain.{kind}.train.jsonl"] = train
        outputs[out_dir / f"pretrain.{kind}.val.jsonl"] = val
    return write_index_files(outputs)
