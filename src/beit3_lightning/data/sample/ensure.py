"""``ensure_sample_dataset``: generate a sample dataset and its official indexes once, atomically."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ...task_table import DATASETS, resolve
from ..index.common import TextEncoder
from ..tokenizer import Beit3Tokenizer
from .raw import check_dataset_name, generate_sample_raw
from .vqav2 import IMAGE_SPLITS

# Bump when the generated files change, so stale sample directories are rebuilt.
SAMPLE_VERSION = 9
MARKER_NAME = ".beit3_sample.json"
# Half of the sample val images form rest_val (the official 1000 would take all of them and leave no trainable_val).
SAMPLE_REST_VAL_IMAGES = IMAGE_SPLITS[1][2] // 2

# Index-builder arguments of the sample that differ from `beit3 prepare`'s defaults: every sample answer is kept
# (the official vocabulary keeps answers seen 9 times), and half of the sample val images form rest_val.
SAMPLE_INDEX_ARGS: dict[str, dict[str, object]] = {
    "vqav2": {"min_answer_count": 1, "rest_val_images": SAMPLE_REST_VAL_IMAGES},
}


def build_sample_index(dataset: str, root: Path, tokenizer: TextEncoder) -> None:
    """Build the official indexes of a sample dataset with the builder `beit3 prepare <dataset>` uses."""
    spec = DATASETS[dataset]
    args = (root, tokenizer) if spec.needs_tokenizer else (root,)
    resolve(spec.index_builder)(*args, **SAMPLE_INDEX_ARGS.get(dataset, {}))


def _marker(dataset: str) -> dict[str, object]:
    return {"dataset": dataset, "version": SAMPLE_VERSION}


def is_sample_dataset(root: str | os.PathLike[str], dataset: str) -> bool:
    """Whether ``root`` holds the current version of the sample ``dataset`` (nothing to generate)."""
    return _is_current(Path(root), dataset)


def _is_current(root: Path, dataset: str) -> bool:
    try:
        return json.loads((root / MARKER_NAME).read_text(encoding="utf-8")) == _marker(dataset)
    except (OSError, ValueError):
        return False


def ensure_sample_dataset(dataset: str, root: str | os.PathLike[str], tokenizer: TextEncoder | None = None) -> Path:
    """Make ``root`` hold the sample ``dataset`` (raw files + official indexes) and return it.

    Idempotent: a current marker file means nothing is done. A stale marker (older version or another dataset)
    means the directory is rebuilt. Atomic: everything is built in a temporary sibling directory that is renamed
    into place, so an interrupted run never leaves a half-built dataset. A non-empty ``root`` without a marker is
    not ours and is left alone (ValueError). ``tokenizer`` defaults to the shipped sample tokenizer; pass the one
    the model will use if it differs, since the indexes store token ids.
    """
    check_dataset_name(dataset)
    target = Path(root)
    if _is_current(target, dataset):
        return target
    stale = target.exists() and (target / MARKER_NAME).exists()
    if target.exists() and not stale and any(target.iterdir()):
        raise ValueError(
            f"{target} exists and is not a sample dataset directory (no {MARKER_NAME}); choose an empty or new "
            f"--data-root for the sample data."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
    building.chmod(0o755)  # mkdtemp makes it private; the renamed dataset should be a normal directory
    try:
        generate_sample_raw(dataset, building)
        build_sample_index(dataset, building, tokenizer if tokenizer is not None else Beit3Tokenizer.sample())
        (building / MARKER_NAME).write_text(json.dumps(_marker(dataset)), encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)  # stale sample (marker checked above) or empty directory
        os.replace(building, target)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return target
