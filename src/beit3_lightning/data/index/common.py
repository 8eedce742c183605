"""Shared pieces of the index builders: the error type, validated readers, atomic JSONL writing, tokenizing."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from tqdm import tqdm

from beit3_lightning.atomic_files import temp_file_beside

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


def read_json_lines(path: Path, what: str, remedy: str = "re-download it") -> list[tuple[int, dict[str, Any]]]:
    """Load a JSON-lines file as (1-based line number, record) pairs, skipping blank lines.

    ``remedy`` ends the message of a line that is not UTF-8 or not JSON (index files say how to rebuild them).
    """
    if not path.is_file():
        raise DatasetFormatError(f"{what} not found: {path}. Download it or pass its location (see --help).")
    records = []
    # Bytes, decoded line by line: a text-mode reader raises UnicodeDecodeError with a byte offset in its read
    # buffer, not the line, so a stray non-UTF-8 byte could not be found in a large file.
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DatasetFormatError(
                    f"{path}, line {number}: not UTF-8 (byte {raw[err.start]:#04x} at column {err.start + 1}); "
                    f"the {what} must be UTF-8 JSON lines: {remedy}."
                ) from err
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DatasetFormatError(f"{path}, line {number}: not valid JSON ({err}); {remedy}.") from err
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


def path_leaves_root(relative_path: str) -> bool:
    """True when ``relative_path`` is absolute or climbs above its root with ``..`` (a lexical check, no I/O)."""
    if os.path.isabs(relative_path):
        return True
    if os.pardir not in relative_path:  # the common case, without normpath's cost on million-line indexes
        return False
    normal = os.path.normpath(relative_path)
    return normal == os.pardir or normal.startswith(os.pardir + os.sep)


def require_int(record: Mapping[str, Any], field: str, source: Path, where: str) -> int:
    """``record[field]`` as an int: JSON integers and decimal digit strings; floats, bools and words are refused.

    ``int()`` alone would raise a ValueError naming neither file nor record, and would silently truncate 42.5.
    """
    value = record[field]
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]+\s*", value):
        return int(value)
    raise DatasetFormatError(
        f"{source}, {where}: {field} {value!r} is not an integer; the official files use integer ids, "
        "is this the right (unmodified) file?"
    )


def require_image(data_root: Path, relative_path: str, source: Path, where: str) -> None:
    """The image a record points to must exist under ``data_root`` (and not outside it)."""
    if path_leaves_root(relative_path):
        raise DatasetFormatError(
            f"{source}, {where}: image path {relative_path!r} points outside the data root {data_root}; "
            "file names in the raw files must be relative to it."
        )
    if not (data_root / relative_path).is_file():
        raise DatasetFormatError(
            f"{source}, {where}: image {data_root / relative_path} does not exist; check --data-root and that the "
            f"images were extracted in the official layout."
        )


def encode_text(tokenizer: TextEncoder, text: Any, source: Path, where: str) -> list[int]:
    """Token ids of a question/caption/sentence; an empty or non-string text is a format error."""
    if not isinstance(text, str):
        raise DatasetFormatError(f"{source}, {where}: expected a text string, got {type(text).__name__}.")
    try:
        ids = tokenizer.encode_ids(text)
    except ValueError as err:  # e.g. a lone surrogate from a "\ud800" escape in the raw JSON
        raise DatasetFormatError(f"{source}, {where}: {err}.") from err
    if not ids:
        raise DatasetFormatError(f"{source}, {where}: empty text {text!r}; fix or remove this record.")
    return ids


def write_jsonl_atomic(path: Path, items: Iterable[Mapping[str, Any]]) -> Path:
    """Write JSON lines to a temp file next to ``path`` then ``os.replace`` it: no half-written index on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = temp_file_beside(path)
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
