"""Segmentation inference: whole-image and sliding-window logits, multi-scale + flip test-time augmentation.

Plain torch on any ``logits_fn`` (a ``Beit3ForSemanticSegmentation`` or anything mapping (B, 3, S, S) crops to
(B, K, s, s) logits), so the predictor, the task and the tests share it.

* **whole**: the image (at most one crop in size) is padded bottom/right to the crop, run once, and the logits
  (upsampled to the crop) are cut back to the image. mmseg instead runs the ViT on the smaller image with an
  interpolated position table; padding keeps the model at the resolution it was trained on.
* **slide** (mmseg ``EncoderDecoder.slide_inference``): windows of ``crop`` every ``stride`` pixels, the last
  window of a row / column moved back to end at the border, each window's logits upsampled to its size and summed;
  the sum is divided by how many windows covered each pixel. When the crop covers the image this is ``whole``.
* **scales / flip**: the image is resized by each scale factor (and mirrored when ``flip``), segmented, the logits
  resized to the output size and turned into probabilities, and the probabilities are averaged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor

LogitsFn = Callable[[Tensor], Tensor]
INFERENCE_MODES = ("whole", "slide")


def default_stride(crop: int) -> int:
    """Two thirds of the crop, as the BEiT recipes (512 → 341, 640 → 426)."""
    return crop * 2 // 3


def _upsample(logits: Tensor, size: Sequence[int]) -> Tensor:
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def whole_logits(logits_fn: LogitsFn, image: Tensor, crop: int) -> Tensor:
    """Image (B, 3, h, w) with h, w ≤ crop → logits (B, K, h, w)."""
    h, w = image.shape[-2:]
    if h > crop or w > crop:
        raise ValueError(f"whole-image inference needs an image of at most {crop}×{crop}, got {h}×{w}; use slide")
    padded = F.pad(image, (0, crop - w, 0, crop - h))  # bottom / right, value 0 (the normalised mean)
    return _upsample(logits_fn(padded), (crop, crop))[..., :h, :w]


def window_starts(length: int, crop: int, stride: int) -> list[int]:
    """Start offsets of the windows along one axis (mmseg's grid: the last window ends at the border)."""
    count = max(length - crop + stride - 1, 0) // stride + 1
    return [max(min(i * stride + crop, length) - crop, 0) for i in range(count)]


def slide_logits(logits_fn: LogitsFn, image: Tensor, crop: int, stride: int) -> Tensor:
    """Image (B, 3, H, W) → logits (B, K, H, W) averaged over overlapping ``crop`` windows every ``stride``."""
    if not 0 < stride <= crop:
        raise ValueError(f"stride must be in (0, crop={crop}], got {stride}")
    height, width = image.shape[-2:]
    total: Tensor | None = None
    count = image.new_zeros(1, 1, height, width)
    for y in window_starts(height, crop, stride):
        for x in window_starts(width, crop, stride):
            window = image[..., y : y + crop, x : x + crop]
            logits = whole_logits(logits_fn, window, crop)  # (B, K, h, w) of this window
            if total is None:
                total = image.new_zeros(image.shape[0], logits.shape[1], height, width)
            total[..., y : y + crop, x : x + crop] += logits
            count[..., y : y + crop, x : x + crop] += 1
    return total / count


def segment_probabilities(
    logits_fn: LogitsFn,
    image: Tensor,
    crop: int,
    mode: str = "slide",
    stride: int | None = None,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    out_size: Sequence[int] | None = None,
) -> Tensor:
    """Class probabilities (B, K, *out_size) of normalised images (B, 3, H, W), averaged over the test-time
    augmentations (each scale, and its mirror image when ``flip``). ``out_size`` defaults to (H, W)."""
    if mode not in INFERENCE_MODES:
        raise ValueError(f"unknown inference mode {mode!r}; use one of {', '.join(INFERENCE_MODES)}")
    stride = stride if stride is not None else default_stride(crop)
    out_size = tuple(out_size) if out_size is not None else tuple(image.shape[-2:])
    height, width = image.shape[-2:]
    probabilities: Tensor | None = None
    runs = 0
    for scale in scales:
        scaled = image
        if scale != 1.0:
            scaled = _upsample(image, (max(round(height * scale), 1), max(round(width * scale), 1)))
        for mirrored in (False, True) if flip else (False,):
            x = scaled.flip(-1) if mirrored else scaled
            logits = slide_logits(logits_fn, x, crop, stride) if mode == "slide" else whole_logits(logits_fn, x, crop)
            if mirrored:
                logits = logits.flip(-1)
            probs = _upsample(logits, out_size).float().softmax(dim=1)
            probabilities = probs if probabilities is None else probabilities + probs
            runs += 1
    return probabilities / runs
