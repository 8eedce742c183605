"""COCO captioning, COCO/Flickr30k retrieval and NoCaps index builders on hand-written official files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from index_fixtures import WordLengthTokenizer, read_jsonl, write_image, write_json

from beit3_lightning.data.index.captioning import build_coco_captioning_index, build_nocaps_index
from beit3_lightning.data.index.common import DatasetFormatError
from beit3_lightning.data.index.retrieval import build_coco_retrieval_index, build_flickr30k_index

TOKENIZER = WordLengthTokenizer()


def _sentences(*raws: str) -> list[dict[str, Any]]:
    return [{"raw": raw, "tokens": raw.lower().split(), "sentid": k} for k, raw in enumerate(raws)]


def _coco_image(split: str, folder: str, cocoid: int, *raws: str) -> dict[str, Any]:
    return {
        "filepath": folder,
        "filename": f"COCO_{folder}_{cocoid:012d}.jpg",
        "cocoid": cocoid,
        "split": split,
        "sentences": _sentences(*raws),
    }


def make_coco(root: Path) -> Path:
    images = [
        _coco_image("train", "train2014", 9, "A dog.", "Big dog runs"),
        _coco_image("test", "val2014", 42, "A cat"),
        _coco_image("restval", "val2014", 7, "Two birds fly"),
        _coco_image("val", "val2014", 5, "One tree", "Green tree"),
        _coco_image("test", "val2014", 43, "Red car here", "A car"),
    ]
    for image in images:
        write_image(root / image["filepath"] / image["filename"], "JPEG")
    write_json(root / "dataset_coco.json", {"images": images, "dataset": "coco"})
    return root


def test_coco_retrieval_sequential_image_ids(tmp_path: Path) -> None:
    written = build_coco_retrieval_index(make_coco(tmp_path), TOKENIZER)
    assert [p.name for p in written] == [
        "coco_retrieval.train.jsonl",
        "coco_retrieval.val.jsonl",
        "coco_retrieval.test.jsonl",
    ]
    # train = train + restval in file order; image_id = index of the image within the split file.
    assert read_jsonl(tmp_path / "coco_retrieval.train.jsonl") == [
        {"image_path": "train2014/COCO_train2014_000000000009.jpg", "text_segment": [1, 4], "image_id": 0},
        {"image_path": "train2014/COCO_train2014_000000000009.jpg", "text_segment": [3, 3, 4], "image_id": 0},
        {"image_path": "val2014/COCO_val2014_000000000007.jpg", "text_segment": [3, 5, 3], "image_id": 1},
    ]
    assert read_jsonl(tmp_path / "coco_retrieval.test.jsonl") == [
        {"image_path": "val2014/COCO_val2014_000000000042.jpg", "text_segment": [1, 3], "image_id": 0},
        {"image_path": "val2014/COCO_val2014_000000000043.jpg", "text_segment": [3, 3, 4], "image_id": 1},
        {"image_path": "val2014/COCO_val2014_000000000043.jpg", "text_segment": [1, 3], "image_id": 1},
    ]
    assert [i["image_id"] for i in read_jsonl(tmp_path / "coco_retrieval.val.jsonl")] == [0, 0]


def test_coco_captioning_train_per_caption_eval_per_image(tmp_path: Path) -> None:
    written = build_coco_captioning_index(make_coco(tmp_path), TOKENIZER)
    assert [p.name for p in written] == [
        "coco_captioning.train.jsonl",
        "coco_captioning.val.jsonl",
        "coco_captioning.test.jsonl",
    ]
    assert read_jsonl(tmp_path / "coco_captioning.train.jsonl") == [
        {"image_path": "train2014/COCO_train2014_000000000009.jpg", "text_segment": [1, 4], "image_id": 9},
        {"image_path": "train2014/COCO_train2014_000000000009.jpg", "text_segment": [3, 3, 4], "image_id": 9},
        {"image_path": "val2014/COCO_val2014_000000000007.jpg", "text_segment": [3, 5, 3], "image_id": 7},
    ]
    assert read_jsonl(tmp_path / "coco_captioning.test.jsonl") == [
        {"image_path": "val2014/COCO_val2014_000000000042.jpg", "text_segment": None, "image_id": 42},
        {"image_path": "val2014/COCO_val2014_000000000043.jpg", "text_segment": None, "image_id": 43},
    ]
    assert read_jsonl(tmp_path / "coco_captioning.val.jsonl") == [
        {"image_path": "val2014/COCO_val2014_000000000005.jpg", "text_segment": None, "image_id": 5}
    ]


def test_flickr30k_index(tmp_path: Path) -> None:
    images = [
        {"filename": "100.jpg", "split": "test", "sentences": _sentences("A man", "Man walks")},
        {"filename": "200.jpg", "split": "train", "sentences": _sentences("Kids play ball")},
        {"filename": "300.jpg", "split": "train", "sentences": _sentences("A boat")},
        {"filename": "400.jpg", "split": "val", "sentences": _sentences("Sky")},
    ]
    for image in images:
        write_image(tmp_path / "flickr30k-images" / image["filename"], "JPEG")
    write_json(tmp_path / "karpathy" / "dataset_flickr30k.json", {"images": images, "dataset": "flickr30k"})
    build_flickr30k_index(tmp_path, TOKENIZER, karpathy_path=tmp_path / "karpathy" / "dataset_flickr30k.json")
    assert read_jsonl(tmp_path / "flickr30k.train.jsonl") == [
        {"image_path": "flickr30k-images/200.jpg", "text_segment": [4, 4, 4], "image_id": 0},
        {"image_path": "flickr30k-images/300.jpg", "text_segment": [1, 4], "image_id": 1},
    ]
    assert read_jsonl(tmp_path / "flickr30k.test.jsonl") == [
        {"image_path": "flickr30k-images/100.jpg", "text_segment": [1, 3], "image_id": 0},
        {"image_path": "flickr30k-images/100.jpg", "text_segment": [3, 5], "image_id": 0},
    ]
    assert read_jsonl(tmp_path / "flickr30k.val.jsonl") == [
        {"image_path": "flickr30k-images/400.jpg", "text_segment": [3], "image_id": 0}
    ]


def make_nocaps(root: Path) -> Path:
    val_images = [{"id": 0, "file_name": "aa.jpg"}, {"id": 1, "file_name": "bb.jpg"}]
    test_images = [{"id": 7, "file_name": "cc.jpg", "domain": "in-domain"}]
    annotations = [{"image_id": 0, "caption": "a thing", "id": 0}]
    write_json(root / "nocaps_val_4500_captions.json", {"images": val_images, "annotations": annotations})
    write_json(root / "nocaps_test_image_info.json", {"images": test_images})
    for split, images in (("val", val_images), ("test", test_images)):
        for image in images:
            write_image(root / split / image["file_name"], "JPEG")
    return root


def test_nocaps_index(tmp_path: Path) -> None:
    written = build_nocaps_index(make_nocaps(tmp_path))
    assert [p.name for p in written] == ["nocaps.val.jsonl", "nocaps.test.jsonl"]
    assert read_jsonl(tmp_path / "nocaps.val.jsonl") == [
        {"image_path": "val/aa.jpg", "text_segment": None, "image_id": 0},
        {"image_path": "val/bb.jpg", "text_segment": None, "image_id": 1},
    ]
    assert read_jsonl(tmp_path / "nocaps.test.jsonl") == [
        {"image_path": "test/cc.jpg", "text_segment": None, "image_id": 7}
    ]


def test_nocaps_missing_image(tmp_path: Path) -> None:
    make_nocaps(tmp_path)
    (tmp_path / "test" / "cc.jpg").unlink()
    with pytest.raises(DatasetFormatError, match=r"nocaps_test_image_info\.json, images\[0\] \(id 7\).*cc\.jpg"):
        build_nocaps_index(tmp_path)
    assert list(tmp_path.glob("*.jsonl")) == []


@pytest.mark.parametrize("builder", [build_coco_retrieval_index, build_coco_captioning_index])
def test_karpathy_bad_inputs(tmp_path: Path, builder) -> None:
    make_coco(tmp_path)
    (tmp_path / "val2014" / "COCO_val2014_000000000043.jpg").unlink()
    with pytest.raises(DatasetFormatError, match=r"dataset_coco\.json, images\[4\].*does not exist"):
        builder(tmp_path, TOKENIZER)
    make_coco(tmp_path)
    write_json(tmp_path / "dataset_coco.json", {"images": [{"filepath": "x", "filename": "y", "split": "train"}]})
    with pytest.raises(DatasetFormatError, match=r"dataset_coco\.json, images\[0\]: missing required field\(s\) sent"):
        builder(tmp_path, TOKENIZER)
    make_coco(tmp_path)
    bad_split = _coco_image("training", "train2014", 9, "A dog.")
    write_json(tmp_path / "dataset_coco.json", {"images": [bad_split]})
    with pytest.raises(DatasetFormatError, match=r"images\[0\] \(COCO_train2014_000000000009\.jpg\): split 'training'"):
        builder(tmp_path, TOKENIZER)
    (tmp_path / "dataset_coco.json").unlink()
    with pytest.raises(DatasetFormatError, match=r"not found: .*dataset_coco\.json"):
        builder(tmp_path, TOKENIZER)
    assert list(tmp_path.glob("*.jsonl")) == []


def test_caption_without_raw_text(tmp_path: Path) -> None:
    make_coco(tmp_path)
    image = _coco_image("train", "train2014", 9, "A dog.")
    image["sentences"][0].pop("raw")
    write_json(tmp_path / "dataset_coco.json", {"images": [image]})
    with pytest.raises(
        DatasetFormatError, match=r"images\[0\] \(.*\)\.sentences\[0\]: missing required field\(s\) raw"
    ):
        build_coco_retrieval_index(tmp_path, TOKENIZER)
