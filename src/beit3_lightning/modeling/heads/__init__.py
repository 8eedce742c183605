"""Task models: the backbone as ``beit3`` plus the official head of each task (unilm ``modeling_finetune``)."""

from beit3_lightning.modeling.heads.base import Beit3TaskModel
from beit3_lightning.modeling.heads.captioning import Beit3ForCaptioning, captioning_attention_mask
from beit3_lightning.modeling.heads.classification import Beit3ForImageClassification
from beit3_lightning.modeling.heads.pretraining import OFFICIAL_CODEBOOK_SIZE, Beit3ForPretraining
from beit3_lightning.modeling.heads.reasoning import Beit3ForVisualReasoning, TwoLayerMLP
from beit3_lightning.modeling.heads.retrieval import Beit3ForRetrieval
from beit3_lightning.modeling.heads.segmentation import Beit3ForSemanticSegmentation
from beit3_lightning.modeling.heads.vqa import Beit3ForVisualQuestionAnswering, Pooler

__all__ = [
    "OFFICIAL_CODEBOOK_SIZE",
    "Beit3ForCaptioning",
    "Beit3ForImageClassification",
    "Beit3ForPretraining",
    "Beit3ForRetrieval",
    "Beit3ForSemanticSegmentation",
    "Beit3ForVisualQuestionAnswering",
    "Beit3ForVisualReasoning",
    "Beit3TaskModel",
    "Pooler",
    "TwoLayerMLP",
    "captioning_attention_mask",
]
