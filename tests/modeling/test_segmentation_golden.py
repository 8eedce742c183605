"""Parity of the neck and heads with mmsegmentation's own modules (tests/fixtures/segmentation_golden.pt, made by
tests/fixtures/make_segmentation_golden.py from mmseg's Feature2Pyramid, UPerHead, PPM and FCNHead; see
tests/fixtures/SEGMENTATION_GOLDEN_README.md)."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path

import pytest
import torch
from torch import nn

from beit3_lightning.modeling.heads.segmentation import FCNHead, Feature2Pyramid, UPerHead, resize

GOLDEN = Path(__file__).parents[1] / "fixtures" / "segmentation_golden.pt"


@cache
def golden() -> dict:
    return torch.load(GOLDEN, weights_only=True)


def build() -> nn.Module:
    """Our neck and heads under mmseg's EncoderDecoder attribute names, loaded strictly with the golden weights."""
    g = golden()
    d, c, c_aux, k = (g["config"][key] for key in ("embed_dim", "decode_channels", "aux_channels", "num_classes"))
    model = nn.Module()
    model.neck = Feature2Pyramid(d)
    model.decode_head = UPerHead(d, c, k)
    model.auxiliary_head = FCNHead(d, c_aux, k)
    model.load_state_dict(g["state_dict"], strict=True)
    return model.eval()


def test_state_dict_names_and_shapes_are_mmsegs():
    model = build()
    ours = {key: tuple(v.shape) for key, v in model.state_dict().items()}
    assert ours == {key: tuple(v.shape) for key, v in golden()["state_dict"].items()}


@torch.no_grad()
def test_neck_decode_and_auxiliary_heads_match_mmseg():
    model, g = build(), golden()
    levels = model.neck(g["inputs"])
    for ours, theirs in zip(levels, g["outputs"]["neck"], strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    logits = model.decode_head(levels)
    torch.testing.assert_close(logits, g["outputs"]["decode_logits"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.auxiliary_head(levels), g["outputs"]["aux_logits"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        resize(logits, (128, 128)), g["outputs"]["decode_logits_resized_128"], rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(
        resize(logits, (100, 120)), g["outputs"]["decode_logits_resized_100x120"], rtol=1e-5, atol=1e-5
    )


@torch.no_grad()
def test_float64_and_training_mode_batch_statistics_match_mmseg():
    model, g = build(), golden()
    double = copy.deepcopy(model).double()
    logits64 = double.decode_head(double.neck([x.double() for x in g["inputs"]]))
    torch.testing.assert_close(logits64, g["outputs"]["decode_logits_fp64"], rtol=1e-10, atol=1e-10)
    head = copy.deepcopy(model.decode_head).train()
    head.dropout.p = 0.0  # as the golden: batch statistics in BatchNorm, no dropout
    levels = model.neck(g["inputs"])
    torch.testing.assert_close(head(levels), g["outputs"]["decode_logits_train_mode"], rtol=1e-5, atol=1e-5)


def test_golden_is_not_trivial():
    g = golden()["outputs"]
    assert g["decode_logits"].std() > 0.1
    assert (g["decode_logits_train_mode"] - g["decode_logits"]).abs().max() > 0.5  # BN statistics matter
    with pytest.raises(AssertionError):
        torch.testing.assert_close(g["decode_logits"][0], g["decode_logits"][1])
