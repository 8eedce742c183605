"""LightningDataModules for the BEiT-3 fine-tuning tasks (unilm ``datasets.create_downstream_dataset``).

All DataModules share :class:`Beit3DataModule`. Compared with the reference loaders:

* Training: shuffled, ``drop_last=True``, per-GPU ``batch_size``. The sampler is an :class:`EpochDistributedSampler`
  (a ``DistributedSampler`` sized from the attached trainer, one replica without one), so Lightning keeps it and
  its ``set_epoch`` also reaches the dataset: augmentation and caption masking change every epoch and are
  reproducible from ``seed`` (see :mod:`beit3_lightning.data.datasets`).
* Validation / test / predict use the **evaluation transforms, no shuffling and drop_last=False**, with
  ``eval_batch_size`` (default ``int(1.5 * batch_size)``). The reference validates during training with the
  *training* transforms, a shuffled sampler and ``drop_last=True`` (``docs/reference.md#splits-and-loaders``); we
  fix that so the "best" checkpoint is chosen on deterministic metrics over the whole split.
"""

from __future__ import annotations

import math
import os
import random
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from beit3_lightning.data.datasets import (
    BadSampleError,
    Beit3Dataset,
    CaptioningDataset,
    ImageNetDataset,
    NLVR2Dataset,
    RetrievalDataset,
    VQAv2Dataset,
    collate,
    load_answer2label,
)
from beit3_lightning.data.index.common import read_json_lines
from beit3_lightning.data.segmentation import (
    SegmentationDataset,
    SegmentationEvalTransform,
    SegmentationTrainTransform,
    read_class_info,
    segmentation_collate,
)
from beit3_lightning.data.shards.format import ShardFormatError, read_manifest
from beit3_lightning.data.shards.stream import DEFAULT_SHUFFLE_BUFFER, ShardStream, StreamingLoader
from beit3_lightning.data.tokenizer import Beit3Tokenizer
from beit3_lightning.data.transforms import ImageTransform, build_transform
from beit3_lightning.task_table import datasets_of_head

__all__ = [
    "Beit3DataModule",
    "CaptioningDataModule",
    "EpochDistributedSampler",
    "ResumableDataLoader",
    "ImageNetDataModule",
    "NLVR2DataModule",
    "RetrievalDataModule",
    "SegmentationDataModule",
    "VQAv2DataModule",
    "seed_worker",
]

Stage = Literal["fit", "validate", "test", "predict"] | None
# generate_sample writes the embedded sample only into a directory `<anything>/sample/<dataset>`.
SAMPLE_DIR_NAME = "sample"
# The skip fraction is judged once this many items were read (one bad file among the first ten is not a trend).
MIN_ITEMS_FOR_SKIP_FRACTION = 100
# The datasets a shared DataModule serves, from the task table (the CLI lists and checks them).
RetrievalDatasetName = Literal[datasets_of_head("retrieval")]  # type: ignore[valid-type]
CaptioningDatasetName = Literal[datasets_of_head("captioning")]  # type: ignore[valid-type]
SegmentationDatasetName = Literal[datasets_of_head("segmentation")]  # type: ignore[valid-type]


class EpochDistributedSampler(DistributedSampler):
    """``DistributedSampler`` whose ``set_epoch`` (called by Lightning every epoch) also sets the dataset's epoch,
    and which can skip the start of one epoch (resuming from a mid-epoch checkpoint)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._skip: tuple[int, int] | None = None  # (epoch, samples of this rank to skip)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def skip_in_epoch(self, epoch: int, num_samples: int) -> None:
        """Leave out the first ``num_samples`` indices of this rank in ``epoch`` (once)."""
        self._skip = (epoch, num_samples)

    def __iter__(self):
        indices = list(super().__iter__())
        if self._skip is not None and self._skip[0] == self.epoch:
            indices = indices[self._skip[1] :]
            self._skip = None
        return iter(indices)


class ResumableDataLoader(DataLoader):
    """Train loader whose position inside an epoch goes into Lightning checkpoints (``state_dict`` /
    ``load_state_dict``), so a run resumed from a mid-epoch checkpoint trains on exactly the batches it would have.

    ``progress`` returns how many batches of the current epoch the trainer has trained on (Lightning reads one batch
    ahead, so the loader's own count would be one too many).

    The state restores the epoch as well as the position: Lightning creates the resumed epoch's iterator right after
    ``load_state_dict`` and only then calls the sampler's ``set_epoch`` (``FitLoop.setup_data`` precedes
    ``on_advance_start``). Without workers that iterator is lazy and reads the sampler after ``set_epoch``; with
    workers it forks them at once (each with a copy of the dataset, so of its epoch) and prefetches index batches
    from the sampler, so sampler and dataset must already be at the checkpoint's epoch, or the skip never matches
    and the run trains on epoch 0's first batches again.
    """

    progress: Any = None

    def state_dict(self) -> dict[str, int]:
        done = int(self.progress()) if self.progress is not None else 0
        return {"epoch": int(self.sampler.epoch), "batches_done": done, "batch_size": int(self.batch_size)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.set_epoch(state["epoch"])  # before Lightning's iter() forks the workers (see the class doc)
        self.sampler.skip_in_epoch(state["epoch"], state["batches_done"] * state["batch_size"])


def seed_worker(worker_id: int) -> None:
    """Seed ``random`` and NumPy's global state in a DataLoader worker from torch's per-worker seed.

    Our transforms do not use the global state (they are reseeded per item), but user code might; torch gives each
    worker ``base_seed + worker_id`` with ``base_seed`` drawn per epoch from the (``seed_everything``-seeded) RNG.
    """
    worker_seed = torch.initial_seed() % (1 << 32)
    random.seed(worker_seed)
    np.random.seed(worker_seed)


class Beit3DataModule(L.LightningDataModule):
    """Base DataModule: builds the task's datasets per stage and the train/eval DataLoaders.

    Args:
        root: dataset directory (image paths in the index files are relative to it).
        tokenizer: sentencepiece model path (the official ``beit3.spm``) or ``"sample"`` for the shipped sample one.
        img_size: input resolution S (images become S x S).
        batch_size: per-device training batch size.
        eval_batch_size: per-device batch size for val/test/predict; default ``int(1.5 * batch_size)``.
        num_workers: DataLoader worker processes (0 = load in the main process).
        max_text_len: text length including bos/eos (``--num_max_bpe_tokens``).
        randaug: add the VL RandomAugment(2, 7) to the training transform (ImageNet always uses timm RandAugment).
        skip_bad_samples: replace items whose image is missing/corrupt by other items instead of failing. Every skip
            is logged, counted in ``num_skipped`` and in the progress bar / TensorBoard (``data/skipped``), and the
            end of the run lists the files.
        max_skip_fraction: with ``skip_bad_samples``, stop the run with an error once more than this fraction of
            the items read were skipped (checked from 100 items on): a wrong root or a broken disk is not "a few bad
            files".
        seed: seed of shuffling, augmentation and caption masking.
        pin_memory: pin host memory of batches (only when CUDA is available).
        generate_sample: ``prepare_data()`` writes the embedded sample dataset (raw files + indexes) into ``root``
            if it is not there yet, so the sample configs run on a fresh clone. Only a ``.../sample/<dataset>``
            root is generated (default ``data/sample/<dataset>``); any other root that does not hold the sample is
            an error (a mistyped path to real data is not filled with sample pictures).
        index_dir: directory of the ``*.jsonl`` index files (default: ``root``).
        interpolation: resize filter (``bicubic`` as the reference's ``--train_interpolation``).
        shards: train from this shard set instead of the JSONL train index (a directory or URL written by
            ``beit3 prepare shards --from index``; a list of them is read as one): streamed, each rank and worker
            reading its own shards, memory per worker independent of the dataset size, exact mid-epoch resume.
            Validation and test keep reading the JSONL indexes under ``root`` (they are small and evaluation needs
            every record in order).
        shuffle_buffer: with ``shards``, samples each worker holds to shuffle within a shard (the shard order is
            shuffled every epoch as well).
    """

    task: ClassVar[str]
    dataset_class: ClassVar[type[Beit3Dataset]]
    # Merges the items of a batch (segmentation pads images of different sizes).
    collate_fn: ClassVar[Any] = staticmethod(collate)

    def __init__(
        self,
        root: str,
        tokenizer: str = "sample",
        img_size: int = 224,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        max_text_len: int = 64,
        randaug: bool = False,
        skip_bad_samples: bool = False,
        seed: int = 0,
        pin_memory: bool = True,
        generate_sample: bool = False,
        index_dir: str | None = None,
        interpolation: Literal["bicubic", "bilinear", "nearest", "area", "lanczos"] = "bicubic",
        max_skip_fraction: float = 0.05,
        shards: str | list[str] | dict[str, str | list[str]] | None = None,
        shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    ) -> None:
        super().__init__()
        if not 0.0 <= max_skip_fraction <= 1.0:
            raise ValueError(f"max_skip_fraction must be in [0, 1], got {max_skip_fraction}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.save_hyperparameters()
        self._absolute_paths_in_hparams()
        self.root = str(root)
        self.index_dir = str(index_dir) if index_dir is not None else self.root
        self.tokenizer_path = tokenizer
        self.img_size = img_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size if eval_batch_size is not None else int(1.5 * batch_size)
        self.num_workers = num_workers
        self.max_text_len = max_text_len
        self.randaug = randaug
        self.skip_bad_samples = skip_bad_samples
        self.max_skip_fraction = max_skip_fraction
        # Every worker appends the reason of each skip here; the run's summary reads it back.
        self.skip_log = None
        if skip_bad_samples:
            self.skip_log = os.path.join(tempfile.mkdtemp(prefix="beit3-skips-"), "skipped.txt")
        self.seed = seed
        self.pin_memory = pin_memory
        self.generate_sample = generate_sample
        self.interpolation = interpolation
        self.shards = shards
        self.shuffle_buffer = shuffle_buffer
        self._streams: dict[str, ShardStream] = {}
        self.datasets: dict[str, Beit3Dataset] = {}
        self._tokenizer: Beit3Tokenizer | None = None
        self._sample_ready = False

    def _absolute_paths_in_hparams(self) -> None:
        """Store the data paths as absolute paths in the hyper-parameters that checkpoints keep: ``load_model`` and
        later runs read the tokenizer and the answer vocabulary from another working directory."""
        for key in ("root", "index_dir", "coco_root", "tokenizer", "shards"):
            value = self.hparams.get(key)
            if not isinstance(value, (str, os.PathLike)) or (
                key in ("tokenizer", "shards") and not os.path.exists(value)
            ):
                continue
            self.hparams[key] = os.path.abspath(value)

    # -- tokenizer and model-facing properties -------------------------------------------------------------------
    @property
    def tokenizer(self) -> Beit3Tokenizer:
        """The task tokenizer (loaded on first use)."""
        if self._tokenizer is None:
            self._tokenizer = Beit3Tokenizer(self.tokenizer_path)
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        """Tokenizer vocabulary size (64002 for ``beit3.spm``)."""
        return self.tokenizer.vocab_size

    @property
    def num_skipped(self) -> int:
        """Bad samples replaced so far, over all datasets of this DataModule."""
        return sum(dataset.num_skipped for dataset in self.datasets.values())

    @property
    def num_served(self) -> int:
        """Items built so far, over all datasets of this DataModule."""
        return sum(dataset.num_served for dataset in self.datasets.values())

    def skipped_samples(self) -> list[str]:
        """The reason of every skip so far (file and index line), in the order they happened."""
        if self.skip_log is None or not os.path.exists(self.skip_log):
            return []
        with open(self.skip_log, encoding="utf-8") as file:
            return [line.rstrip("\n") for line in file if line.strip()]

    def check_skip_fraction(self) -> None:
        """Raise once more than ``max_skip_fraction`` of the items read (from 100 on) were bad."""
        skipped = self.num_skipped
        seen = skipped + self.num_served
        if skipped and seen >= MIN_ITEMS_FOR_SKIP_FRACTION and skipped / seen > self.max_skip_fraction:
            first = "; ".join(self.skipped_samples()[:3])
            raise BadSampleError(
                f"{skipped} of {seen} items read were bad ({100 * skipped / seen:.1f}% > max_skip_fraction "
                f"{self.max_skip_fraction}): is root ({self.root}) right? First ones: {first}"
            )

    # -- data preparation ----------------------------------------------------------------------------------------
    def sample_datasets(self) -> list[tuple[str, str]]:
        """``(sample dataset name, root)`` pairs that ``generate_sample`` writes."""
        return [(self.task, self.root)]

    def prepare_data(self) -> None:
        """Write the embedded sample dataset when ``generate_sample`` is set (idempotent)."""
        if not self.generate_sample or self._sample_ready:
            return
        from beit3_lightning.data.sample import ensure_sample_dataset, is_sample_dataset

        tokenizer = None if self.tokenizer_path == "sample" else self.tokenizer
        for name, root in self.sample_datasets():
            # Only a `.../sample/<dataset>` directory is generated: a mistyped path to real data must fail, not
            # silently fill a new directory with pictures of shapes.
            if not is_sample_dataset(root, name) and Path(root).parent.name != SAMPLE_DIR_NAME:
                raise FileNotFoundError(
                    f"data root {root} does not hold the {name} sample, and generate_sample only writes the sample "
                    f"into a '{SAMPLE_DIR_NAME}/{name}' directory (default data/{SAMPLE_DIR_NAME}/{name}). For your "
                    f"own data: --data.init_args.generate_sample false and `beit3 prepare {name} --data-root ...`"
                )
            ensure_sample_dataset(name, root, tokenizer=tokenizer)
        self._sample_ready = True

    # -- datasets ------------------------------------------------------------------------------------------------
    def transform(self, is_train: bool) -> ImageTransform:
        """Train or eval image transform of this task."""
        return build_transform(
            self.task, is_train, self.img_size, randaug=self.randaug, interpolation=self.interpolation
        )

    def dataset_kwargs(self, split: str) -> dict[str, Any]:
        """Constructor arguments of the task dataset for ``split`` (subclasses add task-specific ones)."""
        return {
            "root": self.root,
            "split": split,
            "transform": self.transform(is_train=split == "train"),
            "max_text_len": self.max_text_len,
            "index_dir": self.index_dir,
            "skip_bad_samples": self.skip_bad_samples,
            "skip_log": self.skip_log,
            "seed": self.seed,
            # Token ids of the index are checked against it at read time; ImageNet has no text (nor tokenizer need).
            "vocab_size": self.tokenizer.vocab_size if self.dataset_class.text_field else None,
        }

    def dataset(self, split: str) -> Beit3Dataset:
        """The dataset of ``split`` (built once and cached)."""
        if split not in self.datasets:
            self.datasets[split] = self.dataset_class(**self.dataset_kwargs(split))
        return self.datasets[split]

    @property
    def test_split(self) -> str:
        return "test"

    def setup(self, stage: Stage = None) -> None:
        """Build the datasets the stage needs: fit → train + val, validate → val, test / predict → test."""
        self.prepare_data()
        stage_splits = {
            "fit": ["train", "val"],
            "validate": ["val"],
            "test": [self.test_split],
            "predict": [self.test_split],
            None: ["train", "val", self.test_split],
        }
        for split in stage_splits.get(stage, []):
            if split == "train" and self.shards is not None:
                self.train_stream()
                continue
            self.dataset(split)

    # -- loaders -------------------------------------------------------------------------------------------------
    def _loader(self, dataset: Beit3Dataset, batch_size: int, cls: type[DataLoader] = DataLoader, **kwargs: Any):
        # No persistent_workers: the sampler sets the dataset's epoch in this process, which reaches the workers'
        # copies only because they are forked anew by every iter() (each epoch).
        return cls(
            dataset,
            batch_size=batch_size,
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            worker_init_fn=seed_worker if self.num_workers > 0 else None,
            **kwargs,
        )

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to the training dataset (the train sampler already does this under Lightning)."""
        if "train" in self.datasets:
            self.datasets["train"].set_epoch(epoch)

    def train_dataloader(self) -> DataLoader:
        if self.shards is not None:
            return self.streaming_train_loader(self.train_stream())
        return self.resumable_train_loader(self.dataset("train"), self.batch_size)

    # -- streamed training data (shards) -------------------------------------------------------------------------
    def stream_of(self, key: str, location: str | list[str], item_dataset: Beit3Dataset, content: str,
                  batch_size: int):  # fmt: skip
        """The training stream over the shard set(s) ``location`` (built once per ``key``); their manifests must
        hold ``content``."""
        if key not in self._streams:
            locations = list(location) if isinstance(location, (list, tuple)) else [location]
            manifests = [read_manifest(loc) for loc in locations]
            for loc, manifest in zip(locations, manifests, strict=True):
                if manifest.content != content:
                    raise ShardFormatError(
                        f"shard set {loc} holds {manifest.content!r} samples, this DataModule needs {content!r}; "
                        f"convert them with `beit3 prepare shards --from index --dataset {content} ...`"
                    )
            trainer = getattr(self, "trainer", None)
            world_size, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
            self._streams[key] = ShardStream(
                locations, item_dataset, rank=rank, world_size=world_size, batch_size=batch_size,
                shuffle_buffer=self.shuffle_buffer, seed=self.seed, manifests=manifests,
            )  # fmt: skip
        return self._streams[key]

    def train_stream(self) -> ShardStream:
        """The training split streamed from ``shards``."""
        if isinstance(self.shards, dict):
            raise ValueError(f"{type(self).__name__}: shards is one shard set or a list of them, not a mapping")
        if "train" not in self._streams:
            item_dataset = self.dataset_class(**{**self.dataset_kwargs("train"), "records": []})
            self.datasets["train"] = item_dataset  # its skip / served counters feed the run's summary
        return self.stream_of("train", self.shards, self.datasets["train"], self.task, self.batch_size)

    def streaming_train_loader(self, stream: ShardStream) -> StreamingLoader:
        """Train loader over a shard stream whose mid-epoch position is saved in checkpoints."""
        trainer = getattr(self, "trainer", None)
        loader = StreamingLoader(
            stream,
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            worker_init_fn=seed_worker if self.num_workers > 0 else None,
        )
        loader.progress = self._batches_trained_this_epoch
        if trainer is not None:
            loader.epoch_fn = lambda: trainer.fit_loop.epoch_progress.current.processed
        return loader

    def resumable_train_loader(self, dataset: Beit3Dataset, batch_size: int) -> ResumableDataLoader:
        """Shuffled, ``drop_last`` train loader over ``dataset`` whose mid-epoch position is saved in checkpoints."""
        trainer = getattr(self, "trainer", None)
        world_size, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = EpochDistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=self.seed)
        # The epoch the trainer is about to train (Lightning calls iter() on the loader, which forks the workers,
        # before its own set_epoch): with workers the first iterator would otherwise use the dataset's old epoch.
        sampler.set_epoch(trainer.fit_loop.epoch_progress.current.processed if trainer is not None else dataset.epoch)
        loader = self._loader(dataset, batch_size, sampler=sampler, drop_last=True, cls=ResumableDataLoader)
        loader.progress = self._batches_trained_this_epoch
        return loader

    def _batches_trained_this_epoch(self) -> int:
        trainer = getattr(self, "trainer", None)
        return trainer.fit_loop.epoch_loop.batch_progress.current.processed if trainer is not None else 0

    def num_train_batches(self) -> int:
        """Training batches per epoch on this process (``drop_last``), without building the loader."""
        if self.shards is not None:
            stream = self.train_stream()
            stream.num_workers = self.num_workers
            return sum(stream.worker_batches())
        trainer = getattr(self, "trainer", None)
        world_size = trainer.world_size if trainer is not None else 1
        return math.ceil(len(self.dataset("train")) / world_size) // self.batch_size

    def _eval_loader(self, split: str) -> DataLoader:
        return self._loader(self.dataset(split), self.eval_batch_size, shuffle=False, drop_last=False)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_split)

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_split)


class ImageNetDataModule(Beit3DataModule):
    """ImageNet-1k classification (val and test read the val index). Extra arg: ``crop_pct`` of the eval resize."""

    task = "imagenet"
    dataset_class = ImageNetDataset

    def __init__(self, root: str, *args: Any, crop_pct: float = 1.0, **kwargs: Any) -> None:
        super().__init__(root, *args, **kwargs)
        self.crop_pct = crop_pct

    def transform(self, is_train: bool) -> ImageTransform:
        return build_transform(
            self.task, is_train, self.img_size, interpolation=self.interpolation, crop_pct=self.crop_pct
        )

    @property
    def num_classes(self) -> int:
        """Number of classes = largest label in the train index (or val index without one) + 1."""
        self.prepare_data()
        for split in ("train", "val"):
            if split in self.datasets and not (split == "train" and self.shards is not None):  # streamed: no records
                return self.datasets[split].num_classes
        for name in ImageNetDataset.split_files["train"] + ImageNetDataset.split_files["val"]:
            path = os.path.join(self.index_dir, name)
            if os.path.isfile(path):
                return (
                    max(
                        int(record.get("label", -1)) for _, record in read_json_lines(Path(path), "ImageNet index file")
                    )
                    + 1
                )
        raise FileNotFoundError(f"No ImageNet index in {self.index_dir}; build it with `beit3 prepare imagenet`.")


class VQAv2DataModule(Beit3DataModule):
    """VQAv2 (train = train + trainable_val, val = rest_val). Extra arg: ``test_split`` ("test" or "test-dev")."""

    task = "vqav2"
    dataset_class = VQAv2Dataset

    def __init__(self, root: str, *args: Any, test_split: Literal["test", "test-dev"] = "test", **kwargs: Any):
        super().__init__(root, *args, **kwargs)
        self._test_split = test_split
        self._label2ans: list[str] | None = None

    @property
    def test_split(self) -> str:
        return self._test_split

    @property
    def label2ans(self) -> list[str]:
        """Answer strings in label order (from ``answer2label.txt``)."""
        if self._label2ans is None:
            self.prepare_data()
            self._label2ans = load_answer2label(os.path.join(self.index_dir, "answer2label.txt"))
        return self._label2ans

    @property
    def num_answers(self) -> int:
        """Size of the answer vocabulary (3129 for the official build)."""
        return len(self.label2ans)


class NLVR2DataModule(Beit3DataModule):
    """NLVR2 visual reasoning (val = dev, test = test-P)."""

    task = "nlvr2"
    dataset_class = NLVR2Dataset


class RetrievalDataModule(Beit3DataModule):
    """Image-text retrieval. Extra arg: ``task`` = ``"coco_retrieval"`` or ``"flickr30k"``."""

    dataset_class = RetrievalDataset

    def __init__(self, root: str, *args: Any, task: RetrievalDatasetName = "coco_retrieval", **kwargs: Any) -> None:
        super().__init__(root, *args, **kwargs)
        self.task = task

    def dataset_kwargs(self, split: str) -> dict[str, Any]:
        return {**super().dataset_kwargs(split), "task": self.task}


class CaptioningDataModule(Beit3DataModule):
    """Image captioning with masked-token training.

    Extra args: ``task`` = ``"coco_captioning"`` or ``"nocaps"``; ``mask_prob`` (default 0.6; the official docs
    train with 0.7); ``coco_root``: for NoCaps, the COCO captioning dataset whose train split it trains on
    (required for ``fit``; its images and ``coco_captioning.train.jsonl`` live there).
    """

    dataset_class = CaptioningDataset

    def __init__(
        self,
        root: str,
        *args: Any,
        task: CaptioningDatasetName = "coco_captioning",
        mask_prob: float = 0.6,
        coco_root: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, *args, **kwargs)
        self.task = task
        self.mask_prob = mask_prob
        self.coco_root = coco_root

    def sample_datasets(self) -> list[tuple[str, str]]:
        pairs = super().sample_datasets()
        if self.task == "nocaps" and self.coco_root is not None:
            pairs.append(("coco_captioning", self.coco_root))
        return pairs

    def dataset_kwargs(self, split: str) -> dict[str, Any]:
        kwargs = {
            **super().dataset_kwargs(split),
            "task": self.task,
            "mask_prob": self.mask_prob,
            "mask_token_id": self.tokenizer.mask_token_id,
            "vocab_size": self.tokenizer.vocab_size,
        }
        if self.task == "nocaps" and split == "train":
            if self.coco_root is None:
                raise ValueError(
                    "NoCaps trains on COCO captions: set coco_root to the COCO captioning dataset directory "
                    "(with coco_captioning.train.jsonl)."
                )
            kwargs.update(root=self.coco_root, index_dir=self.coco_root)
        return kwargs


class SegmentationDataModule(Beit3DataModule):
    """Semantic segmentation (mmseg's ADE20k recipe; val and test read the val index).

    Extra args: ``task`` = ``"ade20k"`` or ``"segmentation"`` (your own folders, see ``beit3 prepare segmentation``);
    ``img_size`` is the square training crop (default 512, the BEiT-3 ADE20k crop is 640 for large runs);
    ``ratio_range`` of the random rescale, ``cat_max_ratio`` of the crop, ``photometric`` distortion on or off
    (see :mod:`beit3_lightning.data.segmentation_transforms`). Images are resized bilinearly (``interpolation``),
    masks with nearest neighbour. Evaluation keeps each image's aspect ratio and its label at the original size, so
    batches are padded (``image_hw`` / ``label_hw`` hold the valid sizes). No tokenizer is used.
    """

    dataset_class = SegmentationDataset
    collate_fn = staticmethod(segmentation_collate)

    def __init__(
        self,
        root: str,
        *args: Any,
        task: SegmentationDatasetName = "ade20k",
        img_size: int = 512,
        ratio_range: tuple[float, float] = (0.5, 2.0),
        cat_max_ratio: float = 0.75,
        photometric: bool = True,
        interpolation: Literal["bicubic", "bilinear", "nearest", "area", "lanczos"] = "bilinear",
        **kwargs: Any,
    ) -> None:
        if kwargs.get("shards") is not None:
            raise ValueError("SegmentationDataModule reads the JSONL indexes; streaming shards are not supported")
        super().__init__(root, *args, img_size=img_size, interpolation=interpolation, **kwargs)
        self.task = task
        self.ratio_range = tuple(ratio_range)
        self.cat_max_ratio = cat_max_ratio
        self.photometric = photometric
        self._class_info: dict[str, Any] | None = None

    def transform(self, is_train: bool) -> SegmentationTrainTransform | SegmentationEvalTransform:
        if is_train:
            return SegmentationTrainTransform(
                self.img_size,
                ratio_range=self.ratio_range,
                cat_max_ratio=self.cat_max_ratio,
                photometric=self.photometric,
                interpolation=self.interpolation,
            )
        return SegmentationEvalTransform(self.img_size, interpolation=self.interpolation)

    def dataset_kwargs(self, split: str) -> dict[str, Any]:
        return {**super().dataset_kwargs(split), "task": self.task}

    @property
    def class_info(self) -> dict[str, Any]:
        """``<task>.classes.json`` (written by ``beit3 prepare``; with ``generate_sample`` the sample's)."""
        if self._class_info is None:
            self.prepare_data()
            self._class_info = read_class_info(self.index_dir, self.task)
        return self._class_info

    @property
    def class_names(self) -> list[str]:
        """Class names in trained-id order."""
        return list(self.class_info["classes"])

    @property
    def num_classes(self) -> int:
        """Number of trained classes (150 for ADE20k)."""
        return len(self.class_info["classes"])

    @property
    def ignore_index(self) -> int:
        """Label value of ignored pixels (255)."""
        return int(self.class_info["ignore_index"])

    @property
    def reduce_zero_label(self) -> bool:
        """Whether the raw masks use 0 for "unlabelled" (ADE20k): predictions are then written as id + 1."""
        return bool(self.class_info.get("reduce_zero_label", False))
