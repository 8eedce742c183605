"""Image transforms and RandAugment ops: shapes, exact eval values, op semantics vs PIL, seeding."""

from __future__ import annotations

import random

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from beit3_lightning.data import randaug
from beit3_lightning.data.randaug import TIMM_INCREASING_OPS, VL_OPS, LevelledOp, OpContext
from beit3_lightning.data.transforms import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    RandomErasingPixel,
    build_imagenet_transform,
    build_transform,
    build_vl_transform,
    to_uint8_rgb,
)

NEAREST = OpContext(fill=(128, 128, 128), interpolation=cv2.INTER_NEAREST)


def noisy_image(height: int = 37, width: int = 53, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------------------------
# Pipelines
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "is_train", "randaug_on"),
    [("vqav2", True, False), ("nlvr2", True, True), ("coco_captioning", False, False), ("imagenet", True, False)],
)
def test_pipeline_output_shape_dtype_range(task: str, is_train: bool, randaug_on: bool) -> None:
    transform = build_transform(task, is_train, 32, randaug=randaug_on, seed=0)
    for seed in range(4):
        out = transform(noisy_image(60, 45, seed))
        assert out.shape == (3, 32, 32)
        assert out.dtype == torch.float32
        if task != "imagenet":  # mean = std = 0.5 maps [0, 255] onto [-1, 1]
            assert out.min() >= -1.0 and out.max() <= 1.0


def test_imagenet_eval_range_matches_normalisation() -> None:
    out = build_transform("imagenet", False, 24)(noisy_image(30, 40))
    for channel, (mean, std) in enumerate(zip(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)):
        assert out[channel].min() >= (0 - mean) / std - 1e-6
        assert out[channel].max() <= (1 - mean) / std + 1e-6


def test_vl_eval_constant_image_gives_known_value_and_squashes() -> None:
    image = np.full((30, 50, 3), 100, dtype=np.uint8)  # non-square: squashed to S x S, no crop
    out = build_vl_transform(False, 16)(image)
    assert out.shape == (3, 16, 16)
    torch.testing.assert_close(out, torch.full((3, 16, 16), (100 / 255 - 0.5) / 0.5), atol=1e-6, rtol=0)


def test_imagenet_eval_constant_image_gives_known_value() -> None:
    out = build_imagenet_transform(False, 8)(Image.new("RGB", (20, 12), (100, 150, 200)))
    expected = [(v / 255 - m) / s for v, m, s in zip((100, 150, 200), IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)]
    torch.testing.assert_close(out, torch.tensor(expected).view(3, 1, 1).expand(3, 8, 8), atol=1e-5, rtol=0)


@pytest.mark.parametrize(("crop_pct", "expected_bands"), [(1.0, [1, 2]), (0.5, [1, 2])])
def test_imagenet_eval_resizes_shorter_side_then_centre_crops(crop_pct: float, expected_bands: list[int]) -> None:
    # 20 x 40 image with four vertical 10-px bands of grey 0, 60, 120, 180.
    image = np.repeat(np.repeat(np.array([0, 60, 120, 180], dtype=np.uint8), 10)[None, :, None], 20, axis=0)
    image = np.repeat(image, 3, axis=2)
    transform = build_imagenet_transform(False, 10, interpolation="nearest", crop_pct=crop_pct, antialias=False)
    out = transform(image)[0]
    grey = torch.round((out * IMAGENET_DEFAULT_STD[0] + IMAGENET_DEFAULT_MEAN[0]) * 255)
    # crop_pct 1: 10 x 20 resized, centre columns 5..14 = bands 1 and 2 (5 px each).
    # crop_pct 0.5: 20 x 40 kept, centre columns 15..24 = bands 1 and 2 (5 px each).
    bands = [60 * b for b in expected_bands]
    assert grey[:, :5].unique().tolist() == [bands[0]]
    assert grey[:, 5:].unique().tolist() == [bands[1]]


def test_imagenet_eval_resizes_the_shorter_side_to_size_over_crop_pct() -> None:
    # 20 x 40 image whose row r is grey 10·r. crop_pct 0.5 at size 10: shorter side int(10 / 0.5) = 20, so no resize,
    # and the centre 10 x 10 crop is rows 5..14 exactly (a resize to 10 first would keep every other row 0..18).
    rows = np.repeat((10 * np.arange(20, dtype=np.uint8))[:, None], 40, axis=1)
    image = np.repeat(rows[:, :, None], 3, axis=2)
    transform = build_imagenet_transform(False, 10, interpolation="nearest", crop_pct=0.5, antialias=False)
    out = transform(image)[0]
    grey = torch.round((out * IMAGENET_DEFAULT_STD[0] + IMAGENET_DEFAULT_MEAN[0]) * 255)
    assert grey[:, 0].tolist() == [10.0 * r for r in range(5, 15)]
    assert (grey == grey[:, :1]).all()  # every row stays one grey


def test_pil_and_array_inputs_agree_and_bad_inputs_raise() -> None:
    array = noisy_image()
    transform = build_vl_transform(False, 16)
    torch.testing.assert_close(transform(Image.fromarray(array)), transform(array))
    assert to_uint8_rgb(Image.new("L", (5, 4), 7)).shape == (4, 5, 3)
    assert to_uint8_rgb(np.zeros((4, 5), dtype=np.uint8)).shape == (4, 5, 3)
    with pytest.raises(ValueError, match="uint8"):
        transform(array.astype(np.float32))
    with pytest.raises(ValueError, match="HxWx3"):
        transform(np.zeros((4, 5, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="interpolation"):
        build_transform("vqav2", True, 16, interpolation="bogus")
    with pytest.raises(ValueError, match="crop_pct"):
        build_imagenet_transform(False, 16, crop_pct=1.5)


@pytest.mark.parametrize("task", ["vqav2", "imagenet"])
def test_train_transform_is_deterministic_under_seed(task: str) -> None:
    image = noisy_image(50, 40)
    first = build_transform(task, True, 24, randaug=True, seed=7)
    second = build_transform(task, True, 24, randaug=True, seed=7)
    outputs = [first(image) for _ in range(6)]
    for out in outputs:
        torch.testing.assert_close(second(image), out)
    assert not all(torch.equal(outputs[0], out) for out in outputs[1:]), "augmentation should vary between calls"
    first.reseed(123)
    again = first(image)
    first.reseed(123)
    torch.testing.assert_close(first(image), again)
    other = build_transform(task, True, 24, randaug=True, seed=8)
    assert not torch.equal(other(image), outputs[0])


def test_train_pipelines_have_the_reference_steps() -> None:
    vl = build_vl_transform(True, 32, randaug=True).pipeline.transforms
    crop = vl[0]
    assert isinstance(crop, A.RandomResizedCrop) and crop.scale == (0.5, 1.0) and crop.interpolation == cv2.INTER_CUBIC
    assert isinstance(vl[1], A.HorizontalFlip) and vl[1].p == 0.5
    assert isinstance(vl[2], A.SomeOf) and vl[2].n == 2 and vl[2].replace
    assert len(vl[2].transforms) == 10 and all(t.p == 0.5 for t in vl[2].transforms)
    # RandomAugment(N=2, M=7): nine levelled ops at the fixed level 7 (no jitter) besides the identity.
    vl_levelled = [t for t in vl[2].transforms if isinstance(t, LevelledOp)]
    assert len(vl_levelled) == 9 and {t.magnitude for t in vl_levelled} == {7}
    assert {t.magnitude_std for t in vl_levelled} == {0.0}
    assert tuple(vl[3].mean) == (0.5, 0.5, 0.5)

    imagenet = build_imagenet_transform(True, 32).pipeline.transforms
    assert imagenet[0].scale == (0.08, 1.0)
    policy = imagenet[2]
    assert len(policy.transforms) == 15 and policy.n == 2 and policy.replace
    levelled = [t for t in policy.transforms if isinstance(t, LevelledOp)]
    assert {t.context.fill for t in levelled} == {(124, 116, 104)}
    assert {t.context.interpolation for t in levelled} == {cv2.INTER_CUBIC}
    assert {t.magnitude for t in levelled} == {9} and {t.magnitude_std for t in levelled} == {0.5}
    assert isinstance(imagenet[4], RandomErasingPixel) and imagenet[4].p == 0.25


def test_vl_train_randaug_rotates_by_the_level_7_angle() -> None:
    """By effect: the built VL train transform's Rotate op turns by ±21° (= 7/10 x 30°), never by the M=9 27°."""
    policy = build_vl_transform(True, 32, randaug=True).pipeline.transforms[2]
    rotate = next(t for t in policy.transforms if getattr(t, "name", "") == "Rotate")
    rotate.set_random_state(np.random.default_rng(0), random.Random(0))
    angles = np.array([rotate.get_params()["arg"] for _ in range(50)])
    np.testing.assert_allclose(np.abs(angles), 21.0)


def test_some_of_applies_zero_one_or_two_ops_with_binomial_frequencies() -> None:
    # Two ops drawn with replacement, each applied with p=0.5: the number applied is Binomial(2, 0.5).
    counts = np.zeros(3)
    policy = randaug.vl_random_augment()
    compose = A.Compose([policy], seed=0, save_applied_params=True)
    image = noisy_image(8, 8)
    for _ in range(2000):
        applied = compose(image=image)["applied_transforms"]
        counts[sum(1 for name, _ in applied if name != "SomeOf")] += 1
    np.testing.assert_allclose(counts / counts.sum(), [0.25, 0.5, 0.25], atol=0.04)


# ---------------------------------------------------------------------------------------------------------------
# RandAugment magnitudes and ops
# ---------------------------------------------------------------------------------------------------------------


def _args(name: str, table: dict, magnitude: float, std: float = 0.0, draws: int = 400) -> np.ndarray:
    op = LevelledOp(name, table[name], magnitude, std, p=1.0)
    op.set_random_state(np.random.default_rng(0), random.Random(0))
    return np.array([op.get_params()["arg"] for _ in range(draws)])


@pytest.mark.parametrize(
    ("name", "magnitude"),
    [("ShearX", 0.21), ("ShearY", 0.21), ("TranslateX", 7.0), ("TranslateY", 7.0), ("Rotate", 21.0)],
)
def test_vl_geometric_ops_use_fixed_magnitude_with_random_sign(name: str, magnitude: float) -> None:
    args = _args(name, VL_OPS, 7)
    np.testing.assert_allclose(np.abs(args), magnitude)
    assert 0.4 < (args > 0).mean() < 0.6


@pytest.mark.parametrize("name", ["Brightness", "Sharpness"])
def test_vl_enhance_ops_always_use_factor_1_36(name: str) -> None:
    np.testing.assert_allclose(_args(name, VL_OPS, 7), 1.36)


def test_timm_magnitude_noise_and_level_mappings() -> None:
    rotate = np.abs(_args("Rotate", TIMM_INCREASING_OPS, 9, 0.5, draws=4000))
    # level ~ N(9, 0.5) clipped to [0, 10] → |degrees| = 3 * level; mean 27 (clipping of the top tail: ~26.99).
    assert abs(rotate.mean() - 27) < 0.1 and 1.3 < rotate.std() < 1.6 and rotate.max() <= 30
    np.testing.assert_allclose(_args("PosterizeIncreasing", TIMM_INCREASING_OPS, 9), 1)  # 4 - int(3.6)
    np.testing.assert_allclose(_args("SolarizeIncreasing", TIMM_INCREASING_OPS, 9), 26)  # 256 - int(230.4)
    np.testing.assert_allclose(_args("SolarizeAdd", TIMM_INCREASING_OPS, 9), 99)  # int(99.0)
    np.testing.assert_allclose(np.abs(_args("ColorIncreasing", TIMM_INCREASING_OPS, 9) - 1), 0.81)
    np.testing.assert_allclose(np.abs(_args("TranslateXRel", TIMM_INCREASING_OPS, 9)), 0.405)


def test_brightness_is_a_clipped_multiplication() -> None:
    image = np.array([[[0, 100, 200]]], dtype=np.uint8)
    assert randaug.brightness(image, 1.36, NEAREST).tolist() == [[[0, 136, 255]]]


@pytest.mark.parametrize("factor", [1.36, 0.19, 1.81])
def test_enhance_ops_match_pil(factor: float) -> None:
    image = noisy_image(20, 24, seed=3)
    pil = Image.fromarray(image)
    for ours, theirs in [
        (randaug.sharpness, ImageEnhance.Sharpness),
        (randaug.color, ImageEnhance.Color),
        (randaug.contrast, ImageEnhance.Contrast),
        (randaug.brightness, ImageEnhance.Brightness),
    ]:
        expected = np.asarray(theirs(pil).enhance(factor)).astype(int)
        assert np.abs(ours(image, factor, NEAREST).astype(int) - expected).max() <= 1, ours.__name__


def test_pixel_ops_match_pil_imageops() -> None:
    image = noisy_image(16, 16, seed=5)
    pil = Image.fromarray(image)
    np.testing.assert_array_equal(randaug.posterize(image, 2, NEAREST), np.asarray(ImageOps.posterize(pil, 2)))
    np.testing.assert_array_equal(randaug.posterize(image, 0, NEAREST), np.zeros_like(image))
    np.testing.assert_array_equal(randaug.posterize(image, 8, NEAREST), image)
    np.testing.assert_array_equal(randaug.solarize(image, 26, NEAREST), np.asarray(ImageOps.solarize(pil, 26)))
    added = randaug.solarize_add(np.array([[[0, 127, 128]]], dtype=np.uint8), 99, NEAREST)
    assert added.tolist() == [[[99, 226, 128]]]
    for seed in range(4):
        image = noisy_image(16 + seed, 19, seed=seed)
        image[..., 2] = 50 + image[..., 2] // 3  # a channel that does not span [0, 255]
        image[..., 1] = 7 if seed == 0 else image[..., 1]  # a flat channel is left alone
        pil = Image.fromarray(image)
        np.testing.assert_array_equal(randaug.autocontrast(image, 0, NEAREST), np.asarray(ImageOps.autocontrast(pil)))
        np.testing.assert_array_equal(randaug.equalize(image, 0, NEAREST), np.asarray(ImageOps.equalize(pil)))


def test_geometric_ops_semantics() -> None:
    image = noisy_image(12, 12, seed=1)
    # Shear about the origin: row 0 (x) / column 0 (y) stay put.
    np.testing.assert_array_equal(randaug.shear_x(image, 0.21, NEAREST)[0], image[0])
    np.testing.assert_array_equal(randaug.shear_y(image, 0.21, NEAREST)[:, 0], image[:, 0])
    # Translate by +7 px: output(x) = input(x + 7); the 7 uncovered columns take the fill.
    moved = randaug.translate_x(image, 7, NEAREST)
    np.testing.assert_array_equal(moved[:, :5], image[:, 7:])
    assert (moved[:, 5:] == 128).all()
    moved = randaug.translate_y_rel(image, -0.25, NEAREST)  # -3 px: content moves down
    np.testing.assert_array_equal(moved[3:], image[:9])
    # +90 degrees is counter-clockwise, about the centre.
    np.testing.assert_array_equal(randaug.rotate(image, 90, NEAREST), np.rot90(image))


def test_random_erasing_fills_one_box_with_standard_normal_noise() -> None:
    image = np.zeros((64, 64, 3), dtype=np.float32)
    erase = RandomErasingPixel(p=1.0)
    erase.set_random_state(np.random.default_rng(0), random.Random(0))
    areas, values = [], []
    for _ in range(50):
        out = erase(image=image)["image"]
        changed = np.any(out != 0, axis=2)
        rows, cols = np.nonzero(changed)
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert changed.sum() == box  # a single filled rectangle
        areas.append(box / 64**2)
        values.append(out[changed].ravel())
    assert min(areas) >= 0.015 and max(areas) <= 0.36
    noise = np.concatenate(values)
    assert abs(noise.mean()) < 0.02 and abs(noise.std() - 1) < 0.02
    never = RandomErasingPixel(p=0.0)
    np.testing.assert_array_equal(never(image=image + 1)["image"], image + 1)


@pytest.mark.parametrize("task", ["vqav2", "imagenet"])
def test_transforms_pickle_for_spawned_workers(task: str) -> None:
    import pickle

    transform = build_transform(task, True, 24, randaug=True)
    clone = pickle.loads(pickle.dumps(transform))
    transform.reseed(5)
    clone.reseed(5)
    image = noisy_image()
    for _ in range(5):
        torch.testing.assert_close(clone(image), transform(image))
