"""Shared index helpers: atomic JSONL writing and validated readers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from index_fixtures import read_jsonl

from beit3_lightning.data.index.common import (
    DatasetFormatError,
    encode_text,
    read_json,
    require_fields,
    write_jsonl_atomic,
)


def test_atomic_write_replaces_content(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "x.jsonl"
    write_jsonl_atomic(path, [{"a": 1}, {"b": None}])
    assert path.read_text() == '{"a": 1}\n{"b": null}\n'
    write_jsonl_atomic(path, [{"c": [1, 2]}])
    assert read_jsonl(path) == [{"c": [1, 2]}]


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    write_jsonl_atomic(path, [{"old": True}])

    def failing() -> Iterator[dict[str, int]]:
        yield {"new": 1}
        raise DatasetFormatError("bad record")

    with pytest.raises(DatasetFormatError, match="bad record"):
        write_jsonl_atomic(path, failing())
    assert read_jsonl(path) == [{"old": True}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.jsonl"]


def test_dataset_format_error_is_a_value_error() -> None:
    assert issubclass(DatasetFormatError, ValueError)


def test_require_fields_names_file_record_and_fields(tmp_path: Path) -> None:
    source = tmp_path / "a.json"
    require_fields({"x": 1, "y": 2}, ("x", "y"), source, "line 3")
    with pytest.raises(DatasetFormatError, match=r"a\.json, line 3: missing required field\(s\) y, z"):
        require_fields({"x": 1}, ("x", "y", "z"), source, "line 3")
    with pytest.raises(DatasetFormatError, match=r"a\.json, line 4: expected a JSON object, got list"):
        require_fields([1], ("x",), source, "line 4")


def test_read_json_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError, match=r"Karpathy file not found: .*nope\.json"):
        read_json(tmp_path / "nope.json", "Karpathy file")
    (tmp_path / "bad.json").write_text("[1,")
    with pytest.raises(DatasetFormatError, match=r"bad\.json is not valid JSON"):
        read_json(tmp_path / "bad.json", "Karpathy file")


def test_encode_text_rejects_non_strings(tmp_path: Path) -> None:
    class Words:
        def encode_ids(self, text: str) -> list[int]:
            return [7] * len(text.split())

    assert encode_text(Words(), "a b", tmp_path / "f.json", "images[0]") == [7, 7]
    with pytest.raises(DatasetFormatError, match=r"f\.json, images\[0\]: expected a text string, got int"):
        encode_text(Words(), 5, tmp_path / "f.json", "images[0]")
