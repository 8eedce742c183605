"""Top-k classification accuracy in percent (timm ``accuracy``, as unilm uses it for ImageNet and NLVR2)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class TopKAccuracy(Metric):
    """Percentage of samples whose gold class is among the k highest logits, for several k at once.

    The reference averages per-batch accuracies weighted by batch size, which equals total hits / total samples
    (what the sum states compute, also across processes). As in timm, k is clamped to the number of classes, so
    acc@5 on a 2-class task is 100. ``compute()`` returns ``{"acc1": …, "acc5": …}`` (use ``log_dict``).

    Args:
        top_k: the k values to report; keys are ``f"acc{k}"``.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, top_k: tuple[int, ...] = (1, 5), **kwargs) -> None:
        super().__init__(**kwargs)
        if not top_k or any(k < 1 for k in top_k):
            raise ValueError(f"top_k must be a non-empty tuple of positive ints, got {top_k}")
        self.top_k = tuple(top_k)
        self.add_state("hits", default=torch.zeros(len(self.top_k), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: Tensor, target: Tensor) -> None:
        """Add a batch: logits (B, C), target (B,) integer class ids."""
        if logits.dim() != 2 or target.shape != logits.shape[:1]:
            raise ValueError(f"expected logits (B, C) and target (B,), got {tuple(logits.shape)}, {target.shape}")
        max_k = min(max(self.top_k), logits.shape[1])
        ranked = logits.topk(max_k, dim=1).indices  # (B, max_k), best first
        correct = ranked == target.view(-1, 1)  # (B, max_k), at most one True per row
        for i, k in enumerate(self.top_k):
            self.hits[i] += correct[:, : min(k, max_k)].sum()
        self.total += target.shape[0]

    def compute(self) -> dict[str, Tensor]:
        """{"acc{k}": percent} for every requested k (0 when nothing was seen)."""
        percent = self.hits.float() / self.total.clamp(min=1).float() * 100.0
        return {f"acc{k}": percent[i] for i, k in enumerate(self.top_k)}
