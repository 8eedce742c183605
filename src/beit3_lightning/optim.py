"""Optimiser recipe of unilm ``beit3/optim_factory.py`` and ``utils.cosine_scheduler``: AdamW parameter groups and
the per-step LR schedule (summary: ``docs/reference.md#optimiser-and-lr-schedule``).

The groups carry an ``lr_scale`` (layer-wise decay or task-head boost). The optimiser's ``lr`` is the *base* LR;
:func:`build_scheduler` multiplies the warmup+cosine schedule by each group's ``lr_scale``, exactly as the
reference sets ``param_group["lr"] = lr_schedule_values[step] * param_group["lr_scale"]`` every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

LayerIdFn = Callable[[str, int], int]

# Names the reference puts in layer 0 besides anything containing "embed" (kept for non-BEiT-3 name schemes).
_LAYER_ZERO_NAMES = frozenset(
    {
        "cls_token",
        "mask_token",
        "pos_embed",
        "language_pos_embed",
        "word_embeddings.weight",
        "vision_cls_token",
        "vision_pos_embed",
    }
)


def official_layer_id(name: str, num_layers: int) -> int:
    """Layer id of a parameter for layer-wise LR decay (the reference's ``get_num_layer_for_vit``).

    Any name containing "embed" (text/vision embeddings, cls/mask tokens, position tables) -> 0;
    "...layers.{i}...." -> i + 1; everything else (final norm, pooler, heads, logit_scale) -> num_layers + 1.
    """
    if "embed" in name or name in _LAYER_ZERO_NAMES or name.startswith("patch_embed"):
        return 0
    if name.startswith("rel_pos_bias"):
        return num_layers + 1
    if "layers." in name:
        return int(name.split("layers.")[1].split(".")[0]) + 1
    return num_layers + 1


def layer_decay_scales(layer_decay: float, num_layers: int) -> list[float]:
    """LR scale per layer id: [decay^(L+1−i) for i in 0..L+1] (embeddings smallest, heads 1.0)."""
    return [layer_decay ** (num_layers + 1 - i) for i in range(num_layers + 2)]


def param_groups(
    model: nn.Module,
    weight_decay: float,
    layer_decay: float = 1.0,
    num_layers: int | None = None,
    layer_id_fn: LayerIdFn | None = None,
    no_weight_decay: Iterable[str] = (),
    head_lr_scale: float = 1.0,
    head_prefixes: tuple[str, ...] = ("head",),
) -> list[dict]:
    """AdamW parameter groups with weight-decay exclusion and per-group ``lr_scale``.

    - Weight decay 0 for 1-D parameters (norms, biases), names ending ".bias" and names in ``no_weight_decay``
      (exact, or a dotted suffix: "vision_embed.cls_token" also matches "beit3.vision_embed.cls_token", so a
      backbone's own ``no_weight_decay()`` works inside a wrapper); ``weight_decay`` for the rest. Frozen
      parameters are skipped.
    - ``layer_decay < 1``: one group per (layer id, decay/no-decay) with scale decay^(L+1−id); the id comes from
      ``layer_id_fn(name, num_layers)`` (default :func:`official_layer_id`). ``num_layers`` is then required.
    - else ``head_lr_scale > 1``: names starting with one of ``head_prefixes`` get ×head_lr_scale (the pooler is
      *not* a head: VQA boosts ``head.*`` ×20 only).
    - else every group has scale 1.0.

    Groups appear in the order their first parameter is met in ``named_parameters()`` (like the reference); each is
    ``{"params", "weight_decay", "lr_scale", "group_name", "name"}``: ``group_name`` is the reference's key,
    ``name`` the one Lightning's LearningRateMonitor shows (see :func:`readable_group_name`).
    """
    skip = set(no_weight_decay)
    if layer_decay < 1.0:
        if num_layers is None:
            raise ValueError("layer_decay < 1 needs num_layers (the number of encoder layers)")
        scales = layer_decay_scales(layer_decay, num_layers)
        get_layer_id = layer_id_fn or official_layer_id
    elif layer_decay > 1.0:
        raise ValueError(f"layer_decay must be <= 1, got {layer_decay}")

    groups: dict[str, dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decays = not (param.ndim == 1 or name.endswith(".bias") or _listed(name, skip))
        kind = "decay" if decays else "no_decay"
        if layer_decay < 1.0:
            layer_id = get_layer_id(name, num_layers)
            if not 0 <= layer_id < len(scales):
                raise ValueError(f"layer_id_fn gave layer {layer_id} for {name!r}; expected 0..{len(scales) - 1}")
            key, scale = f"layer_{layer_id}_{kind}", scales[layer_id]
        elif head_lr_scale > 1.0:
            is_head = name.startswith(head_prefixes)
            key, scale = f"layer_{int(is_head)}_{kind}", head_lr_scale if is_head else 1.0
        else:
            key, scale = kind, 1.0
        if key not in groups:
            groups[key] = {
                "params": [],
                "weight_decay": weight_decay if decays else 0.0,
                "lr_scale": scale,
                "group_name": key,
                "name": readable_group_name(key, num_layers if layer_decay < 1.0 else None),
            }
        groups[key]["params"].append(param)
    return list(groups.values())


def readable_group_name(key: str, num_layers: int | None) -> str:
    """The TensorBoard name of a group key: ``layer_<id>_<kind>`` → ``embed`` (id 0: patch / text embeddings,
    positions), ``layer_00`` … (encoder layer id − 1), ``head`` (id L + 1: everything on top of the encoder); the
    head-boost groups ``layer_0`` / ``layer_1`` → ``backbone`` / ``head``; a ``_no_decay`` suffix for the groups
    without weight decay (norms, biases)."""
    no_decay = key.endswith("no_decay")
    stem = key[: -len("_no_decay")] if no_decay else key[: -len("_decay")] if key.endswith("_decay") else ""
    suffix = "_no_decay" if no_decay else ""
    if not stem:
        return "all" + suffix
    layer = int(stem.split("_")[1])
    if num_layers is None:  # no layer decay: the head-boost split
        return ("head" if layer else "backbone") + suffix
    if layer == 0:
        return "embed" + suffix
    if layer == num_layers + 1:
        return "head" + suffix
    return f"layer_{layer - 1:02d}{suffix}"


def _listed(name: str, names: set[str]) -> bool:
    """True if ``name`` is in ``names`` or ends with "." + one of them."""
    return name in names or any(name.endswith("." + listed) for listed in names)


@dataclass
class WarmupCosineSchedule:
    """LR at each optimiser step, the reference's ``utils.cosine_scheduler`` (start_warmup_value 0).

    Exactly, with W = warmup_steps and T = total_steps:
      - warmup, step s < W: ``np.linspace(0, base_lr, W)[s]`` = base_lr·s/(W − 1). Step 0 is 0 and step W − 1 is
        already base_lr (linspace includes its endpoint); W = 1 gives lr 0 at step 0 (linspace of one point).
      - cosine, step s = W + i with n = T − W: min_lr + ½(base_lr − min_lr)(1 + cos(π·i/n)); so step W is
        base_lr again and step T − 1 is just above min_lr.
      - steps ≥ T (the reference would index out of range): min_lr.

    A dataclass rather than a closure so that schedulers built on it can be saved in checkpoints.
    """

    total_steps: int
    warmup_steps: int
    base_lr: float
    min_lr: float

    def __post_init__(self) -> None:
        if self.total_steps <= 0:
            raise ValueError(f"total_steps must be > 0, got {self.total_steps}")
        if not 0 <= self.warmup_steps < self.total_steps:
            raise ValueError(f"warmup_steps must be in [0, total_steps={self.total_steps}), got {self.warmup_steps}")

    def __call__(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if step < self.warmup_steps:
            return self.base_lr * step / (self.warmup_steps - 1) if self.warmup_steps > 1 else 0.0
        if step >= self.total_steps:
            return self.min_lr
        i, n = step - self.warmup_steps, self.total_steps - self.warmup_steps
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1.0 + math.cos(math.pi * i / n))


def cosine_schedule_with_warmup(
    total_steps: int, warmup_steps: int, base_lr: float, min_lr: float
) -> Callable[[int], float]:
    """step -> lr for linear warmup from 0 then cosine to ``min_lr``; see :class:`WarmupCosineSchedule`."""
    return WarmupCosineSchedule(total_steps, warmup_steps, base_lr, min_lr)


@dataclass
class _ScaledScheduleFactor(WarmupCosineSchedule):
    """LambdaLR factor of one group: schedule(step) / base_lr × lr_scale.

    Only numbers as fields: LambdaLR.state_dict() saves the ``__dict__`` of callable objects, and checkpoints
    loaded with ``torch.load(weights_only=True)`` accept nothing else.
    """

    lr_scale: float = 1.0

    def __call__(self, step: int) -> float:
        return super().__call__(step) / self.base_lr * self.lr_scale


@dataclass
class WarmupPolySchedule(WarmupCosineSchedule):
    """LR at each optimiser step for mmseg's segmentation recipes (``LinearLR`` warmup then ``PolyLR``).

    With W = warmup_steps and T = total_steps:
      - warmup, step s < W: base_lr·(f + (1 − f)·s/W) with start factor f = 1e-6 (mmseg ``start_factor``);
      - poly, step s ≥ W: min_lr + (base_lr − min_lr)·(1 − (s − W)/(T − W))^power (mmseg ``PolyLR``,
        ``eta_min`` = min_lr, power 1.0 in the BEiT recipes);
      - steps ≥ T: min_lr.
    """

    power: float = 1.0
    start_factor: float = 1e-6

    def __call__(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if step < self.warmup_steps:
            return self.base_lr * (self.start_factor + (1.0 - self.start_factor) * step / self.warmup_steps)
        if step >= self.total_steps:
            return self.min_lr
        progress = (step - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        return self.min_lr + (self.base_lr - self.min_lr) * (1.0 - progress) ** self.power


@dataclass
class _ScaledPolyFactor(WarmupPolySchedule):
    """LambdaLR factor of one group for the poly schedule (numbers only, see :class:`_ScaledScheduleFactor`)."""

    lr_scale: float = 1.0

    def __call__(self, step: int) -> float:
        return super().__call__(step) / self.base_lr * self.lr_scale


LR_SCHEDULES = ("cosine", "poly")


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int,
    min_lr: float | None = None,
    min_lr_ratio: float | None = None,
    schedule: str = "cosine",
    power: float = 1.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Step-based warmup + decay scheduler that applies each group's ``lr_scale``.

    Each group's lr becomes schedule(step)·lr_scale, where the schedule goes from 0 to the group's initial ``lr``
    (the base LR) and down to ``min_lr`` (absolute, the reference's ``--min_lr``) or ``min_lr_ratio``·base LR.
    Give exactly one of the two. ``schedule``: ``"cosine"`` (:class:`WarmupCosineSchedule`, the BEiT-3 recipes) or
    ``"poly"`` (:class:`WarmupPolySchedule` with ``power``, the segmentation recipes). Use with Lightning
    ``{"scheduler": s, "interval": "step"}``.
    """
    if (min_lr is None) == (min_lr_ratio is None):
        raise ValueError("give exactly one of min_lr (absolute) or min_lr_ratio (fraction of the base lr)")
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr schedule {schedule!r}; use one of {', '.join(LR_SCHEDULES)}")
    factors = []
    for group in optimizer.param_groups:
        base_lr = group.get("initial_lr", group["lr"])
        if base_lr <= 0:
            raise ValueError(f"optimizer group {group.get('group_name', '?')} has base lr {base_lr}; must be > 0")
        floor = min_lr if min_lr is not None else base_lr * min_lr_ratio
        scale = group.get("lr_scale", 1.0)
        if schedule == "poly":
            factors.append(_ScaledPolyFactor(total_steps, warmup_steps, base_lr, floor, power=power, lr_scale=scale))
        else:
            factors.append(_ScaledScheduleFactor(total_steps, warmup_steps, base_lr, floor, scale))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=factors)
