"""Whole-image and sliding-window inference, test-time augmentation."""

from __future__ import annotations

import pytest
import torch

from beit3_lightning.modeling import Beit3Config
from beit3_lightning.modeling.heads import Beit3ForSemanticSegmentation
from beit3_lightning.modeling.segmentation_inference import (
    segment_probabilities,
    slide_logits,
    whole_logits,
    window_starts,
)


def test_windows_follow_mmseg_grid_with_the_last_one_at_the_border():
    assert window_starts(683, 512, 341) == [0, 171]  # an ADE20k image resized to short side 512
    assert window_starts(100, 64, 42) == [0, 36]
    assert window_starts(150, 64, 42) == [0, 42, 84, 86]
    assert window_starts(40, 64, 42) == [0]  # smaller than the crop: one (padded) window


def pointwise(weight: torch.Tensor):
    """A per-pixel model at full resolution: its sliding-window result must equal it everywhere."""
    return lambda crops: torch.einsum("kc,bchw->bkhw", weight, crops)


def test_slide_places_every_window_where_it_came_from():
    torch.manual_seed(0)
    weight, image = torch.randn(4, 3), torch.randn(2, 3, 100, 150)
    expected = pointwise(weight)(image)
    torch.testing.assert_close(slide_logits(pointwise(weight), image, crop=64, stride=42), expected)


def test_slide_averages_overlapping_windows():
    # Each window answers with its own top-left offset: a pixel's result is the mean over the windows covering it.
    image = torch.zeros(1, 3, 64, 100)
    calls = []

    def window_id(crops):
        calls.append(crops)
        return torch.full((1, 1, 16, 16), float(len(calls)))  # 1/4 resolution, like the model

    out = slide_logits(window_id, image, crop=64, stride=42)  # windows x = 0 and x = 36
    assert len(calls) == 2
    assert torch.all(out[..., :36] == 1) and torch.all(out[..., 64:] == 2) and torch.all(out[..., 36:64] == 1.5)


def test_slide_equals_whole_when_the_crop_covers_the_image():
    torch.manual_seed(0)
    model = Beit3ForSemanticSegmentation(Beit3Config.from_name("tiny", img_size=64), num_classes=3).eval()

    def fn(x):
        return model(x)["logits"]

    image = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        whole, slide = whole_logits(fn, image, 64), slide_logits(fn, image, 64, 42)
    assert whole.shape == (1, 3, 48, 64)
    torch.testing.assert_close(slide, whole, rtol=0, atol=0)
    with pytest.raises(ValueError, match="use slide"):
        whole_logits(fn, torch.randn(1, 3, 80, 64), 64)


def test_probabilities_are_at_the_output_size_and_flip_undoes_the_mirror():
    torch.manual_seed(0)
    weight, image = torch.randn(4, 3), torch.randn(1, 3, 64, 96)
    fn = pointwise(weight)
    plain = segment_probabilities(fn, image, crop=64, out_size=(32, 48))
    assert plain.shape == (1, 4, 32, 48)
    torch.testing.assert_close(plain.sum(1), torch.ones(1, 32, 48))
    # A per-pixel model commutes with mirroring, so flip TTA must give the same probabilities.
    torch.testing.assert_close(segment_probabilities(fn, image, crop=64, flip=True, out_size=(32, 48)), plain)

    # A model that only sees the left half is not mirror-symmetric: flip TTA must change the answer.
    def left_biased(crops):
        out = fn(crops).clone()
        out[..., crops.shape[-1] // 2 :] = 0
        return out

    flipped = segment_probabilities(left_biased, image, crop=64, flip=True)
    assert not torch.allclose(flipped, segment_probabilities(left_biased, image, crop=64))
    two_scales = segment_probabilities(fn, image, crop=64, scales=(0.5, 1.0), out_size=(64, 96))
    assert two_scales.shape == (1, 4, 64, 96)
