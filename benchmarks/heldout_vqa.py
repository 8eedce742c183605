"""A held-out VQAv2-format dataset: a second scene world that no recipe was tuned on.

    python benchmarks/heldout_vqa.py OUT_DIR [--seed 7]   # generate, index with the sample tokenizer, summarise

The embedded sample (``beit3_lightning.data.sample``) draws red/green/blue/yellow/purple/orange squares, circles,
triangles and crosses, one per cell of a 3x3 grid of 16-px cells on a flat grey 48x48 background, and asks "what
color is the ...", "what shape is <position>", "how many ... are there", "is there a ...". This generator shares
none of that:

* images: 64x64 JPEGs, a 4x4 grid of 16-px tiles on a *textured* background (stripes, checkerboard or noise in one
  of three muted tints), 2-5 objects, each ``big`` (14 px) or ``small`` (8 px, jittered inside its tile);
* shapes: star, ring, heart, arrow (pointing up/down/left/right), moon; colours: pink, brown, cyan, black, white;
* questions (question_type = the first words of the template, as VQA's field):
  yes/no  "are there any pink things?", "is the star bigger than the ring?", "is the heart cyan?";
  number  "how many brown things are there?", "how many stars can you see?", "how many big shapes are in the
  picture?";
  other   "what colour is the moon?", "which side is the ring on?" (left/right), "which way does the arrow
  point?", "what size is the heart?" (big/small), "what shape is the white thing?", "what is above the star?".

The files follow the official VQA v2 layout exactly (``train2014/COCO_train2014_%012d.jpg``, ``val2014/``,
``test2015/``, and the six JSON files under ``vqa/``), so ``beit3 prepare vqav2 --data-root OUT_DIR --tokenizer
sample --min-answer-count 1 --rest-val-images N`` indexes it and ``VQAv2DataModule(root=OUT_DIR, ...)`` trains on
it. Image ids are scattered like COCO's (not consecutive); question ids are ``image_id * 1000 + k`` as officially.
Each question has 10 human answers: the truth for a majority, plus wrong answers of the same type and differently
written right answers ("Pink", "a star", "three", "the left", "2."), so soft scores below 1.0 occur and the answer
normalisation matters. Everything is drawn from one ``random.Random(seed)``: the same seed gives the same bytes.

``question_type_prior(root)`` is the "blind" baseline: the most common (score-weighted) training answer of each
question type, scored with the VQA soft score on ``vqa.rest_val.jsonl``. The question type of an index row comes
from the raw annotations' ``question_type`` field (joined on ``qid``), which this generator sets per template.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from beit3_lightning.data.sample.files import coco_file_name, save_image, write_json

TILE = 16
GRID = 4
IMAGE_SIZE = TILE * GRID  # 64
SIZES: dict[str, int] = {"big": 14, "small": 8}
SHAPES: tuple[str, ...] = ("star", "ring", "heart", "arrow", "moon")
PLURALS: dict[str, str] = {s: s + "s" for s in SHAPES}
COLOURS: dict[str, tuple[int, int, int]] = {
    "pink": (250, 110, 190),
    "brown": (125, 70, 25),
    "cyan": (20, 215, 235),
    "black": (15, 15, 15),
    "white": (250, 250, 250),
}
DIRECTIONS: tuple[str, ...] = ("up", "down", "left", "right")
# Muted mid-tone tints (luminance ~120-150), so white and black objects both stand out.
BACKGROUND_TINTS: tuple[tuple[int, int, int], ...] = ((150, 140, 100), (100, 125, 145), (120, 145, 110))
TEXTURES: tuple[str, ...] = ("stripes", "checker", "noise")
NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six")

# Image directories (and question/annotation file keys); test-dev2015 = the questions of every other test image.
SPLITS: tuple[str, ...] = ("train2014", "val2014", "test2015")
# Share of the 10 human answers that is exactly the truth (the official data has many 10/10 and a long tail).
_AGREEMENT = (10, 10, 10, 10, 9, 9, 9, 8, 8, 7, 7, 6, 5, 4)
_SUPERSAMPLE = 4


# ----------------------------------------------------------------------------------------------------- scenes
@dataclass(frozen=True)
class Thing:
    """One object: colour, shape, size word, tile (row, col), pixel box (left, top) and, for arrows, direction."""

    colour: str
    shape: str
    size: str
    row: int
    col: int
    left: int
    top: int
    direction: str = "right"

    @property
    def side(self) -> str:
        return "left" if self.col < GRID // 2 else "right"


@dataclass(frozen=True)
class TileScene:
    things: tuple[Thing, ...]
    texture: str
    tint: tuple[int, int, int]
    texture_seed: int

    def count(self, **attributes: str) -> int:
        return sum(all(getattr(t, k) == v for k, v in attributes.items()) for t in self.things)

    def unique(self, **attributes: str) -> Thing | None:
        matches = [t for t in self.things if all(getattr(t, k) == v for k, v in attributes.items())]
        return matches[0] if len(matches) == 1 else None

    def render(self) -> Image.Image:
        image = Image.fromarray(_background(self.texture, self.tint, self.texture_seed))
        for thing in self.things:
            size = SIZES[thing.size]
            mask = shape_mask(thing.shape, size, thing.direction)
            image.paste(COLOURS[thing.colour], (thing.left, thing.top, thing.left + size, thing.top + size), mask)
        return image


def _background(texture: str, tint: tuple[int, int, int], seed: int) -> np.ndarray:
    base = np.array(tint, dtype=np.float32)
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE]
    if texture == "stripes":
        shade = np.where(((xx + yy) // 4) % 2 == 0, 14.0, -14.0)
    elif texture == "checker":
        shade = np.where(((xx // 8) + (yy // 8)) % 2 == 0, 12.0, -12.0)
    else:
        shade = np.random.default_rng(seed).uniform(-18.0, 18.0, size=(IMAGE_SIZE, IMAGE_SIZE))
    pixels = base[None, None, :] + shade[:, :, None]
    return np.clip(pixels, 0, 255).astype(np.uint8)


def shape_mask(shape: str, size: int, direction: str = "right") -> Image.Image:
    """An antialiased ``size`` x ``size`` L mask of the shape (drawn 4x larger, then downsampled)."""
    s = size * _SUPERSAMPLE
    mask = Image.new("L", (s, s), 0)
    draw = ImageDraw.Draw(mask)
    c, r = s / 2, s / 2
    if shape == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else r * 0.45
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((c + radius * math.cos(angle), c + radius * math.sin(angle)))
        draw.polygon(points, fill=255)
    elif shape == "ring":
        draw.ellipse((0, 0, s - 1, s - 1), fill=255)
        hole = s * 0.27
        draw.ellipse((hole, hole, s - 1 - hole, s - 1 - hole), fill=0)
    elif shape == "heart":
        lobe = s * 0.5
        draw.ellipse((0, 0, lobe, lobe), fill=255)
        draw.ellipse((s - 1 - lobe, 0, s - 1, lobe), fill=255)
        draw.polygon([(s * 0.02, lobe * 0.62), (s * 0.98, lobe * 0.62), (c, s - 1)], fill=255)
    elif shape == "arrow":  # drawn pointing right, then rotated
        shaft = s * 0.16
        draw.rectangle((0, c - shaft, s * 0.55, c + shaft), fill=255)
        draw.polygon([(s * 0.45, 0), (s - 1, c), (s * 0.45, s - 1)], fill=255)
        mask = mask.rotate({"right": 0, "up": 90, "left": 180, "down": 270}[direction])
    elif shape == "moon":
        draw.ellipse((0, 0, s - 1, s - 1), fill=255)
        draw.ellipse((s * 0.38, -s * 0.05, s * 1.3, s * 0.9), fill=0)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    return mask.resize((size, size), Image.Resampling.BOX)


def random_tile_scene(rng: random.Random) -> TileScene:
    count = rng.randint(2, 5)
    tiles = sorted(rng.sample(range(GRID * GRID), count))
    things = []
    for tile in tiles:
        row, col = divmod(tile, GRID)
        size = rng.choice(list(SIZES))
        slack = TILE - SIZES[size]  # where the object may sit inside its tile
        left = col * TILE + rng.randint(max(0, slack // 2 - 2), min(slack, slack // 2 + 2))
        top = row * TILE + rng.randint(max(0, slack // 2 - 2), min(slack, slack // 2 + 2))
        things.append(
            Thing(rng.choice(list(COLOURS)), rng.choice(SHAPES), size, row, col, left, top, rng.choice(DIRECTIONS))
        )
    return TileScene(tuple(things), rng.choice(TEXTURES), rng.choice(BACKGROUND_TINTS), rng.getrandbits(32))


# -------------------------------------------------------------------------------------------------- questions
@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    question_type: str
    answer_type: str


def _any_colour(rng: random.Random, scene: TileScene) -> QA | None:
    colour = rng.choice([t.colour for t in scene.things]) if rng.random() < 0.5 else rng.choice(list(COLOURS))
    answer = "yes" if scene.count(colour=colour) else "no"
    return QA(f"are there any {colour} things?", answer, "are there", "yes/no")


def _bigger(rng: random.Random, scene: TileScene) -> QA | None:
    uniques = [t for t in scene.things if scene.unique(shape=t.shape)]
    pairs = [(a, b) for a in uniques for b in uniques if a.shape != b.shape and a.size != b.size]
    if not pairs:
        return None
    a, b = rng.choice(pairs)
    answer = "yes" if a.size == "big" else "no"
    return QA(f"is the {a.shape} bigger than the {b.shape}?", answer, "is the", "yes/no")


def _is_colour(rng: random.Random, scene: TileScene) -> QA | None:
    uniques = [t for t in scene.things if scene.unique(shape=t.shape)]
    if not uniques:
        return None
    thing = rng.choice(uniques)
    colour = thing.colour if rng.random() < 0.5 else rng.choice([c for c in COLOURS if c != thing.colour])
    answer = "yes" if colour == thing.colour else "no"
    return QA(f"is the {thing.shape} {colour}?", answer, "is the", "yes/no")


def _count_colour(rng: random.Random, scene: TileScene) -> QA | None:
    colour = rng.choice(list(COLOURS))
    return QA(f"how many {colour} things are there?", str(scene.count(colour=colour)), "how many", "number")


def _count_shape(rng: random.Random, scene: TileScene) -> QA | None:
    shape = rng.choice(SHAPES)
    return QA(f"how many {PLURALS[shape]} can you see?", str(scene.count(shape=shape)), "how many", "number")


def _count_size(rng: random.Random, scene: TileScene) -> QA | None:
    size = rng.choice(list(SIZES))
    answer = str(scene.count(size=size))
    return QA(f"how many {size} shapes are in the picture?", answer, "how many", "number")


def _unique_shape(rng: random.Random, scene: TileScene, shape: str | None = None) -> Thing | None:
    uniques = [t for t in scene.things if scene.unique(shape=t.shape) and (shape is None or t.shape == shape)]
    return rng.choice(uniques) if uniques else None


def _what_colour(rng: random.Random, scene: TileScene) -> QA | None:
    thing = _unique_shape(rng, scene)
    return None if thing is None else QA(f"what colour is the {thing.shape}?", thing.colour, "what colour is", "other")


def _which_side(rng: random.Random, scene: TileScene) -> QA | None:
    thing = _unique_shape(rng, scene)
    return None if thing is None else QA(f"which side is the {thing.shape} on?", thing.side, "which side is", "other")


def _arrow_way(rng: random.Random, scene: TileScene) -> QA | None:
    thing = _unique_shape(rng, scene, "arrow")
    return None if thing is None else QA("which way does the arrow point?", thing.direction, "which way does", "other")


def _what_size(rng: random.Random, scene: TileScene) -> QA | None:
    thing = _unique_shape(rng, scene)
    return None if thing is None else QA(f"what size is the {thing.shape}?", thing.size, "what size is", "other")


def _what_shape(rng: random.Random, scene: TileScene) -> QA | None:
    uniques = [t for t in scene.things if scene.unique(colour=t.colour)]
    if not uniques:
        return None
    thing = rng.choice(uniques)
    return QA(f"what shape is the {thing.colour} thing?", thing.shape, "what shape is", "other")


def _above(rng: random.Random, scene: TileScene) -> QA | None:
    """ "what is above the X?": the nearest object higher up in X's column (only asked when there is one)."""
    candidates = []
    for thing in scene.things:
        if not scene.unique(shape=thing.shape):
            continue
        higher = [t for t in scene.things if t.col == thing.col and t.row < thing.row]
        if higher:
            candidates.append((thing, max(higher, key=lambda t: t.row)))
    if not candidates:
        return None
    thing, above = rng.choice(candidates)
    return QA(f"what is above the {thing.shape}?", above.shape, "what is above", "other")


Template = Callable[[random.Random, TileScene], "QA | None"]
TEMPLATES: dict[str, tuple[Template, ...]] = {
    "yes/no": (_any_colour, _bigger, _is_colour),
    "number": (_count_colour, _count_shape, _count_size),
    "other": (_what_colour, _which_side, _arrow_way, _what_size, _what_shape, _above),
}
# Wrong human answers come from the right answer's group (a colour for a colour question, ...).
ANSWER_GROUPS: tuple[tuple[str, ...], ...] = (
    ("yes", "no"),
    tuple(str(n) for n in range(6)),
    tuple(COLOURS),
    SHAPES,
    tuple(SIZES),
    DIRECTIONS,
)


def _wrong_answers(answer: str) -> list[str]:
    group = next(g for g in ANSWER_GROUPS if answer in g)
    return [a for a in group if a != answer]


def _ask(rng: random.Random, scene: TileScene, answer_type: str, avoid: set[str]) -> QA | None:
    """A question of ``answer_type``: a random template among those the scene supports (not asked yet)."""
    templates = list(TEMPLATES[answer_type])
    rng.shuffle(templates)
    for template in templates:
        qa = template(rng, scene)
        if qa is not None and qa.question not in avoid:
            return qa
    return None


def pick_questions(rng: random.Random, scene: TileScene) -> list[QA]:
    """One yes/no, one number and one or two "other" questions (distinct texts), in random order."""
    picked: list[QA] = []
    for answer_type in ["yes/no", "number", "other"] + ["other"] * (rng.random() < 0.5):
        qa = _ask(rng, scene, answer_type, {q.question for q in picked})
        if qa is not None:
            picked.append(qa)
    rng.shuffle(picked)
    return picked


def _variant(rng: random.Random, qa: QA) -> str:
    """The right answer written differently; normalises back to it (number word, article, case, punctuation)."""
    answer = qa.answer
    if answer.isdigit():
        return rng.choice([NUMBER_WORDS[int(answer)], f"{answer}.", NUMBER_WORDS[int(answer)].capitalize()])
    if answer in SHAPES:
        return rng.choice([f"a {answer}", f"{answer}.", answer.upper()])
    if answer in ("left", "right", "up", "down"):
        return rng.choice([f"the {answer}", answer.capitalize(), f"{answer}!"])
    return rng.choice([answer.capitalize(), f"{answer}.", f"{answer} "])


def human_answers(rng: random.Random, qa: QA) -> list[dict[str, Any]]:
    exact = rng.choice(_AGREEMENT)
    # Fewer wrong answers than right ones, so the normalised majority (multiple_choice_answer) is the truth.
    wrong_count = rng.randint(0, min(10 - exact, exact - 1))
    wrong = _wrong_answers(qa.answer)
    answers = [qa.answer] * exact + [rng.choice(wrong) for _ in range(wrong_count)]
    answers += [_variant(rng, qa) for _ in range(10 - len(answers))]
    rng.shuffle(answers)
    confidence = ["yes"] * 5 + ["maybe", "no"]
    return [
        {"answer": a, "answer_confidence": rng.choice(confidence), "answer_id": i + 1} for i, a in enumerate(answers)
    ]


# ------------------------------------------------------------------------------------------------- generation
def generate_heldout_vqav2(
    root: Path, seed: int = 7, train_images: int = 400, val_images: int = 200, test_images: int = 40
) -> Path:
    """Write ``train2014/``, ``val2014/``, ``test2015/`` JPEGs and the six official JSON files under ``root/vqa``."""
    root = Path(root)
    rng = random.Random(seed)
    counts = {"train2014": train_images, "val2014": val_images, "test2015": test_images}
    # COCO-like scattered image ids, distinct over all splits, increasing within a split.
    all_ids = rng.sample(range(1, 600_000), sum(counts.values()))
    image_ids: dict[str, list[int]] = {}
    start = 0
    for split in SPLITS:
        image_ids[split] = sorted(all_ids[start : start + counts[split]])
        start += counts[split]

    questions: dict[str, list[dict[str, Any]]] = {}
    annotations: dict[str, list[dict[str, Any]]] = {}
    for split in SPLITS:
        questions[split], annotations[split] = [], []
        for image_id in image_ids[split]:
            scene = random_tile_scene(rng)
            save_image(scene.render(), root / split / coco_file_name(split, image_id))
            for k, qa in enumerate(pick_questions(rng, scene)):
                question_id = image_id * 1000 + k
                questions[split].append({"image_id": image_id, "question": qa.question, "question_id": question_id})
                annotations[split].append(
                    {
                        "question_type": qa.question_type,
                        "multiple_choice_answer": qa.answer,
                        "answers": human_answers(rng, qa),
                        "image_id": image_id,
                        "answer_type": qa.answer_type,
                        "question_id": question_id,
                    }
                )
    test_dev_images = set(image_ids["test2015"][::2])
    questions["test-dev2015"] = [q for q in questions["test2015"] if q["image_id"] in test_dev_images]

    vqa_dir = root / "vqa"
    for split, records in questions.items():
        write_json(
            vqa_dir / f"v2_OpenEnded_mscoco_{split}_questions.json",
            {
                "info": {"description": "held-out tile-world VQA in the VQA v2 format", "seed": seed},
                "task_type": "Open-Ended",
                "data_type": "mscoco",
                "license": {"name": "generated", "url": ""},
                "data_subtype": "test2015" if split == "test-dev2015" else split,
                "questions": records,
            },
        )
    for split in ("train2014", "val2014"):
        write_json(
            vqa_dir / f"v2_mscoco_{split}_annotations.json",
            {
                "info": {"description": "held-out tile-world VQA in the VQA v2 format", "seed": seed},
                "license": {"name": "generated", "url": ""},
                "data_subtype": split,
                "annotations": annotations[split],
                "data_type": "mscoco",
            },
        )
    return root


# -------------------------------------------------------------------------------------------------- baselines
def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _question_types(root: Path) -> dict[int, str]:
    """question_id -> the raw annotations' ``question_type`` (train and val)."""
    types: dict[int, str] = {}
    for split in ("train2014", "val2014"):
        data = json.loads((root / "vqa" / f"v2_mscoco_{split}_annotations.json").read_text(encoding="utf-8"))
        types.update({a["question_id"]: a["question_type"] for a in data["annotations"]})
    return types


def _soft_accuracy(rows: list[dict[str, Any]], guess: Callable[[dict[str, Any]], int | None]) -> float:
    """Mean VQA soft score (x100) of one guessed label per row."""
    if not rows:
        raise ValueError("vqa.rest_val.jsonl is empty: generate more val images")
    return 100 * sum(dict(zip(r["labels"], r["scores"])).get(guess(r), 0.0) for r in rows) / len(rows)


def _training_rows(index_dir: Path) -> list[dict[str, Any]]:
    return _read_jsonl(index_dir / "vqa.train.jsonl") + _read_jsonl(index_dir / "vqa.trainable_val.jsonl")


def most_common_answer_accuracy(root: Path, index_dir: Path | None = None) -> float:
    """The single most common (score-weighted) training answer for every rest_val question (sample_learning's
    ``chance``)."""
    index_dir = Path(index_dir or root)
    counts: Counter[int] = Counter()
    for r in _training_rows(index_dir):
        counts.update(dict(zip(r["labels"], r["scores"])))
    best = counts.most_common(1)[0][0]
    return _soft_accuracy(_read_jsonl(index_dir / "vqa.rest_val.jsonl"), lambda r: best)


def question_type_prior(root: Path, index_dir: Path | None = None) -> float:
    """Accuracy (0-100) of answering each rest_val question with the most common training answer of its type.

    Training = ``vqa.train.jsonl`` + ``vqa.trainable_val.jsonl`` (answers counted by their soft scores); the
    question type of a row is the raw annotation's ``question_type`` for its ``qid``; a type never seen in training
    falls back to the overall most common answer.
    """
    root = Path(root)
    index_dir = Path(index_dir or root)
    types = _question_types(root)
    per_type: dict[str, Counter[int]] = defaultdict(Counter)
    overall: Counter[int] = Counter()
    for r in _training_rows(index_dir):
        scores = dict(zip(r["labels"], r["scores"]))
        per_type[types[r["qid"]]].update(scores)
        overall.update(scores)
    best = {qtype: counts.most_common(1)[0][0] for qtype, counts in per_type.items() if counts}
    fallback = overall.most_common(1)[0][0]
    return _soft_accuracy(_read_jsonl(index_dir / "vqa.rest_val.jsonl"), lambda r: best.get(types[r["qid"]], fallback))


# ---------------------------------------------------------------------------------------------------- command
def build_index(root: Path, rest_val_images: int, seed: int = 0) -> list[Path]:
    """What ``beit3 prepare vqav2 --tokenizer sample --min-answer-count 1 --rest-val-images N`` runs."""
    from beit3_lightning.data.index.vqav2 import build_vqav2_index
    from beit3_lightning.data.tokenizer import Beit3Tokenizer

    return build_vqav2_index(
        root, Beit3Tokenizer("sample"), min_answer_count=1, rest_val_images=rest_val_images, seed=seed
    )


def summary(root: Path) -> str:
    root = Path(root)
    images = sum(len(list((root / split).glob("*.jpg"))) for split in SPLITS)
    question_count = sum(
        len(json.loads((root / "vqa" / f"v2_OpenEnded_mscoco_{split}_questions.json").read_text())["questions"])
        for split in SPLITS
    )
    vocabulary = len(_read_jsonl(root / "answer2label.txt"))
    prior, common = question_type_prior(root), most_common_answer_accuracy(root)
    return (
        f"heldout vqav2 {root}: {images} images, {question_count} questions, {vocabulary} answers in the vocabulary, "
        f"question-type prior {prior:.2f}, most-common-answer {common:.2f} "
        "(VQA soft accuracy on rest_val)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--train-images", type=int, default=400)
    parser.add_argument("--val-images", type=int, default=200)
    parser.add_argument("--test-images", type=int, default=40)
    args = parser.parse_args(argv)
    root = generate_heldout_vqav2(args.out_dir, args.seed, args.train_images, args.val_images, args.test_images)
    for path in sorted((root / "vqa").glob("*.json")):
        print(path)
    for path in build_index(root, rest_val_images=args.val_images // 2):
        print(path)
    print(summary(root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
