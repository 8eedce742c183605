"""Datasets of BEiT-3 pretraining: monomodal images, monomodal texts and image-text pairs, each item masked.

Index files (written by ``beit3 prepare pretrain``, :mod:`beit3_lightning.data.index.pretrain`), one JSON object
per line, per kind and split (``train`` / ``val``):

* ``pretrain.images.<split>.jsonl``: ``{"image_path"}`` (+ ``"visual_tokens"`` when pre-computed)
* ``pretrain.texts.<split>.jsonl``: ``{"text_segment": [token ids]}``
* ``pretrain.pairs.<split>.jsonl``: ``{"image_path", "text_segment"}`` (+ ``"visual_tokens"``)

Items (collated by :func:`beit3_lightning.data.datasets.collate`):

* images: ``image`` (3, S, S) normalised with mean = std = 0.5, ``image_mask`` (N,) bool (True = masked patch,
  block-wise, :class:`~beit3_lightning.data.masking.BlockMaskingGenerator`), ``visual_tokens`` (N,) when the index
  holds them;
* texts: ``language_tokens`` (the masked input), ``mlm_labels`` (original id at masked positions, -100 elsewhere),
  ``padding_mask``;
* pairs: all of the above (the paper masks 50% of a pair's text tokens, 15% of a monomodal text's).

Masks come from the per-item generators of :class:`~beit3_lightning.data.datasets.Beit3Dataset` (seeded by seed,
epoch and index): reproducible, the same with any number of workers and after a resume.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from beit3_lightning.data.datasets import Beit3Dataset
from beit3_lightning.data.index.common import DatasetFormatError
from beit3_lightning.data.masking import BlockMaskingGenerator, mask_text_tokens

__all__ = [
    "PRETRAIN_KINDS",
    "PretrainImageDataset",
    "PretrainPairDataset",
    "PretrainTextDataset",
    "pretrain_index_name",
]

# The three kinds of pretraining data, in the order batches of a step are processed.
PRETRAIN_KINDS = ("images", "texts", "pairs")
PRETRAIN_SPLITS = ("train", "val")
# Stream tags of the masking randomness (the base class uses 0..2 for image, text and replacement).
_STREAM_IMAGE_MASK, _STREAM_TEXT_MASK = 10, 11


def pretrain_index_name(kind: str, split: str) -> str:
    """File name of one pretraining index: ``pretrain.<kind>.<split>.jsonl``."""
    return f"pretrain.{kind}.{split}.jsonl"


class _PretrainDataset(Beit3Dataset):
    """Shared masking of the three kinds. Args besides the base ones:

    image_masking: patch-mask generator (images and pairs).
    text_mask_prob: fraction of a text's tokens to predict (texts: 0.15, pairs: 0.5 in the paper).
    mask_token_id / vocab_size: of the tokenizer (random replacements are drawn from [3, vocab_size)).
    replace_probs: (mask, keep, random) probabilities of a predicted token (BERT: 0.8, 0.1, 0.1).
    """

    kind: ClassVar[str]

    def __init__(
        self,
        root: str,
        split: str,
        *args: Any,
        image_masking: BlockMaskingGenerator | None = None,
        text_mask_prob: float = 0.15,
        mask_token_id: int | None = None,
        replace_probs: tuple[float, float, float] = (0.8, 0.1, 0.1),
        **kwargs: Any,
    ) -> None:
        self.task = f"pretrain {self.kind}"
        self.split_files = {split: [pretrain_index_name(self.kind, split)] for split in PRETRAIN_SPLITS}
        super().__init__(root, split, *args, **kwargs)
        if not 0.0 < text_mask_prob < 1.0:
            raise ValueError(f"text_mask_prob must be in (0, 1), got {text_mask_prob}")
        self.image_masking = image_masking
        self.text_mask_prob = text_mask_prob
        self.mask_token_id = mask_token_id
        self.replace_probs = tuple(replace_probs)

    def _validate(self, record: dict[str, Any], where: str) -> None:
        for name in self.required_fields:
            if name not in record:
                raise DatasetFormatError(
                    f"{where}: missing field {name!r} for a pretraining {self.kind} record (keys: {sorted(record)}); "
                    "rebuild the index with `beit3 prepare pretrain`."
                )
        if "image_path" in self.required_fields:
            self._check_image_path(record, "image_path", where)
        if "text_segment" in self.required_fields:
            self._check_token_list(record["text_segment"], where)
        tokens = record.get("visual_tokens")
        if tokens is not None and (not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens)):
            raise DatasetFormatError(f"{where}: 'visual_tokens' must be a list of code ids, got {tokens!r:.80}")

    # -- masked parts ---------------------------------------------------------------------------------------------
    def masked_image(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        if self.image_masking is None:
            raise ValueError(f"{self.task}: image_masking is required for items with images")
        item: dict[str, Any] = {"image": self.image_tensor(record["image_path"], index)}
        mask = self.image_masking(self.generator(index, _STREAM_IMAGE_MASK))
        item["image_mask"] = torch.from_numpy(mask.reshape(-1))  # (N,) bool, row-major over the patch grid
        tokens = record.get("visual_tokens")
        if tokens is not None:
            if len(tokens) != mask.size:
                raise DatasetFormatError(
                    f"{self.source_of(index)}: {len(tokens)} visual tokens, but the model has {mask.size} patches; "
                    "re-run `beit3 prepare pretrain --visual-tokenizer ...` for this image size"
                )
            item["visual_tokens"] = torch.tensor(tokens, dtype=torch.long)
        return item

    def masked_text(self, index: int) -> dict[str, Any]:
        if self.mask_token_id is None or self.vocab_size is None:
            raise ValueError(f"{self.task}: mask_token_id and vocab_size are required for items with text")
        tokens, padding_mask, num_tokens = self.text(self.records[index])
        inputs, labels = mask_text_tokens(
            tokens,
            num_tokens,
            self.text_mask_prob,
            self.mask_token_id,
            self.vocab_size,
            self.generator(index, _STREAM_TEXT_MASK),
            replace_probs=self.replace_probs,
        )
        return {"language_tokens": inputs, "mlm_labels": labels, "padding_mask": padding_mask}


class PretrainImageDataset(_PretrainDataset):
    """Monomodal images: the image with a block-wise patch mask."""

    kind = "images"
    required_fields = ("image_path",)
    text_field = None

    def build_item(self, index: int) -> dict[str, Any]:
        return self.masked_image(index)


class PretrainTextDataset(_PretrainDataset):
    """Monomodal texts: token ids with BERT-style masking."""

    kind = "texts"
    required_fields = ("text_segment",)

    def build_item(self, index: int) -> dict[str, Any]:
        return self.masked_text(index)


class PretrainPairDataset(_PretrainDataset):
    """Image-text pairs: both the image and its text masked."""

    kind = "pairs"
    required_fields = ("image_path", "text_segment")

    def build_item(self, index: int) -> dict[str, Any]:
        return {**self.masked_image(index), **self.masked_text(index)}


DATASET_OF_KIND: dict[str, type[_PretrainDataset]] = {
    "images": PretrainImageDataset,
    "texts": PretrainTextDataset,
    "pairs": PretrainPairDataset,
}
