"""Image-text retrieval as a dual encoder (unilm ``BEiT3ForRetrieval``); the contrastive loss lives elsewhere."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from beit3_lightning.modeling.config import Beit3Config
from beit3_lightning.modeling.heads.base import Beit3TaskModel

# CLIP's initial temperature 0.07, stored as log(1/T) and left unclamped as in the reference.
INITIAL_LOGIT_SCALE = math.log(1 / 0.07)


class Beit3ForRetrieval(Beit3TaskModel):
    """Separate image-only and text-only passes; each CLS token → bias-free projection → L2 normalisation."""

    def __init__(self, config: Beit3Config):
        super().__init__(config)
        dim = config.embed_dim
        self.language_head = nn.Linear(dim, dim, bias=False)
        self.vision_head = nn.Linear(dim, dim, bias=False)
        self._init_head(self.language_head, self.vision_head)
        self.logit_scale = nn.Parameter(torch.tensor(INITIAL_LOGIT_SCALE))  # 0-dim, as the official checkpoints

    def encode_image(self, image: Tensor) -> Tensor:
        """Images (B, 3, H, W) → unit-norm embeddings (B, D)."""
        x = self.beit3(visual_tokens=image)["encoder_out"]  # (B, 1 + N, D)
        return F.normalize(self.vision_head(x[:, 0]), dim=-1)

    def encode_text(self, tokens: Tensor, padding_mask: Tensor | None) -> Tensor:
        """Token ids and padding mask (B, T) → unit-norm embeddings (B, D) from the ``<s>`` token."""
        x = self.beit3(textual_tokens=tokens, text_padding_position=padding_mask)["encoder_out"]  # (B, T, D)
        return F.normalize(self.language_head(x[:, 0]), dim=-1)

    def forward(
        self, image: Tensor | None = None, text_description: Tensor | None = None, padding_mask: Tensor | None = None
    ) -> tuple[Tensor | None, Tensor | None]:
        """(image embeddings or None, text embeddings or None); at least one input is required."""
        if image is None and text_description is None:
            raise ValueError("Beit3ForRetrieval.forward needs an image batch, a text batch or both")
        image_emb = self.encode_image(image) if image is not None else None
        text_emb = self.encode_text(text_description, padding_mask) if text_description is not None else None
        return image_emb, text_emb
