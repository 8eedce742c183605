"""Parity of Beit3Backbone with the official torchscale BEiT3 outputs stored in tests/fixtures."""

from __future__ import annotations

import pytest
import torch
from golden import GOLDEN_FILES, STANDARD_CASES, golden_backbone, load_golden

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", GOLDEN_FILES)
def test_state_dict_keys_are_torchscale_keys_in_order(name):
    golden = load_golden(name)
    model = golden_backbone(name)
    assert list(model.state_dict()) == list(golden["state_dict"])
    assert sum(p.numel() for p in model.parameters()) == golden["num_params"]


@pytest.mark.parametrize("case", STANDARD_CASES)
@pytest.mark.parametrize("name", GOLDEN_FILES)
def test_encoder_out_matches_reference(name, case):
    golden = load_golden(name)
    inputs, ref = golden["cases"][case]["inputs"], golden["cases"][case]["outputs"]
    with torch.no_grad():
        out = golden_backbone(name)(**inputs, return_hidden_states=True)
    assert out["multiway_split_position"] == ref["multiway_split_position"]
    assert out["encoder_padding_mask"].dtype == ref["encoder_padding_mask"].dtype
    assert torch.equal(out["encoder_padding_mask"], ref["encoder_padding_mask"])
    torch.testing.assert_close(out["encoder_embedding"], ref["encoder_embedding"], **TOL)
    for ours, theirs in zip(out["hidden_states"], ref["hidden_states"], strict=True):
        torch.testing.assert_close(ours, theirs, **TOL)
    torch.testing.assert_close(out["encoder_out"], ref["encoder_out"], **TOL)


@pytest.mark.parametrize("case", STANDARD_CASES)
def test_math_attention_path_matches_reference(case):
    golden = load_golden(GOLDEN_FILES[1])
    model = golden_backbone(GOLDEN_FILES[1])
    model.encoder.layers.apply(lambda m: setattr(m, "attn_impl", "math") if hasattr(m, "attn_impl") else None)
    with torch.no_grad():
        out = model(**golden["cases"][case]["inputs"])["encoder_out"]
    torch.testing.assert_close(out, golden["cases"][case]["outputs"]["encoder_out"], **TOL)


@pytest.mark.parametrize("case", STANDARD_CASES)
def test_float64_matches_reference_maths(case):
    """In float64 our maths equals the reference evaluated in float64 far below fp32 noise."""
    golden = load_golden(GOLDEN_FILES[0])
    model = golden_backbone(GOLDEN_FILES[0]).double()
    inputs = {k: v.double() if v.is_floating_point() else v for k, v in golden["cases"][case]["inputs"].items()}
    with torch.no_grad():
        out = model(**inputs)["encoder_out"]
    torch.testing.assert_close(out, golden["cases"][case]["outputs"]["encoder_out_fp64"], rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", GOLDEN_FILES)
def test_incremental_captioning_steps_match_reference(name):
    golden = load_golden(name)
    case = golden["cases"]["incremental_captioning"]
    model = golden_backbone(name)
    state: dict = {layer: {} for layer in range(model.get_num_layers())}
    step0, step1 = case["steps"]
    with torch.no_grad():
        out0 = model(**step0["inputs"], incremental_state=state)
        assert out0["multiway_split_position"] == step0["outputs"]["multiway_split_position"]
        torch.testing.assert_close(out0["encoder_out"], step0["outputs"]["encoder_out"], **TOL)
        for layer, ref_cache in step0["outputs"]["incremental_state_after"].items():
            for key in ("prev_key", "prev_value"):
                torch.testing.assert_close(state[layer][key], ref_cache[key], **TOL)
        # The decoding protocol drops the placeholder MASK token's key/value before the next step.
        for cache in state.values():
            for key in cache:
                cache[key] = cache[key][:, :, :-1]
        out1 = model(**step1["inputs"], incremental_state=state)
        full = model(**case["full_sequence_equivalent"]["inputs"])["encoder_out"]
    assert out1["multiway_split_position"] == 0
    torch.testing.assert_close(out1["encoder_out"], step1["outputs"]["encoder_out"], **TOL)
    torch.testing.assert_close(full, case["full_sequence_equivalent"]["encoder_out"], **TOL)
    torch.testing.assert_close(out1["encoder_out"], full[:, -2:], **TOL)


def test_parity_is_sensitive_to_a_small_weight_change():
    """The 1e-5 tolerance is meaningful: a 1e-3 nudge to one vision FFN bias entry breaks it."""
    golden = load_golden(GOLDEN_FILES[0])
    model = golden_backbone(GOLDEN_FILES[0])
    with torch.no_grad():
        model.encoder.layers[0].ffn.A.fc2.bias[0] += 1e-3
        out = model(**golden["cases"]["image_only"]["inputs"])["encoder_out"]
    assert (out - golden["cases"]["image_only"]["outputs"]["encoder_out"]).abs().max() > 1e-4
