"""Task heads: official state-dict layout and sizes, initialisation, forward semantics, gradients under DDP rules."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from golden import golden_config, load_golden

from beit3_lightning.modeling import Beit3Config
from beit3_lightning.modeling.heads import (
    Beit3ForCaptioning,
    Beit3ForImageClassification,
    Beit3ForRetrieval,
    Beit3ForVisualQuestionAnswering,
    Beit3ForVisualReasoning,
    captioning_attention_mask,
)

D, FFN, LAYERS, VOCAB = 32, 64, 2, 50
SMALL = Beit3Config(
    embed_dim=D, num_heads=4, ffn_dim=FFN, num_layers=LAYERS, img_size=32, patch_size=8, vocab_size=VOCAB
)
PATCHES = 16


# ----- the official layout, written out by hand from docs/reference.md#state-dict-layout ----------------------------
def official_backbone_layout(normalize_output: bool) -> dict[str, tuple[int, ...]]:
    layout = {
        "beit3.text_embed.weight": (VOCAB, D),
        "beit3.vision_embed.mask_token": (1, 1, D),
        "beit3.vision_embed.cls_token": (1, 1, D),
        "beit3.vision_embed.proj.weight": (D, 3, 8, 8),
        "beit3.vision_embed.proj.bias": (D,),
        "beit3.encoder.embed_positions.A.weight": (PATCHES + 3, D),
        "beit3.encoder.embed_positions.B.weight": (1024, D),
    }
    for i in range(LAYERS):
        p = f"beit3.encoder.layers.{i}."
        for x in "AB":
            for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
                layout[f"{p}self_attn.{proj}.{x}.weight"] = (D, D)
                layout[f"{p}self_attn.{proj}.{x}.bias"] = (D,)
            for norm in ("self_attn.inner_attn_ln", "self_attn_layer_norm", "final_layer_norm"):
                layout[f"{p}{norm}.{x}.weight"] = (D,)
                layout[f"{p}{norm}.{x}.bias"] = (D,)
            layout[f"{p}ffn.{x}.fc1.weight"] = (FFN, D)
            layout[f"{p}ffn.{x}.fc1.bias"] = (FFN,)
            layout[f"{p}ffn.{x}.fc2.weight"] = (D, FFN)
            layout[f"{p}ffn.{x}.fc2.bias"] = (D,)
            layout[f"{p}ffn.{x}.ffn_layernorm.weight"] = (FFN,)
            layout[f"{p}ffn.{x}.ffn_layernorm.bias"] = (FFN,)
    if normalize_output:
        for x in "AB":
            layout[f"beit3.encoder.layer_norm.{x}.weight"] = (D,)
            layout[f"beit3.encoder.layer_norm.{x}.bias"] = (D,)
    return layout


HEAD_LAYOUTS = {
    Beit3ForImageClassification: (
        False,
        {"fc_norm.weight": (D,), "fc_norm.bias": (D,), "head.weight": (1000, D), "head.bias": (1000,)},
    ),
    Beit3ForVisualReasoning: (
        True,
        {
            "head.norm1.weight": (4 * D,),
            "head.norm1.bias": (4 * D,),
            "head.dense1.weight": (2 * D, 4 * D),
            "head.dense1.bias": (2 * D,),
            "head.norm2.weight": (2 * D,),
            "head.norm2.bias": (2 * D,),
            "head.dense2.weight": (2, 2 * D),
            "head.dense2.bias": (2,),
        },
    ),
    Beit3ForVisualQuestionAnswering: (
        False,
        {
            "pooler.norm.weight": (D,),
            "pooler.norm.bias": (D,),
            "pooler.dense.weight": (D, D),
            "pooler.dense.bias": (D,),
            "head.0.weight": (2 * D, D),
            "head.0.bias": (2 * D,),
            "head.1.weight": (2 * D,),
            "head.1.bias": (2 * D,),
            "head.3.weight": (3129, 2 * D),
            "head.3.bias": (3129,),
        },
    ),
    Beit3ForCaptioning: (True, {"mlm_head.weight": (VOCAB, D), "mlm_head.bias": (VOCAB,)}),
    Beit3ForRetrieval: (True, {"language_head.weight": (D, D), "vision_head.weight": (D, D), "logit_scale": ()}),
}
HEAD_CLASSES = list(HEAD_LAYOUTS)


def official_layout(cls) -> dict[str, tuple[int, ...]]:
    normalize_output, head = HEAD_LAYOUTS[cls]
    return {**official_backbone_layout(normalize_output), **head}


@pytest.mark.parametrize("cls", HEAD_CLASSES, ids=lambda c: c.__name__)
def test_state_dict_matches_the_official_layout(cls):
    model = cls(SMALL)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == official_layout(cls)


@pytest.mark.parametrize("cls", HEAD_CLASSES, ids=lambda c: c.__name__)
def test_official_layout_state_dict_loads_strictly(cls):
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=gen) for k, shape in official_layout(cls).items()}
    model = cls(SMALL)
    result = model.load_state_dict(state, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    for key in ("beit3.encoder.layers.1.ffn.B.fc2.weight", "beit3.vision_embed.cls_token"):
        assert torch.equal(model.state_dict()[key], state[key])


# ----- sizes of the real models (meta device: no memory, no init cost) ----------------------------------------------
@pytest.mark.parametrize(
    ("cls", "size", "img", "params", "keys"),
    [
        (Beit3ForImageClassification, "base", 224, 221_754_856, 491),
        (Beit3ForVisualReasoning, "base", 224, 225_719_810, 499),
        (Beit3ForVisualQuestionAnswering, "base", 480, 228_110_649, 497),
        (Beit3ForCaptioning, "base", 480, 270_751_754, 493),
        (Beit3ForRetrieval, "base", 384, 222_458_881, 494),
        (Beit3ForImageClassification, "large", 224, 673_725_416, 971),
    ],
)
def test_parameter_counts_equal_the_reference(cls, size, img, params, keys):
    with torch.device("meta"):
        model = cls(Beit3Config.from_name(size, img_size=img))
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(model.state_dict()) == keys


# ----- initialisation (unilm BEiT3Wrapper._init_weights) -------------------------------------------------------------
TRUNC_STD = 0.0108  # std of N(0, 0.02²) truncated at ±0.02


def assert_trunc_normal(weight: torch.Tensor, scale: float = 1.0) -> None:
    assert weight.abs().max() <= 0.02 * scale
    assert math.isclose(weight.std().item(), TRUNC_STD * scale, rel_tol=0.1)


def assert_layer_norm_identity(norm: torch.nn.LayerNorm) -> None:
    assert torch.equal(norm.weight, torch.ones_like(norm.weight)) and not norm.bias.any()


def test_head_initialisation_follows_the_reference():
    torch.manual_seed(0)
    config = SMALL.replace(embed_dim=64, num_heads=4)
    cls_model = Beit3ForImageClassification(config)
    assert_trunc_normal(cls_model.head.weight, scale=0.001)  # ×0.001
    assert not cls_model.head.bias.any()
    assert_layer_norm_identity(cls_model.fc_norm)

    nlvr2 = Beit3ForVisualReasoning(config)
    assert_trunc_normal(nlvr2.head.dense1.weight, scale=0.001)
    assert_trunc_normal(nlvr2.head.dense2.weight, scale=0.001)
    assert_layer_norm_identity(nlvr2.head.norm1)

    vqa = Beit3ForVisualQuestionAnswering(config)
    assert_trunc_normal(vqa.pooler.dense.weight)  # not scaled
    assert_trunc_normal(vqa.head[3].weight)
    assert_layer_norm_identity(vqa.head[1])

    cap = Beit3ForCaptioning(config)
    assert_trunc_normal(cap.mlm_head.weight)
    assert not cap.mlm_head.bias.any()

    ret = Beit3ForRetrieval(config)
    assert ret.logit_scale.dim() == 0
    assert math.isclose(ret.logit_scale.exp().item(), 1 / 0.07, rel_tol=1e-6)
    assert ret.vision_head.bias is None and ret.language_head.bias is None
    assert_trunc_normal(ret.vision_head.weight)


def test_classification_and_vqa_have_no_final_layer_norm_even_if_asked():
    for cls in (Beit3ForImageClassification, Beit3ForVisualQuestionAnswering):
        model = cls(SMALL.replace(normalize_output=True))
        assert model.beit3.encoder.layer_norm is None


# ----- forward semantics (hand-built from the backbone) ---------------------------------------------------------------
def inputs(batch: int = 3, text_len: int = 6, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, 32, 32, generator=gen)
    tokens = torch.randint(3, VOCAB, (batch, text_len), generator=gen)
    tokens[:, 0] = 0
    padding = torch.zeros(batch, text_len, dtype=torch.long)
    padding[0, -2:] = 1
    tokens[padding.bool()] = 1
    return images, tokens, padding


def randomized(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Large random parameters (like the golden files) so that every input actually changes the outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.dim() == 1:  # LayerNorm
                p.copy_(1 + 0.25 * torch.randn(p.shape, generator=gen))
            elif p.dim() >= 2 and "embed" not in name and "token" not in name:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1:].numel()))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen) if p.dim() else p)
    return model.eval()


def test_image_classification_pools_patch_tokens_without_cls():
    model = randomized(Beit3ForImageClassification(SMALL, num_classes=5))
    images, _, _ = inputs()
    x = model.beit3(visual_tokens=images)["encoder_out"]
    expected = model.head(model.fc_norm(x[:, 1:].mean(1)))
    torch.testing.assert_close(model(images), expected, rtol=0, atol=0)
    assert not torch.allclose(expected, model.head(model.fc_norm(x.mean(1))))  # CLS inclusion would show
    features = Beit3ForImageClassification(SMALL, num_classes=0)(images)
    assert features.shape == (3, D)


def test_visual_reasoning_concatenates_both_images_cls_pairs():
    model = randomized(Beit3ForVisualReasoning(SMALL))
    images, tokens, padding = inputs()
    images2 = torch.flip(images, dims=[0])

    def cls_pair(img):  # separate backbone calls: checks the 2B stacking and the split
        x = model.beit3(textual_tokens=tokens, visual_tokens=img, text_padding_position=padding)["encoder_out"]
        return torch.cat([x[:, 0], x[:, PATCHES + 1]], dim=-1)

    expected = model.head(torch.cat([cls_pair(images), cls_pair(images2)], dim=-1))
    logits = model(images, images2, tokens, padding)
    assert logits.shape == (3, 2)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(model(images2, images, tokens, padding), logits, atol=1e-4)


def test_vqa_pools_the_vision_cls_token():
    model = randomized(Beit3ForVisualQuestionAnswering(SMALL, num_classes=7))
    images, tokens, padding = inputs()
    x = model.beit3(textual_tokens=tokens, visual_tokens=images, text_padding_position=padding)["encoder_out"]
    expected = model.head[3](
        F.gelu(model.head[1](model.head[0](torch.tanh(model.pooler.dense(model.pooler.norm(x[:, 0]))))))
    )
    torch.testing.assert_close(model(images, tokens, padding), expected, rtol=0, atol=0)


def test_retrieval_encodes_each_modality_separately_to_unit_vectors():
    model = randomized(Beit3ForRetrieval(SMALL))
    images, tokens, padding = inputs()
    img, txt = model(image=images, text_description=tokens, padding_mask=padding)
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(3))
    expected_img = F.normalize(model.vision_head(model.beit3(visual_tokens=images)["encoder_out"][:, 0]), dim=-1)
    torch.testing.assert_close(img, expected_img, rtol=0, atol=0)
    text_out = model.beit3(textual_tokens=tokens, text_padding_position=padding)["encoder_out"]
    torch.testing.assert_close(txt, F.normalize(model.language_head(text_out[:, 0]), dim=-1), rtol=0, atol=0)
    only_text = model(text_description=tokens, padding_mask=padding)
    assert only_text[0] is None and torch.equal(only_text[1], txt)
    with pytest.raises(ValueError, match="needs an image batch, a text batch or both"):
        model()


def test_captioning_mask_is_the_uni_mask():
    expected = torch.tensor(
        [  # image 2 tokens, text 3 tokens; 1 = blocked
            [0, 0, 1, 1, 1],
            [0, 0, 1, 1, 1],
            [0, 0, 0, 1, 1],
            [0, 0, 0, 0, 1],
            [0, 0, 0, 0, 0],
        ]
    )
    assert torch.equal(captioning_attention_mask(2, 3), expected)


def test_captioning_is_causal_and_selects_masked_positions():
    model = randomized(Beit3ForCaptioning(SMALL))
    images, tokens, padding = inputs()
    logits, state = model(images, tokens, padding)
    assert logits.shape == (3, 6, VOCAB) and state is None
    changed = tokens.clone()
    changed[:, 3] = 7
    later, _ = model(images, changed, padding)
    torch.testing.assert_close(later[:, :3], logits[:, :3], rtol=0, atol=1e-6)  # earlier positions cannot see it
    assert not torch.allclose(later[1:, 3:5], logits[1:, 3:5], atol=1e-4)
    masked = torch.zeros_like(tokens, dtype=torch.bool)
    masked[0, 2] = masked[2, 1] = masked[2, 4] = True
    selected, _ = model(images, tokens, padding, language_masked_pos=masked)
    torch.testing.assert_close(selected, torch.stack([logits[0, 2], logits[2, 1], logits[2, 4]]), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="needs the incremental_state filled"):
        model(None, tokens[:, :2], None, text_len=3, incremental_state={})


@pytest.mark.parametrize("golden_name", ["beit3_tiny_img32", "beit3_tiny_img48"])
def test_captioning_decoding_protocol_matches_torchscale(golden_name):
    """Golden "incremental_captioning": our head builds the reference's masks and positions for both steps."""
    golden = load_golden(golden_name)
    model = Beit3ForCaptioning(golden_config(golden)).eval()
    head = {"mlm_head.weight": model.mlm_head.weight.detach(), "mlm_head.bias": torch.randn(model.mlm_head.bias.shape)}
    assert not model.load_state_dict({**golden["checkpoint"]["model"], **head}, strict=True).missing_keys
    step0, step1 = golden["cases"]["incremental_captioning"]["steps"]
    image_len = golden["config_kwargs"]["img_size"] ** 2 // golden["config_kwargs"]["patch_size"] ** 2 + 1
    assert torch.equal(captioning_attention_mask(image_len, 2), step0["inputs"]["attn_mask"])
    assert torch.equal(captioning_attention_mask(image_len, 3)[-2:], step1["inputs"]["attn_mask"])

    state: dict = {}
    with torch.no_grad():
        text0 = step0["inputs"]["textual_tokens"]
        logits0, state = model(
            step0["inputs"]["visual_tokens"], text0, torch.zeros_like(text0), incremental_state=state
        )
        reference0 = model.mlm_head(step0["outputs"]["encoder_out"][:, image_len:])
        torch.testing.assert_close(logits0, reference0, rtol=1e-5, atol=1e-5)
        for cache in state.values():
            cache["prev_key"], cache["prev_value"] = cache["prev_key"][:, :, :-1], cache["prev_value"][:, :, :-1]
        logits1, _ = model(None, step1["inputs"]["textual_tokens"], None, text_len=3, incremental_state=state)
        torch.testing.assert_close(logits1, model.mlm_head(step1["outputs"]["encoder_out"]), rtol=1e-5, atol=1e-5)


# ----- gradients, DDP and optimiser hooks ----------------------------------------------------------------------------
def training_loss(model, images, tokens, padding) -> torch.Tensor:
    if isinstance(model, Beit3ForImageClassification):
        return model(images).square().sum()
    if isinstance(model, Beit3ForVisualReasoning):
        return model(images, images.flip(0), tokens, padding).square().sum()
    if isinstance(model, Beit3ForVisualQuestionAnswering):
        return model(images, tokens, padding).square().sum()
    if isinstance(model, Beit3ForCaptioning):
        masked = torch.zeros_like(tokens, dtype=torch.bool)
        masked[:, 2] = True
        return model(images, tokens, padding, language_masked_pos=masked)[0].square().sum()
    img, txt = model(images, tokens, padding)
    return (img @ txt.T * model.logit_scale.exp()).sum()  # the contrastive loss uses logit_scale


@pytest.mark.parametrize("cls", HEAD_CLASSES, ids=lambda c: c.__name__)
def test_unused_parameters_are_exactly_those_autograd_never_reaches(cls):
    model = randomized(cls(SMALL)).train()
    images, tokens, padding = inputs()
    training_loss(model, images, tokens, padding).backward()
    without_grad = {n for n, p in model.named_parameters() if p.grad is None}
    assert without_grad == model.unused_parameter_names()
    assert "beit3.vision_embed.mask_token" in without_grad

    # After freezing, every trainable parameter gets a gradient: DDP can run with find_unused_parameters=False.
    model.zero_grad(set_to_none=True)
    frozen = model.freeze_unused_parameters_()
    training_loss(model, images, tokens, padding).backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in model.named_parameters() if p.grad is not None}
    assert set(frozen).isdisjoint(trainable) and len(frozen) == len(without_grad)
    assert set(model.state_dict()) == set(official_layout(cls))  # frozen keys stay in checkpoints


def test_unused_parameter_sets_have_the_expected_size():
    # Image classification drops the whole language expert (20 tensors per layer, positions) and the text embedding.
    assert len(Beit3ForImageClassification(SMALL).unused_parameter_names()) == 1 + 20 * LAYERS + 1 + 1
    for cls in (Beit3ForVisualReasoning, Beit3ForVisualQuestionAnswering, Beit3ForCaptioning, Beit3ForRetrieval):
        assert cls(SMALL).unused_parameter_names() == {"beit3.vision_embed.mask_token"}


def test_no_weight_decay_and_layer_helpers():
    backbone_set = {"beit3.encoder.embed_positions.A.weight", "beit3.vision_embed.cls_token"}
    assert Beit3ForCaptioning(SMALL).no_weight_decay() == backbone_set
    assert Beit3ForRetrieval(SMALL).no_weight_decay() == backbone_set | {"logit_scale"}
    model = Beit3ForVisualQuestionAnswering(SMALL)
    assert model.get_num_layers() == LAYERS
    model.set_grad_checkpointing()
    assert model.beit3.grad_checkpointing is True
