"""VQAv2 index builder on hand-written official-format JSON files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from index_fixtures import WordLengthTokenizer, read_jsonl, write_image, write_json

from beit3_lightning.data.index.common import DatasetFormatError
from beit3_lightning.data.index.vqav2 import build_vqav2_index, load_answer2label

QUESTIONS = {
    "train2014": [(1, 1000, "what color is it?"), (1, 1001, "how many?"), (2, 2000, "is it red?")],
    "val2014": [(10, 10000, "what color?"), (11, 11000, "how many cats?"), (12, 12000, "what is green?")],
    "test2015": [(20, 20000, "what?"), (21, 21000, "where is it?")],
    "test-dev2015": [(20, 20000, "what?")],
}
# question_id -> (image_id, multiple_choice_answer, 10 raw answers)
ANNOTATIONS = {
    "train2014": {
        1000: (1, "Red", ["red"] * 3 + ["blue"] * 2 + ["pink"] * 5),
        1001: (1, "two", ["2"] * 4 + ["two"] * 6),
        2000: (2, "yes", ["yes"] * 10),
    },
    "val2014": {
        10000: (10, "red", ["red"] * 10),
        11000: (11, "2", ["2"] + ["3"] * 9),
        12000: (12, "green", ["green"] * 10),
    },
}


def _image_dir(split: str) -> str:
    return "test2015" if split == "test-dev2015" else split


def _annotation(question_id: int, image_id: int, majority: str, answers: list[str]) -> dict[str, Any]:
    return {
        "question_id": question_id,
        "image_id": image_id,
        "question_type": "what",
        "answer_type": "other",
        "multiple_choice_answer": majority,
        "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)],
    }


def make_vqa(root: Path) -> Path:
    vqa = root / "vqa"
    for split, rows in QUESTIONS.items():
        records = [{"image_id": i, "question": q, "question_id": qid} for i, qid, q in rows]
        write_json(vqa / f"v2_OpenEnded_mscoco_{split}_questions.json", {"questions": records})
        for image_id, _, _ in rows:
            folder = _image_dir(split)
            write_image(root / folder / f"COCO_{folder}_{image_id:012d}.jpg", "JPEG")
    for split, rows in ANNOTATIONS.items():
        records = [_annotation(qid, *row) for qid, row in rows.items()]
        write_json(vqa / f"v2_mscoco_{split}_annotations.json", {"annotations": records})
    return root


def _build(root: Path, **kwargs: Any) -> list[Path]:
    return build_vqav2_index(root, WordLengthTokenizer(), min_answer_count=2, **kwargs)


def test_vqa_vocabulary_scores_and_items(tmp_path: Path) -> None:
    written = _build(make_vqa(tmp_path), rest_val_images=1)
    assert [p.name for p in written] == [
        "answer2label.txt",
        "vqa.train.jsonl",
        "vqa.val.jsonl",
        "vqa.test.jsonl",
        "vqa.test-dev.jsonl",
        "vqa.rest_val.jsonl",
        "vqa.trainable_val.jsonl",
    ]
    # Normalised majority answers: red 2 yes red 2 green -> red x2, 2 x2 kept at min count 2, first-seen order.
    assert read_jsonl(tmp_path / "answer2label.txt") == [{"answer": "red", "label": 0}, {"answer": "2", "label": 1}]
    assert load_answer2label(tmp_path / "answer2label.txt") == {"red": 0, "2": 1}
    image1 = "train2014/COCO_train2014_000000000001.jpg"
    # q2000 ("yes") has no in-vocabulary answer: dropped with its image.
    assert read_jsonl(tmp_path / "vqa.train.jsonl") == [
        {"image_path": image1, "text_segment": [4, 5, 2, 3], "labels": [0], "scores": [0.9], "qid": 1000},
        {"image_path": image1, "text_segment": [3, 5], "labels": [1], "scores": [1.0], "qid": 1001},
    ]
    val = {item["qid"]: item for item in read_jsonl(tmp_path / "vqa.val.jsonl")}
    assert set(val) == {10000, 11000}  # 12000 ("green", seen once) dropped
    assert val[10000] == {
        "image_path": "val2014/COCO_val2014_000000000010.jpg",
        "text_segment": [4, 6],
        "labels": [0],
        "scores": [1.0],
        "qid": 10000,
    }
    assert (val[11000]["labels"], val[11000]["scores"]) == ([1], [0.3])
    test = {item["qid"]: item for item in read_jsonl(tmp_path / "vqa.test.jsonl")}
    assert test[21000] == {
        "image_path": "test2015/COCO_test2015_000000000021.jpg",
        "text_segment": [5, 2, 3],
        "labels": [],
        "scores": [],
        "qid": 21000,
    }
    assert [item["qid"] for item in read_jsonl(tmp_path / "vqa.test-dev.jsonl")] == [20000]


def test_rest_val_split_is_seeded_and_partitions_val(tmp_path: Path) -> None:
    make_vqa(tmp_path)
    choices = set()
    for seed in range(6):
        _build(tmp_path, rest_val_images=1, seed=seed)
        rest = read_jsonl(tmp_path / "vqa.rest_val.jsonl")
        trainable = read_jsonl(tmp_path / "vqa.trainable_val.jsonl")
        assert len(rest) == 1 and len(trainable) == 1
        assert sorted(i["qid"] for i in rest + trainable) == [10000, 11000]
        choices.add(rest[0]["qid"])
        first = (tmp_path / "vqa.rest_val.jsonl").read_bytes()
        _build(tmp_path, rest_val_images=1, seed=seed)
        assert (tmp_path / "vqa.rest_val.jsonl").read_bytes() == first  # same seed, same files
    assert choices == {10000, 11000}  # the seed does change the choice
    _build(tmp_path, rest_val_images=1000)  # clamped to the 2 available images
    assert len(read_jsonl(tmp_path / "vqa.rest_val.jsonl")) == 2
    assert read_jsonl(tmp_path / "vqa.trainable_val.jsonl") == []


def test_missing_image_raises_and_writes_nothing(tmp_path: Path) -> None:
    make_vqa(tmp_path)
    (tmp_path / "val2014" / "COCO_val2014_000000000011.jpg").unlink()
    with pytest.raises(DatasetFormatError, match=r"v2_OpenEnded_mscoco_val2014_questions\.json.*image_id 11"):
        _build(tmp_path)
    assert list(tmp_path.glob("vqa.*")) == [] and list(tmp_path.glob(".*")) == []


def _rewrite(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_annotation_missing_field(tmp_path: Path) -> None:
    make_vqa(tmp_path)
    path = tmp_path / "vqa" / "v2_mscoco_train2014_annotations.json"
    _rewrite(path, lambda d: d["annotations"][1].pop("answers"))
    with pytest.raises(DatasetFormatError, match=r"v2_mscoco_train2014_annotations\.json, annotations\[1\].*answers"):
        _build(tmp_path)


def test_question_missing_field_and_empty_question(tmp_path: Path) -> None:
    make_vqa(tmp_path)
    path = tmp_path / "vqa" / "v2_OpenEnded_mscoco_test2015_questions.json"
    _rewrite(path, lambda d: d["questions"][0].pop("question"))
    with pytest.raises(DatasetFormatError, match=r"test2015_questions\.json, questions\[0\].*question"):
        _build(tmp_path)
    _rewrite(path, lambda d: d["questions"][0].update(question="   "))
    with pytest.raises(DatasetFormatError, match=r"test2015_questions\.json.*empty text"):
        _build(tmp_path)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    make_vqa(tmp_path)
    (tmp_path / "vqa" / "v2_OpenEnded_mscoco_test-dev2015_questions.json").unlink()
    with pytest.raises(DatasetFormatError, match=r"not found: .*test-dev2015_questions\.json"):
        _build(tmp_path)
    make_vqa(tmp_path)
    (tmp_path / "vqa" / "v2_mscoco_val2014_annotations.json").write_text("{not json")
    with pytest.raises(DatasetFormatError, match=r"val2014_annotations\.json is not valid JSON"):
        _build(tmp_path)
    make_vqa(tmp_path)
    write_json(tmp_path / "vqa" / "v2_OpenEnded_mscoco_train2014_questions.json", {"images": []})
    with pytest.raises(DatasetFormatError, match=r"train2014_questions\.json.*'questions'"):
        _build(tmp_path)


def test_annotation_for_unknown_question(tmp_path: Path) -> None:
    make_vqa(tmp_path)
    path = tmp_path / "vqa" / "v2_mscoco_val2014_annotations.json"
    _rewrite(path, lambda d: d["annotations"][0].update(question_id=99))
    with pytest.raises(DatasetFormatError, match=r"val2014_annotations\.json, annotations\[0\]: question_id 99"):
        _build(tmp_path)


def test_empty_vocabulary_says_how_to_fix(tmp_path: Path) -> None:
    make_vqa(tmp_path)
    with pytest.raises(DatasetFormatError, match="--min-answer-count"):
        build_vqav2_index(tmp_path, WordLengthTokenizer(), min_answer_count=9)


def test_load_answer2label_rejects_bad_order(tmp_path: Path) -> None:
    path = tmp_path / "answer2label.txt"
    path.write_text('{"answer": "yes", "label": 0}\n{"answer": "no", "label": 2}\n')
    with pytest.raises(DatasetFormatError, match="line 2: label 2 should be 1"):
        load_answer2label(path)
