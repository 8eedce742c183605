"""Turning decoded images of any depth into 8-bit RGB: the one conversion shared by the datasets and the API.

PIL's ``convert("RGB")`` treats every sample as 8-bit and clips: a 16-bit greyscale PNG (mode ``I;16``), a 32-bit
integer image (mode ``I``) or a float image (mode ``F``) comes out almost all white. Here such images are scaled:

* ``I;16`` (and its byte orders ``I;16B`` / ``I;16L`` / ``I;16N``) and ``uint16`` arrays: 16-bit samples, value / 257
  rounded (0 → 0, 65535 → 255, 257·k → k);
* ``I``: read as 16-bit samples too (PIL opens 16-bit TIFF / PPM / older-Pillow PNG greyscale as ``I``); a value
  outside 0..65535 is refused because no scale fits it;
* ``F``: floats in [0, 1] (the convention of float images in numpy / scikit-image) → value × 255 rounded; values
  outside [0, 1] or NaN are refused, since clipping them is what made the images white.

Everything else (``L``, ``P``, ``RGBA``, ``CMYK``...) goes through ``convert("RGB")`` as before. Only numpy and PIL are
imported so the datasets can use this without pulling in the augmentation libraries.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["SIXTEEN_BIT_MODES", "scale_16bit_to_uint8", "to_rgb_image"]

SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
_MAX_16BIT = 65535


def scale_16bit_to_uint8(samples: np.ndarray) -> np.ndarray:
    """16-bit samples (any integer dtype, values 0..65535) → uint8 by value / 257, rounded half up."""
    wide = samples.astype(np.uint32)
    return ((wide + 128) // 257).astype(np.uint8)


def _grey_to_rgb(grey: np.ndarray) -> Image.Image:
    return Image.fromarray(grey, mode="L").convert("RGB")


def to_rgb_image(image: Image.Image) -> Image.Image:
    """``image`` as an 8-bit RGB PIL image, scaling 16-bit / 32-bit-int / float greyscale (see the module docstring).

    Raises ValueError for an ``I`` or ``F`` image whose values fit no scale; the message says which range it has.
    """
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES:
        return _grey_to_rgb(scale_16bit_to_uint8(np.asarray(image)))
    if mode == "I":
        samples = np.asarray(image)
        if samples.size and (samples.min() < 0 or samples.max() > _MAX_16BIT):
            raise ValueError(
                f"32-bit integer image (mode I) with values {samples.min()}..{samples.max()}: only 16-bit samples "
                f"(0..{_MAX_16BIT}) can be scaled to 8 bits; convert the image to 8 or 16 bits first"
            )
        return _grey_to_rgb(scale_16bit_to_uint8(samples))
    if mode == "F":
        samples = np.asarray(image)
        if samples.size and not (np.isfinite(samples).all() and samples.min() >= 0 and samples.max() <= 1):
            raise ValueError(
                f"float image (mode F) with values {np.nanmin(samples):g}..{np.nanmax(samples):g}: float images must "
                "hold values in [0, 1] (no NaN); convert the image to 8 or 16 bits first"
            )
        return _grey_to_rgb(np.round(samples * 255).astype(np.uint8))
    return image.convert("RGB")
