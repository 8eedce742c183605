"""Backbone configuration: one dataclass with the official presets (litgpt-style named configs).

Field meanings follow torchscale ``EncoderConfig`` as set by unilm ``_get_base_config`` / ``_get_large_config``
(docs/reference.md#backbone-configuration):
Multiway pre-LN encoder with Magneto sub-LN, absolute learned positions, no relative bias, no dropout.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Any

# Rows of text_embed / mlm_head in the released checkpoints, although the official tokenizer only produces ids
# 0..64001 (unilm issue #1318): kept for checkpoint shapes.
OFFICIAL_VOCAB_SIZE = 64010
# Image sizes the official registry uses (unilm ``beit3/modeling_finetune.py``); any multiple of the patch size works.
OFFICIAL_IMAGE_SIZES = (224, 384, 480, 768)

# Shape of each named preset; img_size is chosen separately (see Beit3Config.from_name).
PRESETS: dict[str, dict[str, Any]] = {
    # 1.5 M parameters: learns the embedded sample data on a laptop CPU in minutes (benchmarks/sample_learning.py).
    "tiny": dict(embed_dim=128, num_heads=4, ffn_dim=512, num_layers=4, patch_size=16),
    "base": dict(embed_dim=768, num_heads=12, ffn_dim=3072, num_layers=12, patch_size=16),
    "large": dict(embed_dim=1024, num_heads=16, ffn_dim=4096, num_layers=24, patch_size=16),
}
DEFAULT_IMAGE_SIZE = {"tiny": 48, "base": 224, "large": 224}

_NAME_RE = re.compile(r"^(?:beit3_)?(?P<size>tiny|base|large)(?:_patch(?P<patch>\d+))?(?:_(?P<img>\d+))?$")


@dataclass
class Beit3Config:
    """Hyper-parameters of the Multiway BEiT-3 backbone.

    Build one from a preset with ``Beit3Config.from_name("base", img_size=480)`` or a registry-style
    name such as ``"beit3_large_patch16_384"``; override any field with keyword arguments.
    """

    embed_dim: int = 768
    num_heads: int = 12
    ffn_dim: int = 3072
    num_layers: int = 12
    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    vocab_size: int = OFFICIAL_VOCAB_SIZE
    max_text_positions: int = 1024
    layernorm_eps: float = 1e-5
    drop_path_rate: float = 0.0
    # Final Multiway LayerNorm on the encoder output; False for ImageNet and VQAv2 (the official heads skip it).
    normalize_output: bool = True
    grad_checkpointing: bool = False
    # "sdpa": torch.nn.functional.scaled_dot_product_attention (fused kernels); "math": explicit matmul + fp32
    # softmax as torchscale computes it; "auto": SDPA, except half precision on CPU, where the explicit path
    # measured 1.4-2.5x faster in training (benchmarks/backbone.py).
    attn_impl: str = "auto"

    def __post_init__(self) -> None:
        if self.attn_impl not in ("auto", "sdpa", "math"):
            raise ValueError(f"attn_impl must be 'auto', 'sdpa' or 'math', got {self.attn_impl!r}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size={self.img_size} is not a multiple of patch_size={self.patch_size}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def num_vision_positions(self) -> int:
        """Rows of the vision position table: patches + CLS + the 2 fairseq offset rows."""
        return self.num_patches + 3

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> Beit3Config:
        """A preset by name: ``tiny``/``base``/``large``, optionally as ``beit3_base_patch16_480``."""
        match = _NAME_RE.match(name)
        if match is None:
            raise ValueError(
                f"unknown Beit3Config preset {name!r}; use one of {sorted(PRESETS)}, "
                "optionally as 'beit3_<size>_patch16_<img_size>' (e.g. 'beit3_base_patch16_480')"
            )
        size = match["size"]
        fields = dict(PRESETS[size], img_size=DEFAULT_IMAGE_SIZE[size])
        if match["patch"]:
            fields["patch_size"] = int(match["patch"])
        if match["img"]:
            fields["img_size"] = int(match["img"])
            # A size given twice must agree: silently letting one win trains at a resolution nobody asked for.
            given = overrides.get("img_size")
            if given is not None and int(given) != fields["img_size"]:
                raise ValueError(
                    f"model {name!r} names image size {fields['img_size']} but img_size={given} was also given; "
                    f"give the size once: name the preset only (e.g. {size!r}) and set the size on the data side "
                    "(data.init_args.img_size)"
                )
        fields.update(overrides)
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **changes: Any) -> Beit3Config:
        return replace(self, **changes)
