"""Texts about sample scenes: VQA questions with answers, captions, and NLVR2-style statements about two scenes.

Every text is computed from the scene, so the answers/labels are always right and learnable from the pixels.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from .scene import COLORS, NUMBER_WORDS, PLURALS, POSITION_PHRASES, SHAPES, Scene, SceneObject


@dataclass(frozen=True)
class QuestionAnswer:
    """A VQA question with its ground-truth answer and the VQA ``question_type``/``answer_type`` fields."""

    question: str
    answer: str
    question_type: str
    answer_type: str  # "yes/no", "number" or "other", as in VQA v2


@dataclass(frozen=True)
class Statement:
    """An NLVR2-style statement template: its text and the predicate deciding it on (left, right) scenes."""

    text: str
    holds: Callable[[Scene, Scene], bool]


def with_article(words: str) -> str:
    """``"a red circle"`` / ``"an orange square"``."""
    return ("an " if words[0] in "aeiou" else "a ") + words


def join_phrases(phrases: list[str]) -> str:
    """``"x"``, ``"x and y"``, ``"x, y and z"``."""
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def sentence(text: str) -> str:
    """Capitalise and end with a period, as COCO/NLVR2 raw sentences usually are."""
    return text[0].upper() + text[1:] + "."


def vqa_questions(scene: Scene) -> list[QuestionAnswer]:
    """Every question the scene supports (the generator samples a few per image)."""
    questions: list[QuestionAnswer] = []
    for shape in SHAPES:
        count = scene.count(shape=shape)
        questions.append(QuestionAnswer(f"how many {PLURALS[shape]} are there?", str(count), "how many", "number"))
        if count == 1:
            color = next(o.color for o in scene.objects if o.shape == shape)
            questions.append(QuestionAnswer(f"what color is the {shape}?", color, "what color is the", "other"))
    for color in COLORS:
        count = scene.count(color=color)
        if count > 0:
            questions.append(QuestionAnswer(f"how many {color} objects are there?", str(count), "how many", "number"))
    for obj in scene.objects:
        phrase = POSITION_PHRASES[obj.cell]
        questions.append(QuestionAnswer(f"what shape is {phrase}?", obj.shape, "what", "other"))
        questions.append(QuestionAnswer(f"what color is the object {phrase}?", obj.color, "what color is the", "other"))
    questions.append(QuestionAnswer("how many objects are there?", str(len(scene.objects)), "how many", "number"))
    return questions


def yes_no_question(scene: Scene, color: str, shape: str) -> QuestionAnswer:
    """``"is there a red triangle?"`` answered from the scene."""
    answer = "yes" if scene.count(shape=shape, color=color) > 0 else "no"
    return QuestionAnswer(f"is there {with_article(color + ' ' + shape)}?", answer, "is there a", "yes/no")


def _positional(objects: list[SceneObject]) -> str:
    return join_phrases([f"{with_article(o.name)} {POSITION_PHRASES[o.cell]}" for o in objects])


def captions(scene: Scene, rng: random.Random, count: int = 5) -> list[str]:
    """``count`` varied captions of the scene (positional ones first, so every image gets a discriminative one)."""
    objects = list(scene.objects)
    shuffled = objects[:]
    rng.shuffle(shuffled)
    names = join_phrases([with_article(o.name) for o in shuffled])
    number = NUMBER_WORDS[len(objects)]
    noun = "shape" if len(objects) == 1 else "shapes"
    candidates = [
        _positional(objects),
        _positional(shuffled),
        f"a grey picture with {_positional(shuffled)}",
        f"there is {names}" if len(objects) == 1 else f"there are {number} {noun}: {names}",
        f"{number} {noun} on a grey background: {names}",
        f"an image of {names}",
    ]
    candidates = list(dict.fromkeys(candidates))  # with one object both positional captions are the same
    chosen = candidates[:2] + rng.sample(candidates[2:], min(len(candidates) - 2, max(0, count - 2)))
    # NoCaps wants 10 captions: beyond the distinct templates, repeat random ones (humans repeat themselves too).
    chosen += [rng.choice(candidates) for _ in range(count - len(chosen))]
    return [sentence(text) for text in chosen[:count]]


def statement_templates(color: str = "red") -> list[Statement]:
    """NLVR2-style statements that need both images but only one simple attribute of each: the colour ``color``.

    Measured on CPU: statements whose truth depends on matching one of several colour words to the pictures
    (or comparing counts / shapes across the images) kept a randomly initialised tiny model at chance for
    hundreds of steps; a single colour with "both" / "neither" is learnt within minutes.
    """
    templates = [
        Statement(
            f"both images contain {with_article(color)} object",
            lambda a, b: a.count(color=color) > 0 and b.count(color=color) > 0,
        ),
        Statement(
            f"neither image contains {with_article(color)} object",
            lambda a, b: a.count(color=color) == 0 and b.count(color=color) == 0,
        ),
    ]
    return templates
