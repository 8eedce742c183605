"""KMeansTokenizer (modeling/visual_tokenizers/kmeans.py): the feature definition, ids, protocol, file format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from beit3_lightning.modeling.visual_tokenizers import KMeansTokenizer, VisualTokenizer, check_grid_matches

COLOURS = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 1.0], [0.2, 0.9, 0.1]])


def random_tokenizer(image_size: int = 24, patch_size: int = 8, feature_grid: int = 2, k: int = 16) -> KMeansTokenizer:
    generator = torch.Generator().manual_seed(7)
    dim = 3 * feature_grid**2
    return KMeansTokenizer(
        torch.randn(k, dim, generator=generator),
        0.3 + 0.4 * torch.rand(dim, generator=generator),
        0.05 + 0.3 * torch.rand(dim, generator=generator),
        image_size=image_size,
        patch_size=patch_size,
        feature_grid=feature_grid,
        fit_summary={"images": 3, "seed": 0},
    )


def reference_ids(tokenizer: KMeansTokenizer, image: torch.Tensor) -> list[int]:
    """The documented feature, patch by patch: row-major patches, (channel, cell row, cell col) mean cells."""
    p, g = tokenizer.patch_size, tokenizer.feature_grid
    cell = p // g
    ids = []
    for row in range(tokenizer.image_size // p):
        for col in range(tokenizer.image_size // p):
            patch = image[:, row * p : (row + 1) * p, col * p : (col + 1) * p].double()
            feature = patch.reshape(3, g, cell, g, cell).mean(dim=(2, 4)).flatten()
            standard = (feature - tokenizer.feature_mean.double()) / tokenizer.feature_std.double()
            ids.append(int(((standard - tokenizer.codebook.double()) ** 2).sum(1).argmin()))
    return ids


def test_follows_the_protocol_and_grid_check() -> None:
    tokenizer = random_tokenizer(image_size=48, patch_size=16)
    assert isinstance(tokenizer, VisualTokenizer)
    assert (tokenizer.codebook_size, tokenizer.image_size, tokenizer.patch_size) == (16, 48, 16)
    check_grid_matches(tokenizer, 48, 16)
    with pytest.raises(ValueError, match="differs from the model's"):
        check_grid_matches(tokenizer, 64, 16)
    assert not tokenizer.training
    assert all(not b.requires_grad for b in tokenizer.buffers())


def test_ids_follow_the_documented_feature_row_major() -> None:
    tokenizer = random_tokenizer()
    generator = torch.Generator().manual_seed(1)
    blocks = torch.rand(3, 3, 6, 6, generator=generator).repeat_interleave(4, -1).repeat_interleave(4, -2)
    images = (0.85 * blocks + 0.15 * torch.rand(3, 3, 24, 24, generator=generator)).clamp(0, 1)
    ids = tokenizer.get_codebook_indices(images)
    assert ids.dtype == torch.long and ids.shape == (3, 9)
    assert [reference_ids(tokenizer, image) for image in images] == ids.tolist()
    assert len(set(ids.flatten().tolist())) > 3  # a real test: the ids vary
    assert torch.equal(tokenizer(images), ids)
    # one image at a time gives the same ids as the batch
    assert torch.equal(torch.cat([tokenizer.get_codebook_indices(image[None]) for image in images]), ids)


def test_flat_colour_patches_get_the_known_codes() -> None:
    """feature_grid 1: the feature is the patch's mean colour; the codebook holds the standardised colours."""
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.3, 0.4])
    tokenizer = KMeansTokenizer((COLOURS - mean) / std, mean, std, image_size=48, patch_size=16, feature_grid=1)
    layout = [[0, 1, 2], [2, 2, 0], [1, 0, 0]]  # not symmetric: a transposed grid gives other ids
    image = torch.empty(3, 48, 48)
    for row, codes in enumerate(layout):
        for col, code in enumerate(codes):
            image[:, row * 16 : (row + 1) * 16, col * 16 : (col + 1) * 16] = COLOURS[code].view(3, 1, 1)
    assert tokenizer.get_codebook_indices(image[None]).tolist() == [[code for codes in layout for code in codes]]


def test_wrong_input_shape_is_a_clear_error() -> None:
    tokenizer = random_tokenizer(image_size=48, patch_size=16)
    with pytest.raises(ValueError, match=r"fitted for 48x48 images .* but got 64x64: resize"):
        tokenizer.get_codebook_indices(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"but got 48x64"):
        tokenizer.get_codebook_indices(torch.rand(1, 3, 48, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        tokenizer.get_codebook_indices(torch.rand(1, 1, 48, 48))


def test_bad_geometry_and_tensors_are_refused() -> None:
    with pytest.raises(ValueError, match="patch size 16 does not divide image size 40"):
        random_tokenizer(image_size=40, patch_size=16)
    with pytest.raises(ValueError, match="feature grid 3 does not divide patch size 8"):
        random_tokenizer(feature_grid=3)
    with pytest.raises(ValueError, match=r"codebook must be \(K, 12\)"):
        KMeansTokenizer(
            torch.zeros(4, 48), torch.zeros(12), torch.ones(12), image_size=24, patch_size=8, feature_grid=2
        )
    with pytest.raises(ValueError, match="feature_std > 0"):
        KMeansTokenizer(torch.zeros(4, 3), torch.zeros(3), torch.zeros(3), image_size=24, patch_size=8, feature_grid=1)


def test_save_load_round_trip(tmp_path: Path) -> None:
    tokenizer = random_tokenizer()
    path = tokenizer.save(tmp_path / "sub" / "kmeans.safetensors")
    assert path == tmp_path / "sub" / "kmeans.safetensors" and path.stat().st_size < 4096
    assert [p.name for p in path.parent.iterdir()] == ["kmeans.safetensors"]  # no temporary file left
    loaded = KMeansTokenizer.load(path)
    assert (
        loaded.config()
        == tokenizer.config()
        == {
            "image_size": 24,
            "patch_size": 8,
            "feature_grid": 2,
            "codebook_size": 16,
            "center_images": 0,
        }
    )
    assert loaded.fit_summary == {"images": 3, "seed": 0}
    for name in ("codebook", "feature_mean", "feature_std"):
        assert torch.equal(getattr(loaded, name), getattr(tokenizer, name))
    images = torch.rand(4, 3, 24, 24, generator=torch.Generator().manual_seed(2))
    assert torch.equal(loaded.get_codebook_indices(images), tokenizer.get_codebook_indices(images))


def assert_one_line_error(path: Path, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        KMeansTokenizer.load(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_corrupt_or_foreign_files_are_one_line_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00not a safetensors file at all")
    assert_one_line_error(garbage, "is not a k-means visual tokenizer file")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(random_tokenizer().save(tmp_path / "good.safetensors").read_bytes()[:-100])
    assert_one_line_error(truncated, "unreadable .safetensors")
    foreign = tmp_path / "model.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(foreign))
    assert_one_line_error(foreign, "its metadata has format None")
    broken = tmp_path / "broken.safetensors"
    tokenizer = random_tokenizer()
    metadata = {"format": "beit3_lightning.kmeans_visual_tokenizer", "format_version": "1"}
    metadata |= {k: str(v) for k, v in tokenizer.config().items()} | {"feature_grid": "4"}
    save_file({n: getattr(tokenizer, n) for n in ("codebook", "feature_mean", "feature_std")}, str(broken), metadata)
    assert_one_line_error(broken, r"broken k-means visual tokenizer file: codebook must be \(K, 48\)")
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        KMeansTokenizer.load(tmp_path / "missing.safetensors")


def test_center_images_makes_codes_independent_of_the_background_shade(tmp_path):
    from beit3_lightning.data.visual_tokenizer import fit_kmeans_tokenizer

    def scene(shade: float, spot: tuple[int, int]) -> torch.Tensor:
        image = torch.full((3, 32, 32), shade)
        image[0, spot[0] * 16 : spot[0] * 16 + 16, spot[1] * 16 : spot[1] * 16 + 16] = 1.0  # one red-ish patch
        return image

    images = [scene(shade, spot) for shade in (0.2, 0.35, 0.5, 0.65, 0.8) for spot in ((0, 0), (1, 1))]
    pil = [Image.fromarray((im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for im in images]
    for center, expected_background_codes in ((True, 1), (False, 5)):
        tokenizer = fit_kmeans_tokenizer(pil, codebook_size=8, image_size=32, patch_size=16, center_images=center,
                                         progress=False)  # fmt: skip
        tokenizer.save(tmp_path / f"{center}.safetensors")
        loaded = KMeansTokenizer.load(tmp_path / f"{center}.safetensors")
        assert loaded.center_images is center
        codes = loaded.get_codebook_indices(torch.stack(images))  # (10, 4)
        is_background = [[im[0, p // 2 * 16, p % 2 * 16] < 1 for p in range(4)] for im in images]
        background = {int(c) for flags, row in zip(is_background, codes) for flag, c in zip(flags, row) if flag}
        assert len(background) == expected_background_codes
