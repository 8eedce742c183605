"""Fitting the k-means visual tokenizer (data/visual_tokenizer.py) and ``beit3 prepare visual-tokenizer``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from beit3_lightning.data.prepare import main
from beit3_lightning.data.visual_tokenizer import (
    FitSummary,
    find_images,
    fit_kmeans_tokenizer,
    kmeans,
    kmeans_plus_plus,
    load_fitting_image,
)
from beit3_lightning.modeling.visual_tokenizers import KMeansTokenizer, VisualTokenizer

COLOURS = [(230, 20, 20), (20, 120, 240), (40, 200, 30)]


def noise_images(count: int, size: int = 48, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        blocks = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        images.append(Image.fromarray(blocks).resize((size, size), Image.Resampling.BILINEAR))
    return images


def flat_colour_image(layout: list[list[int]], patch: int = 16) -> Image.Image:
    pixels = np.zeros((len(layout) * patch, len(layout[0]) * patch, 3), dtype=np.uint8)
    for row, codes in enumerate(layout):
        for col, code in enumerate(codes):
            pixels[row * patch : (row + 1) * patch, col * patch : (col + 1) * patch] = COLOURS[code]
    return Image.fromarray(pixels)


def fit(images, **options) -> KMeansTokenizer:
    return fit_kmeans_tokenizer(images, **({"codebook_size": 8, "image_size": 48, "patch_size": 16} | options))


def test_same_seed_same_codebook_other_seed_other_codebook() -> None:
    images = noise_images(20)
    first = fit(images, seed=3, progress=False)
    again = fit(images, seed=3)
    assert torch.equal(first.codebook, again.codebook)
    assert torch.equal(first.feature_mean, again.feature_mean) and torch.equal(first.feature_std, again.feature_std)
    assert not torch.equal(fit(images, seed=4).codebook, first.codebook)
    assert isinstance(first, VisualTokenizer) and first.codebook.shape == (8, 48)
    summary = FitSummary(**first.fit_summary)
    assert (summary.images, summary.skipped, summary.patches, summary.codebook_size) == (20, 0, 180, 8)
    assert summary.seed == 3 and 1 <= summary.iterations <= 30


def test_fitted_tokenizer_reproduces_the_fit_assignments() -> None:
    """Tokenizing the fitting images standardises like the fit did: the reported mean distance comes back."""
    images = noise_images(12)
    tokenizer = fit(images, codebook_size=6)
    pixels = torch.stack([load_fitting_image(image, 48) for image in images])
    features = tokenizer.standardized_features(pixels).flatten(0, 1)
    ids = tokenizer.get_codebook_indices(pixels).flatten()
    distance = (features - tokenizer.codebook[ids]).norm(dim=1).mean()
    assert float(distance) == pytest.approx(tokenizer.fit_summary["mean_distance"], rel=1e-4)
    assert len(set(ids.tolist())) == tokenizer.fit_summary["codes_used"]
    # the standardisation is the fitting patches' own: mean ~0, std ~1 per dimension
    assert features.mean(0).abs().max() < 1e-4 and (features.std(0, unbiased=False) - 1).abs().max() < 1e-3


@pytest.mark.parametrize("codebook_size", [3, 5])
def test_flat_colours_use_exactly_one_code_each(codebook_size: int) -> None:
    layouts = [[[0, 1, 2], [2, 2, 0], [1, 0, 0]], [[1, 1, 1], [0, 2, 1], [2, 0, 2]], [[2, 2, 2], [2, 2, 2], [0, 0, 1]]]
    images = [flat_colour_image(layout) for layout in layouts]
    tokenizer = fit(images, codebook_size=codebook_size, feature_grid=2)
    assert tokenizer.fit_summary["codes_used"] == 3
    assert tokenizer.fit_summary["mean_distance"] == pytest.approx(0, abs=1e-3)
    pixels = torch.stack([load_fitting_image(image, 48) for image in images])
    ids = tokenizer.get_codebook_indices(pixels).tolist()
    code_of = {}
    for layout, image_ids in zip(layouts, ids):
        for colour, code in zip([c for row in layout for c in row], image_ids):
            assert code_of.setdefault(colour, code) == code  # one colour, one code
    assert len(set(code_of.values())) == 3  # three colours, three codes


def test_kmeans_update_count_and_empty_cluster_reseeding() -> None:
    """1-D points; the third initial centre (100) gets no point and is re-seeded to the farthest point, 15."""
    points = torch.tensor([[0.0], [1.0], [10.0], [11.0], [15.0]])
    init = torch.tensor([[0.5], [12.0], [100.0]])
    generator = torch.Generator().manual_seed(0)
    one = kmeans(points, 3, iterations=1, generator=generator, init=init)
    assert one.centroids.flatten().tolist() == [0.5, 12.0, 15.0]
    assert (one.iterations, one.converged) == (1, False)
    full = kmeans(points, 3, iterations=10, generator=generator, init=init)
    assert full.centroids.flatten().tolist() == [0.5, 10.5, 15.0]
    assert full.assignments.tolist() == [0, 0, 1, 1, 2]
    assert (full.iterations, full.converged) == (2, True)
    assert init.flatten().tolist() == [0.5, 12.0, 100.0]  # not modified


def test_kmeans_plus_plus_draws_by_squared_distance() -> None:
    """1000 points near 0 and one at 100: the second centre is the far point (uniform draws: 1 in 1000)."""
    points = torch.cat(
        [0.01 * torch.randn(1000, 2, generator=torch.Generator().manual_seed(0)), torch.full((1, 2), 100.0)]
    )
    for seed in range(5):
        centres = kmeans_plus_plus(points, 2, torch.Generator().manual_seed(seed))
        assert (centres == 100).all(1).sum() == 1
    same = [kmeans_plus_plus(points, 8, torch.Generator().manual_seed(1)) for _ in range(2)]
    assert torch.equal(*same)


def test_patch_budget_spreads_over_images() -> None:
    tokenizer = fit(noise_images(10), max_patches=25)
    assert tokenizer.fit_summary["patches"] == 30  # ceil(25 / 10) = 3 of each image's 9 patches
    assert tokenizer.fit_summary["images"] == 10
    subset = fit(noise_images(10), max_images=4)
    assert (subset.fit_summary["images"], subset.fit_summary["patches"]) == (4, 36)


def test_fit_errors() -> None:
    with pytest.raises(ValueError, match="only 9 patches from 1 readable images .* for 10 codes"):
        fit(noise_images(1), codebook_size=10)
    with pytest.raises(ValueError, match="codebook size must be an integer >= 2, got 1"):
        fit(noise_images(2), codebook_size=1)
    with pytest.raises(ValueError, match="patch size 16 does not divide image size 40"):
        fit(noise_images(2), image_size=40)
    with pytest.raises(ValueError, match="no images to fit"):
        fit([])


def test_load_fitting_image_centre_square_and_16_bit() -> None:
    wide = np.zeros((48, 96, 3), dtype=np.uint8)
    wide[:, :32], wide[:, 32:64], wide[:, 64:] = COLOURS
    pixels = load_fitting_image(Image.fromarray(wide), 48)  # no resize needed: the middle 48 columns (24..72)
    assert pixels.shape == (3, 48, 48) and pixels.dtype == torch.float32
    assert [round(float(v) * 255) for v in pixels[:, 0, 0]] == list(COLOURS[0])
    assert [round(float(v) * 255) for v in pixels[:, 0, 20]] == list(COLOURS[1])
    assert [round(float(v) * 255) for v in pixels[:, 0, 47]] == list(COLOURS[2])
    deep = Image.fromarray(np.full((40, 40), 65535, dtype=np.uint16))  # 16-bit white is white, scaled not clipped
    assert load_fitting_image(deep, 20).min() == 1.0


def write_image_dir(root: Path, count: int = 12) -> Path:
    for i, image in enumerate(noise_images(count)):
        folder = root / ("a" if i % 2 else "b/c")
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i}.{['png', 'PNG', 'jpg', 'JPEG'][i % 4]}")
    (root / "notes.txt").write_text("not an image")
    (root / "a" / "broken.png").write_bytes(b"truncated")
    return root


def test_find_images_recursive_any_case_sorted(tmp_path: Path) -> None:
    root = write_image_dir(tmp_path / "images", count=4)
    found = [path.relative_to(root).as_posix() for path in find_images(root)]
    assert found == ["a/1.PNG", "a/3.JPEG", "a/broken.png", "b/c/0.png", "b/c/2.jpg"]
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "image.gif").write_bytes(b"GIF89a")
    with pytest.raises(ValueError, match=r"no images \(.jpg, .jpeg, .png, .webp, .bmp, any case\) found under"):
        find_images(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="image directory not found"):
        find_images(tmp_path / "missing")


def test_cli_writes_a_loadable_tokenizer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_image_dir(tmp_path / "images")
    out = tmp_path / "out" / "kmeans.safetensors"
    argv = ["visual-tokenizer", "--images", str(root), "--codebook-size", "6", "--out", str(out)]
    assert main([*argv, "--image-size", "48", "--feature-grid", "2", "--seed", "1", "--iterations", "5"]) == 0
    captured = capsys.readouterr()
    assert captured.out.split() == [str(out)]
    summary = captured.err.strip()
    assert summary.count("\n") == 0 and "12 images (1 undecodable skipped), 108 patches, K=6" in summary
    assert "codes used" in summary and "mean distance" in summary
    tokenizer = KMeansTokenizer.load(out)
    assert tokenizer.config() == {
        "image_size": 48, "patch_size": 16, "feature_grid": 2, "codebook_size": 6, "center_images": 0}  # fmt: skip
    assert main([*argv, "--center-images"]) == 0 and KMeansTokenizer.load(out).center_images is True
    capsys.readouterr()
    assert tokenizer.fit_summary["seed"] == 1 and tokenizer.fit_summary["iterations"] <= 5
    assert tokenizer.get_codebook_indices(torch.rand(2, 3, 48, 48)).shape == (2, 9)
    # the fit is the library's: the same options give the same codebook
    again = fit_kmeans_tokenizer(root, 6, 48, 16, feature_grid=2, iterations=5, seed=1, progress=False)
    assert torch.equal(again.codebook, tokenizer.codebook)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--codebook-size", "1"], "codebook size must be an integer >= 2"),
        (["--patch-size", "15"], "patch size 15 does not divide image size 48"),
        (["--feature-grid", "3"], "feature grid 3 does not divide patch size 16"),
        (["--codebook-size", "500"], "only 108 patches from 12 readable images (1 undecodable) for 500 codes"),
        (["--images", "EMPTY"], "no images"),
        (["--images", "MISSING"], "image directory not found"),
        (["--max-images", "0"], "max_images must be an integer >= 1"),
    ],
)
def test_cli_errors_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    root = write_image_dir(tmp_path / "images")
    (tmp_path / "EMPTY").mkdir()
    options = [str(tmp_path / o) if o in {"EMPTY", "MISSING"} else o for o in options]
    out = tmp_path / "kmeans.safetensors"
    argv = ["visual-tokenizer", "--images", str(root), "--codebook-size", "4", "--image-size", "48", "--out", str(out)]
    assert main([*argv, *options]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("beit3 prepare visual-tokenizer: error: ") and message in err
    assert err.count("\n") == 0 and "Traceback" not in err and captured.out == ""
    assert not out.exists()
