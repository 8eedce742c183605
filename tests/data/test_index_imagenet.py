"""ImageNet index builder on a hand-made ImageFolder."""

from __future__ import annotations

from pathlib import Path

import pytest
from index_fixtures import read_jsonl, write_image

from beit3_lightning.data.index.common import DatasetFormatError
from beit3_lightning.data.index.imagenet import build_imagenet_index


def _imagefolder(root: Path) -> None:
    write_image(root / "train" / "n02" / "b.JPEG", "JPEG")
    write_image(root / "train" / "n02" / "a.JPEG", "JPEG")
    write_image(root / "train" / "n01" / "z.png")
    (root / "train" / "n01" / "notes.txt").write_text("not an image")
    write_image(root / "val" / "n02" / "v1.JPEG", "JPEG")
    write_image(root / "val" / "n01" / "v0.jpg", "JPEG")


def test_imagenet_index_fields_order_and_labels(tmp_path: Path) -> None:
    _imagefolder(tmp_path)
    written = build_imagenet_index(tmp_path)
    assert [p.name for p in written] == ["imagenet.train.index.jsonl", "imagenet.val.index.jsonl"]
    # Classes sorted (n01 -> 0, n02 -> 1), files sorted within a class, non-images skipped.
    assert read_jsonl(tmp_path / "imagenet.train.index.jsonl") == [
        {"image_path": "train/n01/z.png", "label": 0},
        {"image_path": "train/n02/a.JPEG", "label": 1},
        {"image_path": "train/n02/b.JPEG", "label": 1},
    ]
    assert read_jsonl(tmp_path / "imagenet.val.index.jsonl") == [
        {"image_path": "val/n01/v0.jpg", "label": 0},
        {"image_path": "val/n02/v1.JPEG", "label": 1},
    ]


def test_imagenet_index_dir_option(tmp_path: Path) -> None:
    _imagefolder(tmp_path / "raw")
    build_imagenet_index(tmp_path / "raw", index_dir=tmp_path / "indexes")
    assert sorted(p.name for p in (tmp_path / "indexes").iterdir()) == [
        "imagenet.train.index.jsonl",
        "imagenet.val.index.jsonl",
    ]
    assert not list((tmp_path / "raw").glob("*.jsonl"))


def test_imagenet_missing_train_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError, match="ImageNet folder not found.*train"):
        build_imagenet_index(tmp_path)


def test_imagenet_val_class_unknown_to_train_leaves_no_file(tmp_path: Path) -> None:
    _imagefolder(tmp_path)
    write_image(tmp_path / "val" / "n99" / "x.png")
    with pytest.raises(DatasetFormatError, match="n99"):
        build_imagenet_index(tmp_path)
    assert list(tmp_path.glob("*.jsonl")) == [] and list(tmp_path.glob(".*tmp")) == []


def test_imagenet_empty_train_class(tmp_path: Path) -> None:
    _imagefolder(tmp_path)
    (tmp_path / "train" / "n03").mkdir()
    with pytest.raises(DatasetFormatError, match="n03.*no image files"):
        build_imagenet_index(tmp_path)
