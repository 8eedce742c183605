"""NLVR2 index builder on hand-written lil-lab JSON lines."""

from __future__ import annotations

from pathlib import Path

import pytest
from index_fixtures import WordLengthTokenizer, read_jsonl, write_image, write_json_lines

from beit3_lightning.data.index.common import DatasetFormatError
from beit3_lightning.data.index.nlvr2 import build_nlvr2_index

RECORDS = {
    "train": [
        {"identifier": "train-10171-0-0", "sentence": "One dog.", "label": "True", "directory": 7},
        {"identifier": "train-10171-0-1", "sentence": "Two big dogs", "label": "False", "directory": 7},
    ],
    "dev": [{"identifier": "dev-850-2-3", "sentence": "No cats here", "label": "False"}],
    "test1": [{"identifier": "test1-12-0-0", "sentence": "A cat", "label": "True"}],
}
IMAGES = [
    "images/train/7/train-10171-0-img0.png",
    "images/train/7/train-10171-0-img1.png",
    "dev/dev-850-2-img0.png",
    "dev/dev-850-2-img1.png",
    "test1/test1-12-0-img0.png",
    "test1/test1-12-0-img1.png",
]


def make_nlvr2(root: Path) -> Path:
    for split, records in RECORDS.items():
        write_json_lines(root / "nlvr" / "nlvr2" / "data" / f"{split}.json", records)
    for image in IMAGES:
        write_image(root / image)
    return root


def test_nlvr2_items_field_by_field(tmp_path: Path) -> None:
    written = build_nlvr2_index(make_nlvr2(tmp_path), WordLengthTokenizer())
    assert [p.name for p in written] == ["nlvr2.train.index.jsonl", "nlvr2.dev.index.jsonl", "nlvr2.test-P.index.jsonl"]
    assert read_jsonl(tmp_path / "nlvr2.train.index.jsonl") == [
        {
            "image_path": "images/train/7/train-10171-0-img0.png",
            "image2_path": "images/train/7/train-10171-0-img1.png",
            "text_segment": [3, 4],
            "label": 1,
            "identifier": "train-10171-0-0",
        },
        {
            "image_path": "images/train/7/train-10171-0-img0.png",
            "image2_path": "images/train/7/train-10171-0-img1.png",
            "text_segment": [3, 3, 4],
            "label": 0,
            "identifier": "train-10171-0-1",
        },
    ]
    assert read_jsonl(tmp_path / "nlvr2.dev.index.jsonl") == [
        {
            "image_path": "dev/dev-850-2-img0.png",
            "image2_path": "dev/dev-850-2-img1.png",
            "text_segment": [2, 4, 4],
            "label": 0,
            "identifier": "dev-850-2-3",
        }
    ]
    assert read_jsonl(tmp_path / "nlvr2.test-P.index.jsonl")[0]["image2_path"] == "test1/test1-12-0-img1.png"


def test_nlvr2_custom_repo_and_index_dir(tmp_path: Path) -> None:
    make_nlvr2(tmp_path / "data")
    (tmp_path / "data" / "nlvr").rename(tmp_path / "nlvr-clone")
    build_nlvr2_index(
        tmp_path / "data", WordLengthTokenizer(), nlvr_repo=tmp_path / "nlvr-clone", index_dir=tmp_path / "out"
    )
    assert len(read_jsonl(tmp_path / "out" / "nlvr2.train.index.jsonl")) == 2


def test_nlvr2_missing_second_image(tmp_path: Path) -> None:
    make_nlvr2(tmp_path)
    (tmp_path / "dev" / "dev-850-2-img1.png").unlink()
    with pytest.raises(DatasetFormatError, match=r"dev\.json, line 1 \(identifier dev-850-2-3\).*dev-850-2-img1\.png"):
        build_nlvr2_index(tmp_path, WordLengthTokenizer())
    assert list(tmp_path.glob("*.jsonl")) == []


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        (
            '{"identifier": "train-1-0-0", "label": "True"}',
            r"train\.json, line 2: missing required field\(s\) sentence",
        ),
        (
            '{"identifier": "train-1-0-0", "sentence": "x", "label": "true"}',
            r"train\.json, line 2.*\"True\" or \"False\"",
        ),
        ("[1, 2]", r"train\.json, line 2: expected a JSON object"),
        ("{oops", r"train\.json, line 2: not valid JSON"),
    ],
)
def test_nlvr2_malformed_records(tmp_path: Path, bad_line: str, message: str) -> None:
    make_nlvr2(tmp_path)
    path = tmp_path / "nlvr" / "nlvr2" / "data" / "train.json"
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n" + bad_line + "\n")
    with pytest.raises(DatasetFormatError, match=message):
        build_nlvr2_index(tmp_path, WordLengthTokenizer())


def test_nlvr2_missing_annotation_file(tmp_path: Path) -> None:
    make_nlvr2(tmp_path)
    (tmp_path / "nlvr" / "nlvr2" / "data" / "test1.json").unlink()
    with pytest.raises(DatasetFormatError, match=r"not found: .*test1\.json"):
        build_nlvr2_index(tmp_path, WordLengthTokenizer())
