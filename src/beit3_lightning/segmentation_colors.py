"""Colours for label maps: a fixed palette per class id, colour PNGs and overlays (numpy + Pillow only)."""

from __future__ import annotations

import numpy as np
from PIL import Image

IGNORE_COLOR = (0, 0, 0)


def palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 colours, the same for every run: the bits of the class id spread over R, G and B
    from the high bit down (the PASCAL VOC scheme), shifted by one so class 0 is not black (black = ignored)."""
    colors = np.zeros((num_classes, 3), dtype=np.uint8)
    for class_id in range(num_classes):
        code, rgb = class_id + 1, [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((code >> (3 * bit + channel)) & 1) << (7 - bit)
        colors[class_id] = rgb
    return colors


def colorize(label_map: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """(H, W) class ids → (H, W, 3) uint8 colours; ``ignore_index`` and ids outside the palette are black."""
    labels = np.asarray(label_map).astype(np.int64)
    colors = np.zeros((*labels.shape, 3), dtype=np.uint8)
    valid = (labels >= 0) & (labels < num_classes) & (labels != ignore_index)
    colors[valid] = palette(num_classes)[labels[valid]]
    colors[~valid] = IGNORE_COLOR
    return colors


def palette_png(label_map: np.ndarray, num_classes: int) -> Image.Image:
    """A "P"-mode PNG whose pixel values are the class ids and whose palette shows them in colour (up to 256
    classes); any viewer shows colours and ``np.array(Image.open(f))`` gives the ids back."""
    labels = np.asarray(label_map)
    if num_classes > 256:
        raise ValueError(f"a palette PNG holds at most 256 classes, got {num_classes}; write the raw label PNG")
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    table = np.zeros((256, 3), dtype=np.uint8)
    table[:num_classes] = palette(num_classes)
    image.putpalette(table.reshape(-1).tolist())
    return image


def overlay(image: Image.Image | np.ndarray, label_map: np.ndarray, num_classes: int, alpha: float = 0.5,
            ignore_index: int = 255) -> Image.Image:  # fmt: skip
    """The image with its label map's colours blended in (``alpha`` of colour); ignored pixels stay as they are."""
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float32)
    labels = np.asarray(label_map)
    if rgb.shape[:2] != labels.shape:
        raise ValueError(f"image {rgb.shape[:2]} and label map {labels.shape} differ in size")
    colors = colorize(labels, num_classes, ignore_index).astype(np.float32)
    valid = ((labels != ignore_index) & (labels < num_classes))[..., None]
    blended = np.where(valid, (1 - alpha) * rgb + alpha * colors, rgb)
    return Image.fromarray(blended.round().clip(0, 255).astype(np.uint8))
