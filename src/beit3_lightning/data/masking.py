"""Masking for BEiT-3's masked data modeling: block-wise patch masks (images) and BERT-style token masks (texts).

Both take an explicit random generator, so a dataset item's masks are a pure function of ``(seed, epoch, index)``
(see :mod:`beit3_lightning.data.datasets`): reproducible, independent of the number of DataLoader workers, and the
same after a resume.

Block-wise masking follows BEiT (Bao et al. 2022, Algorithm 1) as BEiT v2 uses it (unilm ``beit2/masking_generator.py``
``MaskingGenerator``), which the BEiT-3 paper applies with a 40% ratio: rectangles of at least ``min_block_patches``
patches with an aspect ratio in ``[min_aspect, 1 / min_aspect]`` are masked until the target count is reached; the
count is then made exact (random masked patches unmasked, or random unmasked ones masked), so every image of a batch
has the same number of masked patches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["IGNORE_INDEX", "BlockMaskingGenerator", "mask_text_tokens", "num_text_tokens_to_mask"]

# Label of positions that are not predicted (torch cross_entropy's default ignore_index).
IGNORE_INDEX = -100
# Tries to place one block before giving up on this round (BEiT's value).
_BLOCK_ATTEMPTS = 10


class BlockMaskingGenerator:
    """Block-wise patch masks on a ``grid x grid`` patch grid.

    Args:
        grid: patches per side (image size // patch size).
        mask_ratio: fraction of the patches to mask (BEiT-3: 0.4); the count is ``round(mask_ratio * grid**2)``.
        min_block_patches: smallest block (BEiT: 16); clipped to the masked count on small grids.
        max_block_patches: largest block (default: the masked count).
        min_aspect: blocks have height/width in ``[min_aspect, 1 / min_aspect]`` (BEiT: 0.3).
    """

    def __init__(
        self,
        grid: int,
        mask_ratio: float = 0.4,
        min_block_patches: int = 16,
        max_block_patches: int | None = None,
        min_aspect: float = 0.3,
    ) -> None:
        if grid < 1:
            raise ValueError(f"grid must be >= 1, got {grid}")
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        if not 0.0 < min_aspect <= 1.0:
            raise ValueError(f"min_aspect must be in (0, 1], got {min_aspect}")
        self.grid = grid
        self.num_patches = grid * grid
        self.num_masked = int(round(mask_ratio * self.num_patches))
        self.max_block_patches = min(max_block_patches or self.num_masked, self.num_masked)
        self.min_block_patches = max(1, min(min_block_patches, self.max_block_patches))
        self.log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))

    def __repr__(self) -> str:
        return (
            f"BlockMaskingGenerator(grid={self.grid}, masked={self.num_masked}/{self.num_patches}, "
            f"blocks={self.min_block_patches}..{self.max_block_patches})"
        )

    def _place_block(self, mask: np.ndarray, max_new: int, rng: np.random.Generator) -> int:
        """Mask one rectangle adding 1..max_new new patches; returns how many were added (0: none fitted)."""
        for _ in range(_BLOCK_ATTEMPTS):
            area = rng.uniform(min(self.min_block_patches, max_new), max_new)  # the last blocks may be small
            aspect = math.exp(rng.uniform(*self.log_aspect))
            height = int(round(math.sqrt(area * aspect)))
            width = int(round(math.sqrt(area / aspect)))
            if not (0 < height < self.grid and 0 < width < self.grid) and self.grid > 1:
                continue
            height, width = min(height, self.grid), min(width, self.grid)
            top = int(rng.integers(0, self.grid - height + 1))
            left = int(rng.integers(0, self.grid - width + 1))
            block = mask[top : top + height, left : left + width]
            new = int(block.size - block.sum())
            if 0 < new <= max_new:
                block[:] = True
                return new
        return 0

    def __call__(self, rng: np.random.Generator) -> np.ndarray:
        """A (grid, grid) bool mask with exactly ``num_masked`` True entries."""
        mask = np.zeros((self.grid, self.grid), dtype=bool)
        count = 0
        while count < self.num_masked:
            added = self._place_block(mask, min(self.num_masked - count, self.max_block_patches), rng)
            if added == 0:
                break
            count += added
        # Exact count: blocks stop short (nothing fitted the remainder) or, never, overshoot.
        flat = mask.reshape(-1)
        if count < self.num_masked:
            free = np.flatnonzero(~flat)
            flat[rng.choice(free, self.num_masked - count, replace=False)] = True
        elif count > self.num_masked:
            taken = np.flatnonzero(flat)
            flat[rng.choice(taken, count - self.num_masked, replace=False)] = False
        return mask


def num_text_tokens_to_mask(num_maskable: int, mask_prob: float) -> int:
    """``max(1, round(num_maskable * mask_prob))`` (at most ``num_maskable``): every text predicts something."""
    if num_maskable <= 0:
        return 0
    return min(num_maskable, max(1, int(math.floor(num_maskable * mask_prob + 0.5))))


def mask_text_tokens(
    tokens: Sequence[int],
    num_tokens: int,
    mask_prob: float,
    mask_token_id: int,
    vocab_size: int,
    rng: np.random.Generator,
    replace_probs: tuple[float, float, float] = (0.8, 0.1, 0.1),
    first_random_id: int = 3,
) -> tuple[list[int], list[int]]:
    """Masked-language-modelling input and labels for one framed text (``[bos] ... [eos] pad...``).

    ``num_text_tokens_to_mask(num_tokens - 2, mask_prob)`` positions among the real tokens between bos and eos are
    chosen; each becomes ``<mask>``, stays, or becomes a random id in ``[first_random_id, vocab_size)`` with
    ``replace_probs`` (BERT's 80/10/10; ``(1, 0, 0)`` always masks). Returns ``(input_ids, labels)``: labels hold the
    original id at chosen positions and ``IGNORE_INDEX`` elsewhere (bos, eos and padding are never predicted).
    """
    if abs(sum(replace_probs) - 1.0) > 1e-6 or min(replace_probs) < 0:
        raise ValueError(f"replace_probs must be 3 non-negative probabilities summing to 1, got {replace_probs}")
    inputs = list(tokens)
    labels = [IGNORE_INDEX] * len(inputs)
    maskable = np.arange(1, num_tokens - 1)  # between bos and eos
    chosen = rng.choice(maskable, num_text_tokens_to_mask(len(maskable), mask_prob), replace=False)
    p_mask, p_keep, _ = replace_probs
    for position in sorted(int(p) for p in chosen):
        labels[position] = inputs[position]
        draw = rng.random()
        if draw < p_mask:
            inputs[position] = mask_token_id
        elif draw >= p_mask + p_keep:
            inputs[position] = int(rng.integers(first_random_id, vocab_size))
    return inputs, labels
