"""Behaviour of Beit3Backbone beyond golden parity: gradients, checkpointing, caching, presets, init, errors."""

from __future__ import annotations

import math

import pytest
import torch
from test_heads import randomized

from beit3_lightning.modeling import Beit3Backbone, Beit3Config, layers

SMALL = dict(embed_dim=32, num_heads=4, ffn_dim=64, num_layers=3, img_size=32, patch_size=8, vocab_size=50)


def make_inputs(batch=2, text_len=6, img_size=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, img_size, img_size, generator=gen)
    tokens = torch.randint(3, 50, (batch, text_len), generator=gen)
    tokens[:, 0] = 0
    padding = torch.zeros(batch, text_len, dtype=torch.long)
    padding[0, -2:] = 1
    tokens[padding.bool()] = 1
    return images, tokens, padding


def test_every_parameter_gets_a_gradient_in_a_fused_forward():
    # Seeded: with drop path, both samples of the batch drop the same branch now and then (about 1 run in 150
    # unseeded), which leaves that branch without a gradient.
    torch.manual_seed(0)
    model = Beit3Backbone(Beit3Config(**SMALL, drop_path_rate=0.1)).train()
    images, tokens, padding = make_inputs()
    masked = torch.zeros(2, 16, dtype=torch.bool)
    masked[:, :3] = True  # exercises the mask token
    out = model(
        textual_tokens=tokens, visual_tokens=images, text_padding_position=padding, vision_masked_position=masked
    )
    out["encoder_out"].square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_gradient_checkpointing_gives_identical_outputs_and_gradients():
    torch.manual_seed(0)
    model = Beit3Backbone(Beit3Config(**SMALL)).train()
    images, tokens, padding = make_inputs()

    def run():
        model.zero_grad()
        out = model(textual_tokens=tokens, visual_tokens=images, text_padding_position=padding)["encoder_out"]
        out.pow(2).sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ref_out, ref_grads = run()
    keys_before = list(model.state_dict())
    model.set_grad_checkpointing(True)
    ckpt_out, ckpt_grads = run()
    assert list(model.state_dict()) == keys_before
    torch.testing.assert_close(ckpt_out, ref_out, rtol=0, atol=0)
    assert ckpt_grads.keys() == ref_grads.keys() and len(ref_grads) == len(list(model.parameters())) - 1  # mask token
    for name, grad in ref_grads.items():
        torch.testing.assert_close(ckpt_grads[name], grad, rtol=1e-6, atol=1e-7)


def test_compiled_layers_give_the_same_outputs_gradients_and_state_dict():
    torch.manual_seed(0)
    model = Beit3Backbone(Beit3Config(**SMALL)).train()
    images, tokens, padding = make_inputs()

    def run(module, dtype=torch.float32):
        module.zero_grad()
        out = module(textual_tokens=tokens, visual_tokens=images.to(dtype), text_padding_position=padding)
        out["encoder_out"].pow(2).sum().backward()
        grads = {n: p.grad.double() for n, p in module.named_parameters() if p.grad is not None}
        return out["encoder_out"].detach().double(), grads

    ref_out, ref_grads = run(model)
    exact = Beit3Backbone(Beit3Config(**SMALL)).double().train()
    exact.load_state_dict(model.state_dict())
    exact_out, exact_grads = run(exact, torch.float64)
    keys_before = list(model.state_dict())
    model.compile_layers()
    calls = []
    hook = model._compiled_layers[1].register_forward_pre_hook(lambda *_: calls.append(1))  # the compiled one runs
    out, grads = run(model)
    assert calls == [1]
    hook.remove()
    assert list(model.state_dict()) == keys_before
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    assert grads.keys() == ref_grads.keys()
    # fp32 gradients of this loss are only good to ~1e-2 of their scale (eager vs float64): inductor reorders the
    # sums, so the compiled gradients must be as close to the float64 ones as eager's are, not bitwise eager's.
    for name, grad in exact_grads.items():
        error, eager_error = (grads[name] - grad).abs().max(), (ref_grads[name] - grad).abs().max()
        assert error <= 2 * eager_error + 1e-6 * grad.abs().max(), name

    # EMA's deepcopy gets eager layers; incremental decoding (a growing cache) bypasses the compiled ones.
    import copy

    twin = copy.deepcopy(model)
    assert twin._compiled_layers is None and model._compiled_layers is not None
    torch.testing.assert_close(run(twin)[0], ref_out, rtol=1e-5, atol=1e-5)
    model.eval()
    state: dict = {}
    with torch.no_grad():
        cached = model(visual_tokens=images, textual_tokens=tokens[:, :1], incremental_state=state)["encoder_out"]
        eager = twin.eval()(visual_tokens=images, textual_tokens=tokens[:, :1], incremental_state={})["encoder_out"]
    torch.testing.assert_close(cached, eager, rtol=1e-5, atol=1e-5)
    model.compile_layers(False)
    assert model._compiled_layers is None


def uni_mask(image_len: int, text_len: int) -> torch.Tensor:
    """Captioning mask (1 = blocked): image sees image only, text sees image + causal text."""
    total = image_len + text_len
    blocked = torch.ones(total, total, dtype=torch.long)
    blocked[:, :image_len] = 0
    blocked[image_len:, image_len:] = 1 - torch.tril(torch.ones(text_len, text_len, dtype=torch.long))
    return blocked


def test_cached_decoding_equals_full_forward_over_several_steps():
    torch.manual_seed(0)
    model = Beit3Backbone(Beit3Config(**SMALL)).eval()
    images, tokens, _ = make_inputs(text_len=5)
    image_len = 17
    state: dict = {}
    with torch.no_grad():
        first = model(
            textual_tokens=tokens[:, :1],
            visual_tokens=images,
            attn_mask=uni_mask(image_len, 1),
            incremental_state=state,
        )["encoder_out"]
        steps = [first[:, -1]]
        for t in range(1, 5):
            mask = uni_mask(image_len, t + 1)[-1:]  # (1, S): row of the new token
            out = model(
                textual_tokens=tokens[:, t : t + 1],
                incremental_state=state,
                positions=torch.tensor([[t + 2]]),
                attn_mask=mask,
            )["encoder_out"]
            steps.append(out[:, -1])
        full = model(textual_tokens=tokens, visual_tokens=images, attn_mask=uni_mask(image_len, 5))["encoder_out"]
    assert state[0]["prev_key"].shape == (2, 4, image_len + 5, 8)
    torch.testing.assert_close(torch.stack(steps, 1), full[:, image_len:], rtol=1e-5, atol=1e-5)


def test_text_padding_does_not_change_real_tokens():
    """Appending pads (masked as padding) leaves the outputs of real tokens unchanged."""
    torch.manual_seed(0)
    model = Beit3Backbone(Beit3Config(**SMALL)).eval()
    images, tokens, _ = make_inputs(text_len=4)
    padded = torch.cat([tokens, torch.ones(2, 3, dtype=torch.long)], 1)
    padding = torch.cat([torch.zeros(2, 4), torch.ones(2, 3)], 1).long()
    with torch.no_grad():
        short = model(textual_tokens=tokens, visual_tokens=images)["encoder_out"]
        long = model(textual_tokens=padded, visual_tokens=images, text_padding_position=padding)["encoder_out"]
    torch.testing.assert_close(long[:, : short.shape[1]], short, rtol=1e-5, atol=1e-5)


def test_drop_path_is_stochastic_in_training_and_off_in_eval():
    torch.manual_seed(0)
    model = Beit3Backbone(Beit3Config(**SMALL, drop_path_rate=0.5))
    images, _, _ = make_inputs(batch=8)
    model.train()
    a = model(visual_tokens=images)["encoder_out"]
    b = model(visual_tokens=images)["encoder_out"]
    assert not torch.allclose(a, b)
    model.eval()
    torch.testing.assert_close(model(visual_tokens=images)["encoder_out"], model(visual_tokens=images)["encoder_out"])
    rates = [layer.drop_path_prob for layer in model.encoder.layers]
    assert rates == pytest.approx([0.0, 0.25, 0.5])  # linspace(0, rate, L)


def test_drop_path_mask_drops_whole_samples_and_rescales_the_kept_ones():
    torch.manual_seed(0)
    x = torch.ones(4000, 3, 5)
    mask = layers.drop_path_mask(x, 0.25, training=True)
    assert mask.shape == (4000, 1, 1)
    kept = mask != 0
    # Kept samples are scaled by 1 / keep_prob, so the branch keeps its expected value.
    torch.testing.assert_close(mask[kept], torch.full_like(mask[kept], 1 / 0.75))
    assert abs(1 - kept.float().mean().item() - 0.25) < 0.03
    assert layers.drop_path_mask(x, 0.25, training=False) is None and layers.drop_path_mask(x, 0.0, True) is None


def test_drop_path_drops_the_vision_and_text_branches_of_a_sample_together():
    """torchscale drops a sample's whole residual branch: its image and its text part alike."""
    torch.manual_seed(0)
    layer = layers.EncoderLayer(32, 4, 64, 1e-5, drop_path=0.5).train()
    xv, xt = torch.randn(64, 5, 32), torch.randn(64, 3, 32)
    with torch.no_grad():
        ov, ot = layer(xv, xt)
    # A sample comes out unchanged only when both its attention and its FFN branch were dropped (p = 0.25).
    unchanged_v = (ov == xv).flatten(1).all(dim=1)
    unchanged_t = (ot == xt).flatten(1).all(dim=1)
    assert 0 < unchanged_v.sum() < 64
    assert torch.equal(unchanged_v, unchanged_t)


@pytest.mark.parametrize(
    ("name", "img", "dims"),
    [
        ("base", 480, (768, 12, 3072, 12)),
        ("beit3_large_patch16_384", 384, (1024, 16, 4096, 24)),
        ("tiny", 48, (128, 4, 512, 4)),
    ],
)
def test_presets(name, img, dims):
    cfg = Beit3Config.from_name(name, img_size=img) if name in ("base", "tiny") else Beit3Config.from_name(name)
    assert (cfg.embed_dim, cfg.num_heads, cfg.ffn_dim, cfg.num_layers) == dims
    assert cfg.img_size == img and cfg.vocab_size == 64010 and cfg.layernorm_eps == 1e-5
    assert cfg.num_vision_positions == (img // 16) ** 2 + 3


@pytest.mark.parametrize(("img", "rows"), [(224, 199), (384, 579), (480, 903), (768, 2307)])
def test_vision_position_table_sizes(img, rows):
    with torch.device("meta"):
        model = Beit3Backbone(Beit3Config.from_name("base", img_size=img))
    assert model.encoder.embed_positions.A.weight.shape == (rows, 768)
    assert model.encoder.embed_positions.B.weight.shape == (1024, 768)


def test_base_backbone_state_dict_layout():
    with torch.device("meta"):
        model = Beit3Backbone(Beit3Config.from_name("base", normalize_output=False))
    keys = list(model.state_dict())
    assert len(keys) == 7 + 40 * 12  # embeddings + 40 tensors per layer, no final LayerNorm
    assert "encoder.layers.11.self_attn.inner_attn_ln.B.bias" in keys
    assert "encoder.layers.0.ffn.A.ffn_layernorm.weight" in keys
    assert not any(k.startswith("encoder.layer_norm") for k in keys)


def test_initialisation_follows_the_reference():
    torch.manual_seed(0)
    model = Beit3Backbone(Beit3Config(**{**SMALL, "embed_dim": 64, "ffn_dim": 256}))
    fc1 = model.encoder.layers[0].ffn.A.fc1.weight
    assert fc1.abs().max() <= 0.02 and 0.009 < fc1.std() < 0.0125  # trunc-normal cut at ±1 std → std ≈ 0.0108
    assert model.encoder.layers[0].ffn.A.fc1.bias.abs().sum() == 0
    ln = model.encoder.layers[1].final_layer_norm.B
    assert torch.equal(ln.weight, torch.ones_like(ln.weight)) and ln.bias.abs().sum() == 0
    assert model.vision_embed.cls_token.abs().sum() == 0 and model.vision_embed.mask_token.abs().sum() == 0
    assert math.isclose(model.text_embed.weight.std().item(), 64**-0.5, rel_tol=0.05)
    assert math.isclose(model.encoder.embed_positions.B.weight.std().item(), 1.0, rel_tol=0.05)
    # A and B experts are initialised independently
    assert not torch.equal(
        model.encoder.layers[0].self_attn.q_proj.A.weight, model.encoder.layers[0].self_attn.q_proj.B.weight
    )


def test_timm_style_helpers():
    model = Beit3Backbone(Beit3Config(**SMALL))
    assert model.get_num_layers() == 3
    names = dict(model.named_parameters())
    # The reference's exact list: the vision position table and the CLS token (both real parameters); the text
    # position table and the text embedding do decay.
    expected = {"encoder.embed_positions.A.weight", "vision_embed.cls_token"}
    assert model.no_weight_decay() == expected and expected <= set(names)
    assert "encoder.embed_positions.B.weight" in names and "text_embed.weight" in names


def test_bad_inputs_raise_clear_errors():
    model = Beit3Backbone(Beit3Config(**SMALL))
    with pytest.raises(ValueError, match="needs visual_tokens, textual_tokens or both"):
        model()
    with pytest.raises(ValueError, match="does not match the model's img_size=32"):
        model(visual_tokens=torch.randn(1, 3, 48, 48))
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        Beit3Config(**{**SMALL, "img_size": 30})
    with pytest.raises(ValueError, match="unknown Beit3Config preset"):
        Beit3Config.from_name("huge")


def test_auto_attention_is_the_math_path_under_cpu_bf16_autocast():
    """auto picks the explicit softmax for half precision on CPU: bit-identical to forcing math."""
    torch.manual_seed(0)
    model = Beit3Backbone(Beit3Config(**SMALL)).eval()
    images, tokens, padding = make_inputs()
    outputs = {}
    for impl in ("auto", "math"):
        for layer in model.encoder.layers:
            layer.self_attn.attn_impl = impl
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(textual_tokens=tokens, visual_tokens=images, text_padding_position=padding)
        outputs[impl] = out["encoder_out"].float()
    torch.testing.assert_close(outputs["auto"], outputs["math"], rtol=0, atol=0)


def test_sdpa_and_math_attention_agree_in_fp32_on_peaked_attention(monkeypatch: pytest.MonkeyPatch):
    """Large random weights and 2x query/key projections: every layer's attention is peaked (the mean top
    probability is above 0.5), so a scaling or masking difference between the two paths would show."""
    model = randomized(Beit3Backbone(Beit3Config(**SMALL)), seed=0)
    with torch.no_grad():
        for layer in model.encoder.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj):
                proj.A.weight.mul_(2.0)
                proj.B.weight.mul_(2.0)
    images, tokens, padding = make_inputs()

    def run(impl: str) -> torch.Tensor:
        for layer in model.encoder.layers:
            layer.self_attn.attn_impl = impl
        with torch.no_grad():
            return model(textual_tokens=tokens, visual_tokens=images, text_padding_position=padding)["encoder_out"]

    top_probs: list[float] = []
    exact = layers.math_attention

    def recording(q, k, v, bias, scale=1.0):
        logits = (q * q.shape[-1] ** -0.5 * scale) @ k.transpose(-2, -1) + bias
        top_probs.append(logits.softmax(-1).max(-1).values.mean().item())
        return exact(q * scale, k, v, bias)

    monkeypatch.setattr(layers, "math_attention", recording)
    math_out = run("math")
    assert len(top_probs) == 3 and min(top_probs) > 0.5, top_probs
    torch.testing.assert_close(run("sdpa"), math_out, rtol=1e-5, atol=1e-5)
    # The tolerance is tight enough to see a 1% error in the softmax temperature.
    monkeypatch.setattr(layers, "math_attention", lambda q, k, v, bias: recording(q, k, v, bias, scale=1.01))
    assert (run("math") - math_out).abs().max() > 1e-3
