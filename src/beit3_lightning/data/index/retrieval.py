"""Image-text retrieval indexes: ``coco_retrieval.{train,val,test}.jsonl`` and ``flickr30k.{train,val,test}.jsonl``.

One item per caption: {"image_path", "text_segment", "image_id"} where image_id is the *sequential index of the
image within that split's file* (not the COCO id), as in the reference ``RetrievalDataset`` builders. COCO train
is Karpathy "train" + "restval".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import PathArg, TextEncoder, path_or_default, progress, resolve_dirs, write_index_files
from .karpathy import KarpathyImage, caption_ids, coco_image_path, flickr_image_path, read_karpathy

COCO_SPLITS: dict[str, tuple[str, ...]] = {"train": ("train", "restval"), "val": ("val",), "test": ("test",)}
FLICKR_SPLITS: dict[str, tuple[str, ...]] = {"train": ("train",), "val": ("val",), "test": ("test",)}


def retrieval_items(
    images: list[KarpathyImage], karpathy_splits: tuple[str, ...], tokenizer: TextEncoder, source: Path
) -> list[dict[str, Any]]:
    """Per-caption items of the images in ``karpathy_splits``, numbering distinct images 0, 1, 2, ..."""
    items: list[dict[str, Any]] = []
    image_ids: dict[str, int] = {}
    for image in progress(images, desc=f"tokenize {source.name} {'+'.join(karpathy_splits)}"):
        if image.split not in karpathy_splits:
            continue
        image_id = image_ids.setdefault(image.image_path, len(image_ids))
        for ids in caption_ids(image, tokenizer, source):
            items.append({"image_path": image.image_path, "text_segment": ids, "image_id": image_id})
    return items


def _build(
    task: str, karpathy: Path, data_root: Path, out_dir: Path, tokenizer: TextEncoder, splits, image_path, required
) -> list[Path]:
    images = read_karpathy(karpathy, data_root, image_path, required)
    outputs = {
        out_dir / f"{task}.{split}.jsonl": retrieval_items(images, sources, tokenizer, karpathy)
        for split, sources in splits.items()
    }
    return write_index_files(outputs)


def build_coco_retrieval_index(
    data_root: PathArg, tokenizer: TextEncoder, karpathy_path: PathArg | None = None, index_dir: PathArg | None = None
) -> list[Path]:
    """COCO retrieval from ``train2014/``, ``val2014/`` and ``dataset_coco.json`` (default ``<data_root>/``)."""
    root, out_dir = resolve_dirs(data_root, index_dir)
    karpathy = path_or_default(karpathy_path, root / "dataset_coco.json")
    return _build(
        "coco_retrieval", karpathy, root, out_dir, tokenizer, COCO_SPLITS, coco_image_path, ("filepath", "filename")
    )


def build_flickr30k_index(
    data_root: PathArg, tokenizer: TextEncoder, karpathy_path: PathArg | None = None, index_dir: PathArg | None = None
) -> list[Path]:
    """Flickr30k retrieval from ``flickr30k-images/`` and ``dataset_flickr30k.json`` (default ``<data_root>/``)."""
    root, out_dir = resolve_dirs(data_root, index_dir)
    karpathy = path_or_default(karpathy_path, root / "dataset_flickr30k.json")
    return _build("flickr30k", karpathy, root, out_dir, tokenizer, FLICKR_SPLITS, flickr_image_path, ("filename",))
