"""Sample segmentation data: scenes of filled shapes whose masks are drawn with the same geometry (exact labels).

Two unrelated generators, so a recipe that learns one is not merely tuned to it:

* ``generate_ade20k``: the ``ADEChallengeData2016`` layout (JPEG images, greyscale PNG annotations with 0 =
  unlabeled, ``objectInfo150.txt`` naming the sample's 5 classes). Discs, squares, triangles and rings on a noisy
  plain background; a thin unlabeled band in most masks exercises ``reduce_zero_label`` (0 → ignored).
* ``generate_segmentation``: the generic ``images/``, ``masks/``, ``classes.txt`` layout (JPEG and PNG images,
  palette PNG masks). Rotated ellipses, stars, crosses and striped patches on a textured background, other colours
  and sizes; object boundaries are 255 (ignored), as VOC marks them.

In both, each class is drawn in 2-3 colours and every colour serves two or three classes, so colour alone cannot
tell the classes apart: the model has to see shapes. Image sizes and aspect ratios vary, exercising the keep-ratio
resize, the crop and the padding. All randomness comes from a seeded NumPy generator and shapes are drawn without
anti-aliasing, so the bytes are the same on every run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .files import save_image

JPEG_QUALITY = 95
Draw = Callable[[ImageDraw.ImageDraw, object], None]  # draws one shape with the given fill

# -- ADE20k layout -----------------------------------------------------------------------------------------------
ADE_CLASSES = ("background", "disc", "square", "triangle", "ring")  # mask values 1..5 (0 = unlabeled)
ADE_SPLITS = (("training", "train", 160), ("validation", "val", 40))
ADE_SIZES = ((64, 80), (96, 64), (80, 80), (72, 96), (96, 72), (64, 64), (88, 64))  # (width, height)
ADE_COLOURS = {
    "red": (215, 50, 50),
    "blue": (50, 90, 215),
    "green": (50, 165, 70),
    "yellow": (230, 200, 50),
    "purple": (150, 70, 190),
    "orange": (240, 140, 40),
}
ADE_CLASS_COLOURS = {
    "disc": ("red", "blue", "yellow"),
    "square": ("red", "green", "purple"),
    "triangle": ("blue", "green", "orange"),
    "ring": ("yellow", "purple", "orange"),
}
_ADE_SEED = 150


def _ade_shape(shape: str, left: int, top: int, size: int) -> Draw:
    box = (left, top, left + size - 1, top + size - 1)
    if shape == "disc":
        return lambda draw, fill: draw.ellipse(box, fill=fill)
    if shape == "square":
        return lambda draw, fill: draw.rectangle(box, fill=fill)
    if shape == "triangle":
        points = [(left + (size - 1) / 2, top), (left + size - 1, top + size - 1), (left, top + size - 1)]
        return lambda draw, fill: draw.polygon(points, fill=fill)
    width = max(3, size // 5)
    return lambda draw, fill: draw.ellipse(box, outline=fill, width=width)


def _ade_scene(rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    """One image and its annotation: 1-3 shapes (later ones on top) on a noisy background, maybe an unlabeled band."""
    width, height = ADE_SIZES[rng.integers(len(ADE_SIZES))]
    base = rng.integers(150, 215, size=3)
    pixels = np.clip(base + rng.normal(0, 6, size=(height, width, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    mask = Image.new("L", (width, height), ADE_CLASSES.index("background") + 1)
    image_draw, mask_draw = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    for _ in range(rng.integers(1, 4)):
        shape = ADE_CLASSES[1 + rng.integers(len(ADE_CLASSES) - 1)]
        size = int(rng.integers(18, min(width, height) * 3 // 4 + 1))
        left, top = int(rng.integers(0, width - size + 1)), int(rng.integers(0, height - size + 1))
        draw = _ade_shape(shape, left, top, size)
        colour = ADE_COLOURS[ADE_CLASS_COLOURS[shape][rng.integers(3)]]
        draw(image_draw, tuple(int(c) for c in np.clip(np.array(colour) + rng.integers(-20, 21, 3), 0, 255)))
        draw(mask_draw, ADE_CLASSES.index(shape) + 1)
    if rng.random() < 0.7:  # an unannotated strip, as ADE20k leaves some pixels unlabeled
        band = int(rng.integers(2, 4))
        if rng.random() < 0.5:
            y = int(rng.integers(0, height - band))
            mask_draw.rectangle((0, y, width - 1, y + band - 1), fill=0)
        else:
            x = int(rng.integers(0, width - band))
            mask_draw.rectangle((x, 0, x + band - 1, height - 1), fill=0)
    return image, mask


def _object_info(classes: tuple[str, ...]) -> str:
    """``objectInfo150.txt`` in the official format (tab-separated, ratios and counts made up)."""
    rows = ["Idx\tRatio\tTrain\tVal\tName"]
    rows += [f"{i}\t{0.1 / i:.4f}\t{160 // i}\t{40 // i}\t{name}" for i, name in enumerate(classes, start=1)]
    return "\n".join(rows) + "\n"


def generate_ade20k(root: Path) -> None:
    """Write ``ADEChallengeData2016/`` with 160 training and 40 validation scenes and ``objectInfo150.txt``."""
    rng = np.random.default_rng(_ADE_SEED)
    folder = root / "ADEChallengeData2016"
    for official, short, count in ADE_SPLITS:
        for number in range(1, count + 1):
            image, mask = _ade_scene(rng)
            name = f"ADE_{short}_{number:08d}"
            save_image(image, folder / "images" / official / f"{name}.jpg", quality=JPEG_QUALITY)
            save_image(mask, folder / "annotations" / official / f"{name}.png")
    (folder / "objectInfo150.txt").write_text(_object_info(ADE_CLASSES), encoding="utf-8")


# -- generic layout (a user's own dataset) -----------------------------------------------------------------------
CLASSES = ("background", "ellipse", "star", "cross", "stripes")  # mask values 0..4, 255 = ignore
SPLITS = (("train", 120), ("val", 40))
SIZES = ((80, 60), (112, 80), (64, 96), (96, 96), (100, 70), (72, 72))  # (width, height)
COLOURS = {
    "cyan": (40, 200, 210),
    "magenta": (210, 40, 170),
    "lime": (150, 230, 40),
    "navy": (30, 40, 130),
    "brown": (140, 80, 30),
    "pink": (250, 160, 190),
}
CLASS_COLOURS = {
    "ellipse": ("cyan", "magenta", "pink"),
    "star": ("magenta", "lime", "navy"),
    "cross": ("cyan", "navy", "brown"),
    "stripes": ("pink", "lime", "brown"),
}
# Palette of the mask PNGs: class id → a display colour (the index is what is read back).
PALETTE = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48)]
_SEED = 4242


def _rotated(points: list[tuple[float, float]], angle: float, cx: float, cy: float) -> list[tuple[float, float]]:
    cos, sin = math.cos(angle), math.sin(angle)
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in points]


def _outline(shape: str, radius: float, rng: np.random.Generator) -> list[tuple[float, float]]:
    """The shape's polygon around (0, 0) before rotation."""
    if shape == "ellipse":
        minor = radius / rng.uniform(1.5, 2.5)
        return [(radius * math.cos(t), minor * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 36, endpoint=False)]
    if shape == "star":
        radii = [radius if k % 2 == 0 else radius * 0.45 for k in range(10)]
        return [(r * math.cos(k * math.pi / 5), r * math.sin(k * math.pi / 5)) for k, r in enumerate(radii)]
    bar = radius * 0.35
    if shape == "cross":
        r, b = radius, bar
        return [(-b, -r), (b, -r), (b, -b), (r, -b), (r, b), (b, b), (b, r), (-b, r), (-b, b), (-r, b), (-r, -b),
                (-b, -b)]  # fmt: skip
    half = radius * 0.8  # stripes: a square patch
    return [(-half, -half), (half, -half), (half, half), (-half, half)]


def _textured_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Low-frequency blotches of two colours plus pixel noise (a plain background would be too easy)."""
    coarse = rng.random((height // 8 + 2, width // 8 + 2))
    weights = np.asarray(
        Image.fromarray((coarse * 255).astype(np.uint8)).resize((width, height), Image.Resampling.BILINEAR)
    )
    first, second = rng.integers(60, 200, size=3), rng.integers(60, 200, size=3)
    blend = weights[..., None] / 255.0
    pixels = first * (1 - blend) + second * blend + rng.normal(0, 8, size=(height, width, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _stripe_texture(image: Image.Image, polygon: list[tuple[float, float]], colour: tuple[int, int, int]) -> None:
    """Fill ``polygon`` with diagonal stripes of ``colour`` and white (the class is the striped texture)."""
    patch = Image.new("L", image.size, 0)
    ImageDraw.Draw(patch).polygon(polygon, fill=255)
    inside = np.asarray(patch) > 0
    ys, xs = np.indices(inside.shape)
    stripe = ((xs + ys) // 3) % 2 == 0
    pixels = np.asarray(image).copy()
    pixels[inside & stripe] = colour
    pixels[inside & ~stripe] = (245, 245, 245)
    image.paste(Image.fromarray(pixels))


def _ignore_boundaries(labels: np.ndarray) -> np.ndarray:
    """Set pixels whose right or lower neighbour has another class to 255 (a 1-px ignored seam between regions)."""
    out = labels.copy()
    out[:, :-1][labels[:, :-1] != labels[:, 1:]] = 255
    out[:-1, :][labels[:-1, :] != labels[1:, :]] = 255
    return out


def _scene(rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    width, height = SIZES[rng.integers(len(SIZES))]
    image = Image.fromarray(_textured_background(rng, width, height))
    labels = Image.new("L", (width, height), 0)
    image_draw, label_draw = ImageDraw.Draw(image), ImageDraw.Draw(labels)
    for _ in range(rng.integers(1, 4)):
        shape = CLASSES[1 + rng.integers(len(CLASSES) - 1)]
        radius = float(rng.uniform(10, min(width, height) * 0.4))
        cx, cy = rng.uniform(radius * 0.6, width - radius * 0.6), rng.uniform(radius * 0.6, height - radius * 0.6)
        polygon = _rotated(_outline(shape, radius, rng), rng.uniform(0, math.pi), cx, cy)
        colour = COLOURS[CLASS_COLOURS[shape][rng.integers(3)]]
        if shape == "stripes":
            _stripe_texture(image, polygon, colour)
        else:
            image_draw.polygon(polygon, fill=colour)
        label_draw.polygon(polygon, fill=CLASSES.index(shape))
    mask = Image.fromarray(_ignore_boundaries(np.asarray(labels))).convert("P")
    mask.putpalette([c for colour in PALETTE for c in colour] + [255, 255, 255] * (256 - len(PALETTE)))
    return image, mask


def generate_segmentation(root: Path) -> None:
    """Write ``images/{train,val}`` (every third image a PNG, the rest JPEG), ``masks/{train,val}`` (palette PNGs)
    and ``classes.txt`` with 120 training and 40 validation scenes."""
    rng = np.random.default_rng(_SEED)
    for split, count in SPLITS:
        for number in range(count):
            image, mask = _scene(rng)
            name = f"scene_{number:04d}"
            suffix = ".png" if number % 3 == 0 else ".jpg"
            save_image(image, root / "images" / split / f"{name}{suffix}", quality=JPEG_QUALITY)
            save_image(mask, root / "masks" / split / f"{name}.png")
    (root / "classes.txt").write_text("".join(f"{name}\n" for name in CLASSES), encoding="utf-8")
