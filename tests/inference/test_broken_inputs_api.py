"""Broken inputs to the Python API (Beit3Processor / open_image): 16-bit images, empty arrays, lone surrogates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from beit3_lightning.data.tokenizer import Beit3Tokenizer
from beit3_lightning.processor import Beit3Processor, open_image

IMG = 32


@pytest.fixture(scope="module")
def processor() -> Beit3Processor:
    return Beit3Processor(Beit3Tokenizer.sample(), img_size=IMG, task="vqav2")


def gradient_16bit(width: int = 256, height: int = 3) -> np.ndarray:
    """A horizontal 16-bit gradient over the whole range (0 .. 65535), uint16 (height, width)."""
    row = np.round(np.linspace(0, 65535, width)).astype(np.uint16)
    return np.repeat(row[None, :], height, axis=0)


def expected_8bit(samples: np.ndarray) -> np.ndarray:
    """value / 257 rounded: 0 → 0, 65535 → 255 (never a tie, 257 being odd)."""
    return np.round(samples.astype(np.float64) / 257).astype(np.uint8)


def test_open_image_scales_a_16bit_png(tmp_path: Path) -> None:
    samples = gradient_16bit()
    Image.fromarray(samples).save(tmp_path / "gradient16.png")
    assert Image.open(tmp_path / "gradient16.png").mode == "I;16"
    image = open_image(tmp_path / "gradient16.png")
    assert image.mode == "RGB"
    pixels = np.asarray(image)
    for channel in range(3):
        np.testing.assert_array_equal(pixels[:, :, channel], expected_8bit(samples))


def test_processor_gives_16bit_files_images_and_arrays_the_8bit_batch(tmp_path: Path, processor) -> None:
    samples = gradient_16bit(width=64, height=48)
    Image.fromarray(samples).save(tmp_path / "gradient16.png")
    as_8bit = Image.fromarray(expected_8bit(samples), mode="L").convert("RGB")
    expected = processor(images=as_8bit)["image"]
    assert expected[0, :, :, 0].mean() < 0 < expected[0, :, :, -1].mean()  # dark left edge, bright right edge
    with Image.open(tmp_path / "gradient16.png") as opened:  # a PIL I;16 image given directly
        assert torch.equal(processor(images=opened)["image"], expected)
    assert torch.equal(processor(images=tmp_path / "gradient16.png")["image"], expected)
    assert torch.equal(processor(images=samples)["image"], expected)  # a uint16 HxW array
    rgb16 = np.repeat(samples[:, :, None], 3, axis=2)
    assert torch.equal(processor(images=rgb16)["image"], expected)  # a uint16 HxWx3 array


def test_open_image_refuses_a_float_image_outside_0_1(tmp_path: Path) -> None:
    Image.fromarray(np.full((4, 4), 3000.0, dtype=np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(ValueError, match=r"cannot read image .*float\.tif: float image \(mode F\) .*\[0, 1\]"):
        open_image(tmp_path / "float.tif")


@pytest.mark.parametrize("shape", [(0, 0, 3), (0, 0), (0, 7, 3), (5, 0, 3)])
def test_empty_image_array_is_a_clear_value_error(processor, shape) -> None:
    good = np.zeros((8, 8, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=rf"image 1: Empty image: {shape[0]}x{shape[1]} pixels"):
        processor(images=[good, np.zeros(shape, dtype=np.uint8)])


def test_lone_surrogate_in_a_text_names_the_text_and_position(processor) -> None:
    with pytest.raises(ValueError, match=r"text 1: text has a lone surrogate '\\ud800' at character 8"):
        processor(text=["a red box", "what is \ud800?"])
    batch = processor(text=["what is \U0001f600?"])  # a proper surrogate pair (astral character) is fine
    assert batch["language_tokens"].shape == (1, 64)
