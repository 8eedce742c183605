"""TensorBoard pictures and texts of masked data modeling: what was masked and what the model predicted.

Predictions and targets arrive flattened over the masked positions of a batch, in row-major (item, position)
order; the first items' rows are cut out with the cumulative mask counts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from beit3_lightning.data.masking import IGNORE_INDEX

CORRECT = torch.tensor([0.1, 0.75, 0.2])  # green
WRONG = torch.tensor([0.85, 0.15, 0.15])  # red
SHADE = 0.35  # masked patches: image darkened to this fraction


def _rows_of_item(mask: torch.Tensor, item: int) -> slice:
    """Rows of the flattened masked positions that belong to ``item`` (mask (B, N) bool)."""
    counts = mask.sum(dim=1).tolist()
    start = sum(counts[:item])
    return slice(start, start + counts[item])


def image_panel(batch: dict[str, Any], out: dict[str, Any], items: int) -> list[torch.Tensor]:
    """Per item a (3, H, 2W) picture in [0, 1]: left the input with its masked patches shaded, right the agreement
    map (masked patches green where the predicted visual token equals the tokenizer's, red where not)."""
    mask = batch["image_mask"].bool().cpu()  # (B, N)
    grid = int(mask.shape[1] ** 0.5)
    pictures = []
    for item in range(min(items, mask.shape[0])):
        image = (batch["image"][item].float().cpu() * 0.5 + 0.5).clamp(0, 1)  # (3, H, W)
        patch = image.shape[-1] // grid
        rows = _rows_of_item(mask, item)
        hit = (out["predictions"]["mim"][rows] == out["targets"]["mim"][rows]).cpu()
        shaded, agreement = image.clone(), image.clone() * 0.5
        for k, position in enumerate(torch.nonzero(mask[item]).flatten().tolist()):
            top, left = divmod(position, grid)
            box = (slice(None), slice(top * patch, (top + 1) * patch), slice(left * patch, (left + 1) * patch))
            shaded[box] *= SHADE
            agreement[box] = (CORRECT if hit[k] else WRONG).view(3, 1, 1)
        pictures.append(torch.cat([shaded, agreement], dim=2))
    return pictures


def text_panel(
    batch: dict[str, Any], out: dict[str, Any], decode: Callable[[torch.Tensor], str], items: int
) -> list[str]:
    """Per item two lines: the masked input (masked words left out) and ``true -> predicted`` at each masked
    position (markdown line break between them, plain text otherwise)."""
    labels = batch["mlm_labels"].cpu()
    mask = labels != IGNORE_INDEX
    texts = []
    for item in range(min(items, labels.shape[0])):
        rows = _rows_of_item(mask, item)
        positions = torch.nonzero(mask[item]).flatten().tolist()
        predicted = out["predictions"]["mlm"][rows].cpu().tolist()
        pairs = [f"{_word(decode, labels[item, p].item())} -> {_word(decode, q)}" for p, q in zip(positions, predicted)]
        masked_input = decode(batch["language_tokens"][item].cpu())
        texts.append(f"masked input: {masked_input}  \ntrue -> predicted: " + ", ".join(pairs))
    return texts


def _word(decode: Callable[[torch.Tensor], str], token: int) -> str:
    """One token as text (a word piece; ``?`` for a special token, which decodes to nothing)."""
    return decode(torch.tensor([token])).strip() or "?"
