"""Segmentation index builders (ADE20k and a user's own folders) on the generated samples, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from index_fixtures import read_jsonl
from PIL import Image

from beit3_lightning.data.index import segmentation as seg_index
from beit3_lightning.data.index.common import DatasetFormatError
from beit3_lightning.data.index.segmentation import build_ade20k_index, build_segmentation_index
from beit3_lightning.data.sample import generate_sample_raw
from beit3_lightning.data.sample.segmentation import ADE_CLASSES, CLASSES


@pytest.fixture
def ade_raw(tmp_path: Path) -> Path:
    return generate_sample_raw("ade20k", tmp_path / "ade")


@pytest.fixture
def own_raw(tmp_path: Path) -> Path:
    return generate_sample_raw("segmentation", tmp_path / "own")


def _save_mask(path: Path, values: np.ndarray) -> None:
    Image.fromarray(values.astype(np.uint8)).save(path)


def test_ade20k_index_from_the_parent_or_the_ade_folder(ade_raw: Path, tmp_path: Path) -> None:
    written = build_ade20k_index(ade_raw)
    assert [p.name for p in written] == ["ade20k.train.index.jsonl", "ade20k.val.index.jsonl", "ade20k.classes.json"]
    train, val = read_jsonl(written[0]), read_jsonl(written[1])
    assert (len(train), len(val)) == (160, 40)
    assert train[0] == {
        "image_path": "ADEChallengeData2016/images/training/ADE_train_00000001.jpg",
        "mask_path": "ADEChallengeData2016/annotations/training/ADE_train_00000001.png",
    }
    assert [r["image_path"] for r in val] == sorted(r["image_path"] for r in val)
    assert all((ade_raw / r["image_path"]).is_file() and (ade_raw / r["mask_path"]).is_file() for r in train + val)
    info = json.loads(written[2].read_text())
    assert info == {"dataset": "ade20k", "classes": list(ADE_CLASSES), "reduce_zero_label": True, "ignore_index": 255}
    # Given the ADEChallengeData2016 folder itself, paths are relative to it; --index-dir puts the files elsewhere.
    inner = build_ade20k_index(ade_raw / "ADEChallengeData2016", index_dir=tmp_path / "idx")
    assert inner[0].parent == tmp_path / "idx"
    assert read_jsonl(inner[1])[0]["image_path"] == "images/validation/ADE_val_00000001.jpg"


def test_ade20k_without_object_info_has_150_numbered_classes(ade_raw: Path) -> None:
    (ade_raw / "ADEChallengeData2016" / "objectInfo150.txt").unlink()
    info = json.loads(build_ade20k_index(ade_raw)[2].read_text())
    assert len(info["classes"]) == 150 and info["classes"][0] == "class_1" and info["classes"][-1] == "class_150"


def test_object_info_names_are_kept_whole_and_idx_checked(tmp_path: Path) -> None:
    path = tmp_path / "objectInfo150.txt"
    path.write_text("Idx\tRatio\tTrain\tVal\tName\n1\t0.15\t11664\t1172\twall\n2\t0.1\t6046\t612\tbuilding, edifice\n")
    assert seg_index.read_object_info(path) == ["wall", "building, edifice"]
    path.write_text("Idx\tRatio\tTrain\tVal\tName\n1\t0.15\t1\t1\twall\n3\t0.1\t1\t1\tsky\n")
    with pytest.raises(DatasetFormatError, match=r"objectInfo150.txt, line 3: Idx '3' should be 2"):
        seg_index.read_object_info(path)


def test_ade20k_missing_mask_is_named_with_the_count(ade_raw: Path) -> None:
    annotations = ade_raw / "ADEChallengeData2016" / "annotations" / "training"
    (annotations / "ADE_train_00000007.png").unlink()
    (annotations / "ADE_train_00000009.png").unlink()
    with pytest.raises(DatasetFormatError) as err:
        build_ade20k_index(ade_raw)
    assert "2 images" in str(err.value) and "ADE_train_00000007.jpg, ADE_train_00000009.jpg" in str(err.value)
    assert not (ade_raw / "ade20k.train.index.jsonl").exists()


def test_ade20k_mask_without_image_is_named(ade_raw: Path) -> None:
    (ade_raw / "ADEChallengeData2016" / "images" / "validation" / "ADE_val_00000040.jpg").unlink()
    with pytest.raises(
        DatasetFormatError, match=r"1 masks in .*annotations/validation have no image in .*\(ADE_val_00000040.png\)"
    ):
        build_ade20k_index(ade_raw)


def test_ade20k_rgb_mask_is_refused(ade_raw: Path) -> None:
    mask = ade_raw / "ADEChallengeData2016" / "annotations" / "training" / "ADE_train_00000005.png"
    Image.open(mask).convert("RGB").save(mask)
    with pytest.raises(DatasetFormatError) as err:
        build_ade20k_index(ade_raw)
    assert str(mask) in str(err.value) and "single-channel class-id PNG" in str(err.value)


@pytest.mark.parametrize("pool", [False, True])
def test_ade20k_value_above_the_class_count_is_named(
    ade_raw: Path, pool: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if pool:  # the process-pool path reports the same (first) bad mask
        monkeypatch.setattr(seg_index, "POOL_MIN_MASKS", 1)
    folder = ade_raw / "ADEChallengeData2016" / "annotations" / "training"
    for number, value in ((12, 6), (30, 200)):  # 5 sample classes: values 0..5
        values = np.asarray(Image.open(folder / f"ADE_train_{number:08d}.png")).copy()
        values[3, 4] = value
        _save_mask(folder / f"ADE_train_{number:08d}.png", values)
    with pytest.raises(DatasetFormatError) as err:
        build_ade20k_index(ade_raw)
    message = str(err.value)
    assert "ADE_train_00000012.png" in message and "mask value 6 (1 pixels)" in message and "0..5" in message


def test_mask_of_another_size_than_its_image_is_refused(ade_raw: Path) -> None:
    mask = ade_raw / "ADEChallengeData2016" / "annotations" / "validation" / "ADE_val_00000003.png"
    _save_mask(mask, np.ones((10, 12)))
    with pytest.raises(DatasetFormatError, match=r"ADE_val_00000003.png: mask is 12x10 but its image .* is \d+x\d+"):
        build_ade20k_index(ade_raw)


def test_own_dataset_index_with_palette_masks(own_raw: Path) -> None:
    written = build_segmentation_index(own_raw)
    assert [p.name for p in written] == [
        "segmentation.train.index.jsonl",
        "segmentation.val.index.jsonl",
        "segmentation.classes.json",
    ]
    train = read_jsonl(written[0])
    assert len(train) == 120 and len(read_jsonl(written[1])) == 40
    assert train[:2] == [
        {"image_path": "images/train/scene_0000.png", "mask_path": "masks/train/scene_0000.png"},
        {"image_path": "images/train/scene_0001.jpg", "mask_path": "masks/train/scene_0001.png"},
    ]
    info = json.loads(written[2].read_text())
    assert info == {
        "dataset": "segmentation",
        "classes": list(CLASSES),
        "reduce_zero_label": False,
        "ignore_index": 255,
    }
    mask = Image.open(own_raw / train[0]["mask_path"])
    assert mask.mode == "P" and set(np.unique(np.asarray(mask))) <= {0, 1, 2, 3, 4, 255}


def test_own_dataset_values_are_checked_against_classes_txt(own_raw: Path) -> None:
    (own_raw / "classes.txt").write_text("background\nellipse\nstar\ncross\n")  # 4 classes, the masks use 0..4
    with pytest.raises(DatasetFormatError) as err:
        build_segmentation_index(own_raw)
    assert "masks/train/scene_" in str(err.value) and "mask value 4" in str(err.value)
    assert "0..3 or 255 (ignore)" in str(err.value)


def test_own_dataset_reduce_zero_label_allows_k_plus_one_values(own_raw: Path) -> None:
    (own_raw / "classes.txt").write_text("ellipse\nstar\ncross\nstripes\n")  # 0 = unlabeled, 1..4 = the classes
    info = json.loads(build_segmentation_index(own_raw, reduce_zero_label=True)[2].read_text())
    assert info["reduce_zero_label"] is True and info["classes"] == ["ellipse", "star", "cross", "stripes"]
    with pytest.raises(DatasetFormatError, match="mask value 4"):
        build_segmentation_index(own_raw, reduce_zero_label=False)


def test_classes_txt_empty_line_is_named(own_raw: Path) -> None:
    (own_raw / "classes.txt").write_text("background\n\nstar\n\n")
    with pytest.raises(DatasetFormatError, match=r"classes.txt, line 2: empty class name"):
        build_segmentation_index(own_raw)
    (own_raw / "classes.txt").write_text("background\nellipse\nstar\ncross\nstripes\n\n")  # trailing: fine
    assert len(json.loads(build_segmentation_index(own_raw)[2].read_text())["classes"]) == 5


def test_own_dataset_missing_val_folder_says_the_layout(own_raw: Path) -> None:
    for path in sorted((own_raw / "masks" / "val").iterdir()):
        path.unlink()
    (own_raw / "masks" / "val").rmdir()
    with pytest.raises(DatasetFormatError) as err:
        build_segmentation_index(own_raw)
    message = str(err.value)
    assert "\n" not in message and str(own_raw / "masks" / "val") in message and "classes.txt" in message
