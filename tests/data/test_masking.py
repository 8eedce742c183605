"""Masking statistics of pretraining: block-wise patch masks and BERT-style text masks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from beit3_lightning.data.masking import (
    IGNORE_INDEX,
    BlockMaskingGenerator,
    mask_text_tokens,
    num_text_tokens_to_mask,
)


def _blocks(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a bool mask."""
    seen = np.zeros_like(mask)
    components = []
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        stack, cells = [start], []
        seen[start] = True
        while stack:
            r, c = stack.pop()
            cells.append((r, c))
            for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                if 0 <= nr < mask.shape[0] and 0 <= nc < mask.shape[1] and mask[nr, nc] and not seen[nr, nc]:
                    seen[nr, nc] = True
                    stack.append((nr, nc))
        components.append(np.array(cells))
    return components


@pytest.mark.parametrize("grid,ratio", [(14, 0.4), (14, 0.3), (7, 0.4), (3, 0.4)])
def test_block_mask_has_exactly_the_ratio(grid, ratio):
    generator = BlockMaskingGenerator(grid, ratio)
    rng = np.random.default_rng(0)
    for _ in range(200):
        mask = generator(rng)
        assert mask.shape == (grid, grid) and mask.dtype == bool
        assert mask.sum() == round(ratio * grid * grid)


def test_block_mask_is_made_of_blocks_with_bounded_aspect():
    generator = BlockMaskingGenerator(14, 0.4, min_block_patches=16, min_aspect=0.3)
    rng = np.random.default_rng(1)
    component_sizes, aspects, per_mask = [], [], []
    for _ in range(300):
        blocks = _blocks(generator(rng))
        per_mask.append(len(blocks))
        for cells in blocks:
            component_sizes.append(len(cells))
            if len(cells) >= 16:
                height = np.ptp(cells[:, 0]) + 1
                width = np.ptp(cells[:, 1]) + 1
                aspects.append(height / width)
    sizes = np.array(component_sizes)
    # Most masked patches lie in large connected blocks, not scattered singles (random masking: mostly singles).
    # Measured with seed 1: 95% of the masked patches in blocks of >= 16, 2.2 blocks per mask (blocks of any size
    # >= 1 instead: 92% and 3.0).
    assert sizes[sizes >= 16].sum() / sizes.sum() > 0.93
    assert np.mean(per_mask) < 2.6
    # Block shapes follow the aspect range [0.3, 1/0.3] (merged blocks can stretch a bounding box a little): none
    # beyond 4:1 and 90% within 0.4..2.5 (with aspects drawn from [e^-3, e^3] instead: 3.5% beyond 4:1, q95 2.8).
    aspects = np.array(aspects)
    assert np.median(aspects) == pytest.approx(1.0, abs=0.5)
    assert np.mean((aspects > 4) | (aspects < 0.25)) < 0.01
    assert np.quantile(aspects, 0.05) > 0.4 and np.quantile(aspects, 0.95) < 2.5


def test_random_masking_would_fail_the_block_statistic():
    # The statistic above can fail: scattered masks of the same count have mostly small components.
    rng = np.random.default_rng(2)
    sizes = []
    for _ in range(100):
        flat = np.zeros(196, dtype=bool)
        flat[rng.choice(196, 78, replace=False)] = True
        sizes += [len(c) for c in _blocks(flat.reshape(14, 14))]
    sizes = np.array(sizes)
    assert sizes[sizes >= 16].sum() / sizes.sum() < 0.9


def test_block_mask_is_deterministic_per_seed_and_varies_across_seeds():
    generator = BlockMaskingGenerator(14, 0.4)
    first = generator(np.random.default_rng(7))
    assert np.array_equal(first, generator(np.random.default_rng(7)))
    assert not np.array_equal(first, generator(np.random.default_rng(8)))


def test_block_mask_rejects_bad_arguments():
    with pytest.raises(ValueError, match="mask_ratio"):
        BlockMaskingGenerator(14, 1.0)
    with pytest.raises(ValueError, match="min_aspect"):
        BlockMaskingGenerator(14, 0.4, min_aspect=0)


def test_text_mask_count_and_positions():
    tokens = [0, *range(10, 30), 2, 1, 1, 1]  # bos, 20 tokens, eos, 3 pads
    num_tokens = 22
    inputs, labels = mask_text_tokens(tokens, num_tokens, 0.15, 4, 1000, np.random.default_rng(0))
    predicted = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
    assert len(predicted) == num_text_tokens_to_mask(20, 0.15) == 3
    assert all(1 <= i <= 20 for i in predicted)  # never bos (0), eos (21) or padding
    assert all(labels[i] == tokens[i] for i in predicted)
    assert [inputs[i] for i in range(len(tokens)) if i not in predicted] == [
        tokens[i] for i in range(len(tokens)) if i not in predicted
    ]


def test_text_mask_replacement_is_80_10_10():
    tokens = [0, *range(10, 110), 2]
    rng = np.random.default_rng(3)
    counts = {"mask": 0, "keep": 0, "random": 0}
    for _ in range(400):
        inputs, labels = mask_text_tokens(tokens, len(tokens), 0.5, 4, 5000, rng)
        for i, label in enumerate(labels):
            if label == IGNORE_INDEX:
                continue
            counts["mask" if inputs[i] == 4 else "keep" if inputs[i] == label else "random"] += 1
    total = sum(counts.values())
    assert total == 400 * 50
    assert counts["mask"] / total == pytest.approx(0.8, abs=0.01)
    assert counts["keep"] / total == pytest.approx(0.1, abs=0.01)
    assert counts["random"] / total == pytest.approx(0.1, abs=0.01)


def test_text_mask_without_bert_replacement_always_masks():
    tokens = [0, *range(10, 50), 2]
    inputs, labels = mask_text_tokens(tokens, len(tokens), 0.5, 4, 5000, np.random.default_rng(0), (1.0, 0.0, 0.0))
    assert all(inputs[i] == 4 for i, label in enumerate(labels) if label != IGNORE_INDEX)


def test_every_text_predicts_at_least_one_token():
    assert num_text_tokens_to_mask(1, 0.15) == 1
    assert num_text_tokens_to_mask(3, 0.15) == 1
    assert num_text_tokens_to_mask(10, 0.5) == 5
    assert num_text_tokens_to_mask(0, 0.5) == 0
    assert num_text_tokens_to_mask(7, 0.15) == max(1, math.floor(7 * 0.15 + 0.5))
