"""Semantic-segmentation scores from a confusion matrix (mmseg ``IoUMetric``: mIoU, mAcc, aAcc in percent)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class SegmentationMetric(Metric):
    """mIoU, mean class accuracy and pixel accuracy over a whole split, correct under DDP.

    The state is a K×K confusion matrix (rows: true class, columns: predicted class) summed over batches and
    processes; ``ignore_index`` pixels are left out. From it, per class c with TP = M[c, c]:
    IoU = TP / (row + column − TP) and accuracy = TP / row. ``mIoU`` and ``mAcc`` average over the classes that
    occur in the ground truth or the predictions (a class absent from both has no IoU: mmseg's ``nanmean``);
    ``aAcc`` = trace / all counted pixels. ``compute()`` returns ``{"mIoU", "mAcc", "aAcc"}`` in percent.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, num_classes: int, ignore_index: int = 255, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state("confmat", default=torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, prediction: Tensor, target: Tensor) -> None:
        """Add label maps of the same shape (any shape): predicted and true class ids."""
        if prediction.shape != target.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
        keep = target != self.ignore_index
        truth, predicted = target[keep].long(), prediction[keep].long()
        if truth.numel() and (int(truth.min()) < 0 or int(truth.max()) >= self.num_classes):
            bad = int(truth.max()) if int(truth.max()) >= self.num_classes else int(truth.min())
            raise ValueError(
                f"label value {bad} is not a class id in [0, {self.num_classes}) nor ignore_index {self.ignore_index}"
            )
        pairs = truth * self.num_classes + predicted
        self.confmat += torch.bincount(pairs, minlength=self.num_classes**2).reshape(self.num_classes, -1)

    def per_class(self) -> dict[str, Tensor]:
        """{"IoU": (K,), "Acc": (K,)} in percent; NaN for classes without pixels (in truth or prediction)."""
        matrix = self.confmat.double()
        tp = matrix.diagonal()
        truth, predicted = matrix.sum(1), matrix.sum(0)
        iou = tp / (truth + predicted - tp)  # 0/0 = NaN: the class never occurs
        acc = tp / truth
        return {"IoU": iou * 100.0, "Acc": acc * 100.0}

    def compute(self) -> dict[str, Tensor]:
        scores = self.per_class()
        total = self.confmat.sum().clamp(min=1)
        return {
            "mIoU": scores["IoU"].nanmean().nan_to_num(0.0).float(),
            "mAcc": scores["Acc"].nanmean().nan_to_num(0.0).float(),
            "aAcc": (self.confmat.diagonal().sum().double() / total * 100.0).float(),
        }
