"""VQA score (``utils.VQAScore`` of ViLT and unilm BEiT-3), in percent."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class VQAScore(Metric):
    """Mean soft score of the arg-max answer × 100.

    For each question the predicted answer is ``argmax(logits)``; its score is the dense soft target at that index
    (0 / 0.3 / 0.6 / 0.9 / 1.0 for 0 / 1 / 2 / 3 / ≥4 matching annotators, which equals the official VQA accuracy).
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("score", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: Tensor, soft_targets: Tensor) -> None:
        """Add a batch: logits (B, A) and dense soft targets (B, A)."""
        if logits.shape != soft_targets.shape or logits.dim() != 2:
            raise ValueError(f"expected logits and soft targets (B, A), got {logits.shape}, {soft_targets.shape}")
        predicted = logits.argmax(dim=1, keepdim=True)  # (B, 1)
        self.score += soft_targets.float().gather(1, predicted).sum()
        self.total += logits.shape[0]

    def compute(self) -> Tensor:
        """Percent score (0 when nothing was seen)."""
        return self.score / self.total.clamp(min=1).float() * 100.0
