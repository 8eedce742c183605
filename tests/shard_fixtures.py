"""Small inputs in the real formats ``beit3 prepare shards`` converts (written here, nothing downloaded)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

CAPTIONS = ("a red circle above a blue square", "two green triangles", "a yellow star on grey")


def jpeg_bytes(seed: int, size: tuple[int, int] = (24, 20)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_img2dataset_tar(
    path: Path, shard: int, count: int, bad: dict[int, str] | None = None, size: tuple[int, int] = (24, 20)
) -> list[dict]:
    """One tar exactly as img2dataset's webdataset writer lays it out: keys ``<shard:05d><i:04d>``, members
    ``<key>.jpg``, ``<key>.txt`` (caption) and ``<key>.json`` (url, key, status, caption, sizes), written in that
    order, owner ``bigdata``, mode 0444. ``bad`` maps sample numbers to a defect: ``image`` (undecodable bytes),
    ``caption`` (empty caption) or ``missing_image``. Returns the expected records of the good samples."""
    bad = bad or {}
    expected = []
    with tarfile.open(path, "w") as tar:
        for i in range(count):
            key = f"{shard:05d}{i:04d}"
            caption = CAPTIONS[i % len(CAPTIONS)] + f" {i}"
            image = jpeg_bytes(shard * 1000 + i, size)
            meta = {"url": f"https://example.com/{key}.jpg", "key": key, "status": "success", "error_message": None,
                    "width": 24, "height": 20, "original_width": 240, "original_height": 200, "caption": caption,
                    "exif": "{}", "sha256": None}  # fmt: skip
            defect = bad.get(i)
            members = {
                "jpg": b"\xff\xd8 not a jpeg" if defect == "image" else image,
                "txt": b"" if defect == "caption" else caption.encode(),
                "json": json.dumps(meta).encode(),
            }
            if defect == "missing_image":
                del members["jpg"]
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mode, info.uname, info.gname, info.mtime = len(data), 0o444, "bigdata", "bigdata", 1
                tar.addfile(info, io.BytesIO(data))
            if defect is None:
                expected.append({"key": key, "caption": caption, "image": image})
    # img2dataset writes a parquet and a stats file next to each tar: the converter must ignore them
    (path.parent / f"{shard:05d}_stats.json").write_text(json.dumps({"count": count}))
    (path.parent / f"{shard:05d}.parquet").write_bytes(b"PAR1")
    return expected


def write_class_folders(root: Path, classes: dict[str, int], corrupt: str | None = None) -> dict[str, bytes]:
    """``root/<class>/<n>.jpg`` images; ``corrupt`` names one relative path written as a truncated JPEG."""
    files = {}
    for c, (name, count) in enumerate(classes.items()):
        for n in range(count):
            relative = f"{name}/{n:03d}.jpg"
            data = jpeg_bytes(100 * c + n)
            if relative == corrupt:
                data = data[:30]
            (root / name).mkdir(parents=True, exist_ok=True)
            (root / relative).write_bytes(data)
            files[relative] = data
    return files
