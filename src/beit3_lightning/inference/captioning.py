"""``caption()``: beam-search captions with a ``Beit3ForCaptioning`` model (the reference decoder)."""

from __future__ import annotations

from typing import Any

import torch

from beit3_lightning.inference.base import Beit3Predictor
from beit3_lightning.modeling.generation import beam_search
from beit3_lightning.processor import ImageInput


class CaptioningPredictor(Beit3Predictor):
    """Describes images in words.

    Args:
        num_beams: default beams (3 as the reference; 1 is close to greedy, see ``modeling.generation``).
        max_len: default decoding length in tokens, ``<s>`` and ``</s>`` included (at most ``max_len - 3`` words).
        length_penalty: hypothesis score = sum of log-probs / length ** length_penalty (0.6).
        **kwargs: see :class:`Beit3Predictor`.
    """

    head = "captioning"

    def __init__(
        self, *args: Any, num_beams: int = 3, max_len: int = 64, length_penalty: float = 0.6, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.processor.require_tokenizer()  # fail at load time, not at the first caption
        self.num_beams = num_beams
        self.max_len = max_len
        self.length_penalty = length_penalty

    @torch.no_grad()
    def caption_ids(self, images: ImageInput, num_beams: int | None = None, max_len: int | None = None) -> list:
        """Word ids of each image's caption (special tokens removed)."""
        ids: list[list[int]] = []
        for _, chunk in self.chunks(self.images(images), "caption"):
            ids += beam_search(
                self.model,
                self.batch(images=chunk)["image"],
                num_beams=num_beams or self.num_beams,
                max_len=max_len or self.max_len,
                length_penalty=self.length_penalty,
                mask_id=self.processor.tokenizer.mask_token_id,
            )
        return ids

    def caption(self, images: ImageInput, num_beams: int | None = None, max_len: int | None = None) -> list[str]:
        """One caption per image (``num_beams`` / ``max_len`` default to the predictor's settings)."""
        return self.processor.decode(self.caption_ids(images, num_beams=num_beams, max_len=max_len))
