"""Image–text retrieval recall (unilm ``RetrievalHandler.after_eval``), gathered across processes.

torchmetrics' own ``RetrievalRecall`` is a different quantity when an image has several captions (it counts the
fraction of the captions found, BEiT-3's TR@k counts a hit when any one is found), so the recall is computed here
with a top-k over the similarity matrix, like the reference.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

RECALL_KS = (1, 5, 10)


def first_occurrence(ids: Tensor) -> Tensor:
    """Indices of the first occurrence of each distinct id, ordered by ascending id."""
    unique_ids, inverse = torch.unique(ids, sorted=True, return_inverse=True)
    positions = torch.arange(ids.shape[0], device=ids.device)
    first = torch.full((unique_ids.shape[0],), ids.shape[0], dtype=torch.long, device=ids.device)
    return first.scatter_reduce_(0, inverse, positions, reduce="amin")


def retrieval_recalls(
    image_feats: Tensor,
    image_ids: Tensor,
    text_feats: Tensor,
    text_image_ids: Tensor,
    chunk_size: int = 1024,
) -> dict[str, float]:
    """TR@{1,5,10}, IR@{1,5,10} (percent) and their mean ``average_score``.

    Args:
        image_feats: (I, D) one row per distinct image.
        image_ids: (I,) the image ids (distinct).
        text_feats: (T, D) one row per caption.
        text_image_ids: (T,) the id of each caption's image.
        chunk_size: rows of the similarity matrix scored at a time (bounds memory on 5k × 25k COCO).

    TR@k: share of images with at least one of their own captions among their k best texts.
    IR@k: share of captions whose image is among their k best images. k is clamped to the number of candidates
    (the reference's ``topk(10)`` crashes below 10).
    """
    image_feats, text_feats = image_feats.float(), text_feats.float()
    k_text, k_image = min(max(RECALL_KS), text_feats.shape[0]), min(max(RECALL_KS), image_feats.shape[0])
    text_hits = torch.zeros(len(RECALL_KS), dtype=torch.long)
    image_hits = torch.zeros(len(RECALL_KS), dtype=torch.long)
    for start in range(0, image_feats.shape[0], chunk_size):
        scores = image_feats[start : start + chunk_size] @ text_feats.T  # (chunk, T)
        best_texts = scores.topk(k_text, dim=1).indices  # (chunk, k)
        match = text_image_ids[best_texts] == image_ids[start : start + chunk_size, None]  # (chunk, k)
        text_hits += _hits_at(match)
    for start in range(0, text_feats.shape[0], chunk_size):
        scores = text_feats[start : start + chunk_size] @ image_feats.T  # (chunk, I)
        best_images = scores.topk(k_image, dim=1).indices  # (chunk, k)
        match = image_ids[best_images] == text_image_ids[start : start + chunk_size, None]  # (chunk, k)
        image_hits += _hits_at(match)
    tr = text_hits.double() / image_feats.shape[0] * 100.0
    ir = image_hits.double() / text_feats.shape[0] * 100.0
    result = {f"tr_r{k}": tr[i].item() for i, k in enumerate(RECALL_KS)}
    result |= {f"ir_r{k}": ir[i].item() for i, k in enumerate(RECALL_KS)}
    result["average_score"] = sum(result.values()) / len(result)
    return result


def _hits_at(match: Tensor) -> Tensor:
    """(rows, k_max) bool matches, best first -> (len(RECALL_KS),) rows with a match within each k."""
    return torch.stack([match[:, :k].any(dim=1).sum().cpu() for k in RECALL_KS])


class ImageTextRetrievalRecall(Metric):
    """Collects embeddings during evaluation and computes retrieval recall over *all* processes.

    Typical use, one call per batch of the caption-level retrieval dataset (each row = image, caption, image id)::

        metric.update(image_ids, image_feats=vision_cls, text_feats=language_cls)

    ``image_feats`` and ``text_feats`` may also come in separate calls (one per image, or text only). At compute:
    everything is gathered, images are de-duplicated by id (first occurrence) and sorted by id; texts are
    de-duplicated by ``text_ids`` when given (which removes the samples DistributedSampler repeats to pad the last
    batch) and otherwise all kept. Returns ``{"tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10",
    "average_score"}`` in percent; the key metric is ``average_score``.

    Unlike the reference (which scores each process's shard alone), multi-GPU results equal single-GPU ones.
    Each process must call ``update`` at least once before ``compute`` (a torchmetrics list-state requirement).
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, chunk_size: int = 1024, **kwargs) -> None:
        super().__init__(**kwargs)
        self.chunk_size = chunk_size
        for name in ("image_feats", "image_ids", "text_feats", "text_image_ids", "text_ids"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(
        self,
        image_ids: Tensor,
        image_feats: Tensor | None = None,
        text_feats: Tensor | None = None,
        text_ids: Tensor | None = None,
    ) -> None:
        """Add a batch.

        Args:
            image_ids: (B,) image id of each row (the image itself, or the caption's image).
            image_feats: (B, D) image embeddings of the rows, or None.
            text_feats: (B, D) caption embeddings of the rows, or None.
            text_ids: (B,) optional unique caption ids, used to drop repeated captions.
        """
        if image_feats is None and text_feats is None:
            raise ValueError("update() needs image_feats, text_feats or both")
        present = image_feats if image_feats is not None else text_feats
        if present.dim() != 2 or image_ids.shape != present.shape[:1]:
            raise ValueError(f"expected feats (B, D) and image_ids (B,), got {tuple(present.shape)}, {image_ids.shape}")
        if text_ids is not None and (text_feats is None or text_ids.shape != image_ids.shape):
            raise ValueError("text_ids must come with text_feats and have one id per row (B,)")
        ids = image_ids.long()
        # Every list gets one tensor per call (empty when a side is absent) so all processes gather the same
        # number of tensors with the same number of dimensions.
        empty_feats = present.new_zeros((0, present.shape[1]), dtype=torch.float32)
        empty_ids = ids[:0]
        self.image_feats.append(image_feats.detach().float() if image_feats is not None else empty_feats)
        self.image_ids.append(ids if image_feats is not None else empty_ids)
        self.text_feats.append(text_feats.detach().float() if text_feats is not None else empty_feats)
        self.text_image_ids.append(ids if text_feats is not None else empty_ids)
        self.text_ids.append(text_ids.long() if text_ids is not None else empty_ids)

    def compute(self) -> dict[str, Tensor]:
        """Recall dict of 0-dim tensors (see the class docstring)."""
        image_feats, image_ids = dim_zero_cat(self.image_feats), dim_zero_cat(self.image_ids)
        text_feats, text_image_ids = dim_zero_cat(self.text_feats), dim_zero_cat(self.text_image_ids)
        text_ids = dim_zero_cat(self.text_ids)
        if image_feats.shape[0] == 0 or text_feats.shape[0] == 0:
            raise ValueError(
                f"retrieval recall needs images and texts; got {image_feats.shape[0]} images and "
                f"{text_feats.shape[0]} texts"
            )
        keep_images = first_occurrence(image_ids)
        image_feats, image_ids = image_feats[keep_images], image_ids[keep_images]
        if text_ids.numel():
            if text_ids.shape[0] != text_feats.shape[0]:
                raise ValueError(
                    f"text_ids were given for {text_ids.shape[0]} of {text_feats.shape[0]} captions; "
                    "pass them on every update or never"
                )
            keep_texts = first_occurrence(text_ids)
            text_feats, text_image_ids = text_feats[keep_texts], text_image_ids[keep_texts]
        missing = text_image_ids[~torch.isin(text_image_ids, image_ids)]
        if missing.numel():
            raise ValueError(
                f"{missing.numel()} captions refer to images that were never added, e.g. image id "
                f"{missing[0].item()}; add an image embedding for every image id"
            )
        recalls = retrieval_recalls(image_feats, image_ids, text_feats, text_image_ids, self.chunk_size)
        return {name: torch.tensor(value) for name, value in recalls.items()}
