"""``verify()``: NLVR2 statement verification over image pairs with a ``Beit3ForVisualReasoning`` model."""

from __future__ import annotations

import torch

from beit3_lightning.inference.base import Beit3Predictor, broadcast_pairs
from beit3_lightning.processor import ImageInput, TextInput


class NLVR2Predictor(Beit3Predictor):
    """Is a statement true of a pair of images (left, right)?"""

    head = "nlvr2"

    @torch.no_grad()
    def logits(self, image_a: ImageInput, image_b: ImageInput, statement: TextInput) -> torch.Tensor:
        """False/true logits (N, 2), float32 on the CPU. One statement is paired with every image pair."""
        lefts, rights = self.images(image_a), self.images(image_b)
        if len(lefts) != len(rights):
            raise ValueError(f"image_a and image_b must pair up one to one: got {len(lefts)} and {len(rights)}")
        pairs, statements = broadcast_pairs(list(zip(lefts, rights)), self.texts(statement), ("pairs", "statements"))
        out = []
        for _, chunk in self.chunks(list(zip(pairs, statements)), "verify"):
            chunk_pairs, chunk_statements = zip(*chunk)
            left, right = zip(*chunk_pairs)
            batch = self.batch(images=list(left), images2=list(right), text=list(chunk_statements))
            logits = self.model(batch["image"], batch["image2"], batch["language_tokens"], batch["padding_mask"])
            out.append(logits.float().cpu())
        return torch.cat(out)

    def verify(self, image_a: ImageInput, image_b: ImageInput, statement: TextInput) -> list[tuple[bool, float]]:
        """``(is_true, probability_true)`` per (image_a, image_b, statement); true when the probability is > 0.5."""
        prob_true = self.logits(image_a, image_b, statement).softmax(-1)[:, 1].tolist()
        return [(p > 0.5, p) for p in prob_true]
