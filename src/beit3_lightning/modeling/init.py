"""The official weight initialisation (unilm ``BEiT3Wrapper._init_weights``).

The wrapper re-runs this over the whole model after torchscale built it, which undoes torchscale's Magneto
``sqrt(log(2L))`` scaling; we therefore never apply that scaling in the first place.
"""

from __future__ import annotations

from torch import nn

LINEAR_INIT_STD = 0.02


def init_weights_(module: nn.Module) -> None:
    """Initialise one module in place; use as ``model.apply(init_weights_)``.

    nn.Linear: truncated normal with std 0.02 cut at ±0.02 (±1 std, so the measured std is ≈0.0108), bias 0.
    nn.LayerNorm: weight 1, bias 0. Everything else (Conv2d, Embedding, tokens) keeps its own init.
    """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=LINEAR_INIT_STD, a=-LINEAR_INIT_STD, b=LINEAR_INIT_STD)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
