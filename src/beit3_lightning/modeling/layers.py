"""Building blocks of the Multiway encoder layer: experts, attention, feed-forward, drop path.

Multiway routing (torchscale ``MultiwayNetwork``): every per-token module has two experts, ``A`` for vision tokens
and ``B`` for text tokens; only the attention softmax mixes the two. torchscale splits the concatenated sequence and
concatenates it back inside *every* Multiway module (7 split/cat pairs per layer). We instead carry the two segments
as separate tensors ``(xv, xt)`` through the whole layer and join them only for the shared attention, which gives
the same maths with far fewer copies. Either segment may be ``None`` (image-only or text-only input).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Segment = Tensor | None  # (B, L_segment, D) or None when that modality is absent


class Multiway(nn.Module):
    """Two experts built by the same factory: ``A`` (vision) and ``B`` (language).

    Attribute names ``A``/``B`` are torchscale's ``MultiwayNetwork`` ones, so state-dict keys match.
    """

    def __init__(self, make: Callable[[], nn.Module]):
        super().__init__()
        self.A = make()
        self.B = make()

    def forward(self, xv: Segment, xt: Segment) -> tuple[Segment, Segment]:
        return (self.A(xv) if xv is not None else None, self.B(xt) if xt is not None else None)


def drop_path_mask(x: Tensor, drop_prob: float, training: bool) -> Tensor | None:
    """Per-sample keep mask (B, 1, 1) scaled by 1/keep_prob for stochastic depth, or None when inactive.

    One mask is shared by the vision and text segments of a sample: torchscale drops the whole residual branch of a
    sample, not each modality independently.
    """
    if drop_prob == 0.0 or not training:
        return None
    keep_prob = 1.0 - drop_prob
    mask = x.new_empty(x.shape[0], 1, 1).bernoulli_(keep_prob)
    return mask.div_(keep_prob)


class FeedForward(nn.Module):
    """fc1 → GELU → LayerNorm over the hidden size (Magneto sub-LN) → fc2."""

    def __init__(self, embed_dim: int, ffn_dim: int, eps: float):
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, embed_dim)
        self.ffn_layernorm = nn.LayerNorm(ffn_dim, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        # torchscale computes GELU on x.float() and casts back; exact-erf GELU in the input dtype is the same in fp32
        # and avoids two casts per layer under bf16 autocast.
        return self.fc2(self.ffn_layernorm(F.gelu(self.fc1(x))))


class MultiwayAttention(nn.Module):
    """Multi-head self-attention over the joined [vision; text] sequence with per-modality projections.

    Sub-LN (Magneto, torchscale ``MultiheadAttention`` with ``subln``): ``inner_attn_ln`` normalises the attention
    output before ``out_proj``.
    """

    def __init__(self, embed_dim: int, num_heads: int, eps: float, attn_impl: str = "auto"):
        super().__init__()
        self.attn_impl = attn_impl
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        linear = lambda: nn.Linear(embed_dim, embed_dim)
        self.k_proj = Multiway(linear)
        self.v_proj = Multiway(linear)
        self.q_proj = Multiway(linear)
        self.out_proj = Multiway(linear)
        self.inner_attn_ln = Multiway(lambda: nn.LayerNorm(embed_dim, eps=eps))

    def _heads(self, proj: Multiway, xv: Segment, xt: Segment) -> Tensor:
        """Project each segment with its expert and join them: (B, H, Lv + Lt, head_dim)."""
        parts = [p for p in proj(xv, xt) if p is not None]
        x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)  # (B, L, D)
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        xv: Segment,
        xt: Segment,
        attn_bias: Tensor | None,
        cache: dict[str, Tensor] | None = None,
    ) -> tuple[Segment, Segment]:
        q = self._heads(self.q_proj, xv, xt)  # (B, H, T, d)
        k = self._heads(self.k_proj, xv, xt)  # (B, H, T, d)
        v = self._heads(self.v_proj, xv, xt)
        if cache is not None:
            # Incremental decoding: keys/values of earlier steps come first along the sequence (torchscale's
            # ``incremental_state``), so the new tokens attend to everything decoded so far.
            if "prev_key" in cache:
                k = torch.cat([cache["prev_key"], k], dim=2)  # (B, H, S, d)
                v = torch.cat([cache["prev_value"], v], dim=2)
            cache["prev_key"], cache["prev_value"] = k, v
        if self.attn_impl == "math" or (self.attn_impl == "auto" and _cpu_half(q)):
            out = math_attention(q, k, v, attn_bias)
        else:
            if attn_bias is not None and attn_bias.dtype != q.dtype:
                attn_bias = attn_bias.to(q.dtype)  # SDPA wants a float mask in the query dtype (bf16 autocast)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias)  # (B, H, T, d)
        batch, _, length, _ = out.shape
        out = out.transpose(1, 2).reshape(batch, length, -1)  # (B, T, D)
        split = 0 if xv is None else xv.shape[1]
        ov = out[:, :split] if xv is not None else None
        ot = out[:, split:] if xt is not None else None
        return self.out_proj(*self.inner_attn_ln(ov, ot))


def _cpu_half(x: Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16)


def math_attention(q: Tensor, k: Tensor, v: Tensor, attn_bias: Tensor | None) -> Tensor:
    """torchscale's attention: scaled q @ k^T (+ bias), softmax in fp32 cast back, @ v. (B, H, T, d)."""
    logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (B, H, T, S)
    if attn_bias is not None:
        logits = logits + attn_bias
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32).type_as(q)
    return probs @ v


class EncoderLayer(nn.Module):
    """Pre-LN Multiway block: x += drop_path(Attn(LN(x))); x += drop_path(FFN(LN(x))) (alpha 1, no layer scale)."""

    def __init__(
        self, embed_dim: int, num_heads: int, ffn_dim: int, eps: float, drop_path: float = 0.0, attn_impl: str = "auto"
    ):
        super().__init__()
        self.self_attn = MultiwayAttention(embed_dim, num_heads, eps, attn_impl)
        self.self_attn_layer_norm = Multiway(lambda: nn.LayerNorm(embed_dim, eps=eps))
        self.ffn = Multiway(lambda: FeedForward(embed_dim, ffn_dim, eps))
        self.final_layer_norm = Multiway(lambda: nn.LayerNorm(embed_dim, eps=eps))
        self.drop_path_prob = drop_path

    def forward(
        self,
        xv: Segment,
        xt: Segment,
        attn_bias: Tensor | None = None,
        cache: dict[str, Tensor] | None = None,
    ) -> tuple[Segment, Segment]:
        hv, ht = self.self_attn(*self.self_attn_layer_norm(xv, xt), attn_bias, cache)
        xv, xt = self._residual(xv, xt, hv, ht)
        hv, ht = self.ffn(*self.final_layer_norm(xv, xt))
        return self._residual(xv, xt, hv, ht)

    def _residual(self, xv: Segment, xt: Segment, hv: Segment, ht: Segment) -> tuple[Segment, Segment]:
        mask = drop_path_mask(xv if xv is not None else xt, self.drop_path_prob, self.training)
        if mask is not None:
            hv = hv * mask if hv is not None else None
            ht = ht * mask if ht is not None else None
        return (xv + hv if xv is not None else None, xt + ht if xt is not None else None)

    def extra_repr(self) -> str:
        return f"drop_path={self.drop_path_prob}"
