"""Fitting a k-means visual tokenizer on your own images, on a CPU (``beit3 prepare visual-tokenizer``).

:func:`fit_kmeans_tokenizer` reads the images (PIL images, paths, or every image under a directory), turns each into
``image_size`` x ``image_size`` (shorter side resized with PIL's bicubic filter, then the centre square), computes
the patch features of :mod:`beit3_lightning.modeling.visual_tokenizers.kmeans`, standardises them, and runs k-means:

* at most ``max_patches`` patches: ``ceil(max_patches / images)`` per image, a seeded random choice of each image's
  patches when it has more (all of them otherwise);
* k-means++ initialisation and Lloyd iterations, every random choice drawn from one ``torch.Generator`` seeded with
  ``seed``: the same images, options and seed give the identical codebook;
* a cluster left empty by an update is re-seeded to the point farthest from its centre (farthest first, in a stable
  order), so codes are not wasted while there are distinct points left;
* stops after ``iterations`` updates, or earlier when an update leaves every assignment unchanged.

Undecodable images are skipped and counted. It is an error to have fewer patches than codes.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from ..modeling.visual_tokenizers.kmeans import KMeansTokenizer, check_geometry, nearest_centroid, patch_features
from .images import to_rgb_image
from .index.pretrain import find_images as find_image_files

__all__ = [
    "IMAGE_SUFFIXES",
    "FitSummary",
    "KMeansResult",
    "find_images",
    "fit_kmeans_tokenizer",
    "kmeans",
    "kmeans_plus_plus",
    "load_fitting_image",
]

# The formats a tokenizer is fitted on (a subset of the index builders' IMAGE_EXTENSIONS, whose walker finds them).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
DEFAULT_ITERATIONS = 30
DEFAULT_MAX_PATCHES = 100_000
# torch.multinomial (k-means++) draws from at most 2**24 categories.
_MAX_PATCHES_LIMIT = 1 << 24
# A feature dimension that barely varies on the fitting patches is divided by this, not by ~0 (≈ 1/4 of a grey level).
_MIN_FEATURE_STD = 1e-3

ImageSource = Image.Image | str | os.PathLike[str]


def find_images(directory: str | os.PathLike[str]) -> list[Path]:
    """Every image file under ``directory`` (recursively; suffixes in :data:`IMAGE_SUFFIXES`, any case), sorted by
    relative path so the order does not depend on the filesystem."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"image directory not found: {directory}")
    found = [path for path in find_image_files(directory) if path.suffix.lower() in IMAGE_SUFFIXES]
    if not found:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}, any case) found under {directory}")
    return found


def load_fitting_image(source: ImageSource, image_size: int) -> Tensor:
    """(3, image_size, image_size) float in [0, 1]: 8-bit RGB, shorter side resized (bicubic), centre square.

    Raises OSError / ValueError (PIL's) for an unreadable file or an image no 8-bit scale fits.
    """
    if isinstance(source, Image.Image):
        image = to_rgb_image(source)
    else:
        with Image.open(source) as opened:
            opened.load()
            image = to_rgb_image(opened)
    width, height = image.size
    if width < 1 or height < 1:
        raise ValueError(f"empty image ({width}x{height})")
    scale = image_size / min(width, height)
    resized = (max(image_size, round(width * scale)), max(image_size, round(height * scale)))
    if resized != image.size:
        image = image.resize(resized, Image.Resampling.BICUBIC)
    left, top = (resized[0] - image_size) // 2, (resized[1] - image_size) // 2
    image = image.crop((left, top, left + image_size, top + image_size))
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8))  # (S, S, 3), a copy
    return pixels.permute(2, 0, 1).float().div_(255)


@dataclass(frozen=True)
class KMeansResult:
    centroids: Tensor  # (K, F)
    assignments: Tensor  # (N,) long, nearest centroid of each point
    distances: Tensor  # (N,) squared distance to it
    iterations: int  # Lloyd updates run
    converged: bool  # the last update changed no assignment


def kmeans_plus_plus(points: Tensor, k: int, generator: torch.Generator, progress: bool = False) -> Tensor:
    """k-means++ seeding: the first centre uniformly, each next one with probability ∝ squared distance to the
    nearest centre so far (uniformly again once every point is a centre). Returns (k, F) copies of points."""
    count = points.shape[0]
    centroids = torch.empty(k, points.shape[1], dtype=points.dtype)
    norms = points.pow(2).sum(1)
    nearest = torch.full((count,), float("inf"), dtype=points.dtype)
    index = int(torch.randint(count, (1,), generator=generator))
    for slot in tqdm(range(k), desc="k-means++", unit="code", leave=False, disable=None if progress else True):
        if slot:
            cumulative = torch.cumsum(nearest.double(), 0)
            if cumulative[-1] > 0:  # draw a point with probability ∝ its squared distance
                target = torch.rand(1, generator=generator, dtype=torch.float64) * cumulative[-1]
                index = min(int(torch.searchsorted(cumulative, target, right=True)), count - 1)
            else:  # fewer distinct points than codes: the extra centres duplicate points (and stay unused)
                index = int(torch.randint(count, (1,), generator=generator))
        centroids[slot] = centre = points[index]
        # |x - c|² through x·c (one matrix-vector product); the chosen point itself is exactly 0
        distance = (norms - 2 * torch.mv(points, centre) + centre.dot(centre)).clamp_min_(0)
        distance[index] = 0
        torch.minimum(nearest, distance, out=nearest)
    return centroids


def kmeans(
    points: Tensor,
    k: int,
    iterations: int,
    generator: torch.Generator,
    init: Tensor | None = None,
    progress: bool = False,
) -> KMeansResult:
    """Lloyd's k-means on (N, F) points from k-means++ (or ``init``), see the module docstring."""
    centroids = (kmeans_plus_plus(points, k, generator, progress) if init is None else init.to(points)).clone()
    assignments, distances = nearest_centroid(points, centroids)
    done, converged = 0, False
    bar = tqdm(total=iterations, desc="k-means", unit="it", leave=False, disable=None if progress else True)
    with bar:
        for _ in range(iterations):
            counts = torch.bincount(assignments, minlength=k)
            sums = torch.zeros_like(centroids).index_add_(0, assignments, points)
            filled = counts > 0
            centroids[filled] = sums[filled] / counts[filled].unsqueeze(1).to(points.dtype)
            empty = torch.nonzero(~filled).flatten()
            if empty.numel():
                farthest = torch.sort(distances, descending=True, stable=True).indices[: empty.numel()]
                centroids[empty[: farthest.numel()]] = points[farthest]
            done += 1
            updated, distances = nearest_centroid(points, centroids)
            changed = int((updated != assignments).sum())
            assignments = updated
            bar.update(1)
            bar.set_postfix(changed=changed, refresh=False)
            if changed == 0:
                converged = True
                break
    return KMeansResult(centroids, assignments, distances, done, converged)


@dataclass(frozen=True)
class FitSummary:
    images: int  # images read
    skipped: int  # undecodable images left out
    patches: int  # patches clustered
    codebook_size: int
    codes_used: int  # codes at least one fitting patch is nearest to
    mean_distance: float  # mean Euclidean distance of a patch to its code's centre (standardised units)
    iterations: int
    converged: bool
    seed: int
    seconds: float

    def line(self) -> str:
        skipped = f" ({self.skipped} undecodable skipped)" if self.skipped else ""
        stop = "converged" if self.converged else "not converged"
        return (
            f"{self.images} images{skipped}, {self.patches} patches, K={self.codebook_size}, "
            f"{self.codes_used} codes used, mean distance {self.mean_distance:.4f}, "
            f"{self.iterations} iterations ({stop}), seed {self.seed}, {self.seconds:.1f}s"
        )


def _check_positive(name: str, value: object, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _select_images(sources: list[ImageSource], max_images: int | None, seed: int) -> list[ImageSource]:
    """All sources, or a seeded random ``max_images`` of them kept in their order."""
    if max_images is None or max_images >= len(sources):
        return sources
    chosen = torch.randperm(len(sources), generator=torch.Generator().manual_seed(seed))[:max_images]
    return [sources[i] for i in sorted(chosen.tolist())]


def fit_kmeans_tokenizer(
    images: Iterable[ImageSource] | str | os.PathLike[str],
    codebook_size: int,
    image_size: int,
    patch_size: int,
    feature_grid: int = 4,
    iterations: int = DEFAULT_ITERATIONS,
    seed: int = 0,
    max_patches: int = DEFAULT_MAX_PATCHES,
    progress: bool = True,
    max_images: int | None = None,
    center_images: bool = False,
) -> KMeansTokenizer:
    """Fit a :class:`KMeansTokenizer` with ``codebook_size`` codes on ``images`` (see the module docstring).

    ``images``: a directory (searched recursively, see :func:`find_images`) or an iterable of PIL images / paths.
    ``center_images``: subtract each image's median colour before pooling (see the tokenizer's module docstring).
    ``max_images``: use a seeded random subset of that many images. ``progress``: progress bars on stderr (when it
    is a terminal). The returned tokenizer's ``fit_summary`` holds :class:`FitSummary` as a dict (saved with it).
    """
    started = time.perf_counter()
    _check_positive("codebook size", codebook_size, minimum=2)
    _check_positive("iterations", iterations)
    _check_positive("max_patches", max_patches)
    if max_images is not None:
        _check_positive("max_images", max_images)
    check_geometry(image_size, patch_size, feature_grid)
    if max_patches < codebook_size:
        raise ValueError(f"max_patches ({max_patches}) must be at least the codebook size ({codebook_size})")
    if max_patches > _MAX_PATCHES_LIMIT:
        raise ValueError(f"max_patches ({max_patches}) must be at most {_MAX_PATCHES_LIMIT}")
    if isinstance(images, (str, os.PathLike)):
        sources: list[ImageSource] = list(find_images(images))
    else:
        sources = list(images)
    if not sources:
        raise ValueError("no images to fit the visual tokenizer on")
    sources = _select_images(sources, max_images, seed)

    generator = torch.Generator().manual_seed(seed)
    patches_per_image = (image_size // patch_size) ** 2
    keep = min(patches_per_image, math.ceil(max_patches / len(sources)))
    chunks: list[Tensor] = []
    skipped = 0
    disable = None if progress else True
    for source in tqdm(sources, desc="read images", unit="img", leave=False, disable=disable):
        try:
            pixels = load_fitting_image(source, image_size)
        except (OSError, ValueError, Image.DecompressionBombError):
            skipped += 1
            continue
        features = patch_features(pixels.unsqueeze(0), patch_size, feature_grid, center_images)[0]
        if keep < patches_per_image:
            features = features[torch.randperm(patches_per_image, generator=generator)[:keep]]
        chunks.append(features)
    read = len(sources) - skipped
    total = sum(chunk.shape[0] for chunk in chunks)
    if total < codebook_size:
        raise ValueError(
            f"only {total} patches from {read} readable images ({skipped} undecodable) for {codebook_size} codes: "
            "k-means needs at least one patch per code; use more images or a smaller codebook size"
        )
    raw = torch.cat(chunks)
    mean = raw.double().mean(0).float()
    std = raw.double().std(0, unbiased=False).float().clamp_min(_MIN_FEATURE_STD)
    points = (raw - mean) / std
    result = kmeans(points, codebook_size, iterations, generator, progress=progress)
    summary = FitSummary(
        images=read,
        skipped=skipped,
        patches=total,
        codebook_size=codebook_size,
        codes_used=int(torch.unique(result.assignments).numel()),
        mean_distance=float(result.distances.sqrt().mean()),
        iterations=result.iterations,
        converged=result.converged,
        seed=seed,
        seconds=round(time.perf_counter() - started, 3),
    )
    return KMeansTokenizer(
        result.centroids,
        mean,
        std,
        image_size=image_size,
        patch_size=patch_size,
        feature_grid=feature_grid,
        center_images=center_images,
        fit_summary=asdict(summary),
    )
