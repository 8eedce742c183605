"""VQAv2 indexes: ``answer2label.txt`` and ``vqa.{train,val,test,test-dev,rest_val,trainable_val}.jsonl``.

Follows the reference ``VQAv2Dataset.make_dataset_index``:

* answer vocabulary = normalised ``multiple_choice_answer`` over train+val kept when seen ``min_answer_count``
  times (official 9, giving 3129 answers), labels in first-appearance order;
* soft scores from the raw human answers (see :mod:`.vqa_answers`); train/val questions without any in-vocabulary
  answer are dropped, and so are images left without questions;
* items {"image_path", "text_segment", "labels", "scores", "qid"} grouped by image, images in shuffled order;
  labels/scores are empty for test and test-dev;
* ``rest_val_images`` val images (ViLT's 1000) become ``vqa.rest_val.jsonl``, the others ``vqa.trainable_val.jsonl``.

Difference: the reference shuffles with the unseeded global ``random``; here one ``random.Random(seed)`` drives all
shuffles so the same inputs give the same files. Images referenced by questions must exist (the reference
silently skipped missing ones); images on disk without questions are ignored, as in the reference.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from .common import (
    DatasetFormatError,
    PathArg,
    TextEncoder,
    encode_text,
    path_or_default,
    progress,
    read_json,
    read_json_lines,
    require_fields,
    require_int,
    require_list,
    resolve_dirs,
    write_index_files,
    write_jsonl_atomic,
)
from .vqa_answers import build_answer_vocabulary, soft_labels

# index split -> (question file key, image directory)
SPLITS: dict[str, tuple[str, str]] = {
    "train": ("train2014", "train2014"),
    "val": ("val2014", "val2014"),
    "test": ("test2015", "test2015"),
    "test-dev": ("test-dev2015", "test2015"),
}
ANNOTATED_SPLITS = ("train", "val")


def question_file(annotation_dir: Path, key: str) -> Path:
    return annotation_dir / f"v2_OpenEnded_mscoco_{key}_questions.json"


def annotation_file(annotation_dir: Path, key: str) -> Path:
    return annotation_dir / f"v2_mscoco_{key}_annotations.json"


def image_file_name(image_dir: str, image_id: int) -> str:
    """``COCO_train2014_000000000042.jpg`` (the reference parses the id back from this name)."""
    return f"COCO_{image_dir}_{image_id:012d}.jpg"


def _read_questions(path: Path, tokenizer: TextEncoder) -> dict[int, dict[int, dict[str, Any]]]:
    """image_id -> question_id -> {"question", "token_ids"}, in file order."""
    questions: dict[int, dict[int, dict[str, Any]]] = {}
    first_seen: dict[int, str] = {}  # question_id -> the record that used it first
    records = require_list(read_json(path, "VQA question file"), "questions", path)
    for index, record in enumerate(progress(records, desc=f"tokenize {path.name}")):
        where = f"questions[{index}]"
        require_fields(record, ("image_id", "question", "question_id"), path, where)
        qid = require_int(record, "question_id", path, where)
        where = f"{where} (question_id {qid})"
        image_id = require_int(record, "image_id", path, where)
        _require_unique_qid(first_seen, qid, f"questions[{index}]", path)
        token_ids = encode_text(tokenizer, record["question"], path, where)
        questions.setdefault(image_id, {})[qid] = {"token_ids": token_ids}
    return questions


def _require_unique_qid(first_seen: dict[int, str], qid: int, record_name: str, source: Path) -> None:
    """A question_id seen twice in one file: the second record would silently replace (or double) the first."""
    if qid in first_seen:
        raise DatasetFormatError(
            f"{source}, {record_name}: duplicate question_id {qid} (first at {first_seen[qid]}); question ids must "
            "be unique: re-download the file or remove the duplicate."
        )
    first_seen[qid] = record_name


def _read_annotations(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(where, record) pairs of an annotation file, validated."""
    records = require_list(read_json(path, "VQA annotation file"), "annotations", path)
    checked = []
    first_seen: dict[int, str] = {}
    for index, record in enumerate(records):
        where = f"annotations[{index}]"
        require_fields(record, ("question_id", "image_id", "multiple_choice_answer", "answers"), path, where)
        qid = require_int(record, "question_id", path, where)
        # Stored back as ints so _attach_labels looks them up without converting (and failing) again.
        image_id = require_int(record, "image_id", path, f"{where} (question_id {qid})")
        record = {**record, "question_id": qid, "image_id": image_id}
        _require_unique_qid(first_seen, qid, f"annotations[{index}]", path)
        if not isinstance(record["answers"], list):
            raise DatasetFormatError(f"{path}, {where}: 'answers' must be a list of {{'answer': ...}} objects.")
        for k, answer in enumerate(record["answers"]):
            require_fields(answer, ("answer",), path, f"{where}.answers[{k}]")
        checked.append((where, record))
    return checked


def _attach_labels(
    questions: dict[int, dict[int, dict[str, Any]]],
    annotations: list[tuple[str, dict[str, Any]]],
    answer2label: dict[str, int],
    source: Path,
) -> dict[int, dict[int, dict[str, Any]]]:
    """Add labels/scores to every question, then drop unanswerable questions and empty images."""
    for where, record in progress(annotations, desc=f"score {source.name}"):
        image_questions = questions.get(record["image_id"], {})
        question = image_questions.get(record["question_id"])
        if question is None:
            raise DatasetFormatError(
                f"{source}, {where}: question_id {record['question_id']} (image {record['image_id']}) is not in the "
                f"matching questions file; use question and annotation files from the same VQA release."
            )
        question["labels"], question["scores"] = soft_labels((a["answer"] for a in record["answers"]), answer2label)
    kept: dict[int, dict[int, dict[str, Any]]] = {}
    for image_id, image_questions in questions.items():
        answerable = {qid: q for qid, q in image_questions.items() if q.get("labels")}
        if answerable:
            kept[image_id] = answerable
    return kept


def _split_items(
    data_root: Path, split: str, questions: dict[int, dict[int, dict[str, Any]]], source: Path, rng: random.Random
) -> list[dict[str, Any]]:
    image_dir = SPLITS[split][1]
    image_ids = sorted(questions)
    rng.shuffle(image_ids)  # the reference shuffles the globbed image list (unseeded)
    items = []
    for image_id in image_ids:
        image_path = f"{image_dir}/{image_file_name(image_dir, image_id)}"
        if not (data_root / image_path).is_file():
            raise DatasetFormatError(
                f"{source}: image {data_root / image_path} (image_id {image_id}) does not exist; extract the COCO "
                f"{image_dir} images under {data_root / image_dir}."
            )
        for qid, question in questions[image_id].items():
            annotated = split in ANNOTATED_SPLITS
            items.append(
                {
                    "image_path": image_path,
                    "text_segment": question["token_ids"],
                    "labels": question["labels"] if annotated else [],
                    "scores": question["scores"] if annotated else [],
                    "qid": qid,
                }
            )
    return items


def split_rest_val(
    val_items: list[dict[str, Any]], rest_val_images: int, rng: random.Random
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(rest_val, trainable_val): the questions of ``rest_val_images`` random val images, and the others."""
    by_image: dict[str, list[dict[str, Any]]] = {}
    for item in val_items:
        by_image.setdefault(item["image_path"], []).append(item)
    images = list(by_image)
    rng.shuffle(images)
    count = min(max(rest_val_images, 0), len(images))
    rest = [item for image in images[:count] for item in by_image[image]]
    trainable = [item for image in images[count:] for item in by_image[image]]
    return rest, trainable


def build_vqav2_index(
    data_root: PathArg,
    tokenizer: TextEncoder,
    annotation_dir: PathArg | None = None,
    index_dir: PathArg | None = None,
    min_answer_count: int = 9,
    rest_val_images: int = 1000,
    seed: int = 0,
) -> list[Path]:
    """Build every VQAv2 index file; returns the written paths (answer2label.txt first)."""
    root, out_dir = resolve_dirs(data_root, index_dir)
    ann_dir = path_or_default(annotation_dir, root / "vqa")
    questions = {split: _read_questions(question_file(ann_dir, key), tokenizer) for split, (key, _) in SPLITS.items()}
    annotations = {split: _read_annotations(annotation_file(ann_dir, SPLITS[split][0])) for split in ANNOTATED_SPLITS}

    majority = [record["multiple_choice_answer"] for split in ANNOTATED_SPLITS for _, record in annotations[split]]
    answer2label = build_answer_vocabulary(majority, min_count=min_answer_count)
    if not answer2label:
        raise DatasetFormatError(
            f"no answer occurs {min_answer_count} times in {annotation_file(ann_dir, 'train2014')} and "
            f"{annotation_file(ann_dir, 'val2014')}; lower --min-answer-count for a small dataset."
        )
    for split in ANNOTATED_SPLITS:
        source = annotation_file(ann_dir, SPLITS[split][0])
        questions[split] = _attach_labels(questions[split], annotations[split], answer2label, source)

    rng = random.Random(seed)
    items = {
        split: _split_items(root, split, questions[split], question_file(ann_dir, SPLITS[split][0]), rng)
        for split in SPLITS
    }
    rest_val, trainable_val = split_rest_val(items["val"], rest_val_images, rng)
    outputs = {out_dir / f"vqa.{split}.jsonl": split_items for split, split_items in items.items()}
    outputs[out_dir / "vqa.rest_val.jsonl"] = rest_val
    outputs[out_dir / "vqa.trainable_val.jsonl"] = trainable_val
    vocabulary_rows = [{"answer": answer, "label": label} for answer, label in answer2label.items()]
    return [write_jsonl_atomic(out_dir / "answer2label.txt", vocabulary_rows), *write_index_files(outputs)]


def load_answer2label(path: PathArg) -> dict[str, int]:
    """Read ``answer2label.txt`` (JSON lines {"answer", "label"}); labels must equal the line index."""
    source = Path(path)
    answer2label: dict[str, int] = {}
    for number, row in read_json_lines(source, "VQA answer vocabulary (answer2label.txt)"):
        require_fields(row, ("answer", "label"), source, f"line {number}")
        if row["label"] != len(answer2label):
            raise DatasetFormatError(
                f"{source}, line {number}: label {row['label']} should be {len(answer2label)} (labels must be the "
                f"line order); rebuild it with `beit3 prepare vqav2`."
            )
        answer2label[row["answer"]] = row["label"]
    return answer2label
