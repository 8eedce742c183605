"""A k-means visual tokenizer: patch colour-layout features → nearest centroid id. Fits on a CPU in minutes.

The official BEiT v2 tokenizer (VQ-KD) needs a trained teacher and GPUs. This one is a codebook of centroids that
anyone can fit on their own images (``beit3 prepare visual-tokenizer``, fitting code in
``beit3_lightning.data.visual_tokenizer``) and use as the masked-image-modelling target of pretraining.

Feature of a patch (the definition the codebook was fitted with; :func:`patch_features`):

1. the image, (3, image_size, image_size) with values in [0, 1], is cut into ``patch_size`` patches, row-major;
2. each patch is average-pooled to ``feature_grid`` x ``feature_grid`` cells (``patch_size // feature_grid`` pixels
   a side each) and flattened channel-first: ``F = 3 * feature_grid ** 2`` values in order (channel, cell row, cell
   column) — 48 values with the default grid 4;
3. standardised with the per-dimension ``feature_mean`` / ``feature_std`` measured on the fitting patches.

With ``center_images`` each image's median colour (per channel) is subtracted first (step 0): codes then describe
how a patch differs from its image (objects, edges, texture) rather than the global brightness or colour cast, so a
flat background is one code whatever its shade. Masked image modelling on such codes asks "what is in this patch"
instead of "which exact shade is the background".

The code id is the index of the nearest row of ``codebook`` (K, F) in squared Euclidean distance, the first on a tie.
A file is one small ``.safetensors`` (``codebook``, ``feature_mean``, ``feature_std``) with the configuration in its
metadata; :meth:`KMeansTokenizer.save` / :meth:`KMeansTokenizer.load`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from beit3_lightning.atomic_files import temp_file_beside

__all__ = ["FILE_FORMAT", "KMeansTokenizer", "feature_dim", "nearest_centroid", "patch_features"]

FILE_FORMAT = "beit3_lightning.kmeans_visual_tokenizer"
FILE_FORMAT_VERSION = 1
_CONFIG_FIELDS = ("image_size", "patch_size", "feature_grid", "codebook_size", "center_images")
# Rows per block of the (rows, K) distance matrix: about 64 MB of float32 whatever K is.
_DISTANCE_BLOCK_ELEMENTS = 1 << 24


def feature_dim(feature_grid: int) -> int:
    """Length of a patch feature: 3 channels x feature_grid x feature_grid cells."""
    return 3 * feature_grid * feature_grid


def check_geometry(image_size: int, patch_size: int, feature_grid: int) -> None:
    """ValueError unless patch_size divides image_size and feature_grid divides patch_size (all positive)."""
    for name, value in (("image_size", image_size), ("patch_size", patch_size), ("feature_grid", feature_grid)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if image_size % patch_size:
        raise ValueError(f"patch size {patch_size} does not divide image size {image_size}")
    if patch_size % feature_grid:
        raise ValueError(f"feature grid {feature_grid} does not divide patch size {patch_size}")


def patch_features(images: Tensor, patch_size: int, feature_grid: int, center_images: bool = False) -> Tensor:
    """(B, 3, S, S) → (B, (S // patch_size) ** 2, 3 * feature_grid ** 2) raw (unstandardised) patch features.

    Patches row-major over the grid; within a patch, values in order (channel, cell row, cell column), each the mean
    of a ``patch_size // feature_grid`` square of pixels.
    """
    batch, channels, height, width = images.shape
    grid = height // patch_size
    if center_images:
        # Each image's median colour removed (per channel): the dominant shade, robust to what stands on it.
        images = images - images.flatten(2).median(dim=2).values[:, :, None, None]
    cells = F.avg_pool2d(images, kernel_size=patch_size // feature_grid)  # (B, 3, grid * g, grid * g)
    cells = cells.reshape(batch, channels, grid, feature_grid, grid, feature_grid)
    # (B, grid row, grid col, channel, cell row, cell col): patches row-major, features channel-first.
    return cells.permute(0, 2, 4, 1, 3, 5).reshape(batch, grid * grid, channels * feature_grid * feature_grid)


def nearest_centroid(features: Tensor, centroids: Tensor) -> tuple[Tensor, Tensor]:
    """(N, F), (K, F) → (ids (N,) long, squared distances (N,)): the nearest centroid of each row, first on a tie.

    Ties are exact only up to float rounding of ``|c|² - 2 x·c``. Computed in blocks of rows so memory stays
    bounded for large N and K.
    """
    ids = torch.empty(features.shape[0], dtype=torch.long, device=features.device)
    distances = torch.empty(features.shape[0], dtype=features.dtype, device=features.device)
    centroid_norms = centroids.pow(2).sum(1)
    block = max(1, _DISTANCE_BLOCK_ELEMENTS // max(1, centroids.shape[0]))
    for start in range(0, features.shape[0], block):
        rows = features[start : start + block]
        # |x - c|² = |x|² + (|c|² - 2 x·c): the row's |x|² does not change which c is nearest, so it is added after.
        best_ids = torch.addmm(centroid_norms, rows, centroids.T, alpha=-2).argmin(dim=1)
        ids[start : start + block] = best_ids
        # the distance itself from the difference: the expansion above cancels badly for a point on its centre
        distances[start : start + block] = (rows - centroids[best_ids]).pow(2).sum(1)
    return ids, distances


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


class KMeansTokenizer(nn.Module):
    """Frozen k-means visual tokenizer following :class:`~.base.VisualTokenizer` (see the module docstring).

    Build it with ``beit3_lightning.data.visual_tokenizer.fit_kmeans_tokenizer`` or :meth:`load`; the constructor
    takes fitted tensors: ``codebook`` (K, F), ``feature_mean`` / ``feature_std`` (F,), F = 3 * feature_grid ** 2.
    """

    codebook: Tensor
    feature_mean: Tensor
    feature_std: Tensor

    def __init__(
        self,
        codebook: Tensor,
        feature_mean: Tensor,
        feature_std: Tensor,
        *,
        image_size: int,
        patch_size: int,
        feature_grid: int = 4,
        center_images: bool = False,
        fit_summary: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        check_geometry(image_size, patch_size, feature_grid)
        dim = feature_dim(feature_grid)
        if codebook.ndim != 2 or codebook.shape[1] != dim or codebook.shape[0] < 1:
            raise ValueError(
                f"codebook must be (K, {dim}) for feature grid {feature_grid}, got {tuple(codebook.shape)}"
            )
        for name, tensor in (("feature_mean", feature_mean), ("feature_std", feature_std)):
            if tuple(tensor.shape) != (dim,):
                raise ValueError(f"{name} must be ({dim},) for feature grid {feature_grid}, got {tuple(tensor.shape)}")
        tensors = (codebook, feature_mean, feature_std)
        if not all(torch.isfinite(t).all() for t in tensors) or not bool((feature_std > 0).all()):
            raise ValueError("codebook and feature statistics must be finite, with feature_std > 0")
        self.image_size = image_size
        self.patch_size = patch_size
        self.feature_grid = feature_grid
        self.center_images = bool(center_images)
        self.codebook_size = int(codebook.shape[0])
        self.fit_summary = dict(fit_summary or {})
        self.register_buffer("codebook", codebook.detach().float().contiguous())
        self.register_buffer("feature_mean", feature_mean.detach().float().contiguous())
        self.register_buffer("feature_std", feature_std.detach().float().contiguous())
        self.eval()

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    def extra_repr(self) -> str:
        return (
            f"codebook_size={self.codebook_size}, image_size={self.image_size}, patch_size={self.patch_size}, "
            f"feature_grid={self.feature_grid}, center_images={self.center_images}"
        )

    def _check_images(self, images: Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"visual tokenizer input must be (B, 3, H, W) images, got shape {tuple(images.shape)}")
        height, width = images.shape[-2:]
        if height != self.image_size or width != self.image_size:
            raise ValueError(
                f"this k-means visual tokenizer was fitted for {self.image_size}x{self.image_size} images "
                f"(patch {self.patch_size}, a {self.grid_size}x{self.grid_size} grid) but got {height}x{width}: "
                f"resize the images to {self.image_size}x{self.image_size} first"
            )

    def standardized_features(self, images: Tensor) -> Tensor:
        """(B, 3, S, S) in [0, 1] → (B, N, F) standardised patch features (the space the codebook lives in)."""
        self._check_images(images)
        raw = patch_features(images.to(self.codebook), self.patch_size, self.feature_grid, self.center_images)
        return (raw - self.feature_mean) / self.feature_std

    @torch.no_grad()
    def get_codebook_indices(self, images: Tensor) -> Tensor:
        """(B, 3, image_size, image_size) in [0, 1] → (B, (image_size // patch_size) ** 2) long code ids."""
        features = self.standardized_features(images)
        batch, patches, dim = features.shape
        ids, _ = nearest_centroid(features.reshape(batch * patches, dim), self.codebook)
        return ids.reshape(batch, patches)

    def forward(self, images: Tensor) -> Tensor:
        return self.get_codebook_indices(images)

    # ------------------------------------------------------------------------------------------------ file format

    def config(self) -> dict[str, int]:
        return {name: int(getattr(self, name)) for name in _CONFIG_FIELDS}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a ``.safetensors`` file (the three tensors, the config in its metadata) atomically; returns it."""
        from safetensors.torch import save

        path = Path(path)
        metadata = {
            "format": FILE_FORMAT,
            "format_version": str(FILE_FORMAT_VERSION),
            **{name: str(value) for name, value in self.config().items()},
            "fit_summary": json.dumps(self.fit_summary, sort_keys=True),
        }
        tensors = {
            name: getattr(self, name).detach().cpu().contiguous()
            for name in ("codebook", "feature_mean", "feature_std")
        }
        data = save(tensors, metadata=metadata)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = temp_file_beside(path)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> KMeansTokenizer:
        """Read a file written by :meth:`save`; a missing file is FileNotFoundError, anything else wrong a one-line
        ValueError naming the file."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"k-means visual tokenizer file not found: {path}")
        what = "a k-means visual tokenizer file (written by `beit3 prepare visual-tokenizer`)"
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                metadata = handle.metadata() or {}
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (not a dict)
        except (SafetensorError, OSError, RuntimeError, ValueError) as err:
            raise ValueError(f"{path} is not {what}: unreadable .safetensors ({_one_line(err)})") from err
        if metadata.get("format") != FILE_FORMAT:
            raise ValueError(f"{path} is not {what}: its metadata has format {metadata.get('format')!r}")
        if metadata.get("format_version") != str(FILE_FORMAT_VERSION):
            raise ValueError(
                f"{path} has k-means tokenizer format version {metadata.get('format_version')!r}; this version of "
                f"beit3_lightning reads version {FILE_FORMAT_VERSION}"
            )
        try:
            config = {name: int(metadata.get(name, 0) if name == "center_images" else metadata[name])
                      for name in _CONFIG_FIELDS}  # fmt: skip
            summary = json.loads(metadata.get("fit_summary") or "{}")
            missing = {"codebook", "feature_mean", "feature_std"} - tensors.keys()
            if missing:
                raise ValueError(f"missing tensors {sorted(missing)}")
            tokenizer = cls(
                tensors["codebook"],
                tensors["feature_mean"],
                tensors["feature_std"],
                image_size=config["image_size"],
                patch_size=config["patch_size"],
                feature_grid=config["feature_grid"],
                center_images=bool(config["center_images"]),
                fit_summary=summary if isinstance(summary, dict) else {},
            )
            if tokenizer.codebook_size != config["codebook_size"]:
                raise ValueError(
                    f"codebook has {tokenizer.codebook_size} rows, metadata says {config['codebook_size']}"
                )
        except (KeyError, ValueError, TypeError) as err:
            raise ValueError(f"{path} is a broken k-means visual tokenizer file: {_one_line(err)}") from err
        return tokenizer.to(map_location)
