"""The visual-tokenizer protocol of masked image modelling: images → one code id per patch.

BEiT-3's image objective predicts, for each masked patch, the id a frozen *visual tokenizer* gives that patch. Any
tokenizer that follows :class:`VisualTokenizer` plugs into pretraining:

* ``get_codebook_indices(images)``: images (B, 3, H, W) with values in **[0, 1]** (un-normalised; each tokenizer
  applies its own normalisation) → code ids (B, N) long, row-major over the patch grid, N = (H // patch_size)².
* ``codebook_size``: number of codes (the MIM head's output size).
* ``image_size`` / ``patch_size``: the input resolution it expects and its patch size, so its grid can be checked
  against the backbone's (the two grids must be equal: one code per backbone patch).

Tokenizers are frozen ``nn.Module`` s (``eval()``, no gradient); pretraining calls them under ``torch.no_grad``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class VisualTokenizer(Protocol):
    codebook_size: int
    image_size: int
    patch_size: int

    def get_codebook_indices(self, images: Tensor) -> Tensor:
        """(B, 3, image_size, image_size) in [0, 1] → (B, (image_size // patch_size) ** 2) long code ids."""
        ...


def grid_size(tokenizer: VisualTokenizer) -> int:
    """Patches per side of the tokenizer's grid."""
    return tokenizer.image_size // tokenizer.patch_size


def check_grid_matches(tokenizer: VisualTokenizer, img_size: int, patch_size: int) -> None:
    """ValueError unless the tokenizer gives one code per backbone patch at the backbone's resolution."""
    model_grid = img_size // patch_size
    if grid_size(tokenizer) != model_grid:
        raise ValueError(
            f"the visual tokenizer's patch grid ({tokenizer.image_size}px / patch {tokenizer.patch_size} = "
            f"{grid_size(tokenizer)}x{grid_size(tokenizer)}) differs from the model's ({img_size}px / patch "
            f"{patch_size} = {model_grid}x{model_grid}); masked image modelling needs one code per model patch: "
            "use a tokenizer fitted for this image and patch size"
        )
