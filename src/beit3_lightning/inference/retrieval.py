"""``encode_image()``, ``encode_text()``, ``rank()``: the dual encoder of ``Beit3ForRetrieval``."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from beit3_lightning.inference.base import Beit3Predictor
from beit3_lightning.processor import ImageInput, TextInput


@dataclass
class RankingResult:
    """Cosine similarities and the best matches both ways.

    Attributes:
        similarity: (N_images, N_texts) cosine similarity of the unit-norm embeddings.
        image_to_text: (N_images, k) text indices per image, most similar first.
        text_to_image: (N_texts, k') image indices per text, most similar first.
    """

    similarity: torch.Tensor
    image_to_text: torch.Tensor
    text_to_image: torch.Tensor


class RetrievalPredictor(Beit3Predictor):
    """Embeds images and texts in one space (image CLS / text ``<s>`` → projection → L2 normalisation)."""

    head = "retrieval"

    @torch.no_grad()
    def encode_image(self, images: ImageInput) -> torch.Tensor:
        """Unit-norm image embeddings (N, D), float32 on the CPU."""
        out = [
            self.model.encode_image(self.batch(images=chunk)["image"]).float().cpu()
            for _, chunk in self.chunks(self.images(images), "encode images")
        ]
        return torch.cat(out)

    @torch.no_grad()
    def encode_text(self, texts: TextInput) -> torch.Tensor:
        """Unit-norm text embeddings (N, D), float32 on the CPU."""
        out = []
        for _, chunk in self.chunks(self.texts(texts), "encode texts"):
            batch = self.batch(text=list(chunk))
            out.append(self.model.encode_text(batch["language_tokens"], batch["padding_mask"]).float().cpu())
        return torch.cat(out)

    def rank(self, images: ImageInput, texts: TextInput, top_k: int = 5) -> RankingResult:
        """Similarity matrix of every image with every text and the ``top_k`` matches each way (k is clamped to
        the number of candidates)."""
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        similarity = self.encode_image(images) @ self.encode_text(texts).T  # (N_img, N_txt)
        num_images, num_texts = similarity.shape
        return RankingResult(
            similarity=similarity,
            image_to_text=similarity.topk(min(top_k, num_texts), dim=1).indices,
            text_to_image=similarity.T.topk(min(top_k, num_images), dim=1).indices,
        )
