"""Sample captioning/retrieval raw data: COCO + Karpathy split, Flickr30k + Karpathy split, and NoCaps."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from .files import coco_file_name, save_image, write_json
from .scene import IMAGE_SIZE, random_scene
from .texts import captions

CAPTIONS_PER_IMAGE = 5
NOCAPS_CAPTIONS_PER_IMAGE = 10
# Karpathy split sizes: (split, number of images). COCO train comes from train2014, the rest from val2014.
COCO_SPLITS: tuple[tuple[str, int], ...] = (("train", 320), ("restval", 40), ("val", 60), ("test", 80))
FLICKR_SPLITS: tuple[tuple[str, int], ...] = (("train", 300), ("val", 60), ("test", 80))
NOCAPS_SPLITS: tuple[tuple[str, int], ...] = (("val", 60), ("test", 60))
_COCO_SEED, _FLICKR_SEED, _NOCAPS_SEED = 404, 505, 606


def _karpathy_sentences(texts: list[str], image_index: int, first_sentence_id: int) -> list[dict[str, Any]]:
    """Karpathy sentence records: lowercase word tokens without punctuation, plus the raw text."""
    return [
        {
            "tokens": re.findall(r"[a-z0-9]+", text.lower()),
            "raw": text,
            "imgid": image_index,
            "sentid": first_sentence_id + k,
        }
        for k, text in enumerate(texts)
    ]


def _karpathy_image(rng: random.Random, image_index: int, split: str, file_name: str, root_dir: Path) -> dict:
    """Draw one scene into ``root_dir/file_name`` and return its Karpathy image record (without dataset extras)."""
    scene = random_scene(rng)
    save_image(scene.render(), root_dir / file_name)
    first = image_index * CAPTIONS_PER_IMAGE
    return {
        "sentids": list(range(first, first + CAPTIONS_PER_IMAGE)),
        "imgid": image_index,
        "sentences": _karpathy_sentences(captions(scene, rng, CAPTIONS_PER_IMAGE), image_index, first),
        "split": split,
        "filename": file_name,
    }


def generate_coco(root: Path) -> None:
    """Write ``train2014/``, ``val2014/`` and ``dataset_coco.json`` (Karpathy format, with restval)."""
    rng = random.Random(_COCO_SEED)
    images = []
    for split, count in COCO_SPLITS:
        folder = "train2014" if split == "train" else "val2014"
        for _ in range(count):
            index = len(images)
            cocoid = (100_000 if folder == "train2014" else 500_000) + index
            record = _karpathy_image(rng, index, split, coco_file_name(folder, cocoid), root / folder)
            images.append({"filepath": folder, **record, "cocoid": cocoid})
    write_json(root / "dataset_coco.json", {"images": images, "dataset": "coco"})


def generate_flickr30k(root: Path) -> None:
    """Write ``flickr30k-images/*.jpg`` and ``dataset_flickr30k.json`` (Karpathy format, no filepath/cocoid)."""
    rng = random.Random(_FLICKR_SEED)
    images = []
    for split, count in FLICKR_SPLITS:
        for _ in range(count):
            index = len(images)
            images.append(_karpathy_image(rng, index, split, f"{1_000_000 + index * 7}.jpg", root / "flickr30k-images"))
    write_json(root / "dataset_flickr30k.json", {"images": images, "dataset": "flickr30k"})


def _nocaps_image_info(image_id: int, file_name: str) -> dict[str, Any]:
    return {
        "id": image_id,
        "open_images_id": file_name[:-4],
        "file_name": file_name,
        "height": IMAGE_SIZE,
        "width": IMAGE_SIZE,
        "domain": ("in-domain", "near-domain", "out-domain")[image_id % 3],
    }


def generate_nocaps(root: Path) -> None:
    """Write ``val/``, ``test/`` images, ``nocaps_val_4500_captions.json`` and ``nocaps_test_image_info.json``."""
    rng = random.Random(_NOCAPS_SEED)
    for split, count in NOCAPS_SPLITS:
        infos, annotations = [], []
        for image_id in range(count):
            scene = random_scene(rng)
            file_name = f"{rng.getrandbits(64):016x}.jpg"  # Open Images ids are 16 hex digits
            save_image(scene.render(), root / split / file_name)
            infos.append(_nocaps_image_info(image_id, file_name))
            if split == "val":
                for text in captions(scene, rng, NOCAPS_CAPTIONS_PER_IMAGE):
                    annotations.append({"image_id": image_id, "caption": text, "id": len(annotations)})
        info = {"description": "beit3-lightning sample nocaps", "version": "0.1"}
        if split == "val":
            write_json(
                root / "nocaps_val_4500_captions.json", {"info": info, "images": infos, "annotations": annotations}
            )
        else:
            write_json(root / "nocaps_test_image_info.json", {"info": info, "images": infos})
