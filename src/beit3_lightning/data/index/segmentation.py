"""Semantic-segmentation indexes: ``<dataset>.{train,val}.index.jsonl`` ({"image_path", "mask_path"} per image) and
``<dataset>.classes.json`` (class names in trained-id order, ``reduce_zero_label``, ``ignore_index``).

Two layouts:

* ADE20k (``build_ade20k_index``), the official ``ADEChallengeData2016`` download: ``images/{training,validation}/
  *.jpg``, ``annotations/{training,validation}/*.png`` whose pixels are 0 (unlabeled) or a class 1..150, and
  ``objectInfo150.txt`` (class names). Trained with ``reduce_zero_label`` as mmseg: 0 → 255 (ignored), v → v - 1.
* A user's own folders (``build_segmentation_index``): ``images/{train,val}/<name>.<ext>``,
  ``masks/{train,val}/<name>.png`` with class ids 0..K-1 and 255 = ignore (palette PNGs are read as their palette
  indices), and ``classes.txt`` with the K names.

Every mask is decoded here once, so a colour mask, a mask of the wrong size or a class id the classes file does not
name fails now with its file name, not as a CUDA assertion in the loss hours into training. Decoding runs in a
process pool when there are many masks (ADE20k has 22k); the first bad mask in file order is reported either way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

from beit3_lightning.atomic_files import temp_file_beside

from .common import DatasetFormatError, PathArg, progress, resolve_dirs, write_index_files

__all__ = [
    "ADE20K_NUM_CLASSES",
    "IGNORE_INDEX",
    "MASK_MODES",
    "build_ade20k_index",
    "build_segmentation_index",
    "mask_array",
]

ADE20K_NUM_CLASSES = 150
ADE20K_FOLDER = "ADEChallengeData2016"
IGNORE_INDEX = 255
# Single-channel 8-bit masks: greyscale values or palette indices (both are the class id as PIL reads them).
MASK_MODES = ("L", "P")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# From this many masks on, they are decoded in a process pool (below it the pool's start-up costs more than it saves).
POOL_MIN_MASKS = 2000
# Missing files named in an error (the count says how many more).
NAMED_MISSING = 3


def mask_array(image: Image.Image, path: PathArg) -> np.ndarray:
    """The class ids of an opened mask as an (H, W) uint8 array; ValueError naming ``path`` for a colour mask."""
    if image.mode not in MASK_MODES:
        kind = "a colour image" if image.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LA", "PA") else "not 8-bit"
        raise ValueError(
            f"{path}: mask has mode {image.mode} ({kind}); masks must be single-channel class-id PNGs (mode L, or P "
            "with the palette index as the class id): convert the colours to class ids"
        )
    return np.asarray(image, dtype=np.uint8)


@dataclass(frozen=True)
class _MaskCheck:
    """What one mask may hold: values ``0..max_value`` and, when ``allow_ignore``, also 255."""

    max_value: int
    allow_ignore: bool

    def allowed(self) -> str:
        return f"0..{self.max_value}" + (f" or {IGNORE_INDEX} (ignore)" if self.allow_ignore else "")


def _mask_problem(job: tuple[str, str, _MaskCheck]) -> str | None:
    """Why the mask of one (image, mask) pair is unusable, or None. Runs in pool workers: plain arguments only."""
    image_path, mask_path, check = job
    try:
        with Image.open(mask_path) as image:
            mask = mask_array(image, mask_path)
    except ValueError as err:
        return str(err)
    except (OSError, Image.DecompressionBombError) as err:
        return f"{mask_path}: cannot be decoded ({type(err).__name__}: {err}); replace the file"
    counts = np.bincount(mask.ravel(), minlength=256)
    present = np.flatnonzero(counts)
    bad = [int(v) for v in present if v > check.max_value and not (check.allow_ignore and v == IGNORE_INDEX)]
    if bad:
        return (
            f"{mask_path}: mask value {bad[0]} ({int(counts[bad[0]])} pixels) is outside the allowed range "
            f"{check.allowed()}; fix the mask or the class list"
        )
    try:  # the header is enough for the size; an undecodable image is --verify-images' business
        with Image.open(image_path) as picture:
            size = picture.size
    except (OSError, Image.DecompressionBombError):
        return None
    if size != (mask.shape[1], mask.shape[0]):
        return (
            f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image {image_path} is {size[0]}x{size[1]}; "
            "a mask must have its image's size"
        )
    return None


def _check_masks(pairs: Sequence[tuple[Path, Path]], check: _MaskCheck, desc: str) -> None:
    """Decode every mask (with a progress bar, in a pool when many); DatasetFormatError for the first bad one."""
    jobs = [(str(image), str(mask), check) for image, mask in pairs]
    results: Iterator[str | None]
    if len(jobs) >= POOL_MIN_MASKS and (os.cpu_count() or 1) > 1:
        with Pool(min(8, os.cpu_count() or 1)) as pool:
            results = pool.imap(_mask_problem, jobs, chunksize=64)  # in order: the first bad mask in file order
            _raise_first(progress(results, desc=desc, total=len(jobs)))
    else:
        _raise_first(progress(map(_mask_problem, jobs), desc=desc, total=len(jobs)))


def _raise_first(results: Iterator[str | None]) -> None:
    for problem in results:
        if problem is not None:
            raise DatasetFormatError(problem)


def _files(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    """File stem → path of the files in ``folder`` with one of ``suffixes`` (any case); two files per stem is an
    error (which one would be the image of the mask?)."""
    found: dict[str, Path] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        path = Path(entry.path)
        if not entry.is_file() or path.suffix.lower() not in suffixes:
            continue
        if path.stem in found:
            raise DatasetFormatError(f"{found[path.stem]} and {path} have the same name; keep one of them")
        found[path.stem] = path
    return found


def _missing(names: Sequence[str], what: str, where: Path, need: str) -> DatasetFormatError:
    listed = ", ".join(names[:NAMED_MISSING]) + (
        f" and {len(names) - NAMED_MISSING} more" if len(names) > NAMED_MISSING else ""
    )
    return DatasetFormatError(f"{len(names)} {what} in {where} have no {need} ({listed}); add or remove them")


def _pairs(image_dir: Path, mask_dir: Path, image_suffixes: Sequence[str], layout: str) -> list[tuple[Path, Path]]:
    """(image, mask) pairs matched by file stem, sorted by name; every image needs its mask and vice versa."""
    for folder in (image_dir, mask_dir):
        if not folder.is_dir():
            raise DatasetFormatError(f"folder not found: {folder}; expected the layout {layout}")
    images, masks = _files(image_dir, image_suffixes), _files(mask_dir, (".png",))
    if not images:
        raise DatasetFormatError(f"{image_dir} has no images ({', '.join(image_suffixes)}); expected {layout}")
    no_mask = sorted(images.keys() - masks.keys())
    if no_mask:
        raise _missing([images[s].name for s in no_mask], "images", image_dir, f"mask <name>.png in {mask_dir}")
    no_image = sorted(masks.keys() - images.keys())
    if no_image:
        raise _missing([masks[s].name for s in no_image], "masks", mask_dir, f"image in {image_dir}")
    return [(images[stem], masks[stem]) for stem in sorted(images, key=lambda s: images[s].name)]


def _records(pairs: Sequence[tuple[Path, Path]], root: Path) -> list[dict[str, str]]:
    return [
        {"image_path": image.relative_to(root).as_posix(), "mask_path": mask.relative_to(root).as_posix()}
        for image, mask in pairs
    ]


def _write_json_atomic(path: Path, document: dict[str, object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = temp_file_beside(path)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(document, out, indent=1)
            out.write("\n")
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path


def _write(
    dataset: str,
    out_dir: Path,
    splits: dict[str, list[dict[str, str]]],
    classes: list[str],
    reduce_zero_label: bool,
) -> list[Path]:
    """The two index files, then the classes file: written only once every mask passed."""
    written = write_index_files(
        {out_dir / f"{dataset}.{split}.index.jsonl": records for split, records in splits.items()}
    )
    info = {
        "dataset": dataset,
        "classes": classes,
        "reduce_zero_label": reduce_zero_label,
        "ignore_index": IGNORE_INDEX,
    }
    return [*written, _write_json_atomic(out_dir / f"{dataset}.classes.json", info)]


# -- ADE20k ------------------------------------------------------------------------------------------------------
ADE20K_LAYOUT = "ADEChallengeData2016/images/{training,validation}/*.jpg and annotations/{training,validation}/*.png"
ADE20K_SPLITS = {"train": "training", "val": "validation"}


def ade20k_folder(data_root: Path) -> Path:
    """The folder holding ``images/`` and ``annotations/``: ``data_root`` itself or its ADEChallengeData2016."""
    for candidate in (data_root, data_root / ADE20K_FOLDER):
        if (candidate / "images").is_dir() and (candidate / "annotations").is_dir():
            return candidate
    raise DatasetFormatError(
        f"no ADE20k data under {data_root}: expected {ADE20K_LAYOUT} (pass the ADEChallengeData2016 folder or its "
        "parent as --data-root)"
    )


def read_object_info(path: Path) -> list[str]:
    """Class names of ``objectInfo150.txt`` (header ``Idx Ratio Train Val Name``, tab-separated), by Idx 1, 2, ...

    The Name column is kept whole (``"building, edifice"``): the official files list synonyms that way.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or not lines[0].split() or lines[0].split()[0] != "Idx":
        raise DatasetFormatError(
            f"{path}, line 1: expected the header 'Idx Ratio Train Val Name'; is it objectInfo150?"
        )
    names: list[str] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t") if line.count("\t") >= 4 else line.split(None, 4)
        if len(fields) < 5 or not fields[4].strip():
            raise DatasetFormatError(
                f"{path}, line {number}: expected 5 columns Idx Ratio Train Val Name, got {line!r}"
            )
        if fields[0].strip() != str(len(names) + 1):
            raise DatasetFormatError(
                f"{path}, line {number}: Idx {fields[0].strip()!r} should be {len(names) + 1} (classes count up from 1)"
            )
        names.append(fields[4].strip())
    if not names:
        raise DatasetFormatError(f"{path} lists no classes; restore it from the ADE20k download or delete it")
    return names


def build_ade20k_index(data_root: PathArg, index_dir: PathArg | None = None) -> list[Path]:
    """Write ``ade20k.{train,val}.index.jsonl`` and ``ade20k.classes.json``; returns their paths.

    ``data_root`` is the ADEChallengeData2016 folder or its parent; index paths are relative to ``data_root``.
    Classes come from ``objectInfo150.txt`` when present (its row count is the class count), else
    ``class_1``..``class_150``. Mask values must lie in 0..num_classes (0 = unlabeled).
    """
    root, out_dir = resolve_dirs(data_root, index_dir)
    folder = ade20k_folder(root)
    info_file = next((p for p in (folder / "objectInfo150.txt", root / "objectInfo150.txt") if p.is_file()), None)
    classes = read_object_info(info_file) if info_file else [f"class_{i}" for i in range(1, ADE20K_NUM_CLASSES + 1)]
    check = _MaskCheck(max_value=len(classes), allow_ignore=False)
    splits: dict[str, list[dict[str, str]]] = {}
    for split, official in ADE20K_SPLITS.items():
        pairs = _pairs(
            folder / "images" / official, folder / "annotations" / official, (".jpg", ".jpeg"), ADE20K_LAYOUT
        )
        _check_masks(pairs, check, desc=f"ade20k {split} masks")
        splits[split] = _records(pairs, root)
    return _write("ade20k", out_dir, splits, classes, reduce_zero_label=True)


# -- a user's own dataset ----------------------------------------------------------------------------------------
SEGMENTATION_LAYOUT = (
    "images/{train,val}/<name>.<jpg|jpeg|png|bmp|webp>, masks/{train,val}/<name>.png and classes.txt (one class "
    "name per line)"
)


def read_classes_txt(path: Path) -> list[str]:
    """One class name per line, in id order. An empty line inside the list is an error (it would shift every id
    after it); empty lines at the end are trailing newlines and are ignored."""
    if not path.is_file():
        raise DatasetFormatError(f"classes file not found: {path}; expected {SEGMENTATION_LAYOUT}")
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        name = line.strip()
        if not name:
            raise DatasetFormatError(f"{path}, line {number}: empty class name; class ids follow line order, remove it")
        if name in seen:
            raise DatasetFormatError(f"{path}, line {number}: class {name!r} is already on line {seen[name]}")
        seen[name] = number
    if not seen:
        raise DatasetFormatError(f"{path} lists no classes; write one class name per line, in id order")
    return list(seen)


def build_segmentation_index(
    data_root: PathArg, index_dir: PathArg | None = None, reduce_zero_label: bool = False
) -> list[Path]:
    """Write ``segmentation.{train,val}.index.jsonl`` and ``segmentation.classes.json``; returns their paths.

    Mask pixels are class ids 0..K-1 (K = lines of ``classes.txt``) or 255 (ignored). With ``reduce_zero_label``
    the masks use 0 = unlabeled and 1..K for the K classes (as ADE20k).
    """
    root, out_dir = resolve_dirs(data_root, index_dir)
    classes = read_classes_txt(root / "classes.txt")
    most = IGNORE_INDEX - 1 if reduce_zero_label else IGNORE_INDEX
    if len(classes) > most:
        raise DatasetFormatError(
            f"{root / 'classes.txt'} lists {len(classes)} classes; 8-bit masks hold at most {most} (255 is ignore)"
        )
    check = _MaskCheck(max_value=len(classes) if reduce_zero_label else len(classes) - 1, allow_ignore=True)
    splits: dict[str, list[dict[str, str]]] = {}
    for split in ("train", "val"):
        pairs = _pairs(root / "images" / split, root / "masks" / split, IMAGE_SUFFIXES, SEGMENTATION_LAYOUT)
        _check_masks(pairs, check, desc=f"segmentation {split} masks")
        splits[split] = _records(pairs, root)
    return _write("segmentation", out_dir, splits, classes, reduce_zero_label=reduce_zero_label)
