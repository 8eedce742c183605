"""Optimiser groups, LR schedule (unilm ``optim_factory`` and ``utils.cosine_scheduler``) and the weight EMA."""

import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from beit3_lightning.ema import ModelEma
from beit3_lightning.optim import (
    build_scheduler,
    cosine_schedule_with_warmup,
    layer_decay_scales,
    official_layer_id,
    param_groups,
)


class TinyBackbone(nn.Module):
    """Parameter names shaped like BEiT-3's: beit3.{text_embed, vision_embed, encoder.layers.i, encoder.layer_norm}."""

    def __init__(self, num_layers: int = 2) -> None:
        super().__init__()
        self.text_embed = nn.Embedding(10, 4)
        self.vision_embed = nn.Module()
        self.vision_embed.cls_token = nn.Parameter(torch.zeros(1, 1, 4))
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(num_layers))
        self.encoder.layer_norm = nn.LayerNorm(4)


class TinyVQAModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.beit3 = TinyBackbone()
        self.pooler = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)
        self.logit_scale = nn.Parameter(torch.tensor(1.0))


def group_of(groups: list[dict], model: nn.Module, name: str) -> dict:
    param = dict(model.named_parameters())[name]
    return next(g for g in groups if any(p is param for p in g["params"]))


def test_official_layer_id_follows_the_reference_rule():
    assert official_layer_id("beit3.text_embed.weight", 12) == 0
    assert official_layer_id("beit3.vision_embed.cls_token", 12) == 0
    assert official_layer_id("beit3.vision_embed.proj.weight", 12) == 0
    assert official_layer_id("beit3.encoder.embed_positions.A.weight", 12) == 0
    assert official_layer_id("beit3.encoder.layers.0.self_attn.k_proj.A.weight", 12) == 1
    assert official_layer_id("beit3.encoder.layers.11.ffn.B.fc2.bias", 12) == 12
    for rest in ("beit3.encoder.layer_norm.A.weight", "head.weight", "pooler.dense.weight", "logit_scale"):
        assert official_layer_id(rest, 12) == 13


def test_layer_decay_scales_for_base_065():
    scales = layer_decay_scales(0.65, 12)
    assert len(scales) == 14
    assert scales[0] == pytest.approx(0.003697, abs=1e-6)  # embeddings: 0.65^13
    assert scales[1] == pytest.approx(0.005688, abs=1e-6)  # layer 0: 0.65^12
    assert scales[12] == pytest.approx(0.65)  # layer 11
    assert scales[13] == 1.0  # heads


def test_param_groups_layer_decay_and_no_weight_decay_membership():
    model = TinyVQAModel()
    skip = ("logit_scale", "encoder.layers.1.weight")  # the second as a backbone-relative name
    groups = param_groups(model, 0.05, layer_decay=0.5, num_layers=2, no_weight_decay=skip)
    expectations = {
        # name: (weight decay, lr scale = 0.5^(L+1-id) with L = 2)
        "beit3.text_embed.weight": (0.05, 0.125),
        "beit3.vision_embed.cls_token": (0.05, 0.125),  # 3-D, not in the skip list -> decayed
        "beit3.encoder.layers.0.weight": (0.05, 0.25),
        "beit3.encoder.layers.0.bias": (0.0, 0.25),
        "beit3.encoder.layers.1.weight": (0.0, 0.5),  # suffix of a no_weight_decay name
        "beit3.encoder.layer_norm.weight": (0.0, 1.0),  # 1-D
        "pooler.weight": (0.05, 1.0),
        "head.bias": (0.0, 1.0),
        "logit_scale": (0.0, 1.0),  # 0-D but in no_weight_decay
    }
    for name, (wd, scale) in expectations.items():
        group = group_of(groups, model, name)
        assert (group["weight_decay"], group["lr_scale"]) == pytest.approx((wd, scale)), name
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    # one group per (layer id, decay kind), named like the reference
    assert group_of(groups, model, "beit3.encoder.layers.0.bias")["group_name"] == "layer_1_no_decay"
    with pytest.raises(ValueError, match="num_layers"):
        param_groups(model, 0.05, layer_decay=0.5)


def test_param_groups_vqa_head_boost_skips_pooler_and_frozen_params():
    model = TinyVQAModel()
    model.beit3.text_embed.weight.requires_grad_(False)
    groups = param_groups(model, 0.01, head_lr_scale=20.0)
    assert group_of(groups, model, "head.weight")["lr_scale"] == 20.0
    assert group_of(groups, model, "head.bias")["lr_scale"] == 20.0
    assert group_of(groups, model, "pooler.weight")["lr_scale"] == 1.0
    assert group_of(groups, model, "beit3.encoder.layers.1.weight")["lr_scale"] == 1.0
    frozen = model.beit3.text_embed.weight
    assert not any(p is frozen for g in groups for p in g["params"])
    assert {g["group_name"] for g in groups} == {
        "layer_0_decay",
        "layer_0_no_decay",
        "layer_1_decay",
        "layer_1_no_decay",
    }


def test_cosine_schedule_hand_values():
    lr = cosine_schedule_with_warmup(total_steps=10, warmup_steps=3, base_lr=1.0, min_lr=0.0)
    # warmup np.linspace(0, 1, 3) = [0, 0.5, 1]; cosine over n = 7 steps from step 3
    assert [lr(s) for s in range(4)] == pytest.approx([0.0, 0.5, 1.0, 1.0])
    assert lr(4) == pytest.approx(0.5 * (1 + math.cos(math.pi / 7)))  # 0.950484
    assert lr(4) == pytest.approx(0.950484, abs=1e-6)
    assert lr(9) == pytest.approx(0.049516, abs=1e-6)  # 0.5 (1 + cos(6π/7))
    assert lr(10) == 0.0 and lr(1000) == 0.0  # past the end: min_lr


def test_cosine_schedule_equals_the_reference_numpy_construction():
    base, floor, total, warmup = 7e-4, 1e-6, 50, 8
    warm = np.linspace(0, base, warmup)
    rest = [
        floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * i / (total - warmup))) for i in range(total - warmup)
    ]
    reference = np.concatenate([warm, rest])
    lr = cosine_schedule_with_warmup(total, warmup, base, floor)
    assert [lr(s) for s in range(total)] == pytest.approx(reference.tolist(), rel=1e-12)
    with pytest.raises(ValueError, match="warmup_steps"):
        cosine_schedule_with_warmup(10, 10, base, floor)


def test_build_scheduler_applies_lr_scale_per_group_step_by_step():
    weights = [nn.Parameter(torch.ones(2, 2)), nn.Parameter(torch.ones(2, 2))]
    optimizer = torch.optim.AdamW(
        [{"params": [weights[0]], "lr_scale": 1.0}, {"params": [weights[1]], "lr_scale": 0.25}], lr=1e-3
    )
    scheduler = build_scheduler(optimizer, total_steps=6, warmup_steps=2, min_lr=1e-5)
    schedule = cosine_schedule_with_warmup(6, 2, 1e-3, 1e-5)
    for step in range(6):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(schedule(step), rel=1e-9)
        assert optimizer.param_groups[1]["lr"] == pytest.approx(schedule(step) * 0.25, rel=1e-9)
        optimizer.step()
        scheduler.step()


def test_build_scheduler_state_round_trips_through_torch_save():
    optimizer = torch.optim.AdamW(param_groups(nn.Linear(2, 2), 0.05), lr=1e-3)
    scheduler = build_scheduler(optimizer, total_steps=20, warmup_steps=5, min_lr=1e-6)
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    buffer = io.BytesIO()
    torch.save(scheduler.state_dict(), buffer)  # what a Lightning checkpoint does
    buffer.seek(0)
    restored_optimizer = torch.optim.AdamW(param_groups(nn.Linear(2, 2), 0.05), lr=1e-3)
    restored = build_scheduler(restored_optimizer, total_steps=20, warmup_steps=5, min_lr=1e-6)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.last_epoch == 7
    assert restored.get_last_lr() == pytest.approx(scheduler.get_last_lr())


def test_build_scheduler_min_lr_ratio_and_argument_errors():
    param = nn.Parameter(torch.ones(1))
    optimizer = torch.optim.SGD([param], lr=2.0)
    scheduler = build_scheduler(optimizer, total_steps=4, warmup_steps=0, min_lr_ratio=0.1)
    lrs = []
    for _ in range(5):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # no warmup: 0.2 + 0.9 (1 + cos(π i/4)) for i = 0..3, then the floor 0.2
    assert lrs == pytest.approx(
        [2.0, 0.2 + 0.9 * (1 + math.cos(math.pi / 4)), 1.1, 0.2 + 0.9 * (1 - math.cos(math.pi / 4)), 0.2]
    )
    with pytest.raises(ValueError, match="exactly one"):
        build_scheduler(optimizer, 4, 0)
    with pytest.raises(ValueError, match="exactly one"):
        build_scheduler(optimizer, 4, 0, min_lr=0.1, min_lr_ratio=0.1)


def test_model_ema_averages_float_state_and_copies_integer_buffers():
    model = nn.Sequential(nn.Linear(2, 1, bias=False), nn.BatchNorm1d(1))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    ema = ModelEma(model, decay=0.9)
    assert not any(p.requires_grad for p in ema.module.parameters())
    with torch.no_grad():
        model[0].weight.fill_(3.0)
        model[1].running_mean.fill_(2.0)
        model[1].num_batches_tracked.fill_(7)
    ema.update(nn.DataParallel(model))  # a wrapped model is unwrapped
    state = ema.state_dict()
    assert set(state) == set(model.state_dict())
    assert state["0.weight"].flatten().tolist() == pytest.approx([1.2, 1.2])  # 0.9·1 + 0.1·3
    assert state["1.running_mean"].item() == pytest.approx(0.2)  # 0.9·0 + 0.1·2
    assert state["1.num_batches_tracked"].item() == 7
    ema.update(model)
    assert ema.state_dict()["0.weight"][0, 0].item() == pytest.approx(0.9 * 1.2 + 0.3)
    # device None follows the tracked model ("meta" stands in for an accelerator)
    following = ModelEma(model)
    following.update(model.to("meta"))
    assert following.module[0].weight.device.type == "meta"


def test_groups_carry_readable_unique_names_for_tensorboard():
    from beit3_lightning.modeling import Beit3Config
    from beit3_lightning.modeling.heads import Beit3ForImageClassification

    model = Beit3ForImageClassification(Beit3Config.from_name("tiny"), num_classes=3)
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.75, num_layers=4)
    names = [g["name"] for g in groups]
    assert len(set(names)) == len(names)
    assert {"embed", "embed_no_decay", "layer_00", "layer_03_no_decay", "head", "head_no_decay"} <= set(names)
    head = next(g for g in groups if g["name"] == "head")
    assert head["lr_scale"] == 1.0 and next(g for g in groups if g["name"] == "layer_00")["lr_scale"] == 0.75**4
    boosted = param_groups(model, weight_decay=0.05, head_lr_scale=20.0, num_layers=4)
    assert {g["name"]: g["lr_scale"] for g in boosted}["head"] == 20.0
