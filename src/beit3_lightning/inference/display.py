"""Pictures of inputs and results with Pillow alone (no matplotlib needed): image grids with captions, heatmaps.

Used by the notebooks; ``IPython.display.display(image_grid(...))`` shows the result inline.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from beit3_lightning.processor import Beit3Processor, ImageInput, open_image

BACKGROUND = (255, 255, 255)
TEXT_COLOR = (0, 0, 0)
FONT_SIZE = 12
LINE_HEIGHT = 15
# Heatmap ramp: low values white, high values dark blue.
LOW_COLOR = np.array([255.0, 255.0, 255.0])
HIGH_COLOR = np.array([8.0, 48.0, 107.0])


def _as_pil(image: object) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        return Image.fromarray(image).convert("RGB")
    return open_image(image)  # a path


def wrap_text(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> list[str]:
    """Greedy word wrap to lines at most ``width`` pixels wide (a longer single word gets its own line)."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def image_grid(
    images: ImageInput, captions: Sequence[str] | None = None, size: int = 144, columns: int | None = None
) -> Image.Image:
    """Images side by side (``columns`` per row, default all in one row), each scaled to ``size`` px square with
    nearest-neighbour enlargement (the sample images are 48 px), and its caption wrapped underneath."""
    items = [_as_pil(image) for image in Beit3Processor.image_list(images)]
    if captions is not None and len(captions) != len(items):
        raise ValueError(f"got {len(items)} images but {len(captions)} captions")
    columns = columns or len(items)
    rows = -(-len(items) // columns)
    font = ImageFont.load_default(size=FONT_SIZE)
    wrapped = [wrap_text(str(c), font, size) for c in captions] if captions else [[] for _ in items]
    text_height = max(len(lines) for lines in wrapped) * LINE_HEIGHT + (4 if captions else 0)
    cell_w, cell_h = size + 8, size + 8 + text_height
    grid = Image.new("RGB", (columns * cell_w, rows * cell_h), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    for i, (image, lines) in enumerate(zip(items, wrapped)):
        left, top = (i % columns) * cell_w + 4, (i // columns) * cell_h + 4
        grid.paste(image.resize((size, size), Image.NEAREST), (left, top))
        for line_number, line in enumerate(lines):
            draw.text((left, top + size + 4 + line_number * LINE_HEIGHT), line, fill=TEXT_COLOR, font=font)
    return grid


def heatmap(matrix: torch.Tensor | np.ndarray, cell: int = 24) -> Image.Image:
    """A (rows, cols) matrix as coloured cells, min white → max dark blue (no axes; label them in the text)."""
    values = np.asarray(matrix.detach().cpu() if isinstance(matrix, torch.Tensor) else matrix, dtype=np.float64)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"heatmap needs a non-empty 2-D matrix, got shape {values.shape}")
    span = values.max() - values.min()
    scaled = (values - values.min()) / span if span > 0 else np.zeros_like(values)
    pixels = LOW_COLOR + scaled[..., None] * (HIGH_COLOR - LOW_COLOR)  # (rows, cols, 3)
    image = Image.fromarray(pixels.round().astype(np.uint8))
    return image.resize((values.shape[1] * cell, values.shape[0] * cell), Image.NEAREST)


def bar_chart(values: Sequence[float], labels: Sequence[str], width: int = 320, bar_height: int = 16,
              maximum: float = 100.0, label_width: int = 110) -> Image.Image:  # fmt: skip
    """Horizontal bars (e.g. per-class IoU in percent), one row per label, the value written after each bar;
    NaN (a class never seen) is shown as "n/a" without a bar."""
    if len(values) != len(labels):
        raise ValueError(f"got {len(values)} values but {len(labels)} labels")
    font = ImageFont.load_default(size=FONT_SIZE)
    row = bar_height + 4
    chart = Image.new("RGB", (label_width + width + 60, row * len(values) + 8), BACKGROUND)
    draw = ImageDraw.Draw(chart)
    for i, (value, label) in enumerate(zip(values, labels)):
        top = 4 + i * row
        draw.text((4, top + 2), str(label)[:18], fill=TEXT_COLOR, font=font)
        if value != value:  # NaN
            draw.text((label_width, top + 2), "n/a", fill=TEXT_COLOR, font=font)
            continue
        length = int(round(width * max(0.0, min(float(value), maximum)) / maximum))
        draw.rectangle([label_width, top, label_width + length, top + bar_height], fill=tuple(HIGH_COLOR.astype(int)))
        draw.text((label_width + length + 4, top + 2), f"{float(value):.1f}", fill=TEXT_COLOR, font=font)
    return chart
