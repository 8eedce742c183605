"""Training losses of the BEiT-3 fine-tuning recipes (unilm ``engine_for_finetuning.py`` handlers and ``utils.py``),
written in plain torch.

- ImageNet: :func:`label_smoothing_cross_entropy` (no mixup) or :func:`soft_target_cross_entropy` (mixup/cutmix).
- VQAv2: :func:`vqa_bce_loss` (BCE-with-logits × number of answers).
- Retrieval: :class:`ClipLoss` (open_clip style contrastive loss, optionally over all processes).
- Captioning: :class:`CaptioningLoss` (label-smoothed KL with "drop the worst tokens").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


def label_smoothing_cross_entropy(logits: Tensor, target: Tensor, smoothing: float = 0.1) -> Tensor:
    """Cross-entropy with label smoothing, timm ``LabelSmoothingCrossEntropy`` semantics.

    loss = mean over the batch of (1 − ε)·NLL(gold) + ε·mean_c(−log p_c). Note that the uniform part spreads ε over
    *all* classes (gold included), which differs from the ε/(C−1) convention of :class:`CaptioningLoss`.

    Args:
        logits: (B, C) unnormalised scores.
        target: (B,) integer class ids.
        smoothing: ε in [0, 1).
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"label smoothing must be in [0, 1), got {smoothing}")
    log_probs = F.log_softmax(logits, dim=-1)  # (B, C)
    nll = -log_probs.gather(dim=-1, index=target.unsqueeze(-1)).squeeze(-1)  # (B,)
    uniform = -log_probs.mean(dim=-1)  # (B,)
    return ((1.0 - smoothing) * nll + smoothing * uniform).mean()


def soft_target_cross_entropy(logits: Tensor, soft_targets: Tensor) -> Tensor:
    """Cross-entropy against a distribution per row (timm ``SoftTargetCrossEntropy``), averaged over the batch.

    Args:
        logits: (B, C) unnormalised scores.
        soft_targets: (B, C) target probabilities (rows usually sum to 1, e.g. the output of :class:`Mixup`).
    """
    if logits.shape != soft_targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and soft targets {tuple(soft_targets.shape)} differ")
    return torch.sum(-soft_targets * F.log_softmax(logits, dim=-1), dim=-1).mean()


def vqa_bce_loss(logits: Tensor, soft_targets: Tensor) -> Tensor:
    """VQAv2 loss: ``BCEWithLogits(reduction='mean') × num_classes``, computed in fp32.

    Multiplying the element mean by the number of answers equals "sum over answers, mean over the batch", which
    is what the reference trains with; fp32 because fp16 logits saturate the sigmoid near 0/1.

    Args:
        logits: (B, A) answer logits (any float dtype).
        soft_targets: (B, A) VQA soft scores in [0, 1].
    """
    if logits.shape != soft_targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and soft targets {tuple(soft_targets.shape)} differ")
    loss = F.binary_cross_entropy_with_logits(logits.float(), soft_targets.float(), reduction="mean")
    return loss * soft_targets.shape[-1]


class ClipLossOutput(NamedTuple):
    """What :class:`ClipLoss` returns: the loss and both logit matrices (local rows × global columns)."""

    loss: Tensor
    logits_per_image: Tensor  # (B, world·B)
    logits_per_text: Tensor  # (B, world·B)


GatherFn = Callable[[Tensor], Tensor]


def _gather_flat(gather_fn: GatherFn, features: Tensor) -> Tensor:
    """All-gather ``features`` (B, D) and flatten to (world·B, D).

    Accepts gather functions that return either (world, B, D) (Lightning's ``all_gather``) or (world·B, D).
    """
    gathered = gather_fn(features)
    if gathered.dim() == features.dim() + 1:  # (world, B, D) -> (world·B, D)
        gathered = gathered.flatten(0, 1)
    if gathered.dim() != 2 or gathered.shape[-1] != features.shape[-1] or gathered.shape[0] % features.shape[0]:
        raise ValueError(
            f"gather_fn returned shape {tuple(gathered.shape)} for local features {tuple(features.shape)}; "
            "expected (world, B, D) or (world*B, D) with the same B on every process"
        )
    return gathered


class ClipLoss(nn.Module):
    """Symmetric image–text contrastive loss (open_clip ``ClipLoss`` as used by BEiT-3 retrieval).

    ``logit_scale`` is the *log* temperature parameter of the model (``BEiT3ForRetrieval.logit_scale``, initialised
    to log(1/0.07)); it is exponentiated here and, like the reference, **not clamped**.

    Single process: logits = exp(s)·img·txtᵀ, labels = arange(B).
    Several processes: pass ``gather_fn``, a function that all-gathers a (B, D) tensor *keeping gradients*
    (e.g. ``lambda t: self.all_gather(t, sync_grads=True)`` inside a LightningModule). Each process then scores
    its local rows against all columns, with labels = arange(B) + B·rank.
    """

    def forward(
        self,
        image_feats: Tensor,
        text_feats: Tensor,
        logit_scale: Tensor,
        gather_fn: GatherFn | None = None,
        rank: int | None = None,
    ) -> ClipLossOutput:
        """Compute the loss.

        Args:
            image_feats: (B, D) image embeddings (normally L2-normalised).
            text_feats: (B, D) text embeddings of the matching captions, same order.
            logit_scale: scalar log-scale (exponentiated here).
            gather_fn: optional all-gather with gradients; see the class docstring.
            rank: this process's rank; defaults to ``torch.distributed.get_rank()`` when initialised, else 0.
        """
        if image_feats.shape != text_feats.shape:
            raise ValueError(f"image feats {tuple(image_feats.shape)} != text feats {tuple(text_feats.shape)}")
        batch = image_feats.shape[0]
        scale = logit_scale.exp()
        if gather_fn is None:
            all_image, all_text, rank = image_feats, text_feats, 0
        else:
            all_image = _gather_flat(gather_fn, image_feats)  # (world·B, D)
            all_text = _gather_flat(gather_fn, text_feats)  # (world·B, D)
            if rank is None:
                rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        logits_per_image = scale * image_feats @ all_text.T  # (B, world·B)
        logits_per_text = scale * text_feats @ all_image.T  # (B, world·B)
        labels = torch.arange(batch, device=image_feats.device) + batch * rank
        loss = (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
        return ClipLossOutput(loss, logits_per_image, logits_per_text)


class CaptioningLoss(nn.Module):
    """BEiT-3 captioning loss (``utils.BertCaptioningLoss``).

    Per masked token: KL(q ‖ softmax(logits)) summed over the vocabulary, with the smoothed target
    q = 1 − ε on the gold token and ε/(V − 1) elsewhere. Once ``global_step > drop_worst_after`` only the lowest
    ``(1 − drop_worst_ratio)`` fraction of the per-token losses is kept (the worst tokens, often label noise, are
    dropped). The result is the mean of the kept losses.
    """

    def __init__(
        self, label_smoothing: float = 0.1, drop_worst_ratio: float = 0.2, drop_worst_after: int = 12000
    ) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if not 0.0 <= drop_worst_ratio < 1.0:
            raise ValueError(f"drop_worst_ratio must be in [0, 1), got {drop_worst_ratio}")
        self.label_smoothing = label_smoothing
        self.drop_worst_ratio = drop_worst_ratio
        self.drop_worst_after = drop_worst_after

    def per_token(self, logits: Tensor, target: Tensor) -> Tensor:
        """(N, V) logits and (N,) gold ids -> (N,) per-token KL losses (before drop-worst)."""
        num_classes = logits.shape[-1]
        eps = self.label_smoothing
        gold = torch.zeros_like(logits, dtype=torch.float32).scatter_(1, target.view(-1, 1), 1.0)  # (N, V)
        smoothed = gold * (1.0 - eps) + (1.0 - gold) * (eps / (num_classes - 1))  # (N, V)
        log_probs = F.log_softmax(logits.float(), dim=-1)  # (N, V)
        # kl_div(input=log p, target=q) = q·(log q − log p), with 0·log 0 := 0 (matters only for ε = 0).
        return F.kl_div(log_probs, smoothed, reduction="none").sum(dim=-1)  # (N,)

    def forward(self, logits: Tensor, target: Tensor, global_step: int) -> Tensor:
        """Compute the loss.

        Args:
            logits: (N, V) logits at the N masked positions of the batch.
            target: (N,) gold token ids.
            global_step: optimiser step counter (drop-worst switches on strictly after ``drop_worst_after``).
        """
        if logits.dim() != 2 or target.shape != logits.shape[:1]:
            raise ValueError(f"expected logits (N, V) and target (N,), got {tuple(logits.shape)}, {target.shape}")
        losses = self.per_token(logits, target)  # (N,)
        if self.drop_worst_ratio > 0 and global_step > self.drop_worst_after:
            # max(1, ·): the reference's int() gives k = 0 (a NaN mean) for tiny batches of masked tokens.
            keep = max(1, int(losses.shape[0] * (1.0 - self.drop_worst_ratio)))
            losses, _ = torch.topk(losses, k=keep, largest=False)
        return losses.mean()
