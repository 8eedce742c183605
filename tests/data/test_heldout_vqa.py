"""benchmarks/heldout_vqa.py: a second VQAv2-format dataset, disjoint from the embedded sample, indexed officially."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from beit3_lightning.data.index.vqa_answers import normalize_answer
from beit3_lightning.data.sample.scene import COLORS as SAMPLE_COLORS
from beit3_lightning.data.sample.scene import SHAPES as SAMPLE_SHAPES

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "heldout_vqa.py"
SIZES = {"train_images": 40, "val_images": 20, "test_images": 6}
JSON_FILES = (
    "v2_OpenEnded_mscoco_train2014_questions.json",
    "v2_OpenEnded_mscoco_val2014_questions.json",
    "v2_OpenEnded_mscoco_test2015_questions.json",
    "v2_OpenEnded_mscoco_test-dev2015_questions.json",
    "v2_mscoco_train2014_annotations.json",
    "v2_mscoco_val2014_annotations.json",
)


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("heldout_vqa", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


heldout = _load()


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = heldout.generate_heldout_vqav2(tmp_path_factory.mktemp("heldout"), seed=7, **SIZES)
    heldout.build_index(root, rest_val_images=SIZES["val_images"] // 2)
    return root


def _annotations(root: Path) -> list[dict]:
    return [
        record
        for split in ("train2014", "val2014")
        for record in json.loads((root / "vqa" / f"v2_mscoco_{split}_annotations.json").read_text())["annotations"]
    ]


def test_generation_is_deterministic_and_seeded(tmp_path: Path, indexed: Path) -> None:
    again = heldout.generate_heldout_vqav2(tmp_path / "again", seed=7, **SIZES)
    other = heldout.generate_heldout_vqav2(tmp_path / "other", seed=8, **SIZES)
    for name in JSON_FILES:
        assert (again / "vqa" / name).read_bytes() == (indexed / "vqa" / name).read_bytes(), name
    assert (other / "vqa" / JSON_FILES[0]).read_bytes() != (again / "vqa" / JSON_FILES[0]).read_bytes()
    images = sorted(p.relative_to(again) for p in again.glob("*/COCO_*.jpg"))
    assert len(images) == sum(SIZES.values())
    assert all((indexed / p).read_bytes() == (again / p).read_bytes() for p in images)


def test_official_layout(indexed: Path) -> None:
    for split, count in (("train2014", 40), ("val2014", 20), ("test2015", 6)):
        names = sorted(p.name for p in (indexed / split).iterdir())
        assert len(names) == count
        assert all(n.startswith(f"COCO_{split}_") and len(n) == len(f"COCO_{split}_") + 12 + 4 for n in names)
    questions = json.loads((indexed / "vqa" / JSON_FILES[0]).read_text())
    assert questions["task_type"] == "Open-Ended" and questions["data_subtype"] == "train2014"
    q = questions["questions"][0]
    assert set(q) == {"image_id", "question", "question_id"} and q["question_id"] // 1000 == q["image_id"]
    test = {q["question_id"] for q in json.loads((indexed / "vqa" / JSON_FILES[2]).read_text())["questions"]}
    test_dev = {q["question_id"] for q in json.loads((indexed / "vqa" / JSON_FILES[3]).read_text())["questions"]}
    assert test_dev and test_dev < test
    for record in _annotations(indexed):
        assert record["answer_type"] in ("yes/no", "number", "other")
        assert len(record["answers"]) == 10 and [a["answer_id"] for a in record["answers"]] == list(range(1, 11))
    # Noisy humans: some questions without full agreement, so soft scores below 1 exist.
    assert any(len({normalize_answer(a["answer"]) for a in r["answers"]}) > 1 for r in _annotations(indexed))


def test_vocabulary_disjoint_from_the_sample(indexed: Path) -> None:
    sample_words = set(SAMPLE_SHAPES) | set(SAMPLE_COLORS) | {"crosses", "squares", "circles", "triangles", "color"}
    assert not sample_words & (set(heldout.SHAPES) | set(heldout.COLOURS))
    answers = {normalize_answer(a["answer"]) for r in _annotations(indexed) for a in r["answers"]}
    assert answers and not answers & sample_words
    texts = [
        q["question"] for name in JSON_FILES[:3] for q in json.loads((indexed / "vqa" / name).read_text())["questions"]
    ]
    words = {w.strip("?") for text in texts for w in text.split()}
    assert not words & sample_words


def test_official_index_builder_accepts_it(indexed: Path) -> None:
    vocabulary = (indexed / "answer2label.txt").read_text().splitlines()
    assert len(vocabulary) > 10
    for split in ("train", "trainable_val", "rest_val", "val", "test", "test-dev"):
        rows = [json.loads(line) for line in (indexed / f"vqa.{split}.jsonl").read_text().splitlines()]
        assert rows, split
        if split != "test" and split != "test-dev":
            assert all(r["labels"] and len(r["labels"]) == len(r["scores"]) for r in rows)
    rest_images = {json.loads(line)["image_path"] for line in (indexed / "vqa.rest_val.jsonl").open()}
    assert len(rest_images) == SIZES["val_images"] // 2


def test_question_type_prior_beats_the_most_common_answer(indexed: Path) -> None:
    prior = heldout.question_type_prior(indexed)
    common = heldout.most_common_answer_accuracy(indexed)
    assert 0 < common < prior < 100


def test_command_generates_indexes_and_summarises(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(tmp_path), "--seed", "3", "--train-images", "12", "--val-images", "8", "--test-images", "2"]
    assert heldout.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert str(tmp_path / "vqa.rest_val.jsonl") in out
    assert out[-1].startswith(f"heldout vqav2 {tmp_path}: 22 images, ") and "question-type prior" in out[-1]
