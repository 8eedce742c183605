"""ImageNet classification (unilm ``BEiT3ForImageClassification``)."""

from __future__ import annotations

from torch import Tensor, nn

from beit3_lightning.modeling.config import Beit3Config
from beit3_lightning.modeling.heads.base import Beit3TaskModel


class Beit3ForImageClassification(Beit3TaskModel):
    """Vision-only encoder → mean of the patch tokens (CLS excluded) → ``fc_norm`` → ``head`` (×0.001 init).

    ``normalize_output`` is forced off as in the official registry: ImageNet checkpoints have no
    ``beit3.encoder.layer_norm`` keys. ``num_classes=0`` replaces the head by an identity (pooled features).
    """

    def __init__(self, config: Beit3Config, num_classes: int = 1000):
        super().__init__(config.replace(normalize_output=False))
        dim = config.embed_dim
        self.num_classes = num_classes
        self.fc_norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_head(self.fc_norm, self.head, scaled=[self.head] if num_classes > 0 else [])

    def forward(self, image: Tensor) -> Tensor:
        """Images (B, 3, H, W) → logits (B, num_classes)."""
        x = self.beit3(visual_tokens=image)["encoder_out"]  # (B, 1 + N, D)
        pooled = self.fc_norm(x[:, 1:].mean(dim=1))  # (B, D)
        return self.head(pooled)

    def unused_parameter_names(self) -> set[str]:
        # No text ever enters: the whole language expert, its positions and the text embedding.
        return super().unused_parameter_names() | self._whole_expert("B") | {"beit3.text_embed.weight"}
