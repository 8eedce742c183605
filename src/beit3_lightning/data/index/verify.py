"""``beit3 prepare <dataset> --verify-images``: decode every image the written indexes reference.

The builders only check that image files exist; a zero-byte download, a truncated JPEG or an HTML error page saved
as ``.jpg`` is found at the first epoch that reaches it, hours into training. Here each referenced image is decoded
in full (``Image.load``) through the same 8-bit conversion as the datasets, so what passes here loads in training.

Decoding runs in a thread pool: Pillow releases the GIL while it decodes, and threads need no pickling of paths or
results. At most a few tasks per thread are queued at a time so ImageNet-sized indexes do not build a million
futures up front.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from ..images import to_rgb_image
from .common import read_json_lines

# Index fields holding image paths (NLVR2 has two images per record; segmentation masks are PNG images too).
IMAGE_FIELDS = ("image_path", "image2_path", "mask_path")


@dataclass(frozen=True)
class BadImage:
    """An image that cannot be decoded, with the first index line that references it."""

    image: Path
    reason: str
    index_file: Path
    line: int
    other_lines: int  # further index lines referencing the same image

    def __str__(self) -> str:
        more = f" (and {self.other_lines} more line(s))" if self.other_lines else ""
        return f"{self.index_file}, line {self.line}{more}: {self.image}: {self.reason}"


def referenced_images(index_paths: Iterable[Path]) -> dict[str, list[tuple[Path, int]]]:
    """Relative image path → every (index file, line) that references it, in index order."""
    references: dict[str, list[tuple[Path, int]]] = {}
    for index_path in index_paths:
        for line, record in read_json_lines(index_path, "index file", remedy="rebuild it"):
            for field in IMAGE_FIELDS:
                if isinstance(record.get(field), str):
                    references.setdefault(record[field], []).append((index_path, line))
    return references


def image_problem(path: Path) -> str | None:
    """Why ``path`` cannot be used as an image (missing, empty, truncated, undecodable), or None when it can."""
    try:
        size = path.stat().st_size
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    if size == 0:
        return "empty file (0 bytes)"
    try:
        with Image.open(path) as image:
            image.load()  # decode every pixel: truncated files only fail here, not in Image.open
            to_rgb_image(image)
    except Exception as err:  # any decoder failure (OSError, SyntaxError, a decompression bomb...) = unusable
        return f"cannot be decoded ({type(err).__name__}: {err})"
    return None


def verify_index_images(
    index_paths: Sequence[Path], data_root: Path, workers: int | None = None
) -> tuple[int, list[BadImage]]:
    """Decode every image referenced by ``index_paths`` (paths relative to ``data_root``).

    Returns ``(number of distinct images checked, bad images in index order)``.
    """
    references = referenced_images(index_paths)
    workers = workers or min(32, (os.cpu_count() or 1) + 4)
    problems: dict[str, str] = {}
    pending: dict[Future[str | None], str] = {}
    with (
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify-images") as pool,
        tqdm(total=len(references), desc="verify images", unit="img", leave=False, disable=None) as bar,
    ):

        def collect(done: Iterable[Future[str | None]]) -> None:
            for future in done:
                relative = pending.pop(future)
                if (reason := future.result()) is not None:
                    problems[relative] = reason
                bar.update()

        for relative in references:
            if len(pending) >= 4 * workers:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                collect(finished)
            pending[pool.submit(image_problem, data_root / relative)] = relative
        collect(wait(pending).done)
    bad = [
        BadImage(data_root / relative, problems[relative], *references[relative][0], len(references[relative]) - 1)
        for relative in references
        if relative in problems
    ]
    return len(references), bad
