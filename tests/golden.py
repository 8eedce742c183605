"""Loading the golden fixtures (reference outputs of torchscale 0.3.0 BEiT3, see fixtures/GOLDEN_README.md)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import torch

from beit3_lightning.modeling import Beit3Backbone, Beit3Config

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN_FILES = ("beit3_tiny_img32", "beit3_tiny_img48")
STANDARD_CASES = ("image_only", "text_only_padded", "image_text_padded", "image_masked_patches", "image_text_attn_mask")


@cache
def load_golden(name: str) -> dict:
    return torch.load(FIXTURES / f"{name}.pt", weights_only=True)


def golden_config(golden: dict) -> Beit3Config:
    """Our config for the torchscale EncoderConfig kwargs stored in a golden file."""
    kw = golden["config_kwargs"]
    return Beit3Config(
        embed_dim=kw["encoder_embed_dim"],
        num_heads=kw["encoder_attention_heads"],
        ffn_dim=kw["encoder_ffn_embed_dim"],
        num_layers=kw["encoder_layers"],
        patch_size=kw["patch_size"],
        img_size=kw["img_size"],
        vocab_size=kw["vocab_size"],
        normalize_output=kw["normalize_output"],
    )


def golden_backbone(name: str) -> Beit3Backbone:
    golden = load_golden(name)
    model = Beit3Backbone(golden_config(golden)).eval()
    model.load_state_dict(golden["state_dict"], strict=True)
    return model
