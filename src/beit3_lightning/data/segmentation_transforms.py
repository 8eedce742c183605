"""Image + mask transforms of semantic segmentation: the mmseg ADE20k pipelines BEiT-3 trains and tests with
(unilm ``beit/semantic_segmentation`` configs, mmseg ``Resize`` / ``RandomCrop`` / ``PhotoMetricDistortion``).

Train: keep-ratio rescale to ``scale`` x r, r ~ U(ratio_range) → random crop (``cat_max_ratio``: up to 10 tries for a
crop that one class does not dominate) → horizontal flip → photometric distortion → normalise → pad to the crop
size (image 0 *after* normalisation, i.e. the mean colour, as mmseg pads the normalised image; mask 255).
Eval: keep-ratio rescale to ``scale`` → normalise; the mask is left at its original size (metrics are computed
there, the model's logits are resized to it).

``scale`` defaults to (4 x crop, crop), mmseg's (2048, 512) for a 512 crop: the short side goes to the crop size
unless the long side would pass 4 x crop. Geometric steps are albumentations ``DualTransform``s, so image and mask
always get the same rescale, crop and flip (image bilinear, mask nearest). All randomness is the pipeline's
(``set_random_state`` / ``reseed``, as :class:`~beit3_lightning.data.transforms.ImageTransform`), so the datasets
seed it per item.
"""

from __future__ import annotations

import random
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from PIL import Image

from beit3_lightning.data.transforms import (
    IMAGENET_INCEPTION_MEAN,
    IMAGENET_INCEPTION_STD,
    Interpolation,
    _interpolation_flag,
    to_uint8_rgb,
)

__all__ = [
    "CatMaxRatioCrop",
    "KeepRatioRescale",
    "PhotoMetricDistortion",
    "SegmentationEvalTransform",
    "SegmentationTrainTransform",
    "rescale_size",
]

IGNORE_INDEX = 255
# mmseg RandomCrop: crops tried before the last one is kept.
CROP_TRIES = 10


def rescale_size(width: int, height: int, scale: tuple[int, int]) -> tuple[int, int]:
    """(new width, new height) of a keep-ratio rescale into ``scale`` (mmcv ``rescale_size``): the long side at most
    ``max(scale)``, the short side at most ``min(scale)``, one factor for both, rounded half up."""
    factor = min(max(scale) / max(width, height), min(scale) / min(width, height))
    return max(1, int(width * factor + 0.5)), max(1, int(height * factor + 0.5))


class KeepRatioRescale(A.DualTransform):
    """Rescale into ``scale`` x r (r ~ U(ratio_range), or 1 without a range) keeping the aspect ratio; image with
    ``image_flag``, mask with nearest neighbour (class ids must not be blended)."""

    def __init__(self, scale: tuple[int, int], ratio_range: tuple[float, float] | None, image_flag: int) -> None:
        super().__init__(p=1.0)
        self.scale = scale
        self.ratio_range = ratio_range
        self.image_flag = image_flag  # not "interpolation": albumentations would pass that name to apply()

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        ratio = self.py_random.uniform(*self.ratio_range) if self.ratio_range is not None else 1.0
        target = (int(self.scale[0] * ratio), int(self.scale[1] * ratio))
        return {"size": rescale_size(width, height, target)}

    def apply(self, img: np.ndarray, size: tuple[int, int] = (1, 1), **params: Any) -> np.ndarray:
        return img if img.shape[1::-1] == size else cv2.resize(img, size, interpolation=self.image_flag)

    def apply_to_mask(self, mask: np.ndarray, size: tuple[int, int] = (1, 1), **params: Any) -> np.ndarray:
        return mask if mask.shape[1::-1] == size else cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("scale", "ratio_range")


class CatMaxRatioCrop(A.DualTransform):
    """mmseg ``RandomCrop(crop_size, cat_max_ratio)``: a random crop (the whole side where the image is smaller),
    redrawn up to 10 times until the most frequent non-ignored class covers less than ``cat_max_ratio`` of the
    crop's labelled pixels and more than one class is present; after 10 misses the last drawn crop is kept."""

    def __init__(self, crop_size: tuple[int, int], cat_max_ratio: float, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__(p=1.0)
        self.crop_size = crop_size
        self.cat_max_ratio = cat_max_ratio
        self.ignore_index = ignore_index

    def _draw(self, height: int, width: int) -> tuple[int, int, int, int]:
        top = self.py_random.randint(0, max(height - self.crop_size[0], 0))
        left = self.py_random.randint(0, max(width - self.crop_size[1], 0))
        return top, top + self.crop_size[0], left, left + self.crop_size[1]

    def _balanced(self, mask: np.ndarray) -> bool:
        counts = np.bincount(mask.ravel(), minlength=256)
        counts[self.ignore_index] = 0
        counts = counts[counts > 0]
        return len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        mask = data["mask"]
        box = self._draw(*mask.shape[:2])
        if self.cat_max_ratio < 1.0:
            for _ in range(CROP_TRIES):
                if self._balanced(mask[box[0] : box[1], box[2] : box[3]]):
                    break
                box = self._draw(*mask.shape[:2])
        return {"box": box}

    def apply(self, img: np.ndarray, box: tuple[int, int, int, int] = (0, 0, 0, 0), **params: Any) -> np.ndarray:
        return img[box[0] : box[1], box[2] : box[3]]

    def apply_to_mask(self, mask: np.ndarray, box: tuple[int, int, int, int] = (0, 0, 0, 0), **params: Any):
        return mask[box[0] : box[1], box[2] : box[3]]

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("crop_size", "cat_max_ratio", "ignore_index")


def _convert(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """mmseg ``PhotoMetricDistortion.convert``: img x alpha + beta, clipped to 0..255 and truncated to uint8."""
    return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


class PhotoMetricDistortion(A.ImageOnlyTransform):
    """mmseg ``PhotoMetricDistortion`` on an RGB uint8 image: brightness ± 32, contrast x U(0.5, 1.5) (before or
    after the HSV steps, at random), saturation x U(0.5, 1.5), hue ± 18 (of OpenCV's 180); each step with
    probability 0.5. Its arithmetic (float, clip, truncate; one HSV round trip per HSV step) is mmseg's."""

    def __init__(
        self,
        brightness_delta: int = 32,
        contrast_range: tuple[float, float] = (0.5, 1.5),
        saturation_range: tuple[float, float] = (0.5, 1.5),
        hue_delta: int = 18,
    ) -> None:
        super().__init__(p=1.0)
        self.brightness_delta = brightness_delta
        self.contrast_range = contrast_range
        self.saturation_range = saturation_range
        self.hue_delta = hue_delta

    def get_params(self) -> dict[str, Any]:
        rng = self.py_random

        def maybe(draw):
            return draw() if rng.randint(0, 1) else None

        return {
            "beta": maybe(lambda: rng.uniform(-self.brightness_delta, self.brightness_delta)),
            "contrast_first": rng.randint(0, 1) == 1,
            "alpha": maybe(lambda: rng.uniform(*self.contrast_range)),
            "saturation": maybe(lambda: rng.uniform(*self.saturation_range)),
            "hue": maybe(lambda: rng.randint(-self.hue_delta, self.hue_delta)),
        }

    def apply(self, img: np.ndarray, beta=None, contrast_first=False, alpha=None, saturation=None, hue=None, **params):
        if beta is not None:
            img = _convert(img, beta=beta)
        if contrast_first and alpha is not None:
            img = _convert(img, alpha=alpha)
        if saturation is not None:
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
            hsv[:, :, 1] = _convert(hsv[:, :, 1], alpha=saturation)
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if hue is not None:
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
            hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + hue) % 180
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if not contrast_first and alpha is not None:
            img = _convert(img, alpha=alpha)
        return img

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("brightness_delta", "contrast_range", "saturation_range", "hue_delta")


def _check_pair(image: np.ndarray, mask: np.ndarray) -> None:
    if not isinstance(mask, np.ndarray) or mask.ndim != 2 or mask.dtype != np.uint8:
        shape = getattr(mask, "shape", None)
        raise ValueError(f"the mask must be an (H, W) uint8 array of class ids, got {type(mask).__name__} {shape}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask {mask.shape[1]}x{mask.shape[0]} and image {image.shape[1]}x{image.shape[0]} differ")


def _default_scale(crop_size: int, scale: tuple[int, int] | None) -> tuple[int, int]:
    if crop_size <= 0:
        raise ValueError(f"crop_size must be positive, got {crop_size}")
    return tuple(scale) if scale is not None else (4 * crop_size, crop_size)


class SegmentationTrainTransform:
    """mmseg's ADE20k train pipeline; ``(image, mask) → (float32 (3, crop, crop), int64 (crop, crop))``.

    Args:
        crop_size: side of the square training crop (the model's image size).
        scale: rescale target (long, short) before the ratio; default (4 x crop, crop).
        ratio_range: the rescale target is multiplied by r ~ U(ratio_range); None: r = 1.
        cat_max_ratio: crop acceptance (see :class:`CatMaxRatioCrop`); 1 accepts the first crop.
        ignore_index: mask value of ignored pixels (also the label of the padding).
        flip_prob: probability of a horizontal flip.
        photometric: apply :class:`PhotoMetricDistortion` (off: the image colours are only normalised).
        mean, std: normalisation, as fractions of 255 (BEiT: 0.5 / 0.5, i.e. 127.5 / 127.5).
        interpolation: image resize filter (mmseg: bilinear); masks always use nearest neighbour.
        seed: seed of the pipeline's random stream (the datasets reseed it per item instead).
    """

    def __init__(
        self,
        crop_size: int,
        scale: tuple[int, int] | None = None,
        ratio_range: tuple[float, float] | None = (0.5, 2.0),
        cat_max_ratio: float = 0.75,
        ignore_index: int = IGNORE_INDEX,
        flip_prob: float = 0.5,
        photometric: bool = True,
        mean: tuple[float, float, float] = IMAGENET_INCEPTION_MEAN,
        std: tuple[float, float, float] = IMAGENET_INCEPTION_STD,
        interpolation: Interpolation = "bilinear",
        seed: int | None = None,
    ) -> None:
        self.crop_size = crop_size
        self.scale = _default_scale(crop_size, scale)
        crop = (crop_size, crop_size)
        steps: list[A.BasicTransform] = [
            KeepRatioRescale(self.scale, ratio_range, _interpolation_flag(interpolation)),
            CatMaxRatioCrop(crop, cat_max_ratio, ignore_index),
            A.HorizontalFlip(p=flip_prob),
        ]
        if photometric:
            steps.append(PhotoMetricDistortion())
        steps += [
            A.Normalize(mean=mean, std=std, max_pixel_value=255.0),
            A.PadIfNeeded(
                min_height=crop_size,
                min_width=crop_size,
                position="top_left",  # mmseg pads bottom / right
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=ignore_index,
            ),
            ToTensorV2(),
        ]
        self.pipeline = A.Compose(steps, seed=seed)

    def __call__(self, image: Image.Image | np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Transform one image and its (H, W) uint8 mask of the same size."""
        pixels = to_uint8_rgb(image)
        _check_pair(pixels, mask)
        out = self.pipeline(image=pixels, mask=mask)
        return out["image"].float(), out["mask"].long()

    def set_random_state(self, np_generator: np.random.Generator, py_random: random.Random) -> None:
        """Make the next calls draw from these generators (shared by every step of the pipeline)."""
        self.pipeline.set_random_state(np_generator, py_random)

    def reseed(self, seed: int) -> None:
        """Restart the pipeline's random stream from ``seed`` (same seed → same augmentations)."""
        self.set_random_state(np.random.default_rng(seed), random.Random(seed))

    def __repr__(self) -> str:
        steps = ", ".join(type(t).__name__ for t in self.pipeline.transforms)
        return f"SegmentationTrainTransform(crop {self.crop_size}, scale {self.scale}: {steps})"


class SegmentationEvalTransform:
    """mmseg's test pipeline: keep-ratio rescale into ``scale`` (default (4 x crop, crop)) → normalise.

    ``(image, mask) → (float32 (3, h, w), int64 (H, W))``: the mask keeps the original size (``mask=None`` gives
    ``None``, for images without labels). Deterministic.
    """

    def __init__(
        self,
        crop_size: int,
        scale: tuple[int, int] | None = None,
        mean: tuple[float, float, float] = IMAGENET_INCEPTION_MEAN,
        std: tuple[float, float, float] = IMAGENET_INCEPTION_STD,
        interpolation: Interpolation = "bilinear",
    ) -> None:
        self.crop_size = crop_size
        self.scale = _default_scale(crop_size, scale)
        steps = [
            KeepRatioRescale(self.scale, None, _interpolation_flag(interpolation)),
            A.Normalize(mean=mean, std=std, max_pixel_value=255.0),
            ToTensorV2(),
        ]
        self.pipeline = A.Compose(steps, seed=0)

    def __call__(
        self, image: Image.Image | np.ndarray, mask: np.ndarray | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        pixels = to_uint8_rgb(image)
        if mask is None:
            return self.pipeline(image=pixels)["image"].float(), None
        _check_pair(pixels, mask)
        return self.pipeline(image=pixels)["image"].float(), torch.from_numpy(mask.astype(np.int64))

    def __repr__(self) -> str:
        return f"SegmentationEvalTransform(crop {self.crop_size}, scale {self.scale})"
