"""Ground-truth captions for scoring, built locally from the raw annotation files.

The reference downloads ``coco_karpathy_{val,test}_gt.json`` / ``nocaps_val_gt.json`` at evaluation time; the same
captions are in the files the datasets ship with: Karpathy ``dataset_coco.json`` (image id = ``cocoid``) and NoCaps
``nocaps_val_4500_captions.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

References = dict[int, list[str]]

COCO_KARPATHY_FILE = "dataset_coco.json"
NOCAPS_VAL_FILE = "nocaps_val_4500_captions.json"


class MissingAnswersError(ValueError):
    """The split has no public answers or references (VQAv2 test / test-dev, NoCaps test): it can be predicted
    (``beit3 predict`` writes the submission file), not scored."""


def caption_references(task: str, root: str | Path, split: str) -> References:
    """``{image_id: [caption, ...]}`` of a captioning split (``coco_captioning`` val/test, ``nocaps`` val)."""
    root = Path(root)
    if task == "coco_captioning":
        path = root / COCO_KARPATHY_FILE
        data = _read_json(path)
        refs = {
            int(image["cocoid"]): [s["raw"].strip() for s in image["sentences"]]
            for image in data["images"]
            if image.get("split") == split
        }
    elif task == "nocaps":
        if split != "val":
            raise MissingAnswersError(
                f"NoCaps has public ground truth for 'val' only, not {split!r} (test is scored on EvalAI): use "
                "`beit3 predict` to write the submission file, or `beit3 validate` to score val"
            )
        path = root / NOCAPS_VAL_FILE
        refs = {}
        for ann in _read_json(path)["annotations"]:
            refs.setdefault(int(ann["image_id"]), []).append(ann["caption"].strip())
    else:
        raise ValueError(f"no caption references for task {task!r}; use coco_captioning or nocaps")
    if not refs:
        raise ValueError(f"{path} has no captions for split {split!r}")
    return refs


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(
            f"caption ground truth {path} not found: it comes with the raw dataset download "
            "(Karpathy dataset_coco.json for COCO, nocaps_val_4500_captions.json for NoCaps)"
        )
    with open(path, encoding="utf-8") as f:
        return json.load(f)
