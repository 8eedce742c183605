"""``PretrainDataModule``: mixed batches of images, texts and image-text pairs for masked data modeling.

Every training step gets one batch of each kind (a dict ``{"images": ..., "texts": ..., "pairs": ...}``), as the
BEiT-3 paper does (each 6144 batch = 2048 images + 2048 texts + 2048 pairs). ``batch_size`` is split between the
kinds by the ``mix`` weights; a weight of 0 leaves a kind out. The kinds are read by one ``ResumableDataLoader``
each, joined by Lightning's ``CombinedLoader`` in ``min_size`` mode: an epoch ends when the kind with the fewest
batches runs out (pretraining is usually bounded by ``max_steps``). Each loader's position goes into the Lightning
checkpoint, so a resumed run continues with the exact batches it would have seen.

Validation returns one loader per kind (``dataloader_idx`` 0, 1, 2 in the order of :data:`PRETRAIN_KINDS` present).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import CombinedLoader

from beit3_lightning.data.datamodules import Beit3DataModule
from beit3_lightning.data.masking import BlockMaskingGenerator
from beit3_lightning.data.pretraining import DATASET_OF_KIND, PRETRAIN_KINDS, pretrain_index_name
from beit3_lightning.data.shards.format import iter_shard_samples, join_url, read_manifest
from beit3_lightning.data.transforms import ImageTransform, build_vl_transform

__all__ = ["PretrainDataModule", "split_batch_size"]

SAMPLE_VISUAL_TOKENIZER = "sample"


def split_batch_size(batch_size: int, mix: dict[str, float]) -> dict[str, int]:
    """Per-kind batch sizes summing to ``batch_size``, proportional to ``mix`` (largest remainder), each >= 1."""
    unknown = set(mix) - set(PRETRAIN_KINDS)
    if unknown:
        raise ValueError(f"unknown pretraining data kind(s) {sorted(unknown)} in mix; use {', '.join(PRETRAIN_KINDS)}")
    if any(weight < 0 for weight in mix.values()):
        raise ValueError(f"mix weights must be >= 0, got {mix}")
    active = [kind for kind in PRETRAIN_KINDS if mix.get(kind, 0) > 0]
    if not active:
        raise ValueError(f"mix gives no kind a positive weight: {mix}")
    if batch_size < len(active):
        raise ValueError(f"batch_size {batch_size} is smaller than the number of mixed kinds ({len(active)})")
    total = sum(mix[kind] for kind in active)
    exact = {kind: batch_size * mix[kind] / total for kind in active}
    sizes = {kind: max(1, math.floor(value)) for kind, value in exact.items()}
    by_remainder = sorted(active, key=lambda kind: (sizes[kind] - exact[kind], PRETRAIN_KINDS.index(kind)))
    for kind in by_remainder[: batch_size - sum(sizes.values())]:
        sizes[kind] += 1
    return sizes


class PretrainDataModule(Beit3DataModule):
    """Masked data modeling on images, texts and image-text pairs (index files of ``beit3 prepare pretrain``).

    Args (besides the shared ones of :class:`Beit3DataModule`; ``batch_size`` is the total over the kinds):
        visual_tokenizer: the frozen tokenizer whose codes the model predicts: a k-means tokenizer
            (``.safetensors``, ``beit3 prepare visual-tokenizer``), BEiT v2's VQ-KD (``vqkd_encoder_*.pth``), or
            ``sample`` for the one the sample data ships (``<root>/visual_tokenizer.safetensors``). When the index
            files hold pre-computed ``visual_tokens`` they are used and the tokenizer only gives the codebook size.
        mix: weight of each kind in a step's batch (``images``, ``texts``, ``pairs``); the paper uses equal thirds.
        text_mask_prob: fraction of a monomodal text's tokens predicted (paper: 0.15).
        pair_text_mask_prob: fraction of an image-text pair's text tokens predicted (paper: 0.5).
        image_mask_ratio: fraction of the patches masked, block-wise (paper: 0.4).
        min_mask_block: smallest masked block in patches (BEiT: 16; clipped on small grids).
        bert_replacement: predicted text tokens become ``<mask>`` 80%, stay 10%, random 10% (BERT); False: always
            ``<mask>``.
        shards: train from shard sets instead of the JSONL train indexes: ``<shards>/<kind>`` (``images``,
            ``texts``, ``pairs``; directories or URLs written by ``beit3 prepare shards``) for every kind in the mix,
            or a mapping kind -> shard set or list of shard sets (``{pairs: [shards/cc3m, shards/coco], ...}``).
            Validation reads the JSONL val indexes under ``root`` when they exist, and is skipped otherwise.
    """

    task = "pretrain"

    def __init__(
        self,
        root: str,
        *args: Any,
        visual_tokenizer: str = SAMPLE_VISUAL_TOKENIZER,
        mix: dict[str, float] | None = None,
        text_mask_prob: float = 0.15,
        pair_text_mask_prob: float = 0.5,
        image_mask_ratio: float = 0.4,
        min_mask_block: int = 16,
        bert_replacement: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, *args, **kwargs)
        self.mix = dict(mix) if mix is not None else {kind: 1.0 for kind in PRETRAIN_KINDS}
        self.kind_batch_sizes = split_batch_size(self.batch_size, self.mix)  # checks the mix now, not at fit
        self.kinds = tuple(self.kind_batch_sizes)
        self.text_mask_prob = text_mask_prob
        self.pair_text_mask_prob = pair_text_mask_prob
        self.image_mask_ratio = image_mask_ratio
        self.min_mask_block = min_mask_block
        self.replace_probs = (0.8, 0.1, 0.1) if bert_replacement else (1.0, 0.0, 0.0)
        self.visual_tokenizer_path = visual_tokenizer
        self._visual_tokenizer = None

    # -- the visual tokenizer -------------------------------------------------------------------------------------
    @property
    def visual_tokenizer(self):
        """The frozen visual tokenizer (loaded on first use, after the sample is generated when asked for)."""
        if self._visual_tokenizer is None:
            from beit3_lightning.data.sample.pretrain import VISUAL_TOKENIZER_FILE
            from beit3_lightning.modeling.visual_tokenizers import load_visual_tokenizer

            self.prepare_data()
            path = self.visual_tokenizer_path
            if path == SAMPLE_VISUAL_TOKENIZER:
                path = str(Path(self.root) / VISUAL_TOKENIZER_FILE)
            self._visual_tokenizer = load_visual_tokenizer(path)
        return self._visual_tokenizer

    @property
    def codebook_size(self) -> int:
        """Codes of the visual tokenizer: the size of the model's MIM head (linked to the task by the CLI)."""
        return self.visual_tokenizer.codebook_size

    # -- datasets ---------------------------------------------------------------------------------------------------
    def transform(self, is_train: bool) -> ImageTransform:
        """Random resized crop (scale 0.5-1) + flip for training, squash resize for evaluation; mean = std = 0.5."""
        return build_vl_transform(is_train, self.img_size, interpolation=self.interpolation)

    def kind_dataset(self, kind: str, split: str, streamed: bool = False):
        """The dataset of one kind and split (built once and cached as ``"<kind>.<split>"``); ``streamed``: the
        record-less one that builds the items of a shard stream."""
        key = f"{kind}.{split}"
        if key not in self.datasets:
            grid = self.img_size // self._patch_size()
            masking = BlockMaskingGenerator(grid, self.image_mask_ratio, min_block_patches=self.min_mask_block)
            dataset = DATASET_OF_KIND[kind](
                root=self.root,
                split=split,
                transform=self.transform(is_train=False),
                max_text_len=self.max_text_len,
                index_dir=self.index_dir,
                skip_bad_samples=self.skip_bad_samples,
                skip_log=self.skip_log,
                seed=self.seed,
                vocab_size=self.tokenizer.vocab_size,
                image_masking=masking,
                text_mask_prob=self.pair_text_mask_prob if kind == "pairs" else self.text_mask_prob,
                mask_token_id=self.tokenizer.mask_token_id,
                replace_probs=self.replace_probs,
                **({"records": []} if streamed else {}),
            )
            self.datasets[key] = dataset
            # Pre-computed visual tokens belong to the unaugmented image: such an index trains without crop / flip.
            first = self._first_shard_record(kind) if streamed else (dataset.records[0] if dataset.records else {})
            precomputed = "visual_tokens" in first
            if split == "train" and not precomputed:
                dataset.transform = self.transform(is_train=True)
        return self.datasets[key]

    def _first_shard_record(self, kind: str) -> dict[str, Any]:
        location = self.kind_shards(kind)
        location = location[0] if isinstance(location, list) else location
        url = join_url(location, read_manifest(location).shards[0].name)
        return next(iter_shard_samples(url))[1]

    def kind_shards(self, kind: str) -> str | list[str]:
        """The shard set(s) of one kind: ``shards[kind]`` when ``shards`` maps kinds, else ``<shards>/<kind>``."""
        if isinstance(self.shards, dict):
            if kind not in self.shards:
                raise ValueError(f"shards has no entry for {kind!r} (mixed kinds: {', '.join(self.kinds)})")
            return self.shards[kind]
        if not isinstance(self.shards, str):
            raise ValueError("PretrainDataModule.shards is a directory holding images/, texts/, pairs/ or a mapping "
                             "kind -> shard set(s)")  # fmt: skip
        return join_url(self.shards, kind)

    def kind_train_stream(self, kind: str):
        """The training stream of one kind (from ``shards``)."""
        item_dataset = self.kind_dataset(kind, "train", streamed=True)
        return self.stream_of(kind, self.kind_shards(kind), item_dataset, kind, self.kind_batch_sizes[kind])

    def _patch_size(self) -> int:
        return self.visual_tokenizer.patch_size * self.img_size // self.visual_tokenizer.image_size

    def dataset(self, split: str):
        raise TypeError("PretrainDataModule holds one dataset per kind: use kind_dataset(kind, split)")

    @property
    def test_split(self) -> str:
        return "val"  # pretraining data has no test split

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()
        splits = {"fit": ["train", "val"], "validate": ["val"], "test": ["val"], "predict": ["val"]}
        for split in splits.get(stage, ["train", "val"]):
            for kind in self.kinds:
                if split == "train" and self.shards is not None:
                    self.kind_train_stream(kind)
                elif split == "val" and not self._has_val_index(kind):
                    continue
                else:
                    self.kind_dataset(kind, split)

    def _has_val_index(self, kind: str) -> bool:
        """Whether the JSONL val index of ``kind`` exists (training from shards may come without one)."""
        path = Path(self.index_dir) / pretrain_index_name(kind, "val")
        return self.shards is None or path.is_file()

    # -- loaders ----------------------------------------------------------------------------------------------------
    def train_dataloader(self) -> CombinedLoader:
        if self.shards is not None:
            loaders = {kind: self.streaming_train_loader(self.kind_train_stream(kind)) for kind in self.kinds}
            return CombinedLoader(loaders, mode="min_size")
        loaders = {
            kind: self.resumable_train_loader(self.kind_dataset(kind, "train"), self.kind_batch_sizes[kind])
            for kind in self.kinds
        }
        return CombinedLoader(loaders, mode="min_size")

    def num_train_batches(self) -> int:
        """Training steps per epoch on this process: the kind with the fewest batches ends the epoch."""
        if self.shards is not None:
            streams = [self.kind_train_stream(kind) for kind in self.kinds]
            for stream in streams:
                stream.num_workers = self.num_workers
            return min(sum(stream.worker_batches()) for stream in streams)
        trainer = getattr(self, "trainer", None)
        world_size = trainer.world_size if trainer is not None else 1
        return min(
            math.ceil(len(self.kind_dataset(kind, "train")) / world_size) // self.kind_batch_sizes[kind]
            for kind in self.kinds
        )

    def val_kinds(self) -> tuple[str, ...]:
        """Kinds with a non-empty validation split, in ``dataloader_idx`` order."""
        return tuple(
            kind for kind in self.kinds if self._has_val_index(kind) and len(self.kind_dataset(kind, "val")) > 0
        )

    def val_dataloader(self):
        return [
            self._loader(self.kind_dataset(kind, "val"), self.eval_batch_size, shuffle=False, drop_last=False)
            for kind in self.val_kinds()
        ]

    def test_dataloader(self):
        return self.val_dataloader()

    def predict_dataloader(self):
        raise NotImplementedError("pretraining has no predictions; fine-tune the checkpoint (init_from) and predict")
