"""Mixup / CutMix for ImageNet fine-tuning (unilm ``run_beit3_finetuning.py`` ``--mixup``/``--cutmix``), with timm
``Mixup`` semantics in batch mode.

One λ per batch. Each image is mixed with its partner in the flipped batch (``x.flip(0)``): sample i with
sample B−1−i. Mixup blends whole images; CutMix pastes a box of the partner and corrects λ to the kept area.
Targets become smoothed one-hot vectors mixed with the same λ, for
:func:`beit3_lightning.losses.soft_target_cross_entropy`.

Randomness comes from numpy's global generator like timm (so ``lightning.seed_everything`` makes it repeatable),
or from an explicit ``np.random.RandomState`` passed as ``rng``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def smoothed_one_hot(target: Tensor, num_classes: int, smoothing: float) -> Tensor:
    """(B,) class ids -> (B, C) with 1 − ε + ε/C on the gold class and ε/C elsewhere (rows sum to 1)."""
    off_value = smoothing / num_classes
    on_value = 1.0 - smoothing + off_value
    out = torch.full((target.shape[0], num_classes), off_value, device=target.device)
    return out.scatter_(1, target.long().view(-1, 1), on_value)


def mixup_target(target: Tensor, num_classes: int, lam: float, smoothing: float) -> Tensor:
    """Soft targets λ·onehot(y) + (1 − λ)·onehot(y.flip(0)), both label-smoothed."""
    y1 = smoothed_one_hot(target, num_classes, smoothing)
    y2 = smoothed_one_hot(target.flip(0), num_classes, smoothing)
    return y1 * lam + y2 * (1.0 - lam)


class Mixup:
    """Batch-mode Mixup/CutMix (timm ``Mixup(mode="batch", correct_lam=True)``).

    Args:
        mixup_alpha: Beta(α, α) parameter for mixup λ; 0 disables mixup.
        cutmix_alpha: Beta(α, α) parameter for cutmix λ; 0 disables cutmix.
        cutmix_minmax: (min, max) box side as a fraction of the image; if set, the box size is drawn from it
            instead of from λ, and cutmix is enabled (α forced to 1.0 as in timm).
        prob: probability of mixing a batch at all.
        switch_prob: with both enabled, probability of cutmix instead of mixup.
        mode: only "batch" (what the reference uses).
        label_smoothing: ε of the smoothed one-hot targets.
        num_classes: number of classes C.
        rng: optional ``np.random.RandomState``; default numpy's global generator.
    """

    def __init__(
        self,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        cutmix_minmax: tuple[float, float] | None = None,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        mode: str = "batch",
        label_smoothing: float = 0.1,
        num_classes: int = 1000,
        rng: np.random.RandomState | None = None,
    ) -> None:
        if mode != "batch":
            raise ValueError(f"Mixup mode {mode!r} is not supported; only 'batch' (the reference's mode) is")
        if cutmix_minmax is not None:
            if len(cutmix_minmax) != 2 or not 0.0 < cutmix_minmax[0] < cutmix_minmax[1] <= 1.0:
                raise ValueError(f"cutmix_minmax must be (min, max) with 0 < min < max <= 1, got {cutmix_minmax}")
            cutmix_alpha = 1.0
        if mixup_alpha <= 0.0 and cutmix_alpha <= 0.0:
            raise ValueError("Mixup needs mixup_alpha > 0 or cutmix_alpha > 0 (or cutmix_minmax)")
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.cutmix_minmax = cutmix_minmax
        self.prob = prob
        self.switch_prob = switch_prob
        self.label_smoothing = label_smoothing
        self.num_classes = num_classes
        self.rng = rng if rng is not None else np.random  # the module functions use the global RandomState

    def sample_params(self) -> tuple[float, bool]:
        """Draw (λ, use_cutmix) for one batch; λ = 1 means "leave the batch alone"."""
        if self.rng.rand() >= self.prob:
            return 1.0, False
        if self.mixup_alpha > 0.0 and self.cutmix_alpha > 0.0:
            use_cutmix = bool(self.rng.rand() < self.switch_prob)
        else:
            use_cutmix = self.cutmix_alpha > 0.0
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        return float(self.rng.beta(alpha, alpha)), use_cutmix

    def cutmix_box(self, height: int, width: int, lam: float) -> tuple[tuple[int, int, int, int], float]:
        """Box (y_lo, y_hi, x_lo, x_hi) to paste and λ corrected to 1 − box area / image area.

        Without ``cutmix_minmax`` the box has sides ⌊H·√(1−λ)⌋, ⌊W·√(1−λ)⌋ around a uniform centre, clipped at
        the borders (hence the λ correction); with it, sides are uniform in [min·H, max·H) and the box fits inside.
        """
        if self.cutmix_minmax is None:
            ratio = np.sqrt(1.0 - lam)
            cut_h, cut_w = int(height * ratio), int(width * ratio)
            cy, cx = self.rng.randint(0, height), self.rng.randint(0, width)
            y_lo, y_hi = np.clip(cy - cut_h // 2, 0, height), np.clip(cy + cut_h // 2, 0, height)
            x_lo, x_hi = np.clip(cx - cut_w // 2, 0, width), np.clip(cx + cut_w // 2, 0, width)
        else:
            lo, hi = self.cutmix_minmax
            cut_h = self.rng.randint(int(height * lo), int(height * hi))
            cut_w = self.rng.randint(int(width * lo), int(width * hi))
            y_lo, x_lo = self.rng.randint(0, height - cut_h), self.rng.randint(0, width - cut_w)
            y_hi, x_hi = y_lo + cut_h, x_lo + cut_w
        box = (int(y_lo), int(y_hi), int(x_lo), int(x_hi))
        corrected = 1.0 - (box[1] - box[0]) * (box[3] - box[2]) / float(height * width)
        return box, corrected

    def __call__(self, images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Mix a batch.

        Args:
            images: (B, C, H, W) with B even (as timm requires; use ``drop_last=True`` for training).
            targets: (B,) integer class ids.

        Returns:
            (mixed images (B, C, H, W), soft targets (B, num_classes)); the input tensor is not modified.
        """
        if images.dim() != 4 or images.shape[0] != targets.shape[0]:
            raise ValueError(f"expected images (B, C, H, W) and targets (B,), got {images.shape}, {targets.shape}")
        if images.shape[0] % 2:
            raise ValueError(f"Mixup needs an even batch size, got {images.shape[0]}; use drop_last=True")
        lam, use_cutmix = self.sample_params()
        if lam != 1.0:
            partner = images.flip(0)  # (B, C, H, W): sample i pairs with B−1−i
            if use_cutmix:
                (y_lo, y_hi, x_lo, x_hi), lam = self.cutmix_box(images.shape[-2], images.shape[-1], lam)
                images = images.clone()
                images[:, :, y_lo:y_hi, x_lo:x_hi] = partner[:, :, y_lo:y_hi, x_lo:x_hi]
            else:
                images = images * lam + partner * (1.0 - lam)
        soft = mixup_target(targets, self.num_classes, lam, self.label_smoothing)
        return images, soft
