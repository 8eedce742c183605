"""Python inference API: ``load_model(path, task=...)`` → a predictor with ``classify`` / ``answer`` / ``verify`` /
``caption`` / ``encode_image`` / ``encode_text`` / ``rank`` / ``segment`` on PIL images, arrays, file paths and strings.

    from beit3_lightning import load_model
    vqa = load_model("beit3_base_patch16_480_vqa.pth", tokenizer="beit3.spm", answers="answer2label.txt")
    vqa.answer("cat.jpg", "what is the cat lying on?")  # ['sofa']
"""

from beit3_lightning.inference.base import Beit3Predictor, WrongTaskError
from beit3_lightning.inference.captioning import CaptioningPredictor
from beit3_lightning.inference.checkpoint_info import CheckpointInfo, inspect_state_dict
from beit3_lightning.inference.classification import ImageClassificationPredictor
from beit3_lightning.inference.display import bar_chart, heatmap, image_grid
from beit3_lightning.inference.loading import load_model, read_checkpoint
from beit3_lightning.inference.reasoning import NLVR2Predictor
from beit3_lightning.inference.retrieval import RankingResult, RetrievalPredictor
from beit3_lightning.inference.segmentation import SegmentationPredictor
from beit3_lightning.inference.vqa import VQAPredictor

__all__ = [
    "Beit3Predictor",
    "CaptioningPredictor",
    "CheckpointInfo",
    "ImageClassificationPredictor",
    "NLVR2Predictor",
    "RankingResult",
    "RetrievalPredictor",
    "SegmentationPredictor",
    "VQAPredictor",
    "WrongTaskError",
    "bar_chart",
    "heatmap",
    "image_grid",
    "inspect_state_dict",
    "load_model",
    "read_checkpoint",
]
