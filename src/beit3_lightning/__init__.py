"""beit3-lightning: BEiT-3 (Multiway Transformer) on PyTorch Lightning.

Three lines of inference::

    from beit3_lightning import load_model
    vqa = load_model("beit3_base_patch16_480_vqa.pth", task="vqav2", tokenizer="beit3.spm", answers="answer2label.txt")
    vqa.answer(image, "what is the man holding?")

The names below are imported on first use (PEP 562), so ``import beit3_lightning.modeling`` stays plain torch and
``import beit3_lightning`` costs almost nothing beyond ``import torch``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    "Beit3Backbone": "beit3_lightning.modeling",
    "Beit3Config": "beit3_lightning.modeling",
    "Beit3Predictor": "beit3_lightning.inference",
    "Beit3Processor": "beit3_lightning.processor",
    "CaptioningPredictor": "beit3_lightning.inference",
    "ImageClassificationPredictor": "beit3_lightning.inference",
    "NLVR2Predictor": "beit3_lightning.inference",
    "RankingResult": "beit3_lightning.inference",
    "RetrievalPredictor": "beit3_lightning.inference",
    "VQAPredictor": "beit3_lightning.inference",
    "WrongTaskError": "beit3_lightning.inference",
    "load_model": "beit3_lightning.inference",
}

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

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports on demand
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


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'beit3_lightning' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
