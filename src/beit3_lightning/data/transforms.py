"""Image transforms of the BEiT-3 fine-tuning recipes, built from albumentations (unilm ``datasets.build_transform``
and ``build_imagenet_transform``; summary: ``docs/reference.md#image-transforms``).

Every builder returns an :class:`ImageTransform`: a callable taking a PIL image or an HWC uint8 array and returning
a float32 CHW ``torch.Tensor``.

Where we differ from the torchvision/timm reference, and why:

* Resizing runs in OpenCV. PIL's bicubic filter widens its support when it shrinks an image (antialiasing);
  OpenCV's ``INTER_CUBIC`` does not and aliases on large reductions. With ``antialias=True`` (default) shrinking
  uses ``INTER_AREA`` (albumentations ``area_for_downscale="image"``) and enlarging uses the requested filter,
  which is close to PIL's output; pixel values still differ by a few grey levels from torchvision's.
* ``RandomResizedCrop`` is albumentations' (the torchvision algorithm: 10 tries at a uniform area and log-uniform
  aspect ratio, then a centre crop clamped to the ratio range).
* The RandAugment policies live in :mod:`beit3_lightning.data.randaug` (see its notes).
* Random erasing (timm ``RandomErasing(0.25, mode="pixel")``) is :class:`RandomErasingPixel`, applied after
  normalisation on the HWC float array, as timm applies it to the normalised tensor.
* Randomness is owned by the transform (albumentations generators), not by the global ``random``/``numpy`` state:
  pass ``seed`` or call :meth:`ImageTransform.set_random_state` (the datasets do this per item).
"""

from __future__ import annotations

import math
import random
from typing import Any, Literal

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from PIL import Image

from beit3_lightning.data.images import scale_16bit_to_uint8, to_rgb_image
from beit3_lightning.data.randaug import timm_rand_augment, vl_random_augment

__all__ = [
    "IMAGENET_DEFAULT_MEAN",
    "IMAGENET_DEFAULT_STD",
    "IMAGENET_INCEPTION_MEAN",
    "IMAGENET_INCEPTION_STD",
    "INTERPOLATIONS",
    "ImageTransform",
    "RandomErasingPixel",
    "build_imagenet_transform",
    "build_transform",
    "build_vl_transform",
    "to_uint8_rgb",
]

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
# VL tasks normalise to [-1, 1].
IMAGENET_INCEPTION_MEAN = (0.5, 0.5, 0.5)
IMAGENET_INCEPTION_STD = (0.5, 0.5, 0.5)

INTERPOLATIONS: dict[str, int] = {
    "bicubic": cv2.INTER_CUBIC,
    "bilinear": cv2.INTER_LINEAR,
    "nearest": cv2.INTER_NEAREST,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}

Interpolation = Literal["bicubic", "bilinear", "nearest", "area", "lanczos"]


def _interpolation_flag(name: str) -> int:
    if name not in INTERPOLATIONS:
        raise ValueError(f"Unknown interpolation {name!r}; choose one of {sorted(INTERPOLATIONS)}")
    return INTERPOLATIONS[name]


def to_uint8_rgb(image: Image.Image | np.ndarray) -> np.ndarray:
    """Turn a PIL image (any mode) or an HWC / HW uint8 or uint16 array into a contiguous HxWx3 uint8 array.

    16-bit / float PIL images and uint16 arrays are scaled to 8 bits (:func:`~beit3_lightning.data.images.to_rgb_image`)
    rather than clipped to white. An empty (0-pixel) image is a ValueError: OpenCV would fail later with an
    assertion that does not say which input was wrong.
    """
    if isinstance(image, Image.Image):
        array = np.asarray(to_rgb_image(image))
    elif not isinstance(image, np.ndarray):
        raise TypeError(f"Expected a PIL image or a numpy array, got {type(image).__name__}")
    elif image.dtype == np.uint16:
        array = scale_16bit_to_uint8(image)
    elif image.dtype != np.uint8:
        raise ValueError(f"Expected a uint8 (or 16-bit uint16) image array, got dtype {image.dtype}")
    else:
        array = image
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"Expected an HxWx3 (RGB) or HxW image array, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"Empty image: {array.shape[0]}x{array.shape[1]} pixels; pass an image with content")
    return np.ascontiguousarray(array)


class RandomErasingPixel(A.ImageOnlyTransform):
    """timm ``RandomErasing(probability, mode="pixel", count=1)`` on a normalised float HWC image.

    With probability ``p``: up to 10 tries of area ~ U(min_area, max_area) x image area and aspect ratio
    log-uniform in (min_aspect, 1 / min_aspect); the first box strictly smaller than the image is filled with
    per-pixel, per-channel N(0, 1) noise (noise in normalised space, as timm).
    """

    def __init__(
        self, p: float = 0.25, min_area: float = 0.02, max_area: float = 1 / 3, min_aspect: float = 0.3
    ) -> None:
        super().__init__(p=p)
        self.min_area = min_area
        self.max_area = max_area
        self.log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """Pick the erased box (or none after 10 failed tries) and its noise."""
        height, width = params["shape"][:2]
        channels = params["shape"][2] if len(params["shape"]) > 2 else 1
        for _ in range(10):
            area = self.py_random.uniform(self.min_area, self.max_area) * height * width
            aspect = math.exp(self.py_random.uniform(*self.log_aspect))
            box_h = int(round(math.sqrt(area * aspect)))
            box_w = int(round(math.sqrt(area / aspect)))
            if box_w < width and box_h < height:
                top = self.py_random.randint(0, height - box_h)
                left = self.py_random.randint(0, width - box_w)
                noise = self.random_generator.standard_normal((box_h, box_w, channels)).astype(np.float32)
                return {"box": (top, left, box_h, box_w), "noise": noise}
        return {"box": None, "noise": None}

    def apply(self, img: np.ndarray, box: tuple[int, int, int, int] | None = None, noise=None, **params: Any):
        """Copy the image and overwrite the box with the noise."""
        if box is None:
            return img
        top, left, box_h, box_w = box
        out = img.copy()
        out[top : top + box_h, left : left + box_w] = noise.reshape(box_h, box_w, -1)
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("min_area", "max_area")


class ImageTransform:
    """A seeded albumentations pipeline that maps a PIL image / HWC uint8 array to a float32 CHW tensor."""

    def __init__(self, transforms: list[A.BasicTransform], name: str, seed: int | None = None) -> None:
        self.name = name
        self.pipeline = A.Compose([*transforms, ToTensorV2()], seed=seed)

    def __call__(self, image: Image.Image | np.ndarray) -> torch.Tensor:
        """Transform one image; output shape (3, S, S), dtype float32."""
        out = self.pipeline(image=to_uint8_rgb(image))["image"]
        return out.float() if out.dtype != torch.float32 else out

    def set_random_state(self, np_generator: np.random.Generator, py_random: random.Random) -> None:
        """Make the next calls draw from these generators (shared by every step of the pipeline)."""
        self.pipeline.set_random_state(np_generator, py_random)

    def reseed(self, seed: int) -> None:
        """Restart the pipeline's random stream from ``seed`` (same seed → same augmentations)."""
        self.set_random_state(np.random.default_rng(seed), random.Random(seed))

    def __repr__(self) -> str:
        steps = ", ".join(type(t).__name__ for t in self.pipeline.transforms)
        return f"ImageTransform({self.name}: {steps})"


def _crop_and_flip(img_size: int, min_scale: float, flag: int, downscale: str | None) -> list[A.BasicTransform]:
    """RandomResizedCrop(S, scale (min_scale, 1), ratio (3/4, 4/3)) then a horizontal flip with p=0.5."""
    crop = A.RandomResizedCrop(
        size=(img_size, img_size),
        scale=(min_scale, 1.0),
        ratio=(3 / 4, 4 / 3),
        interpolation=flag,
        area_for_downscale=downscale,
    )
    return [crop, A.HorizontalFlip(p=0.5)]


def build_vl_transform(
    is_train: bool,
    img_size: int,
    randaug: bool = False,
    interpolation: Interpolation = "bicubic",
    antialias: bool = True,
    seed: int | None = None,
) -> ImageTransform:
    """VL-task transform (VQA, NLVR2, retrieval, captioning).

    Train: RandomResizedCrop(S, scale 0.5-1, ratio 3/4-4/3) → HorizontalFlip(0.5) → [RandomAugment(2, 7)] →
    normalise mean = std = 0.5. Eval: squash Resize(S, S) (no crop) → normalise 0.5 / 0.5.
    """
    flag = _interpolation_flag(interpolation)
    downscale = "image" if antialias else None
    if is_train:
        steps = _crop_and_flip(img_size, min_scale=0.5, flag=flag, downscale=downscale)
        if randaug:
            steps.append(vl_random_augment())
        name = "vl-train" + ("+randaug" if randaug else "")
    else:
        steps = [A.Resize(img_size, img_size, interpolation=flag, area_for_downscale=downscale)]
        name = "vl-eval"
    steps.append(A.Normalize(mean=IMAGENET_INCEPTION_MEAN, std=IMAGENET_INCEPTION_STD, max_pixel_value=255.0))
    return ImageTransform(steps, f"{name}@{img_size}", seed=seed)


def build_imagenet_transform(
    is_train: bool,
    img_size: int,
    interpolation: Interpolation = "bicubic",
    crop_pct: float = 1.0,
    auto_augment: bool = True,
    reprob: float = 0.25,
    antialias: bool = True,
    seed: int | None = None,
) -> ImageTransform:
    """ImageNet transform (timm ``create_transform`` as called by the reference).

    Train: RandomResizedCrop(S, scale 0.08-1, ratio 3/4-4/3) → HorizontalFlip(0.5) → [rand-m9-mstd0.5-inc1 with
    fill = mean x 255] → normalise ImageNet mean/std → RandomErasing(reprob, pixel mode). Colour jitter is not used:
    timm ignores it when auto-augment is on. Eval: shorter side to int(S / crop_pct) → CenterCrop(S) → normalise.
    """
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    flag = _interpolation_flag(interpolation)
    downscale = "image" if antialias else None
    normalize = A.Normalize(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, max_pixel_value=255.0)
    if is_train:
        steps = _crop_and_flip(img_size, min_scale=0.08, flag=flag, downscale=downscale)
        if auto_augment:
            fill = tuple(min(255, round(255 * m)) for m in IMAGENET_DEFAULT_MEAN)
            steps.append(timm_rand_augment(fill=fill, interpolation=flag))
        steps.append(normalize)
        if reprob > 0:
            steps.append(RandomErasingPixel(p=reprob))
        name = "imagenet-train"
    else:
        steps = [
            A.SmallestMaxSize(max_size=int(img_size / crop_pct), interpolation=flag, area_for_downscale=downscale),
            A.CenterCrop(img_size, img_size),
            normalize,
        ]
        name = "imagenet-eval"
    return ImageTransform(steps, f"{name}@{img_size}", seed=seed)


def build_transform(
    task: str,
    is_train: bool,
    img_size: int,
    randaug: bool = False,
    interpolation: Interpolation = "bicubic",
    crop_pct: float = 1.0,
    antialias: bool = True,
    seed: int | None = None,
) -> ImageTransform:
    """The reference ``build_transform``: ImageNet recipe for ``task == "imagenet"``, the VL recipe otherwise.

    ``randaug`` only affects VL tasks: the reference always uses timm RandAugment for ImageNet training.
    ``crop_pct`` only affects ImageNet evaluation.
    """
    if img_size <= 0:
        raise ValueError(f"img_size must be positive, got {img_size}")
    if task == "imagenet":
        return build_imagenet_transform(
            is_train, img_size, interpolation, crop_pct=crop_pct, antialias=antialias, seed=seed
        )
    return build_vl_transform(is_train, img_size, randaug, interpolation, antialias=antialias, seed=seed)
