"""The scene model behind every sample dataset: coloured shapes on a 3x3 grid of 16-px cells.

Each object fills exactly one cell, so with patch size 16 every object lives inside one patch: a tiny model can learn
colour/shape/position questions in minutes on a CPU (with free placement the same model stalled near 45% VQA
accuracy). All randomness comes from the ``random.Random`` passed in, so a fixed seed reproduces the same scenes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

CELL = 16
GRID = 3
IMAGE_SIZE = CELL * GRID  # 48
MAX_OBJECTS = 4

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (150, 60, 190),
    "orange": (245, 140, 30),
}
SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "cross")
PLURALS: dict[str, str] = {"square": "squares", "circle": "circles", "triangle": "triangles", "cross": "crosses"}
NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five")

# Cell index = row * 3 + column. The phrase is how texts refer to the cell ("what shape is <phrase>?").
POSITION_PHRASES: tuple[str, ...] = (
    "in the top left corner",
    "at the top",
    "in the top right corner",
    "on the left",
    "in the middle",
    "on the right",
    "in the bottom left corner",
    "at the bottom",
    "in the bottom right corner",
)


@dataclass(frozen=True)
class SceneObject:
    """One coloured shape in one grid cell."""

    color: str
    shape: str
    cell: int

    @property
    def name(self) -> str:
        """``"red circle"``."""
        return f"{self.color} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """1-4 objects in distinct cells, plus the grey level of the background."""

    objects: tuple[SceneObject, ...]
    background: int

    def count(self, shape: str | None = None, color: str | None = None) -> int:
        """Number of objects matching the given shape and/or colour (None = any)."""
        return sum(
            1 for o in self.objects if (shape is None or o.shape == shape) and (color is None or o.color == color)
        )

    def at(self, cell: int) -> SceneObject | None:
        """The object in ``cell``, if any."""
        return next((o for o in self.objects if o.cell == cell), None)

    def render(self) -> Image.Image:
        """Draw the scene as a 48x48 RGB image."""
        grey = self.background
        image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (grey, grey, grey))
        draw = ImageDraw.Draw(image)
        for obj in self.objects:
            row, col = divmod(obj.cell, GRID)
            draw_shape(draw, obj.shape, COLORS[obj.color], col * CELL, row * CELL, CELL)
        return image

    def render_large(self) -> Image.Image:
        """Draw the scene's single object over the whole 48x48 image (the sample NLVR2 pictures)."""
        if len(self.objects) != 1:
            raise ValueError(f"render_large draws one object, the scene has {len(self.objects)}")
        grey = self.background
        image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (grey, grey, grey))
        obj = self.objects[0]
        draw_shape(ImageDraw.Draw(image), obj.shape, COLORS[obj.color], 0, 0, IMAGE_SIZE)
        return image


def draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, rgb: tuple[int, int, int], left: int, top: int, size: int
) -> None:
    """Draw ``shape`` filling the ``size``-px box at (left, top) with a 2-px margin (kept inside one patch)."""
    margin = max(2, size // 8)
    x0, y0, x1, y1 = left + margin, top + margin, left + size - 1 - margin, top + size - 1 - margin
    if shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=rgb)
    elif shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=rgb)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=rgb)
    elif shape == "cross":
        bar = max(2, (x1 - x0) // 3)
        mid_x, mid_y = (x0 + x1) // 2, (y0 + y1) // 2
        draw.rectangle((mid_x - bar // 2, y0, mid_x - bar // 2 + bar, y1), fill=rgb)
        draw.rectangle((x0, mid_y - bar // 2, x1, mid_y - bar // 2 + bar), fill=rgb)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def random_object(rng: random.Random, cell: int) -> SceneObject:
    """A random colour and shape in the given cell."""
    return SceneObject(rng.choice(list(COLORS)), rng.choice(SHAPES), cell)


def random_scene(rng: random.Random, min_objects: int = 1, max_objects: int = MAX_OBJECTS) -> Scene:
    """A scene with ``min_objects..max_objects`` random objects in distinct random cells."""
    count = rng.randint(min_objects, max_objects)
    cells = sorted(rng.sample(range(GRID * GRID), count))
    return Scene(tuple(random_object(rng, cell) for cell in cells), background=rng.randint(200, 235))
