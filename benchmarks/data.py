"""Decode + augment throughput of the training input pipelines, per DataLoader worker.

Writes synthetic natural-looking JPEGs (smooth colour gradients, a few shapes, sensor-like noise; 500 x 375 like a
typical COCO photo) and a matching index, then loops over the real dataset classes in one process with one
OpenCV/torch thread (what one DataLoader worker gets) and reports images/s for:

* VL train (RandomResizedCrop 0.5-1 + flip + normalise), without and with RandomAugment(2, 7);
* ImageNet train (RandomResizedCrop 0.08-1 + flip + rand-m9-mstd0.5-inc1 + normalise + random erasing);

at 224 and 480 px. ``images/s x num_workers`` is roughly what a DataLoader can feed on that many free cores.
Also times the generation of all embedded sample datasets (``ensure_sample_dataset``; budget: well under 20 s).

    python benchmarks/data.py                      # 200 images, sizes 224 and 480
    python benchmarks/data.py --num-images 500 --sizes 224 384 480
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from beit3_lightning.data.datasets import Beit3Dataset, ImageNetDataset, RetrievalDataset
from beit3_lightning.data.transforms import build_transform


def synthetic_photo(rng: np.random.Generator, width: int = 500, height: int = 375) -> Image.Image:
    """A JPEG-friendly image with photo-like statistics (gradients, blurred shapes, grain)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [c0 + c1 * x / width + c2 * y / height for c0, c1, c2 in rng.uniform(-80, 160, (3, 3))], axis=-1
    ).clip(0, 255)
    image = Image.fromarray(base.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(8):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        box = [x0, y0, x0 + rng.integers(20, 200), y0 + rng.integers(20, 150)]
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    image = image.filter(ImageFilter.GaussianBlur(2))
    grain = rng.normal(0, 6, (height, width, 3))
    return Image.fromarray((np.asarray(image, dtype=np.float32) + grain).clip(0, 255).astype(np.uint8))


def write_dataset(root: Path, num_images: int) -> None:
    """JPEGs + an ImageNet index and a retrieval index over the same files."""
    rng = np.random.default_rng(0)
    imagenet, retrieval = [], []
    for i in tqdm(range(num_images), desc="writing synthetic JPEGs"):
        relative = f"images/{i:05d}.jpg"
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        synthetic_photo(rng).save(root / relative, quality=90)
        imagenet.append({"image_path": relative, "label": i % 10})
        retrieval.append({"image_path": relative, "text_segment": [5, 6, 7], "image_id": i})
    for name, records in [("imagenet.train.index.jsonl", imagenet), ("coco_retrieval.train.jsonl", retrieval)]:
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in records))


def images_per_second(dataset: Beit3Dataset, repeats: int) -> float:
    """Best of ``repeats`` passes over the dataset (first item excluded from timing as warm-up)."""
    dataset[0]
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for index in range(len(dataset)):
            dataset[index]
        best = max(best, len(dataset) / (time.perf_counter() - start))
    return best


def sample_generation_seconds(root: Path) -> float:
    """Wall time to generate every embedded sample dataset (raw files + indexes) into ``root``."""
    from beit3_lightning.data.sample import SAMPLE_DATASETS, ensure_sample_dataset

    start = time.perf_counter()
    for name in SAMPLE_DATASETS:
        ensure_sample_dataset(name, root / name)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-images", type=int, default=200, help="synthetic JPEGs to write and loop over")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 480], help="output resolutions S")
    parser.add_argument("--repeats", type=int, default=2, help="passes per pipeline (best one is reported)")
    args = parser.parse_args()

    # One DataLoader worker: torch already runs with 1 thread there; make OpenCV match.
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    pipelines = [
        ("VL train", "coco_retrieval", False),
        ("VL train + RandAug(2,7)", "coco_retrieval", True),
        ("ImageNet train (timm RA + RE)", "imagenet", False),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_dataset(root, args.num_images)
        decode_only = RetrievalDataset(str(root), "train", lambda image: image, max_text_len=8)
        rows.append(("JPEG decode only (PIL, RGB)", "-", images_per_second(decode_only, args.repeats)))
        for size in args.sizes:
            for name, task, randaug in pipelines:
                transform = build_transform(task, True, size, randaug=randaug, seed=0)
                if task == "imagenet":
                    dataset = ImageNetDataset(str(root), "train", transform)
                else:
                    dataset = RetrievalDataset(str(root), "train", transform, max_text_len=8)
                rows.append((name, str(size), images_per_second(dataset, args.repeats)))

    with tempfile.TemporaryDirectory() as tmp:
        print(f"\nall sample datasets generated in {sample_generation_seconds(Path(tmp)):.1f} s")
    print(f"\n{args.num_images} synthetic 500x375 JPEGs, 1 process, 1 thread (one DataLoader worker)")
    print(f"{'pipeline':<32} {'size':>5} {'images/s':>9} {'ms/image':>9}")
    for name, size, rate in rows:
        print(f"{name:<32} {size:>5} {rate:>9.1f} {1000 / rate:>9.2f}")


if __name__ == "__main__":
    main()
