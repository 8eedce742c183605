"""Sample VQAv2: COCO-named scene images plus the six official question/annotation JSON files.

Each image gets one yes/no, one number and one or two "other" questions. The 10 human answers are mostly the right
answer plus noise (wrong answers and spelling variants such as "Two" or "red."), so soft scores below 1.0 and
answer normalisation are both exercised.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from .files import coco_file_name, save_image, write_json
from .scene import COLORS, NUMBER_WORDS, SHAPES, Scene, random_scene
from .texts import QuestionAnswer, vqa_questions, yes_no_question

# (split directory, first image id, number of images)
IMAGE_SPLITS: tuple[tuple[str, int, int], ...] = (
    ("train2014", 1, 360),
    ("val2014", 500_001, 180),
    ("test2015", 900_001, 60),
)
_SEED = 202
# How many of the 10 human answers are exactly the ground truth (the rest is noise).
_EXACT_COUNTS = (10, 10, 10, 9, 9, 8, 8, 7, 6, 5, 4, 3)
_ALTERNATIVES = {"yes/no": ["yes", "no"], "number": ["0", "1", "2", "3", "4"], "other": [*COLORS, *SHAPES]}


def _pick_questions(rng: random.Random, scene: Scene) -> list[QuestionAnswer]:
    """One yes/no (half of them true), one number and one or two "other" questions, in random order."""
    if rng.random() < 0.5:
        present = rng.choice(scene.objects)
        yes_no = yes_no_question(scene, present.color, present.shape)
    else:
        yes_no = yes_no_question(scene, rng.choice(list(COLORS)), rng.choice(SHAPES))
    candidates = vqa_questions(scene)
    numbers = [q for q in candidates if q.answer_type == "number"]
    others = [q for q in candidates if q.answer_type == "other"]
    picked = [yes_no, rng.choice(numbers), *rng.sample(others, min(len(others), rng.randint(1, 2)))]
    rng.shuffle(picked)
    return picked


def _variant(rng: random.Random, answer: str) -> str:
    """A differently written version of the right answer (not in the normalised vocabulary as such)."""
    if answer.isdigit():
        return rng.choice([NUMBER_WORDS[int(answer)], f"{answer}."])
    return rng.choice([answer.capitalize(), f"{answer}.", f"{answer}!"])


def _human_answers(rng: random.Random, qa: QuestionAnswer) -> list[dict[str, Any]]:
    exact = rng.choice(_EXACT_COUNTS)
    # Fewer wrong answers than exact ones, so the normalised majority (multiple_choice_answer) is the truth.
    wrong_count = rng.randint(0, min(10 - exact, exact - 1))
    wrong = [a for a in _ALTERNATIVES[qa.answer_type] if a != qa.answer]
    answers = [qa.answer] * exact + [rng.choice(wrong) for _ in range(wrong_count)]
    answers += [_variant(rng, qa.answer) for _ in range(10 - len(answers))]
    rng.shuffle(answers)
    return [
        {"answer": a, "answer_confidence": rng.choice(["yes", "yes", "yes", "maybe"]), "answer_id": i + 1}
        for i, a in enumerate(answers)
    ]


def generate_vqav2(root: Path) -> None:
    """Write ``train2014/``, ``val2014/``, ``test2015/`` images and the 6 JSON files under ``vqa/``."""
    rng = random.Random(_SEED)
    questions: dict[str, list[dict[str, Any]]] = {}
    annotations: dict[str, list[dict[str, Any]]] = {}
    for split, first_id, count in IMAGE_SPLITS:
        questions[split], annotations[split] = [], []
        for image_id in range(first_id, first_id + count):
            scene = random_scene(rng)
            save_image(scene.render(), root / split / coco_file_name(split, image_id))
            for k, qa in enumerate(_pick_questions(rng, scene)):
                question_id = image_id * 1000 + k  # the official ids follow the same image_id * 1000 + k pattern
                questions[split].append({"image_id": image_id, "question": qa.question, "question_id": question_id})
                annotations[split].append(
                    {
                        "question_id": question_id,
                        "image_id": image_id,
                        "question_type": qa.question_type,
                        "answer_type": qa.answer_type,
                        "multiple_choice_answer": qa.answer,
                        "answers": _human_answers(rng, qa),
                    }
                )
    # test-dev is a subset of test2015: here the questions of every other test image.
    test_dev_images = {iid for _, first_id, count in IMAGE_SPLITS[2:] for iid in range(first_id, first_id + count, 2)}
    questions["test-dev2015"] = [q for q in questions["test2015"] if q["image_id"] in test_dev_images]
    vqa_dir = root / "vqa"
    for split, records in questions.items():
        data_subtype = "test2015" if split == "test-dev2015" else split
        write_json(
            vqa_dir / f"v2_OpenEnded_mscoco_{split}_questions.json",
            {"task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": data_subtype, "questions": records},
        )
    for split in ("train2014", "val2014"):
        write_json(
            vqa_dir / f"v2_mscoco_{split}_annotations.json",
            {"data_type": "mscoco", "data_subtype": split, "annotations": annotations[split]},
        )
