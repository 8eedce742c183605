"""Vision token embedding (:class:`VisionEmbedding`, torchscale ``VisionEmbedding``) and position ids.

The text side needs no class here: torchscale's ``TextEmbedding`` is a plain embedding table, built directly as
``Beit3Backbone.text_embed``. :func:`default_positions` numbers the tokens of either modality from
``POSITION_OFFSET``; the position layout is summarised in ``docs/reference.md#embeddings-and-positions``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# fairseq convention kept by torchscale: position ids start at 2, rows 0 and 1 of every position table are unused.
POSITION_OFFSET = 2


class VisionEmbedding(nn.Module):
    """Patchify with a strided conv, optionally replace masked patches, prepend the CLS token."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.img_size = img_size
        self.patch_size = patch_size
        self.num_patches = (img_size // patch_size) ** 2
        # Zeros like the reference; the mask token is only used by masked-image inputs (never in fine-tuning).
        # (Declaration order = torchscale's state-dict order.)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def num_position_embeddings(self) -> int:
        """Vision tokens per image: patches + CLS."""
        return self.num_patches + 1

    def forward(self, images: Tensor, masked_position: Tensor | None = None) -> Tensor:
        height, width = images.shape[-2:]
        if (height, width) != (self.img_size, self.img_size):
            raise ValueError(
                f"image size {height}x{width} does not match the model's img_size={self.img_size}; resize the "
                "images or build the model (and resize its position table) for that size"
            )
        x = self.proj(images).flatten(2).transpose(1, 2)  # (B, N, D)
        if masked_position is not None:
            w = masked_position.unsqueeze(-1).type_as(x)  # (B, N, 1), 1 = masked
            x = x * (1 - w) + self.mask_token.to(x.dtype) * w
        cls = self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype)
        return torch.cat([cls, x], dim=1)  # (B, N + 1, D)


def default_positions(length: int, device: torch.device) -> Tensor:
    """Position ids of a segment that starts at its first token: (1, length), offset by 2."""
    return torch.arange(POSITION_OFFSET, length + POSITION_OFFSET, device=device).unsqueeze(0)
