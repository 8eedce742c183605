"""Plain-torch BEiT-3: backbone, heads, checkpoint loading, generation (no Lightning import)."""

from beit3_lightning.modeling.config import PRESETS, Beit3Config

__all__ = ["PRESETS", "Beit3Config"]
