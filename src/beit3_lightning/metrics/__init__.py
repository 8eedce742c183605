"""Evaluation metrics of the BEiT-3 tasks as torchmetrics ``Metric``s (correct under DDP) plus caption scorers."""

from beit3_lightning.metrics.accuracy import TopKAccuracy
from beit3_lightning.metrics.caption import (
    CaptionMetric,
    bleu,
    bleu_scores,
    cider_d,
    cider_d_scores,
    simple_tokenize,
)
from beit3_lightning.metrics.retrieval import ImageTextRetrievalRecall, retrieval_recalls
from beit3_lightning.metrics.segmentation import SegmentationMetric
from beit3_lightning.metrics.vqa import VQAScore

__all__ = [
    "CaptionMetric",
    "ImageTextRetrievalRecall",
    "SegmentationMetric",
    "TopKAccuracy",
    "VQAScore",
    "bleu",
    "bleu_scores",
    "cider_d",
    "cider_d_scores",
    "retrieval_recalls",
    "simple_tokenize",
]
