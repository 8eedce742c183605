"""Segmentation dataset, collate, DataModule and ``beit3 prepare ade20k / segmentation`` on the generated samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from beit3_lightning.data import SegmentationDataModule
from beit3_lightning.data.datasets import BadSampleError
from beit3_lightning.data.prepare import main
from beit3_lightning.data.sample import generate_sample_raw
from beit3_lightning.data.sample.segmentation import ADE_CLASSES, CLASSES
from beit3_lightning.data.segmentation import (
    SegmentationDataset,
    SegmentationEvalTransform,
    read_class_info,
    segmentation_collate,
)


def _item(height: int, width: int, label_size: tuple[int, int] | None = None, index: int = 0) -> dict:
    label_h, label_w = label_size or (height, width)
    return {
        "image": torch.ones(3, height, width),
        "label": torch.zeros(label_h, label_w, dtype=torch.long),
        "index": index,
    }


def test_collate_pads_to_the_largest_item_and_reports_valid_sizes() -> None:
    batch = segmentation_collate([_item(4, 6, (8, 12), index=3), _item(5, 3, (10, 5), index=7)])
    assert batch["image"].shape == (2, 3, 5, 6) and batch["label"].shape == (2, 10, 12)
    assert batch["image_hw"].tolist() == [[4, 6], [5, 3]] and batch["label_hw"].tolist() == [[8, 12], [10, 5]]
    assert batch["image_hw"].dtype == batch["label_hw"].dtype == torch.long
    assert batch["index"].tolist() == [3, 7]
    assert (batch["image"][0, :, 4:] == 0).all() and (batch["image"][0, :, :4, :6] == 1).all()
    assert (batch["image"][1, :, :, 3:] == 0).all() and (batch["image"][1, :, :5, :3] == 1).all()
    assert (batch["label"][0, 8:] == 255).all() and (batch["label"][0, :8, :12] == 0).all()
    assert (batch["label"][1, :, 5:] == 255).all() and (batch["label"][1, :10, :5] == 0).all()


def test_collate_of_same_size_items_is_a_stack() -> None:
    items = [_item(4, 4), _item(4, 4)]
    batch = segmentation_collate(items)
    assert torch.equal(batch["image"], torch.stack([i["image"] for i in items]))
    assert batch["image_hw"].tolist() == [[4, 4], [4, 4]]


@pytest.fixture(scope="module")
def ade_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from beit3_lightning.data.sample import ensure_sample_dataset

    return ensure_sample_dataset("ade20k", tmp_path_factory.mktemp("seg") / "ade20k")


def test_dataset_applies_reduce_zero_label_and_keeps_the_val_label_size(ade_sample: Path) -> None:
    dataset = SegmentationDataset(str(ade_sample), "val", SegmentationEvalTransform(64), task="ade20k")
    assert len(dataset) == 40 and dataset.num_classes == 5 and dataset.class_names == list(ADE_CLASSES)
    item = dataset[1]
    raw = np.asarray(Image.open(ade_sample / dataset.records[1]["mask_path"]))
    assert 0 in raw  # the sample's unlabeled band
    expected = np.where(raw == 0, 255, raw.astype(np.int64) - 1)
    assert item["label"].dtype == torch.int64 and np.array_equal(item["label"].numpy(), expected)
    assert item["image"].shape[0] == 3 and min(item["image"].shape[1:]) == 64 and item["index"] == 1


def test_dataset_names_a_mask_changed_after_indexing(ade_sample: Path, tmp_path: Path) -> None:
    dataset = SegmentationDataset(str(ade_sample), "val", SegmentationEvalTransform(64), task="ade20k")
    copy = tmp_path / "copy"
    for name in ("ade20k.val.index.jsonl", "ade20k.classes.json"):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_bytes((ade_sample / name).read_bytes())
    image_path, mask_path = (copy / dataset.records[0][field] for field in ("image_path", "mask_path"))
    image_path.parent.mkdir(parents=True)
    image_path.write_bytes((ade_sample / dataset.records[0]["image_path"]).read_bytes())
    mask_path.parent.mkdir(parents=True)
    width, height = Image.open(image_path).size
    Image.fromarray(np.full((height, width), 9, dtype=np.uint8)).save(mask_path)  # 9 - 1 = 8 >= 5 classes
    broken = SegmentationDataset(str(copy), "val", SegmentationEvalTransform(64), task="ade20k")
    with pytest.raises(BadSampleError, match=r"ADE_val_00000001.png .*line 1\) has class id 8 but ade20k has 5"):
        broken[0]


def test_datamodule_on_the_ade20k_sample(tmp_path: Path) -> None:
    dm = SegmentationDataModule(
        str(tmp_path / "sample" / "ade20k"), task="ade20k", img_size=64, batch_size=4, eval_batch_size=3, num_workers=0,
        generate_sample=True,
    )  # fmt: skip
    assert dm.num_classes == 5 and dm.class_names == list(ADE_CLASSES) and dm.ignore_index == 255
    dm.setup("fit")
    train = next(iter(dm.train_dataloader()))
    assert train["image"].shape == (4, 3, 64, 64) and train["image"].dtype == torch.float32
    assert train["label"].shape == (4, 64, 64) and train["label"].dtype == torch.int64
    assert set(train["label"].unique().tolist()) <= {0, 1, 2, 3, 4, 255}
    assert train["image_hw"].tolist() == [[64, 64]] * 4
    val = next(iter(dm.val_dataloader()))
    assert val["image"].shape[:2] == (3, 3) and val["label"].dtype == torch.int64
    assert val["image"].shape[2:] == tuple(val["image_hw"].max(0).values.tolist())
    assert val["label"].shape[1:] == tuple(val["label_hw"].max(0).values.tolist())
    assert (val["image_hw"].min(1).values == 64).all() and val["index"].tolist() == [0, 1, 2]
    assert len(set(map(tuple, val["label_hw"].tolist()))) > 1  # the sample mixes sizes: padding is exercised


def test_datamodule_on_the_own_dataset_sample(tmp_path: Path) -> None:
    dm = SegmentationDataModule(
        str(tmp_path / "sample" / "own"),
        task="segmentation",
        img_size=48,
        batch_size=2,
        num_workers=0,
        generate_sample=True,
    )
    assert dm.num_classes == 5 and dm.class_names == list(CLASSES)
    dm.setup("validate")
    dataset = dm.datasets["val"]
    raw = np.asarray(Image.open(tmp_path / "sample" / "own" / dataset.records[0]["mask_path"]))
    assert np.array_equal(dataset[0]["label"].numpy(), raw)  # no reduce_zero_label: palette index = class id
    assert read_class_info(dm.index_dir, "segmentation")["reduce_zero_label"] is False


def test_prepare_ade20k_ends_with_its_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = generate_sample_raw("ade20k", tmp_path / "ade")
    assert main(["ade20k", "--data-root", str(root), "--verify-images"]) == 0
    printed = capsys.readouterr()
    assert printed.out.split() == [
        str(root / name) for name in ("ade20k.train.index.jsonl", "ade20k.val.index.jsonl", "ade20k.classes.json")
    ]
    lines = printed.err.strip().splitlines()
    assert lines[-2] == "beit3 prepare ade20k: all 400 images decode"  # 200 images and their 200 masks
    assert lines[-1] == (
        "beit3 prepare ade20k: wrote 2 index files (records): "
        "ade20k.train.index.jsonl (160), ade20k.val.index.jsonl (40)"
    )


def test_prepare_segmentation_reduce_zero_label_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = generate_sample_raw("segmentation", tmp_path / "own")
    (root / "classes.txt").write_text("ellipse\nstar\ncross\nstripes\n")
    assert main(["segmentation", "--data-root", str(root), "--reduce-zero-label"]) == 0
    assert json.loads((root / "segmentation.classes.json").read_text())["reduce_zero_label"] is True
    capsys.readouterr()
    assert main(["segmentation", "--data-root", str(root)]) == 2  # value 4 with 4 classes and no reduce
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("beit3 prepare segmentation: error: ") and "mask value 4" in err


def test_prepare_shards_refuses_segmentation_indexes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["shards", "--from", "index", "--dataset", "ade", "--data-root", str(tmp_path), "--out", str(tmp_path / "s")]
    assert main(argv) == 2
    assert "ade20k indexes cannot be converted to shards" in capsys.readouterr().err
