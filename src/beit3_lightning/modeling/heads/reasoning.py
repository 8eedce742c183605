"""NLVR2 visual reasoning over an image pair and one sentence (unilm ``BEiT3ForVisualReasoning``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from beit3_lightning.modeling.config import Beit3Config
from beit3_lightning.modeling.heads.base import Beit3TaskModel


class TwoLayerMLP(nn.Module):
    """LayerNorm → Linear → LayerNorm → GELU → Linear (official attribute names norm1/dense1/norm2/dense2)."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(in_features)
        self.dense1 = nn.Linear(in_features, hidden_features)
        self.norm2 = nn.LayerNorm(hidden_features)
        self.act = nn.GELU()
        self.dense2 = nn.Linear(hidden_features, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.dense2(self.act(self.norm2(self.dense1(self.norm1(x)))))


class Beit3ForVisualReasoning(Beit3TaskModel):
    """Both images go through the fused encoder with the same sentence; the pair's [vision CLS, text CLS]
    features are concatenated (4D) and classified by a ``TwoLayerMLP`` (dense layers ×0.001 init)."""

    def __init__(self, config: Beit3Config, num_classes: int = 2):
        super().__init__(config)
        dim = config.embed_dim
        self.head = TwoLayerMLP(dim * 4, dim * 2, num_classes)
        self._init_head(self.head, scaled=[self.head.dense1, self.head.dense2])

    def forward(self, image: Tensor, image2: Tensor, language_tokens: Tensor, padding_mask: Tensor) -> Tensor:
        """Images (B, 3, H, W) ×2, tokens and padding mask (B, T) → logits (B, num_classes)."""
        batch = language_tokens.shape[0]
        # One encoder call for both images: stack them along the batch, repeat the sentence.
        images = torch.cat([image, image2], dim=0)  # (2B, 3, H, W)
        tokens = torch.cat([language_tokens, language_tokens], dim=0)  # (2B, T)
        padding = torch.cat([padding_mask, padding_mask], dim=0)
        out = self.beit3(textual_tokens=tokens, visual_tokens=images, text_padding_position=padding)
        x, split = out["encoder_out"], out["multiway_split_position"]  # (2B, Nv + T, D)
        per_image = torch.cat([x[:, 0], x[:, split]], dim=-1)  # (2B, 2D): vision CLS, text CLS
        first, second = per_image.split([batch, batch], dim=0)
        return self.head(torch.cat([first, second], dim=-1))  # (B, 4D) → (B, num_classes)
