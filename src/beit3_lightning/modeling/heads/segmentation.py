"""Semantic segmentation (work in progress: replaced by the UperNet model)."""

from __future__ import annotations

from beit3_lightning.modeling.config import Beit3Config
from beit3_lightning.modeling.heads.base import Beit3TaskModel


class Beit3ForSemanticSegmentation(Beit3TaskModel):
    def __init__(self, config: Beit3Config, num_classes: int = 150):
        super().__init__(config)
        self.num_classes = num_classes
