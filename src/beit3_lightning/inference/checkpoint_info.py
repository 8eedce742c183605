"""What a state dict holds: which task head, which backbone size, which image size, vocabulary and classes.

Official fine-tuned ``.pth`` files carry no metadata, so ``load_model`` reads the architecture from tensor shapes:
the embedding width picks the preset (768 → base, 1024 → large), the vision position table gives the image size
(rows = 3 + (S / patch)²), the text embedding the vocabulary and the last head layer the number of classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import Tensor

from beit3_lightning.modeling.checkpoint import BACKBONE_PREFIX, NUM_KEPT_POS_ROWS, VISION_POS_KEY
from beit3_lightning.modeling.config import PRESETS
from beit3_lightning.modeling.registry import head_keys
from beit3_lightning.task_table import HEADS

# First components of the keys of a backbone saved on its own (no ``beit3.`` prefix).
BARE_BACKBONE = ("encoder.", "text_embed.", "vision_embed.")
# Head parts a checkpoint may leave out (a segmentation model trained with aux_channels=0 has no auxiliary head).
OPTIONAL_HEAD_PREFIXES = ("auxiliary_head.",)


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
    # Head constructor arguments the shapes fix besides num_classes (segmentation widths).
    head_kwargs: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        """Human-readable summary, e.g. ``a VQA model (base, 480 px, 3129 classes)``."""
        what = HEADS[self.head].description if self.head in HEADS else "a backbone without a task head"
        details = [self.size or f"{self.num_layers} layers × {self.embed_dim} dims", f"{self.img_size} px"]
        if self.num_classes is not None:
            details.append(f"{self.num_classes} classes")
        return f"{what} ({', '.join(details)})"


def _layer_count(state: Mapping[str, Tensor], prefix: str) -> int:
    marker = f"{prefix}encoder.layers."
    indices = {int(k[len(marker) :].split(".", 1)[0]) for k in state if k.startswith(marker)}
    return max(indices) + 1 if indices else 0


def detect_head(state: Mapping[str, Tensor], prefix: str = BACKBONE_PREFIX) -> tuple[str | None, list[str]]:
    """``(head, other_keys)``: the head whose keys the non-backbone keys are exactly, or ``None`` and those keys.

    ``prefix``: of the backbone keys (``""`` for a bare backbone, whose keys start with one of ``BARE_BACKBONE``).
    An empty key set (a pretrained or bare backbone) also gives ``None``.
    """
    backbone = (prefix,) if prefix else BARE_BACKBONE
    extra = {k for k in state if not k.startswith(backbone)}
    for head in HEADS:
        keys = head_keys(head)
        required = {k for k in keys if not k.startswith(OPTIONAL_HEAD_PREFIXES)}
        if required <= extra <= keys:
            return head, []
    return None, sorted(extra)


def inspect_state_dict(state: Mapping[str, Tensor]) -> CheckpointInfo:
    """Read the architecture of an official-layout state dict (``beit3.*`` backbone keys, optionally bare)."""
    prefix = BACKBONE_PREFIX if BACKBONE_PREFIX + VISION_POS_KEY in state else ""
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
    classifier = HEADS[head].classifier_weight if head is not None else None
    classes = state[classifier].shape[0] if classifier is not None else None
    size = next(
        (name for name, p in PRESETS.items() if p["embed_dim"] == dim and p["num_layers"] == layers),
        None,
    )
    head_kwargs: dict[str, int] = {}
    if head == "segmentation":
        head_kwargs["channels"] = state["decode_head.conv_seg.weight"].shape[1]
        aux = state.get("auxiliary_head.conv_seg.weight")
        head_kwargs["aux_channels"] = aux.shape[1] if aux is not None else 0
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
        head_kwargs=head_kwargs,
    )
