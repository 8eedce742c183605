"""Sample ImageNet: an ImageFolder of single big shapes; class = shape x colour family (8 classes)."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

from .files import save_image
from .scene import IMAGE_SIZE, SHAPES, draw_shape

COLOR_FAMILIES: dict[str, tuple[tuple[int, int, int], ...]] = {
    "warm": ((220, 40, 40), (245, 140, 30), (235, 210, 40)),
    "cool": ((40, 170, 60), (40, 80, 220), (150, 60, 190)),
}
CLASSES: tuple[str, ...] = tuple(sorted(f"{family}_{shape}" for family in COLOR_FAMILIES for shape in SHAPES))
TRAIN_PER_CLASS = 40
VAL_PER_CLASS = 12
_SEED = 101


def _draw_example(rng: random.Random, class_name: str) -> Image.Image:
    """One big object (24-40 px, anywhere) of the class's shape in a random colour of its family."""
    family, shape = class_name.split("_")
    grey = rng.randint(200, 235)
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (grey, grey, grey))
    size = rng.randint(24, 40)
    left, top = rng.randint(0, IMAGE_SIZE - size), rng.randint(0, IMAGE_SIZE - size)
    draw_shape(ImageDraw.Draw(image), shape, rng.choice(COLOR_FAMILIES[family]), left, top, size)
    return image


def generate_imagenet(root: Path) -> None:
    """Write ``train/<class>/*.JPEG`` (40 per class) and ``val/<class>/*.JPEG`` (12 per class)."""
    rng = random.Random(_SEED)
    for split, per_class in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
        for class_index, class_name in enumerate(CLASSES):
            for k in range(per_class):
                name = f"{split}_{class_index:02d}_{k:04d}.JPEG"
                save_image(_draw_example(rng, class_name), root / split / class_name / name)
