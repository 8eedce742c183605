"""Datasets over hand-written official index files: items field by field, masking, bad samples, collate."""

from __future__ import annotations

import json
import random
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from beit3_lightning.data.datasets import (
    BadSampleError,
    CaptioningDataset,
    ImageNetDataset,
    NLVR2Dataset,
    RetrievalDataset,
    VQAv2Dataset,
    collate,
    load_answer2label,
    mask_caption_tokens,
    num_tokens_to_mask,
)
from beit3_lightning.data.index.common import DatasetFormatError
from beit3_lightning.data.transforms import build_transform

IMG = 16  # transform output size used throughout
MASK_ID, VOCAB = 1001, 1002  # the shipped sample tokenizer's <mask> id and vocabulary size


# ---------------------------------------------------------------------------------------------------------------
# Fixture writers (also used by test_datamodules.py)
# ---------------------------------------------------------------------------------------------------------------


def write_image(root: Path, relative: str, grey: int, size: tuple[int, int] = (24, 20)) -> None:
    """A flat grey image, so the eval transform output is known exactly."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (grey, grey, grey)).save(path)


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records))


def eval_value(grey: int) -> float:
    """VL eval output of a flat grey image."""
    return (grey / 255 - 0.5) / 0.5


def tokens(i: int, length: int = 3) -> list[int]:
    return [10 + i + k for k in range(length)]


def write_vqav2(root: Path, n: int = 6) -> Path:
    write_jsonl(root / "answer2label.txt", [{"answer": a, "label": i} for i, a in enumerate(["yes", "no", "2"])])
    for split, folder in [("train", "train2014"), ("trainable_val", "val2014"), ("rest_val", "val2014")]:
        records = []
        for i in range(n):
            path = f"{folder}/COCO_{split}_{i:012d}.jpg"
            write_image(root, path, grey=10 * i)
            records.append(
                {"image_path": path, "text_segment": tokens(i), "labels": [i % 3], "scores": [0.6], "qid": 100 + i}
            )
        write_jsonl(root / f"vqa.{split}.jsonl", records)
    for split in ("test", "test-dev"):
        records = []
        for i in range(n):
            path = f"test2015/COCO_test2015_{i:012d}.jpg"
            write_image(root, path, grey=10 * i)
            records.append({"image_path": path, "text_segment": tokens(i), "labels": [], "scores": [], "qid": 900 + i})
        write_jsonl(root / f"vqa.{split}.jsonl", records)
    return root


def write_nlvr2(root: Path, n: int = 6) -> Path:
    for split, prefix in [("train", "images/train"), ("dev", "dev"), ("test-P", "test1")]:
        records = []
        for i in range(n):
            left, right = f"{prefix}/{i}/{split}-{i}-img0.png", f"{prefix}/{i}/{split}-{i}-img1.png"
            write_image(root, left, grey=20 * i)
            write_image(root, right, grey=20 * i + 5)
            records.append(
                {
                    "image_path": left,
                    "image2_path": right,
                    "text_segment": tokens(i),
                    "label": i % 2,
                    "identifier": f"{split}-{i}-0-0",
                }
            )
        write_jsonl(root / f"nlvr2.{split}.index.jsonl", records)
    return root


def write_imagenet(root: Path, n: int = 6) -> Path:
    for split in ("train", "val"):
        records = []
        for i in range(n):
            path = f"{split}/n0{i % 3}/{i}.JPEG"
            write_image(root, path, grey=30 * i)
            records.append({"image_path": path, "label": i % 3})
        write_jsonl(root / f"imagenet.{split}.index.jsonl", records)
    return root


def write_retrieval(root: Path, task: str = "coco_retrieval", n: int = 6) -> Path:
    for split in ("train", "val", "test"):
        records = []
        for i in range(n):
            path = f"{split}2014/{i // 2}.jpg"  # two captions per image
            write_image(root, path, grey=40 * (i // 2))
            records.append({"image_path": path, "text_segment": tokens(i), "image_id": i // 2})
        write_jsonl(root / f"{task}.{split}.jsonl", records)
    return root


def write_captioning(root: Path, task: str = "coco_captioning", n: int = 6) -> Path:
    splits = ("train", "val", "test") if task == "coco_captioning" else ("val", "test")
    for split in splits:
        records = []
        for i in range(n):
            path = f"{split}/{i}.jpg"
            write_image(root, path, grey=15 * i)
            text = tokens(i, length=8) if split == "train" else None
            records.append({"image_path": path, "text_segment": text, "image_id": 500 + i})
        write_jsonl(root / f"{task}.{split}.jsonl", records)
    return root


def texture_images(root: Path) -> None:
    """Overwrite every fixture image under ``root`` with seeded RGB noise (same path and format).

    Flat grey images look the same after any crop or flip, so they cannot tell the train transform from the eval
    one; noise can (a crop, a flip or a resampling changes the pixels).
    """
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in {".jpg", ".jpeg", ".png"}:
            seed = zlib.crc32(path.relative_to(root).as_posix().encode())
            noise = np.random.RandomState(seed).randint(0, 256, (20, 24, 3)).astype(np.uint8)
            Image.fromarray(noise).save(path)


WRITERS = {
    "vqav2": write_vqav2,
    "nlvr2": write_nlvr2,
    "imagenet": write_imagenet,
    "coco_retrieval": lambda root: write_retrieval(root, "coco_retrieval"),
    "flickr30k": lambda root: write_retrieval(root, "flickr30k"),
    "coco_captioning": write_captioning,
    "nocaps": lambda root: write_captioning(root, "nocaps"),
}


def make_dataset(cls, root: Path, split: str, is_train: bool = False, **kwargs):
    """Dataset with the VL (or, for ImageNet, the ImageNet) transform at IMG px and max_text_len 8."""
    transform_task = "imagenet" if cls is ImageNetDataset else "vqav2"
    transform = build_transform(transform_task, is_train, IMG, randaug=is_train)
    return cls(str(root), split, transform, max_text_len=8, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Items, field by field
# ---------------------------------------------------------------------------------------------------------------


def test_vqav2_train_concatenates_train_and_trainable_val(tmp_path: Path) -> None:
    dataset = make_dataset(VQAv2Dataset, write_vqav2(tmp_path), "train")
    assert len(dataset) == 12 and dataset.num_answers == 3 and dataset.label2ans == ["yes", "no", "2"]
    item = dataset[7]  # record 1 of vqa.trainable_val.jsonl
    assert set(item) == {"image", "language_tokens", "padding_mask", "qid", "labels", "index"}
    torch.testing.assert_close(item["image"], torch.full((3, IMG, IMG), eval_value(10)))
    assert item["language_tokens"] == [0, 11, 12, 13, 2, 1, 1, 1]
    assert item["padding_mask"] == [0, 0, 0, 0, 0, 1, 1, 1]
    assert item["qid"] == 101 and item["index"] == 7
    torch.testing.assert_close(item["labels"], torch.tensor([0.0, 0.6, 0.0]))
    assert dataset.source_of(7) == f"{tmp_path / 'vqa.trainable_val.jsonl'}, line 2"


def test_vqav2_unlabeled_splits_have_qid_but_no_labels(tmp_path: Path) -> None:
    root = write_vqav2(tmp_path)
    for split, first_qid in [("test", 900), ("test-dev", 900), ("val", 100)]:
        item = make_dataset(VQAv2Dataset, root, split)[0]
        assert item["qid"] == first_qid
        assert ("labels" in item) == (split == "val")


def test_vqav2_rejects_labels_outside_the_answer_vocabulary(tmp_path: Path) -> None:
    root = write_vqav2(tmp_path)
    record = {"image_path": "x.jpg", "text_segment": [5], "labels": [3], "scores": [1.0], "qid": 1}
    write_jsonl(root / "vqa.rest_val.jsonl", [record])
    with pytest.raises(DatasetFormatError, match=r"vqa\.rest_val\.jsonl, line 1: answer labels \[3\]"):
        make_dataset(VQAv2Dataset, root, "val")


def test_answer2label_requires_labels_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "answer2label.txt"
    write_jsonl(path, [{"answer": "yes", "label": 0}, {"answer": "no", "label": 2}])
    with pytest.raises(DatasetFormatError, match=r"answer2label\.txt, line 2: label 2 should be 1"):
        load_answer2label(str(path))
    with pytest.raises(FileNotFoundError, match="beit3 prepare vqav2"):
        load_answer2label(str(tmp_path / "missing.txt"))


def test_nlvr2_item_has_two_independent_images(tmp_path: Path) -> None:
    root = write_nlvr2(tmp_path)
    for split, expected_file in [("train", "train"), ("val", "dev"), ("test", "test-P")]:
        dataset = make_dataset(NLVR2Dataset, root, split)
        assert dataset.index_paths == [str(root / f"nlvr2.{expected_file}.index.jsonl")]
    item = dataset[3]
    assert set(item) == {"image", "image2", "language_tokens", "padding_mask", "label", "index"}
    torch.testing.assert_close(item["image"], torch.full((3, IMG, IMG), eval_value(60)))
    torch.testing.assert_close(item["image2"], torch.full((3, IMG, IMG), eval_value(65)))
    assert item["label"] == 1 and item["language_tokens"][:5] == [0, 13, 14, 15, 2]


def test_imagenet_val_and_test_read_the_val_index(tmp_path: Path) -> None:
    root = write_imagenet(tmp_path)
    train = make_dataset(ImageNetDataset, root, "train")
    test = make_dataset(ImageNetDataset, root, "test")
    assert test.index_paths == [str(root / "imagenet.val.index.jsonl")]
    assert train.num_classes == 3
    item = test[4]
    assert set(item) == {"image", "label", "index"} and item["label"] == 1
    assert item["image"].shape == (3, IMG, IMG)


@pytest.mark.parametrize("task", ["coco_retrieval", "flickr30k"])
def test_retrieval_items_carry_image_ids(tmp_path: Path, task: str) -> None:
    dataset = make_dataset(RetrievalDataset, write_retrieval(tmp_path, task), "test", task=task)
    assert dataset.index_paths == [str(tmp_path / f"{task}.test.jsonl")]
    item = dataset[5]
    assert set(item) == {"image", "language_tokens", "padding_mask", "image_id", "index"}
    assert item["image_id"] == 2 and item["language_tokens"][:5] == [0, 15, 16, 17, 2]
    torch.testing.assert_close(item["image"], torch.full((3, IMG, IMG), eval_value(80)))
    with pytest.raises(ValueError, match="Unknown retrieval task"):
        make_dataset(RetrievalDataset, tmp_path, "test", task="mscoco")


def test_captioning_train_item_is_masked_and_eval_item_is_image_only(tmp_path: Path) -> None:
    root = write_captioning(tmp_path)
    train = make_dataset(
        CaptioningDataset, root, "train", is_train=True, mask_prob=0.6, mask_token_id=MASK_ID, vocab_size=VOCAB
    )
    item = train[2]
    assert set(item) == {
        "image",
        "language_tokens",
        "masked_tokens",
        "language_masked_pos",
        "padding_mask",
        "image_id",
        "index",
    }
    # 8 caption ids truncated to max_len - 2 = 6: [bos, 12..17, eos], 8 real tokens → k = round(4.8) = 5.
    assert item["language_tokens"] == [0, 12, 13, 14, 15, 16, 17, 2]
    assert item["padding_mask"] == [0] * 8 and item["image_id"] == 502
    assert sum(item["language_masked_pos"]) == 5 and item["language_masked_pos"][0] == 0
    unmasked = [i for i, flag in enumerate(item["language_masked_pos"]) if not flag]
    assert all(item["masked_tokens"][i] == item["language_tokens"][i] for i in unmasked)

    val = make_dataset(CaptioningDataset, root, "val")
    assert set(val[1]) == {"image", "image_id", "index"} and val[1]["image_id"] == 501
    with pytest.raises(ValueError, match="mask_token_id and vocab_size"):
        make_dataset(CaptioningDataset, root, "train")


def test_nocaps_trains_on_coco_captioning_train(tmp_path: Path) -> None:
    nocaps = write_captioning(tmp_path / "nocaps", "nocaps")
    coco = write_captioning(tmp_path / "coco")
    train = make_dataset(CaptioningDataset, coco, "train", task="nocaps", mask_token_id=MASK_ID, vocab_size=VOCAB)
    assert train.index_paths == [str(coco / "coco_captioning.train.jsonl")]
    val = make_dataset(CaptioningDataset, nocaps, "val", task="nocaps")
    assert val.index_paths == [str(nocaps / "nocaps.val.jsonl")] and len(val) == 6


# ---------------------------------------------------------------------------------------------------------------
# Caption masking
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("num_tokens", "prob", "expected"),
    [(2, 0.6, 1), (5, 0.6, 3), (4, 0.6, 2), (5, 0.5, 3), (9, 0.5, 5), (10, 0.7, 7), (20, 1.0, 19), (3, 0.1, 1)],
)
def test_number_of_masked_tokens(num_tokens: int, prob: float, expected: int) -> None:
    # round half up: 5 x 0.5 = 2.5 → 3 and 9 x 0.5 = 4.5 → 5 (Python's round would give 2 and 4).
    assert num_tokens_to_mask(num_tokens, prob) == expected
    masked, positions = mask_caption_tokens(list(range(num_tokens)), num_tokens, prob, MASK_ID, VOCAB, random.Random(0))
    assert sum(positions) == expected and len(masked) == num_tokens


def test_masking_proportions_positions_and_random_ids() -> None:
    rng = random.Random(0)
    caption = [0] + [5] * 10 + [2, 1, 1]  # 12 real tokens, then pads
    outcomes = {"mask": 0, "keep": 0, "random": 0}
    position_counts = np.zeros(len(caption))
    for _ in range(3000):
        masked, positions = mask_caption_tokens(caption, 12, 0.6, MASK_ID, VOCAB, rng)
        assert positions[0] == 0 and sum(positions[12:]) == 0 and sum(positions) == 7
        position_counts += positions
        for i in np.flatnonzero(positions):
            if masked[i] == MASK_ID:
                outcomes["mask"] += 1
            elif masked[i] == caption[i]:
                outcomes["keep"] += 1
            else:
                assert 3 <= masked[i] <= VOCAB - 1
                outcomes["random"] += 1
    total = sum(outcomes.values())
    assert abs(outcomes["mask"] / total - 0.8) < 0.01
    assert abs(outcomes["keep"] / total - 0.1) < 0.01
    assert abs(outcomes["random"] / total - 0.1) < 0.01
    # Positions 1..11 (eos included) are equally likely: 7/11 each.
    np.testing.assert_allclose(position_counts[1:12] / 3000, 7 / 11, atol=0.03)


def test_random_replacement_ids_cover_3_to_vocab_minus_1() -> None:
    rng = random.Random(1)
    seen = set()
    for _ in range(2000):
        masked, positions = mask_caption_tokens([0, 99, 99, 99, 2], 5, 1.0, 98, 8, rng)
        seen.update(m for m, flag in zip(masked, positions) if flag and m not in (98, 99, 2))
    assert seen == {3, 4, 5, 6, 7}


def test_masking_is_reproducible_per_seed_epoch_and_item(tmp_path: Path) -> None:
    root = write_captioning(tmp_path)

    def masks(seed: int, epoch: int) -> list[list[int]]:
        dataset = make_dataset(
            CaptioningDataset, root, "train", seed=seed, mask_prob=0.5, mask_token_id=MASK_ID, vocab_size=VOCAB
        )
        dataset.set_epoch(epoch)
        return [dataset[i]["masked_tokens"] for i in range(len(dataset))]

    assert masks(0, 0) == masks(0, 0)
    assert masks(0, 0) != masks(0, 1)
    assert masks(0, 0) != masks(1, 0)
    with pytest.raises(ValueError, match="bos \\+ eos"):
        mask_caption_tokens([0], 1, 0.6, MASK_ID, VOCAB, random.Random(0))


def test_augmentation_is_reproducible_per_item_and_changes_with_epoch(tmp_path: Path) -> None:
    root = write_vqav2(tmp_path)
    noisy = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(noisy).save(root / "train2014/COCO_train_000000000000.jpg")
    dataset = make_dataset(VQAv2Dataset, root, "train", is_train=True)
    first = dataset[0]["image"]
    dataset[3]  # other items in between do not change item 0
    torch.testing.assert_close(dataset[0]["image"], first)
    dataset.set_epoch(1)
    assert not torch.equal(dataset[0]["image"], first)


# ---------------------------------------------------------------------------------------------------------------
# Bad data
# ---------------------------------------------------------------------------------------------------------------


def test_missing_and_corrupt_images_raise_bad_sample_error_naming_file_and_line(tmp_path: Path) -> None:
    root = write_vqav2(tmp_path)
    (root / "val2014/COCO_rest_val_000000000002.jpg").unlink()
    (root / "val2014/COCO_rest_val_000000000004.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    dataset = make_dataset(VQAv2Dataset, root, "val")
    index_file = root / "vqa.rest_val.jsonl"
    with pytest.raises(BadSampleError, match=rf"COCO_rest_val_000000000002\.jpg .*{index_file}, line 3"):
        dataset[2]
    with pytest.raises(BadSampleError, match=rf"COCO_rest_val_000000000004\.jpg .*{index_file}, line 5.*skip_bad"):
        dataset[4]


def test_skip_bad_samples_replaces_counts_and_logs_every_skip(tmp_path: Path, caplog) -> None:
    root = write_vqav2(tmp_path)
    (root / "val2014/COCO_rest_val_000000000002.jpg").unlink()
    skip_log = tmp_path / "skipped.txt"
    dataset = make_dataset(VQAv2Dataset, root, "val", skip_bad_samples=True, skip_log=str(skip_log))
    with caplog.at_level("WARNING", logger="beit3_lightning.data.datasets"):
        item = dataset[2]
        replacement = item["index"]
        assert dataset[2]["index"] == replacement  # deterministic replacement
    assert item["index"] != 2 and dataset.num_skipped == 2
    # Each skip is its own record (a Python warning would have been shown once per call site).
    skips = [r.getMessage() for r in caplog.records if "Skipping bad sample" in r.getMessage()]
    assert len(skips) == 2 and all("COCO_rest_val_000000000002.jpg" in m for m in skips)
    lines = skip_log.read_text().splitlines()
    assert len(lines) == 2 and "COCO_rest_val_000000000002.jpg" in lines[0] and "line 3" in lines[0]
    assert dataset.num_served == 2
    for i in range(6):
        (root / f"val2014/COCO_rest_val_{i:012d}.jpg").unlink(missing_ok=True)
    with pytest.raises(BadSampleError, match="bad samples in a row"):
        dataset[0]


def test_malformed_index_files_raise_dataset_format_error(tmp_path: Path) -> None:
    root = write_nlvr2(tmp_path)
    path = root / "nlvr2.dev.index.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    with pytest.raises(DatasetFormatError, match=r"nlvr2\.dev\.index\.jsonl, line 2"):
        make_dataset(NLVR2Dataset, root, "val")
    write_jsonl(path, [{"image_path": "a.png", "text_segment": [4], "label": 0}])
    with pytest.raises(DatasetFormatError, match=r"line 1: missing field\(s\) \['image2_path'\]"):
        make_dataset(NLVR2Dataset, root, "val")
    write_jsonl(path, [{"image_path": "a.png", "image2_path": "b.png", "text_segment": [], "label": 0}])
    with pytest.raises(DatasetFormatError, match="non-empty list of token ids"):
        make_dataset(NLVR2Dataset, root, "val")
    write_jsonl(path, [{"image_path": "a.png", "image2_path": "b.png", "text_segment": [4], "label": "True"}])
    with pytest.raises(DatasetFormatError, match="must be 0 or 1"):
        make_dataset(NLVR2Dataset, root, "val")
    path.unlink()
    with pytest.raises(FileNotFoundError, match="beit3 prepare nlvr2"):
        make_dataset(NLVR2Dataset, root, "val")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        make_dataset(NLVR2Dataset, root, "dev")


def test_index_out_of_range(tmp_path: Path) -> None:
    dataset = make_dataset(ImageNetDataset, write_imagenet(tmp_path), "val")
    with pytest.raises(IndexError, match="out of range"):
        dataset[6]


# ---------------------------------------------------------------------------------------------------------------
# Collate
# ---------------------------------------------------------------------------------------------------------------


def test_collate_stacks_tensors_and_converts_ints_and_lists() -> None:
    batch = [
        {"image": torch.zeros(3, 2, 2), "language_tokens": [0, 5, 2], "qid": 7, "name": "a", "score": 0.5},
        {"image": torch.ones(3, 2, 2), "language_tokens": [0, 6, 2], "qid": 8, "name": "b", "score": 1.5},
    ]
    out = collate(batch)
    assert out["image"].shape == (2, 3, 2, 2) and out["image"][1].sum() == 12
    assert out["language_tokens"].dtype == torch.long and out["language_tokens"].tolist() == [[0, 5, 2], [0, 6, 2]]
    assert out["qid"].dtype == torch.long and out["qid"].tolist() == [7, 8]
    assert out["name"] == ["a", "b"]
    assert out["score"].dtype == torch.float32
    with pytest.raises(ValueError, match="different keys"):
        collate([batch[0], {"image": torch.zeros(3, 2, 2)}])
    with pytest.raises(ValueError, match="empty batch"):
        collate([])
