"""Embedded sample datasets: deterministic bytes, official layouts, correct texts, ensure_sample_dataset behaviour."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from beit3_lightning.data.index.vqa_answers import normalize_answer
from beit3_lightning.data.sample import (
    MARKER_NAME,
    SAMPLE_DATASETS,
    ensure_sample_dataset,
    generate_sample_raw,
)
from beit3_lightning.data.sample.scene import CELL, Scene, SceneObject, random_scene
from beit3_lightning.data.sample.texts import captions, statement_templates, vqa_questions, yes_no_question

# coco_retrieval writes the coco_captioning layout.
RAW_DATASETS = ("imagenet", "vqav2", "nlvr2", "coco_captioning", "flickr30k", "nocaps", "ade20k", "segmentation")


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("samples")
    for name in SAMPLE_DATASETS:
        ensure_sample_dataset(name, root / name)
    return root


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_generation_is_byte_for_byte_deterministic(samples: Path, tmp_path: Path) -> None:
    for name in RAW_DATASETS:
        again = _tree_bytes(generate_sample_raw(name, tmp_path / name))
        first = {k: v for k, v in _tree_bytes(samples / name).items() if k in again}
        assert again == first, name
        assert len(again) > 10


def test_scene_objects_stay_inside_their_cell() -> None:
    scene = Scene((SceneObject("red", "circle", 0), SceneObject("blue", "cross", 4)), background=210)
    pixels = scene.render().load()
    for cell in range(9):
        row, col = divmod(cell, 3)
        colours = {
            pixels[x, y] for x in range(col * CELL, col * CELL + CELL) for y in range(row * CELL, row * CELL + CELL)
        }
        if cell in (0, 4):
            assert len(colours) > 1  # something drawn
            border = [(col * CELL, row * CELL + k) for k in range(CELL)] + [
                (col * CELL + k, row * CELL) for k in range(CELL)
            ]
            assert all(pixels[p] == (210, 210, 210) for p in border)  # margin keeps it off the cell edge
        else:
            assert colours == {(210, 210, 210)}


def test_texts_match_the_scene() -> None:
    scene = Scene(
        (SceneObject("red", "circle", 0), SceneObject("red", "square", 4), SceneObject("orange", "square", 8)),
        background=220,
    )
    answers = {qa.question: qa.answer for qa in vqa_questions(scene)}
    assert answers["how many squares are there?"] == "2"
    assert answers["how many crosses are there?"] == "0"
    assert answers["what color is the circle?"] == "red"
    assert "what color is the square?" not in answers  # ambiguous: two squares
    assert answers["how many red objects are there?"] == "2"
    assert answers["what shape is in the middle?"] == "square"
    assert answers["what color is the object in the bottom right corner?"] == "orange"
    assert answers["how many objects are there?"] == "3"
    assert yes_no_question(scene, "orange", "square").answer == "yes"
    assert yes_no_question(scene, "orange", "circle").answer == "no"
    assert yes_no_question(scene, "orange", "circle").question == "is there an orange circle?"
    texts = captions(scene, random.Random(0), 5)
    assert texts[0] == (
        "A red circle in the top left corner, a red square in the middle"
        " and an orange square in the bottom right corner."
    )
    assert len(texts) == 5 and len(captions(scene, random.Random(0), 10)) == 10


def test_statements_are_decided_by_both_images() -> None:
    rng = random.Random(3)
    pairs = [(random_scene(rng), random_scene(rng)) for _ in range(300)]
    for statement in statement_templates():
        outcomes = {statement.holds(a, b) for a, b in pairs}
        assert outcomes == {True, False}, statement.text  # never constant


def test_vqa_files_follow_the_official_format(samples: Path) -> None:
    vqa = samples / "vqav2" / "vqa"
    questions = json.loads((vqa / "v2_OpenEnded_mscoco_train2014_questions.json").read_text())["questions"]
    annotations = json.loads((vqa / "v2_mscoco_train2014_annotations.json").read_text())["annotations"]
    assert set(questions[0]) == {"image_id", "question", "question_id"}
    assert [q["question_id"] for q in questions] == [a["question_id"] for a in annotations]
    types = Counter(a["answer_type"] for a in annotations)
    assert set(types) == {"yes/no", "number", "other"}
    for annotation in annotations:
        assert len(annotation["answers"]) == 10
        assert [a["answer_id"] for a in annotation["answers"]] == list(range(1, 11))
        raw = Counter(a["answer"] for a in annotation["answers"])
        normalised = Counter(normalize_answer(a["answer"]) for a in annotation["answers"])
        assert normalised.most_common(1)[0][0] == annotation["multiple_choice_answer"]
        assert raw[annotation["multiple_choice_answer"]] >= 3
    yes_no = Counter(a["multiple_choice_answer"] for a in annotations if a["answer_type"] == "yes/no")
    assert 0.35 < yes_no["yes"] / sum(yes_no.values()) < 0.65
    test_ids = {
        q["question_id"]
        for q in json.loads((vqa / "v2_OpenEnded_mscoco_test2015_questions.json").read_text())["questions"]
    }
    dev = json.loads((vqa / "v2_OpenEnded_mscoco_test-dev2015_questions.json").read_text())["questions"]
    assert {q["question_id"] for q in dev} < test_ids
    image = Image.open(samples / "vqav2" / "train2014" / "COCO_train2014_000000000001.jpg")
    assert image.size == (48, 48) and image.mode == "RGB"


def test_vqa_indexes_have_soft_scores_and_eval_splits(samples: Path) -> None:
    root = samples / "vqav2"
    train = _jsonl(root / "vqa.train.jsonl")
    assert len(train) > 1000 and len(_jsonl(root / "vqa.rest_val.jsonl")) >= 50
    assert len(_jsonl(root / "vqa.trainable_val.jsonl")) >= 50 and len(_jsonl(root / "vqa.test.jsonl")) >= 50
    scores = {s for item in train for s in item["scores"]}
    assert {0.3, 1.0} <= scores and len(scores) >= 4
    answers = [json.loads(line)["answer"] for line in (root / "answer2label.txt").read_text().splitlines()]
    assert {"yes", "no", "0", "1", "2", "red", "circle"} <= set(answers)


def test_nlvr2_labels_balanced_per_statement_text(samples: Path) -> None:
    root = samples / "nlvr2"
    records = [json.loads(x) for x in (root / "nlvr" / "nlvr2" / "data" / "train.json").read_text().splitlines()]
    labels = Counter(r["label"] for r in records)
    assert labels["True"] == labels["False"] == 1500
    by_text: dict[str, Counter] = {}
    for record in records:
        by_text.setdefault(record["sentence"], Counter())[record["label"]] += 1
    # Text alone must not give the label away: the best text-only guess stays close to chance.
    text_only_accuracy = sum(max(c.values()) for c in by_text.values()) / len(records)
    assert text_only_accuracy < 0.55
    # ...and the truth of every statement follows from the two pictures (one large object each).
    from beit3_lightning.data.sample.texts import statement_templates

    assert {t.text for t in statement_templates()} == {"both images contain a red object",
                                                      "neither image contains a red object"}  # fmt: skip
    for split, name in (("train", "nlvr2.train"), ("dev", "nlvr2.dev"), ("test-P", "nlvr2.test-P")):
        items = _jsonl(root / f"{name}.index.jsonl")
        assert len(items) >= 50, split
        assert all((root / i["image_path"]).is_file() and (root / i["image2_path"]).is_file() for i in items)


def test_caption_datasets(samples: Path) -> None:
    coco = json.loads((samples / "coco_captioning" / "dataset_coco.json").read_text())["images"]
    assert Counter(i["split"] for i in coco) == {"train": 320, "restval": 40, "val": 60, "test": 80}
    assert all(len(i["sentences"]) == 5 and i["sentences"][0]["raw"].endswith(".") for i in coco)
    assert {i["filepath"] for i in coco if i["split"] == "train"} == {"train2014"}
    retrieval_test = _jsonl(samples / "coco_retrieval" / "coco_retrieval.test.jsonl")
    assert len(retrieval_test) == 400 and max(i["image_id"] for i in retrieval_test) == 79
    flickr = json.loads((samples / "flickr30k" / "dataset_flickr30k.json").read_text())["images"]
    assert "filepath" not in flickr[0] and "cocoid" not in flickr[0]
    assert len(_jsonl(samples / "flickr30k" / "flickr30k.test.jsonl")) == 400
    nocaps = json.loads((samples / "nocaps" / "nocaps_val_4500_captions.json").read_text())
    assert len(nocaps["images"]) == 60 and len(nocaps["annotations"]) == 600
    assert len(_jsonl(samples / "nocaps" / "nocaps.test.jsonl")) == 60
    assert len(_jsonl(samples / "coco_captioning" / "coco_captioning.val.jsonl")) == 60


def test_imagenet_sample(samples: Path) -> None:
    train = _jsonl(samples / "imagenet" / "imagenet.train.index.jsonl")
    val = _jsonl(samples / "imagenet" / "imagenet.val.index.jsonl")
    assert Counter(i["label"] for i in train) == {k: 40 for k in range(8)}
    assert len(val) == 96 and train[0]["image_path"].startswith("train/cool_circle/")


def test_ensure_is_idempotent_and_rebuilds_stale(tmp_path: Path) -> None:
    root = ensure_sample_dataset("nocaps", tmp_path / "nocaps")
    marker = root / MARKER_NAME
    index = root / "nocaps.val.jsonl"
    stamp = index.stat().st_mtime_ns
    assert ensure_sample_dataset("nocaps", root) == root and index.stat().st_mtime_ns == stamp
    marker.write_text(json.dumps({"dataset": "nocaps", "version": -1}))
    (root / "stray.txt").write_text("from an old version")
    ensure_sample_dataset("nocaps", root)
    assert not (root / "stray.txt").exists() and json.loads(marker.read_text())["version"] >= 1
    assert [p.name for p in tmp_path.iterdir()] == ["nocaps"]  # no temp directory left behind


def test_ensure_refuses_foreign_directory_and_unknown_name(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("user data")
    with pytest.raises(ValueError, match="not a sample dataset directory"):
        ensure_sample_dataset("imagenet", tmp_path / "mine")
    assert (tmp_path / "mine" / "precious.txt").exists()
    with pytest.raises(ValueError, match="unknown sample dataset 'coco'"):
        generate_sample_raw("coco", tmp_path / "x")
