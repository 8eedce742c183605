"""``segment()``: semantic segmentation with a ``Beit3ForSemanticSegmentation`` model (label maps at the original
image size: the ``post_process_semantic_segmentation(target_sizes=...)`` contract of transformers' BEiT)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from beit3_lightning.data.segmentation_transforms import SegmentationEvalTransform
from beit3_lightning.inference.base import Beit3Predictor
from beit3_lightning.modeling.segmentation_inference import INFERENCE_MODES, segment_probabilities
from beit3_lightning.processor import ImageInput
from beit3_lightning.segmentation_colors import overlay as overlay_image
from beit3_lightning.segmentation_colors import palette_png


class SegmentationPredictor(Beit3Predictor):
    """Per-pixel classes of images of any size.

    Each image is resized keeping its aspect ratio (short side = the model's crop, as in evaluation), segmented
    with sliding windows (or whole, for images no larger than the crop), optionally at several scales and mirrored,
    and the result is resized back to the image's own size.

    Args:
        class_names: names of the classes (default: the ones saved in a Lightning checkpoint, else none).
        inference: ``"slide"`` or ``"whole"``; stride: window stride (default two thirds of the crop).
        scales, flip: test-time augmentation (probabilities averaged).
        **kwargs: see :class:`Beit3Predictor`.
    """

    head = "segmentation"

    def __init__(self, *args: Any, class_names: Sequence[str] | None = None, inference: str = "slide",
                 stride: int | None = None, scales: Sequence[float] = (1.0,), flip: bool = False,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        if inference not in INFERENCE_MODES:
            raise ValueError(f"inference must be one of {', '.join(INFERENCE_MODES)}, got {inference!r}")
        self.num_classes = self.model.num_classes
        if class_names is not None and len(class_names) != self.num_classes:
            raise ValueError(f"got {len(class_names)} class names for a model with {self.num_classes} classes")
        self.class_names = list(class_names) if class_names is not None else None
        self.inference, self.stride, self.scales, self.flip = inference, stride, tuple(scales), flip
        self.transform = SegmentationEvalTransform(self.model.config.img_size)

    def _logits(self, crops: torch.Tensor) -> torch.Tensor:
        return self.model(crops, with_aux=False)["logits"]

    @torch.no_grad()
    def probabilities(self, images: ImageInput) -> list[torch.Tensor]:
        """Per image, class probabilities (K, H, W) at its original size, float32 on the CPU."""
        results = []
        for _, chunk in self.chunks(self.images(images), "segment"):
            for image in chunk:
                pil = self.processor.image_list(image)[0]
                pil = pil if isinstance(pil, Image.Image) else _open(pil)
                size = (pil.height, pil.width)
                tensor, _ = self.transform(pil, None)
                probs = segment_probabilities(
                    self._logits, tensor[None].to(self.device, self.dtype), crop=self.model.config.img_size,
                    mode=self.inference, stride=self.stride, scales=self.scales, flip=self.flip, out_size=size,
                )  # fmt: skip
                results.append(probs[0].float().cpu())
        return results

    def segment(self, images: ImageInput) -> list[np.ndarray]:
        """Per image, an (H, W) int64 map of class ids at the image's original size."""
        return [probs.argmax(0).numpy() for probs in self.probabilities(images)]

    def names(self, label_map: np.ndarray) -> list[str]:
        """Names (or ids) of the classes present in a label map, most pixels first."""
        ids, counts = np.unique(label_map, return_counts=True)
        order = ids[np.argsort(-counts, kind="stable")]
        return [self.class_names[i] if self.class_names else str(i) for i in order.tolist()]

    def overlay(self, image: Any, label_map: np.ndarray, alpha: float = 0.5) -> Image.Image:
        """The image with the label map's class colours blended in."""
        pil = self.processor.image_list(image)[0]
        pil = pil if isinstance(pil, Image.Image) else _open(pil)
        return overlay_image(pil, label_map, self.num_classes, alpha=alpha)

    def palette_png(self, label_map: np.ndarray) -> Image.Image:
        """A palette PNG of the label map (pixel values = class ids, shown in the class colours)."""
        return palette_png(label_map, self.num_classes)


def _open(image: Any) -> Image.Image:
    from beit3_lightning.processor import open_image

    if isinstance(image, np.ndarray):
        return Image.fromarray(image).convert("RGB")
    return open_image(image)
