"""Plain-torch BEiT-3: backbone, heads, checkpoint loading, generation (no Lightning import)."""

from beit3_lightning.modeling.backbone import Beit3Backbone
from beit3_lightning.modeling.checkpoint import CheckpointError, LoadReport, load_checkpoint, read_state_dict
from beit3_lightning.modeling.config import PRESETS, Beit3Config
from beit3_lightning.modeling.generation import beam_search, greedy_decode
from beit3_lightning.modeling.heads import (
    Beit3ForCaptioning,
    Beit3ForImageClassification,
    Beit3ForRetrieval,
    Beit3ForVisualQuestionAnswering,
    Beit3ForVisualReasoning,
    Beit3TaskModel,
)
from beit3_lightning.modeling.init import init_weights_
from beit3_lightning.modeling.registry import create_model, list_models

__all__ = [
    "PRESETS",
    "Beit3Backbone",
    "Beit3Config",
    "Beit3ForCaptioning",
    "Beit3ForImageClassification",
    "Beit3ForRetrieval",
    "Beit3ForVisualQuestionAnswering",
    "Beit3ForVisualReasoning",
    "Beit3TaskModel",
    "CheckpointError",
    "LoadReport",
    "beam_search",
    "create_model",
    "greedy_decode",
    "init_weights_",
    "list_models",
    "load_checkpoint",
    "read_state_dict",
]
