"""Shared pieces of the index builders: the error type, validated readers, atomic JSONL writing, tokenizing."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from tqdm import tqdm

T = TypeVar("T")
PathArg = str | os.PathLike[str]


class DatasetFormatError(ValueError):
    """Raw dataset files do not match the official format (missing file/field, malformed record)."""


class TextEncoder(Protocol):
    """What the builders need from a tokenizer (``Beit3Tokenizer`` satisfies it)."""

    def encode_ids(self, text: str) -> list[int]: ...


def resolve_dirs(data_root: PathArg, index_dir: PathArg | None) -> tuple[Path, Path]:
    """(data root, output directory); the indexes go next to the raw data unless ``index_dir`` is given."""
    root = Path(data_root)
    return root, Path(index_dir) if index_dir is not None else root


def path_or_default(path: PathArg | None, default: Path) -> Path:
    """``path`` as a Path, or ``default`` when it was not given."""
    return Path(path) if path is not None else default


def progress(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """tqdm over records; quiet when stderr is not a terminal so logs/tests stay clean."""
    return iter(tqdm(items, desc=desc, total=total, unit="rec", leave=False, mininterval=0.5, disable=None))


def read_json(path: Path, what: str) -> Any:
    """Load one JSON document, raising DatasetFormatError that names the file and says what it should be."""
    if not path.is_file():
        raise DatasetFormatError(f"{what} not found: {path}. Download it or pass its location (see --help).")
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetFormatError(f"{path} is not valid JSON ({err}); re-download the {what}.") from err


def read_json_lines(path: Path, what: str) -> list[tuple[int, dict[str, Any]]]:
    """Load a JSON-lines file as (1-based line number, record) pairs, skipping blank lines."""
    if not path.is_file():
        raise DatasetFormatError(f"{what} not found: {path}. Download it or pass its location (see --help).")
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DatasetFormatError(f"{path}, line {number}: not valid JSON ({err}).") from err
            if not isinstance(record, dict):
                raise DatasetFormatError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}.")
            records.append((number, record))
    return records


def require_list(document: Any, key: str, source: Path) -> list[Any]:
    """``document[key]`` must be a list (e.g. ``"questions"``, ``"images"``)."""
    if not isinstance(document, dict) or not isinstance(document.get(key), list):
        raise DatasetFormatError(f"{source}: expected a JSON object with a list under {key!r}; is this the right file?")
    return document[key]


def require_fields(record: Any, fields: Sequence[str], source: Path, where: str) -> None:
    """Every field must be present in ``record``; ``where`` says which record (e.g. "line 3", "images[12]")."""
    if not isinstance(record, Mapping):
        raise DatasetFormatError(f"{source}, {where}: expected a JSON object, got {type(record).__name__}.")
    missing = [f for f in fields if f not in record]
    if missing:
        raise DatasetFormatError(
            f"{source}, {where}: missing required field(s) {', '.join(missing)}; the official format has "
            f"{', '.join(fields)}."
        )


def require_image(data_root: Path, relative_path: str, source: Path, where: str) -> None:
    """The image a record points to must exist under ``data_root``."""
    if not (data_root / relative_path).is_file():
        raise DatasetFormatError(
            f"{source}, {where}: image {data_root / relative_path} does not exist; check --data-root and that the "
            f"images were extracted in the official layout."
        )


def encode_text(tokenizer: TextEncoder, text: Any, source: Path, where: str) -> list[int]:
    """Token ids of a question/caption/sentence; an empty or non-string text is a format error."""
    if not isinstance(text, str):
        raise DatasetFormatError(f"{source}, {where}: expected a text string, got {type(text).__name__}.")
    ids = tokenizer.encode_ids(text)
    if not ids:
        raise DatasetFormatError(f"{source}, {where}: empty text {text!r}; fix or remove this record.")
    return ids


def write_jsonl_atomic(path: Path, items: Iterable[Mapping[str, Any]]) -> Path:
    """Write JSON lines to a temp file next to ``path`` then ``os.replace`` it: no half-written index on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            for item in items:
                out.write(json.dumps(item) + "\n")
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path


def write_index_files(outputs: Mapping[Path, Sequence[Mapping[str, Any]]]) -> list[Path]:
    """Write several index files only after all of them were built, so a bad record leaves no partial set."""
    return [write_jsonl_atomic(path, items) for path, items in outputs.items()]
