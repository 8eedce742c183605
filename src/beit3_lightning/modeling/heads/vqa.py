"""VQAv2 answer classification (unilm ``BEiT3ForVisualQuestionAnswering``)."""

from __future__ import annotations

from torch import Tensor, nn

from beit3_lightning.modeling.config import Beit3Config
from beit3_lightning.modeling.heads.base import Beit3TaskModel


class Pooler(nn.Module):
    """Vision CLS token → LayerNorm → Linear → tanh."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.dense = nn.Linear(dim, dim)
        self.activation = nn.Tanh()

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.dense(self.norm(x[:, 0])))  # (B, L, D) → (B, D)


class Beit3ForVisualQuestionAnswering(Beit3TaskModel):
    """Fused encoder (no final LayerNorm, as the official registry) → ``pooler`` → ``head``:
    Linear(D, 2D), LayerNorm(2D), GELU, Linear(2D, num_classes) (state-dict keys head.0/1/3)."""

    def __init__(self, config: Beit3Config, num_classes: int = 3129):
        super().__init__(config.replace(normalize_output=False))
        dim = config.embed_dim
        self.pooler = Pooler(dim)
        self.head = nn.Sequential(
            nn.Linear(dim, dim * 2), nn.LayerNorm(dim * 2), nn.GELU(), nn.Linear(dim * 2, num_classes)
        )
        self._init_head(self.pooler, self.head)

    @property
    def num_classes(self) -> int:
        return self.head[-1].out_features

    def forward(self, image: Tensor, question: Tensor, padding_mask: Tensor) -> Tensor:
        """Images (B, 3, H, W), question ids and padding mask (B, T) → answer logits (B, num_classes)."""
        x = self.beit3(textual_tokens=question, visual_tokens=image, text_padding_position=padding_mask)
        return self.head(self.pooler(x["encoder_out"]))
