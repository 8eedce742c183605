"""beit3-lightning: BEiT-3 (Multiway Transformer) on PyTorch Lightning.

Three lines of inference::

    from beit3_lightning import load_model
    vqa = load_model("beit3_base_patch16_480_vqa.pth", task="vqav2", tokenizer="beit3.spm", answers="answer2label.txt")
    vqa.answer(image, "what is the man holding?")
"""

from beit3_lightning.inference import (
    Beit3Predictor,
    CaptioningPredictor,
    ImageClassificationPredictor,
    NLVR2Predictor,
    RankingResult,
    RetrievalPredictor,
    VQAPredictor,
    WrongTaskError,
    load_model,
)
from beit3_lightning.modeling import Beit3Backbone, Beit3Config
from beit3_lightning.processor import Beit3Processor

__version__ = "0.1.0"

__all__ = [
    "Beit3Backbone",
    "Beit3Config",
    "Beit3Predictor",
    "Beit3Processor",
    "CaptioningPredictor",
    "ImageClassificationPredictor",
    "NLVR2Predictor",
    "RankingResult",
    "RetrievalPredictor",
    "VQAPredictor",
    "WrongTaskError",
    "load_model",
]
