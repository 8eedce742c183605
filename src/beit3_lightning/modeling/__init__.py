"""Plain-torch BEiT-3: backbone, heads, checkpoint loading, generation (no Lightning import)."""

from beit3_lightning.modeling.backbone import Beit3Backbone
from beit3_lightning.modeling.config import PRESETS, Beit3Config
from beit3_lightning.modeling.init import init_weights_

__all__ = ["PRESETS", "Beit3Backbone", "Beit3Config", "init_weights_"]
