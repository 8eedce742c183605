"""RandAugment policies in albumentations: BEiT-3's VL ``RandomAugment`` and timm's ``rand-m9-mstd0.5-inc1``.

Both policies have the same shape: draw ``num_ops`` operations uniformly *with replacement* from a fixed list and
apply each one with probability 0.5 at a magnitude ``level`` in ``[0, 10]``. They differ in the op list, in how a
level becomes an argument, and in whether the level is jittered:

* VL (``beit3/randaug.py``, used with ``--randaug`` for every task except ImageNet): N=2, M=7, ten ops, a fixed level,
  geometric fill (128, 128, 128), bilinear warps, absolute translation ``translate_const = 10`` px.
* ImageNet (timm 0.4.12 ``rand-m9-mstd0.5-inc1``): N=2, M=9 with Gaussian noise (std 0.5, clipped to [0, 10]) drawn
  at every application, the "increasing" op set, fill = ImageNet mean x 255, bicubic warps, relative translation of
  up to 0.45 x the image side.

Identity and Invert are albumentations' ``NoOp`` and ``InvertImg``. Every other op is one small
``ImageOnlyTransform`` (:class:`LevelledOp`) driven by a table of pure NumPy/OpenCV functions:
albumentations' ``Affine``/``Sharpen``/brightness transforms sample their argument from a range instead of using
"fixed magnitude, random sign" and shear about the image centre (PIL and the reference shear about the origin), and
its ``AutoContrast(method="pil")`` / ``Equalize(mode="pil")`` differ from ``PIL.ImageOps`` by up to 6 grey levels
in 2.0.8 (its histogram range is [0, 255) instead of [0, 256)); ours match PIL exactly.

Known differences from the references (all sub-pixel or rounding-level):

* The two sampled ops are applied in list order, not draw order (``albumentations.SomeOf`` sorts the indices); the
  multiset of applied ops has the reference distribution.
* Rotation is about the true image centre, like PIL; the reference's OpenCV code rotates about a point half a pixel
  off. Enhance ops match ``PIL.ImageEnhance`` within one grey level (float blends, truncated like PIL).
* timm applies its ops to PIL images; here they run on uint8 HWC arrays with the same formulas.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import albumentations as A
import cv2
import numpy as np

__all__ = [
    "MAX_LEVEL",
    "TIMM_INCREASING_OPS",
    "VL_OPS",
    "LevelledOp",
    "OpSpec",
    "timm_rand_augment",
    "vl_random_augment",
]

MAX_LEVEL = 10.0
# The probability with which every selected op is applied (both references use 0.5).
OP_PROB = 0.5

Image = np.ndarray  # uint8, HWC, 3 channels


@dataclass(frozen=True)
class OpContext:
    """Per-policy settings that the op functions need besides their argument."""

    fill: tuple[int, int, int]
    interpolation: int


# ---------------------------------------------------------------------------------------------------------------
# Pure op functions: (image, argument, context) -> image. All keep uint8 HWC.
# ---------------------------------------------------------------------------------------------------------------


def _warp(img: Image, matrix: np.ndarray, ctx: OpContext) -> Image:
    """Warp with an *inverse* map (output pixel -> input pixel), as ``PIL.Image.transform(AFFINE)`` does."""
    height, width = img.shape[:2]
    return cv2.warpAffine(
        img,
        matrix.astype(np.float32),
        (width, height),
        flags=ctx.interpolation | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=ctx.fill,
    )


def shear_x(img: Image, factor: float, ctx: OpContext) -> Image:
    """Shear about the origin: output(x, y) = input(x + factor * y, y)."""
    return _warp(img, np.array([[1.0, factor, 0.0], [0.0, 1.0, 0.0]]), ctx)


def shear_y(img: Image, factor: float, ctx: OpContext) -> Image:
    """Shear about the origin: output(x, y) = input(x, y + factor * x)."""
    return _warp(img, np.array([[1.0, 0.0, 0.0], [factor, 1.0, 0.0]]), ctx)


def translate_x(img: Image, pixels: float, ctx: OpContext) -> Image:
    """output(x, y) = input(x + pixels, y): positive ``pixels`` moves the content left."""
    return _warp(img, np.array([[1.0, 0.0, pixels], [0.0, 1.0, 0.0]]), ctx)


def translate_y(img: Image, pixels: float, ctx: OpContext) -> Image:
    """output(x, y) = input(x, y + pixels): positive ``pixels`` moves the content up."""
    return _warp(img, np.array([[1.0, 0.0, 0.0], [0.0, 1.0, pixels]]), ctx)


def translate_x_rel(img: Image, fraction: float, ctx: OpContext) -> Image:
    """Horizontal translation by ``fraction`` of the image width (timm ``TranslateXRel``)."""
    return translate_x(img, fraction * img.shape[1], ctx)


def translate_y_rel(img: Image, fraction: float, ctx: OpContext) -> Image:
    """Vertical translation by ``fraction`` of the image height (timm ``TranslateYRel``)."""
    return translate_y(img, fraction * img.shape[0], ctx)


def rotate(img: Image, degrees: float, ctx: OpContext) -> Image:
    """Rotate counter-clockwise by ``degrees`` about the image centre, same size, corners filled."""
    height, width = img.shape[:2]
    # The true centre in OpenCV's pixel-centre coordinates (PIL's centre; the reference's cv2 code uses W/2, H/2).
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2.0, (height - 1) / 2.0), degrees, 1.0)
    return cv2.warpAffine(
        img, matrix, (width, height), flags=ctx.interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=ctx.fill
    )


def _blend(degenerate: np.ndarray, img: Image, factor: float) -> Image:
    """``PIL.Image.blend(degenerate, img, factor)``: extrapolates for factor > 1, clips and truncates to uint8."""
    out = degenerate.astype(np.float32) + factor * (img.astype(np.float32) - degenerate)
    return np.clip(out, 0, 255).astype(np.uint8)


def brightness(img: Image, factor: float, ctx: OpContext) -> Image:
    """``ImageEnhance.Brightness``: blend with black, i.e. multiply every value by ``factor``."""
    table = np.clip(np.arange(256, dtype=np.float32) * factor, 0, 255).astype(np.uint8)
    return table[img]


def _grayscale(img: Image) -> np.ndarray:
    """PIL "L" conversion (ITU-R 601-2 luma), float32 HxWx1."""
    luma = img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.round(luma)[..., None]


def color(img: Image, factor: float, ctx: OpContext) -> Image:
    """``ImageEnhance.Color``: blend with the grayscale version of the image."""
    return _blend(_grayscale(img), img, factor)


def contrast(img: Image, factor: float, ctx: OpContext) -> Image:
    """``ImageEnhance.Contrast``: blend with a flat image at the (rounded) mean grey level."""
    mean = float(np.floor(_grayscale(img).mean() + 0.5))
    return _blend(np.full_like(img, mean, dtype=np.float32), img, factor)


_SMOOTH_KERNEL = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=np.float32) / 13.0


def sharpness(img: Image, factor: float, ctx: OpContext) -> Image:
    """``ImageEnhance.Sharpness``: blend with PIL's SMOOTH-filtered image; the 1-pixel border is left unchanged."""
    if img.shape[0] < 3 or img.shape[1] < 3:
        return img
    smooth = cv2.filter2D(img.astype(np.float32), -1, _SMOOTH_KERNEL, borderType=cv2.BORDER_REFLECT)
    degenerate = img.astype(np.float32)
    degenerate[1:-1, 1:-1] = np.round(smooth[1:-1, 1:-1])
    return _blend(degenerate, img, factor)


def autocontrast(img: Image, _: float, ctx: OpContext) -> Image:
    """``ImageOps.autocontrast`` (cutoff 0): stretch each channel's [min, max] to [0, 255]; flat channels kept."""
    out = np.empty_like(img)
    for channel in range(img.shape[2]):
        values = img[..., channel]
        low, high = int(values.min()), int(values.max())
        if high <= low:
            out[..., channel] = values
            continue
        scale = 255.0 / (high - low)
        table = np.clip((np.arange(256) * scale - low * scale).astype(np.int64), 0, 255).astype(np.uint8)
        out[..., channel] = table[values]
    return out


def equalize(img: Image, _: float, ctx: OpContext) -> Image:
    """``ImageOps.equalize`` per channel: PIL's cumulative-histogram LUT (step excludes the last used bin)."""
    out = np.empty_like(img)
    for channel in range(img.shape[2]):
        values = img[..., channel]
        histogram = np.bincount(values.ravel(), minlength=256)
        used = histogram[histogram > 0]
        step = (int(used.sum()) - int(used[-1])) // 255 if len(used) > 1 else 0
        if step == 0:
            out[..., channel] = values
            continue
        # lut[i] = (step // 2 + number of pixels below i) // step
        below = np.concatenate([[0], np.cumsum(histogram)[:-1]])
        table = np.minimum((step // 2 + below) // step, 255).astype(np.uint8)
        out[..., channel] = table[values]
    return out


def posterize(img: Image, bits: float, ctx: OpContext) -> Image:
    """``ImageOps.posterize``: keep the ``bits`` most significant bits (0 bits gives black, >= 8 is a no-op)."""
    bits = int(bits)
    if bits >= 8:
        return img
    mask = ~np.uint8((1 << (8 - bits)) - 1) if bits > 0 else np.uint8(0)
    return img & mask


def solarize(img: Image, threshold: float, ctx: OpContext) -> Image:
    """``ImageOps.solarize``: invert every value >= threshold."""
    return np.where(img >= threshold, 255 - img, img).astype(np.uint8)


def solarize_add(img: Image, addition: float, ctx: OpContext) -> Image:
    """timm ``SolarizeAdd``: add ``addition`` (clipped at 255) to every value below 128."""
    table = np.arange(256)
    table = np.where(table < 128, np.minimum(255, table + int(addition)), table).astype(np.uint8)
    return table[img]


# ---------------------------------------------------------------------------------------------------------------
# Levelled op transform and the two policy tables.
# ---------------------------------------------------------------------------------------------------------------

OpFunction = Callable[[Image, float, OpContext], Image]
# (level in [0, 10], sign in {-1, +1}) -> argument of the op function.
LevelToArg = Callable[[float, float], float]


@dataclass(frozen=True)
class OpSpec:
    """One levelled op: the image function and how (level, random sign) becomes its argument."""

    function: OpFunction
    level_to_arg: LevelToArg


# Level-to-argument maps are module-level functions / partials (not lambdas) so transforms pickle for
# DataLoader workers started with "spawn".
def _no_arg(level: float, sign: float) -> float:
    return 0.0


def _signed_scaled(level: float, sign: float, scale: float) -> float:
    """±(level / 10) x scale with a random sign (shear, translate, rotate)."""
    return sign * level / MAX_LEVEL * scale


def _signed(scale: float) -> LevelToArg:
    return partial(_signed_scaled, scale=scale)


def _vl_enhance_factor(level: float, sign: float) -> float:
    """VL brightness/sharpness: (level / 10) x 1.8 + 0.1, no sign (1.36 at M=7: always brightening/sharpening)."""
    return level / MAX_LEVEL * 1.8 + 0.1


def _enhance_increasing(level: float, sign: float) -> float:
    """timm ``*Increasing`` enhance ops: factor 1 ± 0.9·level/10 (stronger with the level in both directions)."""
    return 1.0 + sign * level / MAX_LEVEL * 0.9


def _posterize_bits(level: float, sign: float) -> float:
    """timm ``PosterizeIncreasing``: 4 - int(0.4·level) bits (fewer bits = stronger)."""
    return 4 - int(level / MAX_LEVEL * 4)


def _solarize_threshold(level: float, sign: float) -> float:
    """timm ``SolarizeIncreasing``: threshold 256 - int(25.6·level) (lower = stronger)."""
    return 256 - int(level / MAX_LEVEL * 256)


def _solarize_addition(level: float, sign: float) -> float:
    """timm ``SolarizeAdd``: add int(11·level) below 128."""
    return int(level / MAX_LEVEL * 110)


_AUTOCONTRAST = OpSpec(autocontrast, _no_arg)
_EQUALIZE = OpSpec(equalize, _no_arg)

# VL policy (beit3/randaug.py): translate_const 10 px, so at M=7: shear ±0.21, translate ±7 px, rotate ±21°,
# brightness/sharpness factor 1.36.
VL_OPS: dict[str, OpSpec] = {
    "AutoContrast": _AUTOCONTRAST,
    "Equalize": _EQUALIZE,
    "Brightness": OpSpec(brightness, _vl_enhance_factor),
    "Sharpness": OpSpec(sharpness, _vl_enhance_factor),
    "ShearX": OpSpec(shear_x, _signed(0.3)),
    "ShearY": OpSpec(shear_y, _signed(0.3)),
    "TranslateX": OpSpec(translate_x, _signed(10.0)),
    "TranslateY": OpSpec(translate_y, _signed(10.0)),
    "Rotate": OpSpec(rotate, _signed(30.0)),
}

# timm 0.4.12 ``_RAND_INCREASING_TRANSFORMS`` except Invert (albumentations ``InvertImg``).
TIMM_INCREASING_OPS: dict[str, OpSpec] = {
    "AutoContrast": _AUTOCONTRAST,
    "Equalize": _EQUALIZE,
    "Rotate": OpSpec(rotate, _signed(30.0)),
    "PosterizeIncreasing": OpSpec(posterize, _posterize_bits),
    "SolarizeIncreasing": OpSpec(solarize, _solarize_threshold),
    "SolarizeAdd": OpSpec(solarize_add, _solarize_addition),
    "ColorIncreasing": OpSpec(color, _enhance_increasing),
    "ContrastIncreasing": OpSpec(contrast, _enhance_increasing),
    "BrightnessIncreasing": OpSpec(brightness, _enhance_increasing),
    "SharpnessIncreasing": OpSpec(sharpness, _enhance_increasing),
    "ShearX": OpSpec(shear_x, _signed(0.3)),
    "ShearY": OpSpec(shear_y, _signed(0.3)),
    "TranslateXRel": OpSpec(translate_x_rel, _signed(0.45)),
    "TranslateYRel": OpSpec(translate_y_rel, _signed(0.45)),
}


class LevelledOp(A.ImageOnlyTransform):
    """Apply one table op at ``magnitude`` (optionally jittered by N(0, magnitude_std), clipped to [0, 10]).

    Randomness (jitter, sign) comes from the transform's albumentations generators, so ``Compose(seed=...)`` and
    ``set_random_state`` make it reproducible.
    """

    def __init__(
        self,
        name: str,
        spec: OpSpec,
        magnitude: float,
        magnitude_std: float = 0.0,
        fill: tuple[int, int, int] = (128, 128, 128),
        interpolation: int = cv2.INTER_LINEAR,
        p: float = OP_PROB,
    ) -> None:
        super().__init__(p=p)
        self.name = name
        self.spec = spec
        self.magnitude = magnitude
        self.magnitude_std = magnitude_std
        self.context = OpContext(fill=tuple(int(v) for v in fill), interpolation=interpolation)

    def get_params(self) -> dict[str, Any]:
        """Draw the level (jittered magnitude) and the sign, then map them to the op argument."""
        level = self.magnitude
        if self.magnitude_std > 0:
            level = self.py_random.gauss(level, self.magnitude_std)
        level = min(MAX_LEVEL, max(0.0, level))
        sign = -1.0 if self.py_random.random() < 0.5 else 1.0
        return {"arg": self.spec.level_to_arg(level, sign)}

    def apply(self, img: np.ndarray, arg: float = 0.0, **params: Any) -> np.ndarray:
        """Run the op function on a uint8 HWC image."""
        return self.spec.function(img, arg, self.context)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("name", "magnitude", "magnitude_std")

    def __repr__(self) -> str:
        return f"LevelledOp({self.name}, magnitude={self.magnitude}, std={self.magnitude_std}, p={self.p})"


def vl_random_augment(num_ops: int = 2, magnitude: float = 7, fill: int = 128) -> A.SomeOf:
    """The BEiT-3 VL ``RandomAugment(N=2, M=7)``: 2 of 10 ops with replacement, each applied with p=0.5.

    Ops: Identity, AutoContrast, Equalize, Brightness, Sharpness, ShearX, ShearY, TranslateX, TranslateY, Rotate.
    """
    fill_rgb = (fill, fill, fill)
    ops: list[A.BasicTransform] = [A.NoOp(p=OP_PROB)]
    ops += [LevelledOp(name, spec, magnitude, fill=fill_rgb) for name, spec in VL_OPS.items()]
    return A.SomeOf(ops, n=num_ops, replace=True, p=1.0)


def timm_rand_augment(
    magnitude: float = 9,
    magnitude_std: float = 0.5,
    num_ops: int = 2,
    fill: tuple[int, int, int] = (124, 116, 104),
    interpolation: int = cv2.INTER_CUBIC,
) -> A.SomeOf:
    """timm ``rand-m{magnitude}-mstd{magnitude_std}-inc1``: 2 of the 15 "increasing" ops, each with p=0.5.

    ``fill`` defaults to ``round(255 x IMAGENET_DEFAULT_MEAN)``; warps use ``interpolation`` (timm passes the train
    interpolation, bicubic). Relative translation (0.45 x side at level 10) equals timm's ``translate_pct``; on the
    square crops RandAugment sees, that is the ``translate_const = int(0.45 x S)`` of the reference.
    """
    ops: list[A.BasicTransform] = [A.InvertImg(p=OP_PROB)]
    ops += [
        LevelledOp(name, spec, magnitude, magnitude_std, fill=fill, interpolation=interpolation)
        for name, spec in TIMM_INCREASING_OPS.items()
    ]
    return A.SomeOf(ops, n=num_ops, replace=True, p=1.0)
