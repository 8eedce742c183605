"""ImageNet index: ``imagenet.{train,val}.index.jsonl`` with {"image_path", "label"} per image.

Same as the reference ``ImageNetDataset.make_dataset_index``: ImageFolder layout, classes = sorted directory names
of ``train/`` (val uses the train class ids), files sorted within each class, paths relative to the data root
(the reference strips the character-wise common prefix of the train and val paths, which is the same thing for
the standard ``<root>/train`` + ``<root>/val`` layout). The val index also serves as the test split.
"""

from __future__ import annotations

import os
from pathlib import Path

from .common import DatasetFormatError, PathArg, progress, resolve_dirs, write_index_files

# torchvision's IMG_EXTENSIONS, compared case-insensitively like ImageFolder.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def find_classes(folder: Path) -> list[str]:
    """Sorted class directory names of an ImageFolder split."""
    if not folder.is_dir():
        raise DatasetFormatError(
            f"ImageNet folder not found: {folder}. Expected the ImageFolder layout <data-root>/train/<class>/*.JPEG "
            f"and <data-root>/val/<class>/*.JPEG."
        )
    classes = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
    if not classes:
        raise DatasetFormatError(f"{folder} has no class sub-directories; expected {folder}/<class>/<image>.JPEG.")
    return classes


def _class_images(class_dir: Path) -> list[Path]:
    """Image files under one class directory (recursively, as ImageFolder walks), sorted."""
    found = [
        Path(dirpath) / name
        for dirpath, _, names in os.walk(class_dir, followlinks=True)
        for name in names
        if name.lower().endswith(IMAGE_EXTENSIONS)
    ]
    return sorted(found)


def _split_items(data_root: Path, split: str, class_to_label: dict[str, int]) -> list[dict[str, object]]:
    folder = data_root / split
    items: list[dict[str, object]] = []
    for class_name in progress(find_classes(folder), desc=f"imagenet {split}"):
        if class_name not in class_to_label:
            raise DatasetFormatError(
                f"{folder / class_name}: class {class_name!r} does not exist in {data_root / 'train'}; val classes "
                f"must be a subset of the train classes."
            )
        images = _class_images(folder / class_name)
        if split == "train" and not images:
            raise DatasetFormatError(
                f"{folder / class_name}: no image files ({', '.join(IMAGE_EXTENSIONS)}); remove the directory or "
                f"add its images."
            )
        label = class_to_label[class_name]
        items += [{"image_path": path.relative_to(data_root).as_posix(), "label": label} for path in images]
    return items


def build_imagenet_index(data_root: PathArg, index_dir: PathArg | None = None) -> list[Path]:
    """Write ``imagenet.train.index.jsonl`` and ``imagenet.val.index.jsonl``; returns their paths."""
    root, out_dir = resolve_dirs(data_root, index_dir)
    class_to_label = {name: label for label, name in enumerate(find_classes(root / "train"))}
    outputs = {
        out_dir / f"imagenet.{split}.index.jsonl": _split_items(root, split, class_to_label)
        for split in ("train", "val")
    }
    return write_index_files(outputs)
