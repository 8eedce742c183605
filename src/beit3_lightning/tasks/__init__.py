"""One LightningModule per BEiT-3 task, sharing the backbone and the optimiser recipe (``Beit3Task``)."""

from beit3_lightning.tasks.base import Beit3Task
from beit3_lightning.tasks.captioning import CaptioningTask
from beit3_lightning.tasks.classification import ImageClassificationTask
from beit3_lightning.tasks.nlvr2 import NLVR2Task
from beit3_lightning.tasks.pretraining import PretrainingTask
from beit3_lightning.tasks.retrieval import RetrievalTask
from beit3_lightning.tasks.segmentation import SegmentationTask
from beit3_lightning.tasks.vqa import VQATask

__all__ = [
    "Beit3Task",
    "CaptioningTask",
    "ImageClassificationTask",
    "NLVR2Task",
    "PretrainingTask",
    "RetrievalTask",
    "SegmentationTask",
    "VQATask",
]
