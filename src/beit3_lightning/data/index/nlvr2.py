"""NLVR2 indexes: ``nlvr2.{train,dev,test-P}.index.jsonl`` from the lil-lab ``nlvr`` repository JSON lines.

As the reference ``NLVR2Dataset.make_dataset_index``: for identifier ``train-10171-0-0`` the images are
``<prefix>/[<directory>/]train-10171-0-img0.png`` and ``...-img1.png`` (the identifier without its last ``-k``),
with prefix ``images/train`` for train and ``dev`` / ``test1`` for the others; label 1 for "True", else 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import (
    DatasetFormatError,
    PathArg,
    TextEncoder,
    encode_text,
    path_or_default,
    progress,
    read_json_lines,
    require_fields,
    require_image,
    resolve_dirs,
    write_index_files,
)

# raw split name -> (index split name, image prefix under the data root)
SPLITS: dict[str, tuple[str, str]] = {
    "train": ("train", "images/train"),
    "dev": ("dev", "dev"),
    "test1": ("test-P", "test1"),
}
LABELS = {"True": 1, "False": 0}


def _pair_paths(record: dict[str, Any], prefix: str, source: Path, where: str) -> tuple[str, str]:
    identifier = str(record["identifier"])
    if identifier.count("-") < 1:
        raise DatasetFormatError(
            f"{source}, {where}: identifier {identifier!r} is not like 'train-10171-0-0' (split-set-pair-sentence)."
        )
    folder = f"{prefix}/{record['directory']}" if "directory" in record else prefix
    stem = identifier.rsplit("-", 1)[0]
    return f"{folder}/{stem}-img0.png", f"{folder}/{stem}-img1.png"


def _split_items(data_root: Path, tokenizer: TextEncoder, source: Path, prefix: str) -> list[dict[str, Any]]:
    items = []
    for line, record in progress(read_json_lines(source, "NLVR2 annotation file"), desc=f"nlvr2 {source.name}"):
        where = f"line {line}"
        require_fields(record, ("identifier", "sentence", "label"), source, where)
        where = f"line {line} (identifier {record['identifier']})"
        if record["label"] not in LABELS:
            # The reference maps anything but "True" to 0; a typo there would silently flip labels.
            raise DatasetFormatError(f'{source}, {where}: label {record["label"]!r} must be "True" or "False".')
        image_path, image2_path = _pair_paths(record, prefix, source, where)
        require_image(data_root, image_path, source, where)
        require_image(data_root, image2_path, source, where)
        items.append(
            {
                "image_path": image_path,
                "image2_path": image2_path,
                "text_segment": encode_text(tokenizer, record["sentence"], source, where),
                "label": LABELS[record["label"]],
                "identifier": record["identifier"],
            }
        )
    return items


def build_nlvr2_index(
    data_root: PathArg, tokenizer: TextEncoder, nlvr_repo: PathArg | None = None, index_dir: PathArg | None = None
) -> list[Path]:
    """Write the three NLVR2 index files; ``nlvr_repo`` defaults to ``<data_root>/nlvr``."""
    root, out_dir = resolve_dirs(data_root, index_dir)
    repo = path_or_default(nlvr_repo, root / "nlvr")
    outputs = {
        out_dir / f"nlvr2.{split}.index.jsonl": _split_items(
            root, tokenizer, repo / "nlvr2" / "data" / f"{raw}.json", prefix
        )
        for raw, (split, prefix) in SPLITS.items()
    }
    return write_index_files(outputs)
