"""The Multiway BEiT-3 backbone (torchscale ``BEiT3`` as configured by unilm ``beit3/modeling_utils.py``).

State-dict keys are torchscale's, so ``{"beit3." + key}`` entries of an official checkpoint load unchanged into a
task model that holds this module as ``beit3``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from beit3_lightning.modeling.config import Beit3Config
from beit3_lightning.modeling.embeddings import VisionEmbedding, default_positions
from beit3_lightning.modeling.init import init_weights_
from beit3_lightning.modeling.layers import EncoderLayer, Multiway, Segment

# An ``attn_mask`` entry of 1 (blocked) becomes this additive bias, not -inf: torchscale ``MultiheadAttention`` uses
# -1e8, and matching it keeps the logits identical to the official model's.
ATTN_MASK_BIAS = -1e8

IncrementalState = dict[int, dict[str, Tensor]]


class PositionTables(nn.Module):
    """torchscale's Multiway position embedding: ``A`` rows for vision tokens, ``B`` rows for text tokens."""

    def __init__(self, config: Beit3Config):
        super().__init__()
        self.A = nn.Embedding(config.num_vision_positions, config.embed_dim)  # patches + CLS + 2 offset rows
        self.B = nn.Embedding(config.max_text_positions, config.embed_dim)


class Encoder(nn.Module):
    """Positions, the stack of Multiway layers and the optional final Multiway LayerNorm (``encoder.*`` keys)."""

    def __init__(self, config: Beit3Config):
        super().__init__()
        self.embed_positions = PositionTables(config)
        rates = torch.linspace(0, config.drop_path_rate, config.num_layers, device="cpu").tolist()
        self.layers = nn.ModuleList(
            EncoderLayer(
                config.embed_dim, config.num_heads, config.ffn_dim, config.layernorm_eps, rate, config.attn_impl
            )
            for rate in rates
        )
        eps = config.layernorm_eps
        self.layer_norm = Multiway(lambda: nn.LayerNorm(config.embed_dim, eps=eps)) if config.normalize_output else None


class Beit3Backbone(nn.Module):
    """Multiway Transformer over image patches, text tokens, or both (image tokens first).

    Call with torchscale's argument names; returns a dict with ``encoder_out`` (B, L, D), ``encoder_embedding``,
    ``encoder_padding_mask``, ``multiway_split_position`` (-1 image only, 0 text only, patches+1 fused) and
    ``hidden_states`` (input of every layer plus the last layer's output, before the final LayerNorm) when asked.
    """

    def __init__(self, config: Beit3Config):
        super().__init__()
        self.config = config
        self.text_embed = nn.Embedding(config.vocab_size, config.embed_dim)
        self.vision_embed = VisionEmbedding(config.img_size, config.patch_size, config.in_chans, config.embed_dim)
        self.encoder = Encoder(config)
        self.grad_checkpointing = config.grad_checkpointing
        # torch.compile'd views of the encoder layers (``compile_layers``); a plain list, so not in the state dict.
        self._compiled_layers: list[nn.Module] | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official initialisation (unilm ``BEiT3Wrapper._init_weights``, see ``docs/reference.md#initialisation``).

        Parameters that ``_init_weights`` skips keep the values torchscale gives them at construction; those are
        reproduced here explicitly.
        """
        self.apply(init_weights_)
        nn.init.normal_(self.text_embed.weight, std=self.config.embed_dim**-0.5)
        nn.init.normal_(self.encoder.embed_positions.A.weight)  # nn.Embedding default N(0, 1), as the reference
        nn.init.normal_(self.encoder.embed_positions.B.weight)
        nn.init.zeros_(self.vision_embed.cls_token)
        nn.init.zeros_(self.vision_embed.mask_token)

    # ----- timm-style helpers -------------------------------------------------------------------------------
    def get_num_layers(self) -> int:
        return len(self.encoder.layers)

    def no_weight_decay(self) -> set[str]:
        """Parameters the reference keeps out of weight decay (besides 1-D tensors and biases)."""
        return {"encoder.embed_positions.A.weight", "vision_embed.cls_token"}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each layer's activations in backward; state-dict keys are unchanged."""
        self.grad_checkpointing = enable

    def compile_layers(self, enable: bool = True, **compile_kwargs: Any) -> None:
        """``torch.compile`` every encoder layer (regional compilation: the layers share one graph, so compiling costs
        one layer's time, not the stack's). The compiled layers run when no key/value cache is passed (training,
        evaluation, encoding); incremental decoding, whose cache grows every step, stays eager. Parameters and
        state-dict keys are unchanged; ``enable=False`` goes back to eager."""
        layers = self.encoder.layers
        self._compiled_layers = [torch.compile(layer, **compile_kwargs) for layer in layers] if enable else None

    def __getstate__(self) -> dict[str, Any]:
        # Copies (EMA's deepcopy, pickling for spawned processes) hold eager layers; compiled views do not copy.
        state = dict(super().__getstate__())
        state["_compiled_layers"] = None
        return state

    # ----- forward ------------------------------------------------------------------------------------------
    def forward(
        self,
        textual_tokens: Tensor | None = None,
        visual_tokens: Tensor | None = None,
        text_padding_position: Tensor | None = None,
        attn_mask: Tensor | None = None,
        vision_masked_position: Tensor | None = None,
        incremental_state: IncrementalState | None = None,
        positions: Tensor | None = None,
        return_hidden_states: bool = False,
    ) -> dict[str, Any]:
        """Encode images (B, 3, H, W), token ids (B, T), or both.

        ``text_padding_position`` (B, T): 1/True marks padding. ``attn_mask`` (T_q, S): 1/True blocks attention.
        ``incremental_state``: {layer: {"prev_key", "prev_value"}} of (B, H, S, head_dim), extended in place.
        ``positions`` (1 or B, T): explicit text position ids (with the +2 offset) for incremental decoding.
        """
        if textual_tokens is None and visual_tokens is None:
            raise ValueError("Beit3Backbone needs visual_tokens, textual_tokens or both")

        xv = self.vision_embed(visual_tokens, vision_masked_position) if visual_tokens is not None else None
        xt = self.text_embed(textual_tokens) if textual_tokens is not None else None
        embedding = torch.cat([t for t in (xv, xt) if t is not None], dim=1)  # (B, L, D)
        split = -1 if xt is None else (0 if xv is None else xv.shape[1])

        padding_mask = self._full_padding_mask(xv, text_padding_position)  # (B, L)

        # Each segment gets its own position table and its own arange starting at 2 (text restarts after the image).
        pos = self.encoder.embed_positions
        if xv is not None:
            xv = xv + pos.A(default_positions(xv.shape[1], xv.device))
        if xt is not None:
            text_pos = positions if positions is not None else default_positions(xt.shape[1], xt.device)
            xt = xt + pos.B(text_pos)
            if text_padding_position is not None:
                xt = xt * (1 - text_padding_position.unsqueeze(-1).type_as(xt))  # padded embeddings are zeroed

        # Only text can be padded; the reference passes no key-padding mask while decoding incrementally.
        use_padding = text_padding_position is not None and incremental_state is None
        key_padding = padding_mask if use_padding else None
        attn_bias = self._attention_bias(attn_mask, key_padding, embedding.dtype)

        hidden_states = [] if return_hidden_states else None
        for idx, layer in enumerate(self.encoder.layers):
            if hidden_states is not None:
                hidden_states.append(_join(xv, xt))
            cache = incremental_state.setdefault(idx, {}) if incremental_state is not None else None
            if self._compiled_layers is not None and cache is None:
                layer = self._compiled_layers[idx]
            if self.grad_checkpointing and self.training and torch.is_grad_enabled() and cache is None:
                xv, xt = checkpoint(layer, xv, xt, attn_bias, use_reentrant=False)
            else:
                xv, xt = layer(xv, xt, attn_bias, cache)
        if hidden_states is not None:
            hidden_states.append(_join(xv, xt))
        if self.encoder.layer_norm is not None:
            xv, xt = self.encoder.layer_norm(xv, xt)

        return {
            "encoder_out": _join(xv, xt),  # (B, L, D)
            "encoder_embedding": embedding,
            "encoder_padding_mask": padding_mask,
            "multiway_split_position": split,
            "hidden_states": hidden_states,
        }

    @staticmethod
    def _full_padding_mask(xv: Segment, text_padding: Tensor | None) -> Tensor:
        """Padding mask over the joined sequence: image tokens are never padding (dtype of the text mask kept)."""
        if text_padding is None:
            return torch.zeros(xv.shape[:2], dtype=torch.bool, device=xv.device) if xv is not None else None
        if xv is None:
            return text_padding
        image_part = text_padding.new_zeros(text_padding.shape[0], xv.shape[1])
        return torch.cat([image_part, text_padding], dim=1)

    @staticmethod
    def _attention_bias(attn_mask: Tensor | None, key_padding: Tensor | None, dtype: torch.dtype) -> Tensor | None:
        """One additive bias (B or 1, 1, T_q, S) shared by all layers: -1e8 where blocked, -inf on padded keys."""
        bias = None
        if attn_mask is not None:
            bias = torch.zeros(attn_mask.shape, dtype=dtype, device=attn_mask.device)
            bias = bias.masked_fill(attn_mask.bool(), ATTN_MASK_BIAS)[None, None]  # (1, 1, T_q, S)
        if key_padding is not None:
            pad = torch.zeros(key_padding.shape, dtype=dtype, device=key_padding.device)
            pad = pad.masked_fill(key_padding.bool(), float("-inf"))[:, None, None, :]  # (B, 1, 1, S)
            bias = pad if bias is None else bias + pad
        return bias


def _join(xv: Segment, xt: Segment) -> Tensor:
    if xv is None:
        return xt
    if xt is None:
        return xv
    return torch.cat([xv, xt], dim=1)
