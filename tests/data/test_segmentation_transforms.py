"""Segmentation masks and transforms: reduce_zero_label, image/mask alignment, seeding, padding, cat_max_ratio."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from beit3_lightning.data.datasets import BadSampleError
from beit3_lightning.data.segmentation import load_mask
from beit3_lightning.data.segmentation_transforms import (
    SegmentationEvalTransform,
    SegmentationTrainTransform,
    rescale_size,
)

# One colour per class: the image is PALETTE[mask], so every pixel's colour says which class it should be.
PALETTE = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)], dtype=np.uint8)


def _block_mask(rng: np.random.Generator, height: int, width: int, block: int = 12) -> np.ndarray:
    """Random classes 0..4 in ``block``-px squares."""
    coarse = rng.integers(0, len(PALETTE), size=(height // block + 1, width // block + 1))
    return np.kron(coarse, np.ones((block, block), dtype=np.int64))[:height, :width].astype(np.uint8)


def _with_ignored(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """``mask`` with 2% of its pixels ignored (255); the image keeps their colour (unlabeled, not blank)."""
    return np.where(rng.random(mask.shape) < 0.02, 255, mask).astype(np.uint8)


def _image_of(mask: np.ndarray) -> np.ndarray:
    return PALETTE[np.where(mask == 255, 0, mask)]


def _pixels(image: torch.Tensor) -> np.ndarray:
    """Normalised CHW (mean = std = 0.5) back to HWC 0..255."""
    return (image.permute(1, 2, 0).numpy() * 127.5 + 127.5).round()


def test_reduce_zero_label_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "mask.png"
    Image.fromarray(np.array([[0, 1, 150, 255]], dtype=np.uint8)).save(path)
    assert load_mask(path, reduce_zero_label=True).tolist() == [[255, 0, 149, 255]]
    assert load_mask(path, reduce_zero_label=False).tolist() == [[0, 1, 150, 255]]
    palette = Image.fromarray(np.array([[3, 0, 255]], dtype=np.uint8)).convert("P")
    palette.putpalette([9, 9, 9] * 256)  # colours do not matter: the index is the class id
    palette.save(path)
    assert load_mask(path, reduce_zero_label=False).tolist() == [[3, 0, 255]]


def test_load_mask_refuses_colour_masks(tmp_path: Path) -> None:
    path = tmp_path / "colour.png"
    Image.new("RGB", (4, 3), (1, 2, 3)).save(path)
    with pytest.raises(BadSampleError, match=r"colour.png: mask has mode RGB .*single-channel class-id PNGs"):
        load_mask(path, reduce_zero_label=False)
    with pytest.raises(BadSampleError, match="missing.png"):
        load_mask(tmp_path / "missing.png", reduce_zero_label=False)


@pytest.mark.parametrize("seed", range(6))
def test_train_transform_keeps_image_and_mask_aligned(seed: int) -> None:
    rng = np.random.default_rng(seed)
    height, width = [(72, 96), (96, 64), (50, 70)][seed % 3]
    classes = _block_mask(rng, height, width)
    transform = SegmentationTrainTransform(64, photometric=False, flip_prob=0.5, seed=seed)
    image, label = transform(Image.fromarray(_image_of(classes)), _with_ignored(rng, classes))
    pixels, label = _pixels(image), label.numpy()
    # Pixels inside a region (3x3 neighbourhood of one class): bilinear image = nearest mask there.
    padded = np.pad(label, 1, constant_values=255)
    inner = np.all(
        [padded[1 + dy : 1 + dy + label.shape[0], 1 + dx : 1 + dx + label.shape[1]] == label
         for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0,
    ) & (label != 255)  # fmt: skip
    assert inner.sum() > 500
    # Nearest palette colour = the label (bilinear and nearest sample half a pixel apart, so colours may blend a bit).
    distances = np.abs(pixels[:, :, None, :] - PALETTE[None, None].astype(float)).sum(-1)
    assert (distances.argmin(-1)[inner] == label[inner]).all()


def test_class_ids_are_never_blended() -> None:
    rng = np.random.default_rng(5)
    mask = _with_ignored(rng, _block_mask(rng, 70, 90, block=5) % 2 * 4)  # classes 0 and 4 only, and 255
    transform = SegmentationTrainTransform(64, photometric=False)
    for seed in range(4):
        transform.reseed(seed)
        assert set(transform(_image_of(mask), mask)[1].unique().tolist()) <= {0, 4, 255}


def test_flip_is_applied_to_both(monkeypatch: pytest.MonkeyPatch) -> None:
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[:, :20] = 1  # class 1 on the left only
    kwargs = {"scale": (256, 64), "ratio_range": None, "photometric": False}
    image, label = SegmentationTrainTransform(64, flip_prob=1.0, **kwargs, seed=0)(_image_of(mask), mask)
    assert (label[:, -20:] == 1).all() and (label[:, :-20] == 0).all()
    assert (_pixels(image)[:, -20:] == PALETTE[1]).all()


def test_same_seed_same_output_other_seed_other_output() -> None:
    rng = np.random.default_rng(0)
    mask = _block_mask(rng, 80, 96)
    image = _image_of(mask)
    transform = SegmentationTrainTransform(64)
    outputs = []
    for seed in (1, 1, 2):
        transform.reseed(seed)
        outputs.append(transform(image, mask))
    assert torch.equal(outputs[0][0], outputs[1][0]) and torch.equal(outputs[0][1], outputs[1][1])
    assert not torch.equal(outputs[0][0], outputs[2][0])
    transform.set_random_state(np.random.default_rng(1), random.Random(1))
    again = transform(image, mask)
    assert torch.equal(again[0], outputs[0][0])  # reseed(s) = set_random_state(default_rng(s), Random(s))


def test_photometric_distortion_changes_colours_not_geometry() -> None:
    mask = _block_mask(np.random.default_rng(3), 80, 96)
    plain, distorted = SegmentationTrainTransform(64, photometric=False), SegmentationTrainTransform(64)
    changed = 0
    for seed in range(6):
        plain.reseed(seed)
        distorted.reseed(seed)
        (image_a, label_a), (image_b, label_b) = plain(_image_of(mask), mask), distorted(_image_of(mask), mask)
        assert torch.equal(label_a, label_b)  # the distortion draws after the crop and flip: same geometry
        changed += not torch.equal(image_a, image_b)
    assert changed >= 3  # each of its four steps runs with probability 0.5


@pytest.mark.parametrize("size", [(30, 20), (200, 150), (64, 64), (300, 40)])
def test_train_output_is_always_the_crop(size: tuple[int, int]) -> None:
    height, width = size
    mask = _block_mask(np.random.default_rng(1), height, width)
    transform = SegmentationTrainTransform(64, seed=3)
    for _ in range(4):
        image, label = transform(_image_of(mask), mask)
        assert image.shape == (3, 64, 64) and image.dtype == torch.float32
        assert label.shape == (64, 64) and label.dtype == torch.int64


def test_padding_is_ignore_label_and_the_mean_colour() -> None:
    mask = np.full((20, 30), 2, dtype=np.uint8)  # rescaled by 0.5 x (256, 64): short side 32
    transform = SegmentationTrainTransform(64, ratio_range=(0.5, 0.5), photometric=False, seed=0)
    image, label = transform(_image_of(mask), mask)
    assert (label[:32, :48] == 2).all() and (label[32:] == 255).all() and (label[:, 48:] == 255).all()
    # mmseg pads the normalised image with 0, i.e. the mean colour (127.5) before normalisation.
    assert (image[:, 32:] == 0).all() and (image[:, :, 48:] == 0).all()
    assert (_pixels(image)[:32, :48] == PALETTE[2]).all()


def _max_class_ratio(label: torch.Tensor) -> float:
    counts = torch.bincount(label[label != 255].flatten(), minlength=2).float()
    return float(counts.max() / counts.sum())


def test_cat_max_ratio_retries_crops_dominated_by_one_class() -> None:
    mask = np.zeros((200, 200), dtype=np.uint8)
    mask[:, 90:110] = 1  # 90% class 0; about 37% of the 64-px crops hold > 25% of class 1
    image = _image_of(mask)

    def balanced_fraction(cat_max_ratio: float) -> float:
        transform = SegmentationTrainTransform(
            64, scale=(800, 200), ratio_range=None, cat_max_ratio=cat_max_ratio, photometric=False, flip_prob=0
        )
        ratios = []
        for seed in range(40):
            transform.reseed(seed)
            ratios.append(_max_class_ratio(transform(image, mask)[1]))
        return float(np.mean([ratio < 0.75 for ratio in ratios]))

    assert balanced_fraction(0.75) >= 0.9
    assert balanced_fraction(1.0) <= 0.6


def test_eval_transform_keeps_the_aspect_and_the_label_size() -> None:
    mask = _block_mask(np.random.default_rng(2), 72, 96)
    image, label = SegmentationEvalTransform(64)(Image.fromarray(_image_of(mask)), mask)
    assert image.shape == (3, 64, 85)  # short side 72 -> 64, long side 96 * 64 / 72 rounded
    assert label.dtype == torch.int64 and torch.equal(label, torch.from_numpy(mask.astype(np.int64)))
    tall = np.zeros((200, 40), dtype=np.uint8)  # the long side is capped at 4 x crop = 256
    assert SegmentationEvalTransform(64)(_image_of(tall), tall)[0].shape == (3, 256, 51)
    assert SegmentationEvalTransform(64)(_image_of(tall))[1] is None
    assert rescale_size(2000, 500, (2048, 512)) == (2048, 512)
    assert rescale_size(683, 512, (2048, 512)) == (683, 512)


def test_mask_of_another_size_is_refused() -> None:
    with pytest.raises(ValueError, match="mask 10x8 and image 12x8 differ"):
        SegmentationTrainTransform(64)(np.zeros((8, 12, 3), np.uint8), np.zeros((8, 10), np.uint8))
