"""What a state dict holds: which task head, which backbone size, which image size, vocabulary and classes.

Official fine-tuned ``.pth`` files carry no metadata, so ``load_model`` reads the architecture from tensor shapes:
the embedding width picks the preset (768 → base, 1024 → large), the vision position table gives the image size
(rows = 3 + (S / patch)²), the text embedding the vocabulary and the last head layer the number of classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import Tensor

from beit3_lightning.modeling.checkpoint import NUM_KEPT_POS_ROWS, VISION_POS_KEY
from beit3_lightning.modeling.config import PRESETS

BACKBONE = "beit3."
# First components of the keys of a backbone saved on its own (no ``beit3.`` prefix).
BARE_BACKBONE = ("encoder.", "text_embed.", "vision_embed.")
# State-dict keys of each official head (REFERENCE §1.7); the name is the registry's head suffix.
HEAD_KEYS: dict[str, frozenset[str]] = {
    "imageclassification": frozenset({"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}),
    "vqav2": frozenset(
        {"pooler.norm.weight", "pooler.norm.bias", "pooler.dense.weight", "pooler.dense.bias"}
        | {f"head.{i}.{p}" for i in (0, 1, 3) for p in ("weight", "bias")}
    ),
    "nlvr2": frozenset(
        f"head.{layer}.{p}" for layer in ("norm1", "dense1", "norm2", "dense2") for p in ("weight", "bias")
    ),
    "captioning": frozenset({"mlm_head.weight", "mlm_head.bias"}),
    "retrieval": frozenset({"language_head.weight", "vision_head.weight", "logit_scale"}),
}
# How the error messages name each kind of checkpoint.
HEAD_DESCRIPTIONS: dict[str, str] = {
    "imageclassification": "an image-classification (ImageNet) model",
    "vqav2": "a VQA model",
    "nlvr2": "an NLVR2 (visual reasoning) model",
    "captioning": "a captioning model",
    "retrieval": "a retrieval (image-text embedding) model",
}
# The last linear layer of a classifier head: its rows are the classes.
CLASSIFIER_WEIGHT = {"imageclassification": "head.weight", "vqav2": "head.3.weight"}


@dataclass
class CheckpointInfo:
    """Architecture facts read from a state dict (``None`` where the dict does not tell)."""

    head: str | None
    embed_dim: int
    num_layers: int
    patch_size: int
    img_size: int
    vocab_size: int
    num_classes: int | None = None
    size: str | None = None
    other_keys: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """Human-readable summary, e.g. ``a VQA model (base, 480 px, 3129 classes)``."""
        what = HEAD_DESCRIPTIONS.get(self.head or "", "a backbone without a task head")
        details = [self.size or f"{self.num_layers} layers × {self.embed_dim} dims", f"{self.img_size} px"]
        if self.num_classes is not None:
            details.append(f"{self.num_classes} classes")
        return f"{what} ({', '.join(details)})"


def _layer_count(state: Mapping[str, Tensor], prefix: str) -> int:
    marker = f"{prefix}encoder.layers."
    indices = {int(k[len(marker) :].split(".", 1)[0]) for k in state if k.startswith(marker)}
    return max(indices) + 1 if indices else 0


def detect_head(state: Mapping[str, Tensor], prefix: str = BACKBONE) -> tuple[str | None, list[str]]:
    """``(head, other_keys)``: the head whose keys the non-backbone keys are exactly, or ``None`` and those keys.

    ``prefix``: of the backbone keys (``""`` for a bare backbone, whose keys start with one of ``BARE_BACKBONE``).
    An empty key set (a pretrained or bare backbone) also gives ``None``.
    """
    backbone = (prefix,) if prefix else BARE_BACKBONE
    extra = {k for k in state if not k.startswith(backbone)}
    for head, keys in HEAD_KEYS.items():
        if extra == keys:
            return head, []
    return None, sorted(extra)


def inspect_state_dict(state: Mapping[str, Tensor]) -> CheckpointInfo:
    """Read the architecture of an official-layout state dict (``beit3.*`` backbone keys, optionally bare)."""
    prefix = BACKBONE if BACKBONE + VISION_POS_KEY in state else ""
    needed = [prefix + VISION_POS_KEY, prefix + "vision_embed.proj.weight", prefix + "text_embed.weight"]
    absent = [k for k in needed if k not in state]
    if absent:
        sample = sorted(state)[:8]
        raise ValueError(
            f"not a BEiT-3 state dict: keys {absent} are missing (first keys present: {sample}). Official "
            "checkpoints hold 'beit3.encoder.*', 'beit3.vision_embed.*' and 'beit3.text_embed.*' keys."
        )
    head, other = detect_head(state, prefix)
    positions = state[prefix + VISION_POS_KEY].shape[0] - NUM_KEPT_POS_ROWS
    patch = state[prefix + "vision_embed.proj.weight"].shape[-1]
    grid = round(positions**0.5)
    vocab, dim = state[prefix + "text_embed.weight"].shape
    layers = _layer_count(state, prefix)
    classes = state[CLASSIFIER_WEIGHT[head]].shape[0] if head in CLASSIFIER_WEIGHT else None
    size = next(
        (name for name, p in PRESETS.items() if p["embed_dim"] == dim and p["num_layers"] == layers),
        None,
    )
    return CheckpointInfo(
        head=head,
        embed_dim=dim,
        num_layers=layers,
        patch_size=patch,
        img_size=grid * patch,
        vocab_size=vocab,
        num_classes=classes,
        size=size,
        other_keys=other,
    )
