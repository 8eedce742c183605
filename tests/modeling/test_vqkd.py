"""VQ-KD tokenizer: parity with the official unilm beit2 VQKD (tests/fixtures/vqkd_tiny.pt), loading, protocol."""

from __future__ import annotations

import dataclasses
import re
from functools import cache
from pathlib import Path

import pytest
import torch

from beit3_lightning.modeling.visual_tokenizers import (
    VQKD_PRESETS,
    VisualTokenizer,
    VQKDConfig,
    VQKDTokenizer,
    check_grid_matches,
    load_vqkd,
)

GOLDEN = Path(__file__).parent.parent / "fixtures" / "vqkd_tiny.pt"
CASES = ("default", "imagenet_norm")


@cache
def golden() -> dict:
    return torch.load(GOLDEN, weights_only=True)


def golden_config(process_type: str = "default") -> VQKDConfig:
    """Our config for the official encoder/quantiser kwargs stored in the golden file."""
    enc, vq = golden()["config_kwargs"]["encoder_config"], golden()["config_kwargs"]["vqkd"]
    # the official encoder settings our implementation hard-codes
    assert enc["qkv_bias"] and enc["qk_scale"] is None and enc["init_values"] == 0.0
    assert enc["use_abs_pos_emb"] and enc["use_mean_pooling"]
    assert not enc["use_rel_pos_bias"] and not enc["use_shared_rel_pos_bias"]
    return VQKDConfig(
        img_size=enc["img_size"],
        patch_size=enc["patch_size"],
        in_chans=enc["in_chans"],
        embed_dim=enc["embed_dim"],
        depth=enc["depth"],
        num_heads=enc["num_heads"],
        mlp_ratio=enc["mlp_ratio"],
        norm_eps=enc["norm_layer_eps"],
        codebook_size=vq["n_embed"],
        codebook_dim=vq["embed_dim"],
        process_type=process_type,
    )


def golden_tokenizer(process_type: str = "default", **kwargs) -> VQKDTokenizer:
    return load_vqkd(golden()["state_dict"], config=golden_config(process_type), **kwargs)


def state_dict_copy() -> dict[str, torch.Tensor]:
    return dict(golden()["state_dict"])


# ----- parity ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
def test_features_and_tokens_match_official(case):
    c = golden()["cases"][case]
    tok = golden_tokenizer(c["process_type"])
    images, ref = c["inputs"]["images"], c["outputs"]
    with torch.no_grad():
        x = tok.pre_process(images)
        encoder_out = tok.encoder(x)
        features = tok.encode_features(images)
    assert torch.equal(x, ref["pre_processed"])
    assert (encoder_out - ref["encoder_patch_tokens"]).abs().max() <= 1e-5
    assert features.shape == ref["features"].shape
    assert (features - ref["features"]).abs().max() <= 1e-5
    assert torch.equal(tok.get_codebook_indices(images), ref["tokens"])


def test_golden_is_sensitive():
    """The two pre-processings give different codes, and tokens are not constant (so parity means something)."""
    default, imagenet = (golden()["cases"][c]["outputs"]["tokens"] for c in CASES)
    assert not torch.equal(default, imagenet)
    assert default.unique().numel() > 5


# ----- loading ---------------------------------------------------------------------------------------------------
EXPECTED_SKIPPED = {
    "decoder.": 19,
    "decode_task_layer.": 4,
    "quantize.cluster_size": 1,
    "quantize.embedding.cluster_size": 1,
    "quantize.embedding.embed_avg": 1,
    "quantize.embedding.initted": 1,
}


def test_golden_state_dict_loads_with_expected_skips():
    tok = golden_tokenizer()
    assert {group: len(keys) for group, keys in tok.skipped_keys.items()} == EXPECTED_SKIPPED
    assert tok.skipped_keys["quantize.embedding.initted"] == ["quantize.embedding.initted"]
    ours = tok.state_dict()
    needed = [
        k for k in golden()["state_dict"] if k.startswith(("encoder.", "encode_task_layer.", "quantize.embedding.w"))
    ]
    assert sorted(ours) == sorted(needed)
    assert all(torch.equal(ours[k], golden()["state_dict"][k]) for k in needed)


@pytest.mark.parametrize("layout", ["bare", "model", "state_dict", "file_model"])
def test_checkpoint_layouts_with_teacher_entries(layout, tmp_path):
    state = state_dict_copy()
    # a training run's file also holds the teacher and its input scaling (the official loader deletes them)
    state["teacher_model.visual.proj"] = torch.zeros(4, 4)
    state["scaling_layer.shift"] = torch.zeros(1, 3, 1, 1)
    state["scaling_layer.scale"] = torch.ones(1, 3, 1, 1)
    source = {"bare": state, "model": {"model": state}, "state_dict": {"state_dict": state}}.get(layout)
    if layout == "file_model":
        source = tmp_path / "vqkd.pth"
        torch.save({"model": state}, source)
    tok = load_vqkd(source, config=golden_config())
    assert len(tok.skipped_keys["teacher_model."]) == 1
    assert len(tok.skipped_keys["scaling_layer."]) == 2
    case = golden()["cases"]["default"]
    assert torch.equal(tok.get_codebook_indices(case["inputs"]["images"]), case["outputs"]["tokens"])


@pytest.mark.parametrize(
    "key",
    ["encoder.blocks.1.attn.v_bias", "encoder.fc_norm.weight", "encode_task_layer.2.bias", "quantize.embedding.weight"],
)
def test_missing_key_raises(key):
    state = state_dict_copy()
    del state[key]
    with pytest.raises(ValueError, match=r"missing keys \(1\).*" + re.escape(key)):
        load_vqkd(state, config=golden_config())


def test_unknown_key_raises():
    """A key of a differently configured encoder (layer scale) would change the maths if ignored."""
    state = state_dict_copy()
    state["encoder.blocks.0.gamma_1"] = torch.ones(64)
    with pytest.raises(ValueError, match=r"unexpected keys.*gamma_1"):
        load_vqkd(state, config=golden_config())


def test_config_mismatch_raises():
    with pytest.raises(ValueError, match=r"shape mismatches.*encoder\.pos_embed"):
        load_vqkd(state_dict_copy(), config=dataclasses.replace(golden_config(), img_size=48))
    with pytest.raises(ValueError, match=r"unexpected keys.*encoder\.blocks\.1\."):
        load_vqkd(state_dict_copy(), config=dataclasses.replace(golden_config(), depth=1))


# ----- protocol --------------------------------------------------------------------------------------------------
def test_protocol_shape_dtype_and_frozen():
    tok = golden_tokenizer()
    assert isinstance(tok, VisualTokenizer)
    assert (tok.codebook_size, tok.image_size, tok.patch_size) == (32, 32, 8)
    assert not tok.training and not any(p.requires_grad for p in tok.parameters())
    ids = tok.get_codebook_indices(torch.rand(5, 3, 32, 32))
    assert ids.shape == (5, 16) and ids.dtype == torch.long and not ids.requires_grad
    assert ids.min() >= 0 and ids.max() < 32


def test_grid_check():
    tok = golden_tokenizer()
    check_grid_matches(tok, img_size=32, patch_size=8)
    check_grid_matches(tok, img_size=64, patch_size=16)
    with pytest.raises(ValueError, match="patch grid"):
        check_grid_matches(tok, img_size=32, patch_size=16)


def test_wrong_image_size_raises():
    with pytest.raises(ValueError, match="expects 32x32"):
        golden_tokenizer().get_codebook_indices(torch.rand(1, 3, 48, 48))


def test_bf16_encoder_and_autocast():
    images = golden()["cases"]["default"]["inputs"]["images"]
    ref = golden()["cases"]["default"]["outputs"]
    tok = golden_tokenizer(encoder_dtype=torch.bfloat16)
    assert tok.encoder.pos_embed.dtype == torch.bfloat16 and tok.quantize.embedding.weight.dtype == torch.float32
    with torch.no_grad():
        features = tok.encode_features(images)
    assert features.dtype == torch.float32 and (features - ref["features"]).abs().max() < 0.1
    ids = tok.get_codebook_indices(images)
    assert ids.dtype == torch.long and (ids == ref["tokens"]).float().mean() > 0.5
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ids = golden_tokenizer().get_codebook_indices(images)
    assert ids.dtype == torch.long and (ids == ref["tokens"]).float().mean() > 0.5


# ----- presets ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(VQKD_PRESETS))
def test_presets_match_released_files(name):
    preset = VQKD_PRESETS[name]
    cfg = VQKDConfig.from_name(name)
    assert preset.file_name.startswith(name + "-") and preset.url.endswith(preset.file_name)
    assert (cfg.img_size, cfg.patch_size, cfg.embed_dim, cfg.depth, cfg.num_heads) == (224, 16, 768, 12, 12)
    assert (cfg.codebook_size, cfg.codebook_dim, cfg.norm_eps, cfg.process_type) == (8192, 32, 1e-6, "default")
    with torch.device("meta"):
        tok = VQKDTokenizer(cfg)
    shapes = {k: tuple(v.shape) for k, v in tok.state_dict().items()}
    assert shapes["encoder.pos_embed"] == (1, 197, 768)
    assert shapes["quantize.embedding.weight"] == (8192, 32)
    assert shapes["encoder.blocks.11.attn.qkv.weight"] == (2304, 768)
    assert len(shapes) == 4 + 12 * 13 + 2 + 4 + 1


def test_preset_shas():
    assert {n: p.file_name.rsplit("-", 1)[1] for n, p in VQKD_PRESETS.items()} == {
        "vqkd_encoder_base_decoder_3x768x12_clip": "d5036aa7.pth",
        "vqkd_encoder_base_decoder_1x768x12_clip": "d93179da.pth",
        "vqkd_encoder_base_decoder_1x768x12_dino": "663c55d7.pth",
    }


def test_unknown_name_raises():
    with pytest.raises(ValueError, match="unknown VQ-KD tokenizer"):
        VQKDConfig.from_name("vqkd_large")
