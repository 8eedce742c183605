"""Map-style datasets over the official BEiT-3 ``*.jsonl`` index files (unilm ``beit3/datasets.py``).

One class per task, sharing :class:`Beit3Dataset`, which reads and validates the index files, loads images,
frames text, seeds the per-item randomness and handles bad samples. Items are dicts with the reference batch keys
(``image``, ``image2``, ``language_tokens``, ``padding_mask``, ``label``, ``labels``, ``qid``, ``image_id``,
``masked_tokens``, ``language_masked_pos``) plus ``index``: the item's position in the dataset (for a split made of
one index file, the 0-based record number in that file; :meth:`Beit3Dataset.source_of` gives file and line).

Randomness: every item draws from generators seeded by ``(seed, epoch, index)``, so augmentation and caption
masking are reproducible, independent of the number of DataLoader workers, and change with :meth:`set_epoch`
(the DataModule's sampler calls it every epoch). The reference instead uses the unseeded global ``random`` for
masking.
"""

from __future__ import annotations

import io
import logging
import math
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, get_worker_info

from beit3_lightning.data.images import to_rgb_image
from beit3_lightning.data.index.common import DatasetFormatError, path_leaves_root, read_json_lines
from beit3_lightning.data.tokenizer import text_segment
from beit3_lightning.task_table import datasets_of_head

__all__ = [
    "CAPTIONING_TASKS",
    "RETRIEVAL_TASKS",
    "BadSampleError",
    "Beit3Dataset",
    "CaptioningDataset",
    "ImageNetDataset",
    "NLVR2Dataset",
    "RetrievalDataset",
    "VQAv2Dataset",
    "collate",
    "load_answer2label",
    "mask_caption_tokens",
    "num_tokens_to_mask",
]

log = logging.getLogger(__name__)

RETRIEVAL_TASKS = datasets_of_head("retrieval")
CAPTIONING_TASKS = datasets_of_head("captioning")
# Stream tags mixed into the per-item seed so each use of randomness is independent of the others.
_STREAM_IMAGE, _STREAM_TEXT, _STREAM_REPLACE = 0, 1, 2
# How many replacements to try for one bad sample before giving up (a whole missing folder, a wrong root...).
MAX_REPLACEMENT_TRIES = 20
# Shared skip counter: slot 0 for the main process, one per DataLoader worker after that (ids wrap around).
_SKIP_COUNTER_SLOTS = 128

ImageTransformFn = Callable[[Image.Image], torch.Tensor]


class BadSampleError(RuntimeError):
    """An item cannot be built: its image is missing or cannot be decoded."""


def load_answer2label(path: str) -> list[str]:
    """Read ``answer2label.txt`` (JSON lines ``{"answer", "label"}``) and return ``label2ans`` (label order).

    Like the reference, every label must equal its record's position in the file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"VQA answer vocabulary {path} not found. Build it with `beit3 prepare vqav2`.")
    label2ans: list[str] = []
    for line_number, record in read_json_lines(Path(path), "VQA answer vocabulary"):
        if "answer" not in record or "label" not in record:
            raise DatasetFormatError(f"{path}, line {line_number}: needs fields 'answer' and 'label', got {record}")
        if record["label"] != len(label2ans):
            raise DatasetFormatError(
                f"{path}, line {line_number}: label {record['label']} should be {len(label2ans)} (labels must "
                "count up from 0 in file order). Rebuild it with `beit3 prepare vqav2`."
            )
        label2ans.append(str(record["answer"]))
    return label2ans


def num_tokens_to_mask(num_tokens: int, mask_prob: float) -> int:
    """k = max(1, min(round_half_up(num_tokens x mask_prob), num_tokens - 1)), as unilm ``CaptioningDataset``."""
    return max(1, min(math.floor(num_tokens * mask_prob + 0.5), num_tokens - 1))


def mask_caption_tokens(
    tokens: Sequence[int],
    num_tokens: int,
    mask_prob: float,
    mask_token_id: int,
    vocab_size: int,
    rng: random.Random,
) -> tuple[list[int], list[int]]:
    """Masked-token input for captioning training (unilm ``CaptioningDataset._masking_on_text_tokens``).

    Chooses k distinct positions uniformly from 1..num_tokens-1 (bos never, eos may be); each becomes ``<mask>``
    with probability 0.8, stays with 0.1, or becomes a random id in [3, vocab_size - 1] with 0.1.
    Returns ``(masked_tokens, language_masked_pos)`` with the 0/1 positions list, both of length ``len(tokens)``.
    """
    if num_tokens < 2:
        raise ValueError(f"captioning masking needs at least bos + eos, got num_tokens={num_tokens}")
    masked = list(tokens)
    masked_pos = [0] * len(tokens)
    for position in rng.sample(range(1, num_tokens), num_tokens_to_mask(num_tokens, mask_prob)):
        draw = rng.random()
        if draw < 0.8:
            masked[position] = mask_token_id
        elif draw >= 0.9:
            masked[position] = rng.randint(3, vocab_size - 1)
        masked_pos[position] = 1
    return masked, masked_pos


def _as_tensor(values: list[Any], key: str) -> torch.Tensor | list[Any]:
    first = values[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(values)
    if isinstance(first, bool | int) or (isinstance(first, list) and all(isinstance(v, int) for v in first)):
        return torch.tensor(values, dtype=torch.long)
    if isinstance(first, float):
        return torch.tensor(values, dtype=torch.float32)
    return values  # strings and anything else stay a list


def collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Merge items by key: tensors are stacked, ints / lists of ints become LongTensors, strings stay lists."""
    if not batch:
        raise ValueError("collate got an empty batch")
    keys = batch[0].keys()
    for item in batch[1:]:
        if item.keys() != keys:
            raise ValueError(f"collate: items have different keys: {sorted(keys)} vs {sorted(item.keys())}")
    return {key: _as_tensor([item[key] for item in batch], key) for key in keys}


class Beit3Dataset(Dataset):
    """Base class: index reading/validation, image loading, text framing, seeding, bad-sample handling.

    Args:
        root: directory that image paths in the index are relative to.
        split: ``"train"``, ``"val"`` or ``"test"`` (VQA also ``"test-dev"``); mapped to index files per task.
        transform: image transform (PIL image → CHW tensor); if it has ``set_random_state`` it is reseeded per item.
        max_text_len: text length including bos/eos (``--num_max_bpe_tokens``, default 64).
        index_dir: directory holding the ``*.jsonl`` index files (default: ``root``).
        skip_bad_samples: replace an item whose image is missing/corrupt by another one (warned and counted in
            :attr:`num_skipped`) instead of raising :class:`BadSampleError`.
        skip_log: file each skip's reason is appended to (one line per skip, from any worker process).
        seed: base seed of the per-item generators.
        vocab_size: the tokenizer's vocabulary size; when given, every token id of the index must be below it
            (checked while the index is read, so an index built with another tokenizer fails at start-up with its
            file and line instead of an IndexError in the embedding at the first batch).
    """

    task: ClassVar[str]
    split_files: ClassVar[dict[str, list[str]]]
    required_fields: ClassVar[tuple[str, ...]] = ("image_path",)
    text_field: ClassVar[str | None] = "text_segment"

    def __init__(
        self,
        root: str,
        split: str,
        transform: ImageTransformFn,
        max_text_len: int = 64,
        index_dir: str | None = None,
        skip_bad_samples: bool = False,
        seed: int = 0,
        vocab_size: int | None = None,
        skip_log: str | None = None,
        records: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        if split not in self.split_files:
            raise ValueError(f"{self.task}: unknown split {split!r}; choose one of {sorted(self.split_files)}")
        self.root = str(root)
        self.index_dir = str(index_dir if index_dir is not None else root)
        self.split = split
        self.transform = transform
        self.max_text_len = max_text_len
        self.skip_bad_samples = skip_bad_samples
        self.skip_log = skip_log
        self.seed = seed % (1 << 63)
        self.vocab_size = vocab_size
        self.epoch = 0
        # A streamed dataset (records=[]) builds items from records handed over one at a time (item_from_record).
        names = self.split_files[split] if records is None else []
        self.index_paths = [os.path.join(self.index_dir, name) for name in names]
        self.records: list[dict[str, Any]] | dict[int, dict[str, Any]] = list(records or [])
        self._sources: list[tuple[int, int]] | dict[int, str] = []  # (index file number, line number) per record
        self._image_bytes: dict[str, bytes] = {}  # images of the streamed record, by their record path
        self._builder = self.task
        for file_number, path in enumerate(self.index_paths):
            # The builder of this file (NoCaps trains on COCO's), named by every "rebuild it" message.
            self._builder = os.path.basename(path).split(".")[0].replace("vqa", "vqav2")
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"{self.task} {split} index file {path} not found. Build the indexes with "
                    f"`beit3 prepare {self._builder} --data-root <raw data>` (or use generate_sample=True for the "
                    "sample)."
                )
            remedy = f"rebuild it with `beit3 prepare {self._builder}`"
            for line_number, record in read_json_lines(Path(path), f"{self.task} index file", remedy=remedy):
                self._validate(record, f"{path}, line {line_number}")
                self.records.append(record)
                self._sources.append((file_number, line_number))
        # Skip counter in shared memory (works with "fork" and "spawn" workers): one slot per worker, so no
        # increments are lost without a lock; the main process reads the sum.
        self._skipped = torch.zeros(_SKIP_COUNTER_SLOTS, dtype=torch.int64).share_memory_()
        self._served = torch.zeros(_SKIP_COUNTER_SLOTS, dtype=torch.int64).share_memory_()

    def _validate(self, record: dict[str, Any], where: str) -> None:
        """Check the fields this task reads; raise DatasetFormatError naming the file and line."""
        missing = [name for name in self.required_fields if name not in record]
        if missing:
            raise DatasetFormatError(
                f"{where}: missing field(s) {missing} for {self.task} (record keys: {sorted(record)}). "
                f"Rebuild the index with `beit3 prepare {self.task}`."
            )
        self._check_image_path(record, "image_path", where)

    def _check_image_path(self, record: dict[str, Any], field: str, where: str) -> None:
        """``record[field]`` must be a non-empty relative path that stays inside ``root``.

        The check is lexical (absolute paths and ``..`` climbing above the root are refused) rather than a
        ``realpath`` per record: that keeps start-up free of file-system calls on large indexes, and symlinks
        placed inside the root by whoever owns the data (image folders on another disk) keep working.
        """
        value = record[field]
        if not isinstance(value, str) or not value:
            raise DatasetFormatError(f"{where}: '{field}' must be a non-empty string, got {value!r}")
        if path_leaves_root(value):
            raise DatasetFormatError(
                f"{where}: '{field}' {value!r} points outside the data root {self.root}; index paths must be "
                f"relative to the root and stay inside it: rebuild it with `beit3 prepare {self._builder}`."
            )

    def _check_token_list(self, value: Any, where: str, field: str = "text_segment") -> None:
        if not isinstance(value, list) or not value or not all(isinstance(t, int) for t in value):
            raise DatasetFormatError(f"{where}: '{field}' must be a non-empty list of token ids, got {value!r:.80}")
        # Checked once at read time, not per item: it then fails before training starts, and it costs little
        # (measured: +0.13 s CPU per 100k records, about 7% of an index's start-up, JSON parsing being most of it).
        low, high = min(value), max(value)
        if low < 0 or (self.vocab_size is not None and high >= self.vocab_size):
            bad = low if low < 0 else high
            size = f"{self.vocab_size} ids" if self.vocab_size is not None else "ids >= 0"
            raise DatasetFormatError(
                f"{where}: token id {bad} in '{field}' is outside the tokenizer's vocabulary ({size}); the index was "
                f"built with another tokenizer: rebuild it with `beit3 prepare {self._builder} --tokenizer <the "
                "tokenizer you train with>`."
            )

    # -- bookkeeping -------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's random streams (augmentation and masking differ per epoch)."""
        self.epoch = int(epoch)

    @property
    def num_skipped(self) -> int:
        """How many bad samples were replaced so far (all DataLoader workers of this process together)."""
        return int(self._skipped.sum())

    @property
    def num_served(self) -> int:
        """How many items were built so far (all DataLoader workers of this process together)."""
        return int(self._served.sum())

    def _slot(self) -> int:
        worker = get_worker_info()
        return 0 if worker is None else 1 + worker.id % (_SKIP_COUNTER_SLOTS - 1)

    def _record_skip(self, reason: str) -> None:
        """Count one skip, log it (every one: a logging record, not a de-duplicated warning) and append it to
        ``skip_log``, the file the end-of-run summary reads back across worker processes."""
        self._skipped[self._slot()] += 1
        log.warning("Skipping bad sample (replaced by another item): %s", reason)
        if self.skip_log is not None:
            # One short O_APPEND write per skip: lines from several workers do not interleave.
            with open(self.skip_log, "a", encoding="utf-8") as file:
                file.write(reason.replace("\n", " ") + "\n")

    def source_of(self, index: int) -> str:
        """``"<index file>, line <n>"`` (or ``"<shard>, sample <key>"``) of the item at ``index``."""
        if isinstance(self._sources, dict):
            return self._sources[index]
        file_number, line_number = self._sources[index]
        return f"{self.index_paths[file_number]}, line {line_number}"

    def generator(self, index: int, stream: int) -> np.random.Generator:
        """NumPy generator seeded by (seed, epoch, index, stream)."""
        return np.random.default_rng([self.seed, self.epoch, index, stream])

    def python_random(self, index: int, stream: int) -> random.Random:
        """``random.Random`` seeded by (seed, epoch, index, stream)."""
        return random.Random(int(self.generator(index, stream).integers(1 << 63)))

    # -- building blocks -----------------------------------------------------------------------------------------
    def load_image(self, relative_path: str, index: int) -> Image.Image:
        """Open ``root/relative_path`` as RGB; any failure becomes a BadSampleError naming file and index line."""
        path = os.path.join(self.root, relative_path)
        if relative_path in self._image_bytes:  # a streamed record: the image came with it from the shard
            path = f"{relative_path} in {self.source_of(index)}"
        try:
            source = io.BytesIO(self._image_bytes[relative_path]) if relative_path in self._image_bytes else path
            with Image.open(source) as image:
                return to_rgb_image(image)  # scales 16-bit / float images instead of clipping them to white
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise BadSampleError(
                f"Cannot load image {path} (from {self.source_of(index)}): {type(err).__name__}: {err}."
            ) from err

    def image_tensor(self, relative_path: str, index: int) -> torch.Tensor:
        """Load and transform one image with the item's image stream."""
        return self.transform(self.load_image(relative_path, index))

    def _seed_transform(self, index: int) -> None:
        if hasattr(self.transform, "set_random_state"):
            np_generator = self.generator(index, _STREAM_IMAGE)
            py_random = random.Random(int(np_generator.integers(1 << 63)))
            self.transform.set_random_state(np_generator, py_random)

    def text(self, record: dict[str, Any]) -> tuple[list[int], list[int], int]:
        """``[bos] + ids[:max_len-2] + [eos]`` padded with 1, padding mask (1 = pad) and the real-token count."""
        return text_segment(record[self.text_field], self.max_text_len)

    def build_item(self, index: int) -> dict[str, Any]:
        """Task-specific item (without ``index``); raise BadSampleError for unusable images."""
        raise NotImplementedError

    def image_text_item(self, index: int) -> dict[str, Any]:
        """The ``image``, ``language_tokens`` and ``padding_mask`` shared by the image-text tasks."""
        record = self.records[index]
        tokens, padding_mask, _ = self.text(record)
        return {
            "image": self.image_tensor(record["image_path"], index),
            "language_tokens": tokens,
            "padding_mask": padding_mask,
        }

    def item_from_record(
        self, index: int, record: dict[str, Any], images: dict[str, bytes], source: str
    ) -> dict[str, Any]:
        """The item of one streamed record (a shard sample): validated as an index line, images from ``images``
        (bytes by record field), seeded by ``index`` as the JSONL dataset seeds its items. Raises BadSampleError for
        an unusable image (the stream replaces or stops)."""
        self._validate(record, source)
        self.records = {index: record}
        self._sources = {index: source}
        self._image_bytes = {record[field]: data for field, data in images.items() if field in record}
        self._seed_transform(index)
        item = self.build_item(index)
        item["index"] = index
        self._served[self._slot()] += 1
        return item

    # -- item access with bad-sample replacement -----------------------------------------------------------------
    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {self.task} {self.split} ({len(self)} items)")
        replacements = self.generator(index, _STREAM_REPLACE)
        current = index
        for _ in range(MAX_REPLACEMENT_TRIES):
            try:
                self._seed_transform(current)
                item = self.build_item(current)
            except BadSampleError as err:
                if not self.skip_bad_samples:
                    raise BadSampleError(
                        f"{err} Fix or restore the file, rebuild the index, or set skip_bad_samples=True to replace "
                        "bad samples by others (they are counted and logged)."
                    ) from err.__cause__
                self._record_skip(str(err))
                current = int(replacements.integers(len(self)))
                continue
            item["index"] = current
            self._served[self._slot()] += 1
            return item
        raise BadSampleError(
            f"{MAX_REPLACEMENT_TRIES} bad samples in a row while replacing item {index} of {self.task} "
            f"{self.split} (last: {self.source_of(current)}); is `root` ({self.root}) right?"
        )


class ImageNetDataset(Beit3Dataset):
    """ImageNet classification: ``{"image", "label"}``. Val and test both read the val index (as the reference)."""

    task = "imagenet"
    split_files = {
        "train": ["imagenet.train.index.jsonl"],
        "val": ["imagenet.val.index.jsonl"],
        "test": ["imagenet.val.index.jsonl"],
    }
    required_fields = ("image_path", "label")
    text_field = None

    def _validate(self, record: dict[str, Any], where: str) -> None:
        super()._validate(record, where)
        if not isinstance(record["label"], int) or record["label"] < 0:
            raise DatasetFormatError(f"{where}: 'label' must be a non-negative int, got {record['label']!r}")

    @property
    def num_classes(self) -> int:
        """Largest label + 1."""
        return max(record["label"] for record in self.records) + 1

    def build_item(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        return {"image": self.image_tensor(record["image_path"], index), "label": record["label"]}


class NLVR2Dataset(Beit3Dataset):
    """NLVR2: two images (transformed independently), one statement, binary ``label``."""

    task = "nlvr2"
    split_files = {
        "train": ["nlvr2.train.index.jsonl"],
        "val": ["nlvr2.dev.index.jsonl"],
        "test": ["nlvr2.test-P.index.jsonl"],
    }
    required_fields = ("image_path", "image2_path", "text_segment", "label")

    def _validate(self, record: dict[str, Any], where: str) -> None:
        super()._validate(record, where)
        self._check_image_path(record, "image2_path", where)
        self._check_token_list(record["text_segment"], where)
        if record["label"] not in (0, 1):
            raise DatasetFormatError(f"{where}: NLVR2 'label' must be 0 or 1, got {record['label']!r}")

    def build_item(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        item = self.image_text_item(index)
        item.update(image2=self.image_tensor(record["image2_path"], index), label=record["label"])
        return item


class VQAv2Dataset(Beit3Dataset):
    """VQAv2: question + image; ``labels`` = dense soft scores (FloatTensor(num_answers)) when the split has answers.

    Splits (unilm ``VQAv2Dataset.get_index_files``): train = ``vqa.train.jsonl`` + ``vqa.trainable_val.jsonl``,
    val = ``vqa.rest_val.jsonl``, test = ``vqa.test.jsonl``, test-dev = ``vqa.test-dev.jsonl``. ``qid`` is always
    returned (the reference returns it only for unlabeled items) so predictions can be written for labeled splits too.
    """

    task = "vqav2"
    split_files = {
        "train": ["vqa.train.jsonl", "vqa.trainable_val.jsonl"],
        "val": ["vqa.rest_val.jsonl"],
        "test": ["vqa.test.jsonl"],
        "test-dev": ["vqa.test-dev.jsonl"],
    }
    required_fields = ("image_path", "text_segment", "qid")

    def __init__(self, root: str, split: str, *args: Any, index_dir: str | None = None, **kwargs: Any) -> None:
        answers_path = os.path.join(index_dir if index_dir is not None else root, "answer2label.txt")
        self.label2ans = load_answer2label(answers_path)
        super().__init__(root, split, *args, index_dir=index_dir, **kwargs)

    @property
    def num_answers(self) -> int:
        return len(self.label2ans)

    def _validate(self, record: dict[str, Any], where: str) -> None:
        super()._validate(record, where)
        self._check_token_list(record["text_segment"], where)
        labels, scores = record.get("labels") or [], record.get("scores") or []
        if len(labels) != len(scores):
            raise DatasetFormatError(f"{where}: 'labels' ({len(labels)}) and 'scores' ({len(scores)}) differ in length")
        bad = [label for label in labels if not isinstance(label, int) or not 0 <= label < len(self.label2ans)]
        if bad:
            raise DatasetFormatError(
                f"{where}: answer labels {bad} are outside answer2label.txt ({len(self.label2ans)} answers); "
                "the index and the answer vocabulary come from different builds."
            )

    def build_item(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        item = {**self.image_text_item(index), "qid": record["qid"]}
        if record.get("labels"):
            dense = torch.zeros(self.num_answers, dtype=torch.float32)
            dense[torch.tensor(record["labels"])] = torch.tensor(record["scores"], dtype=torch.float32)
            item["labels"] = dense
        return item


def _task_split_files(task: str, splits: Sequence[str]) -> dict[str, list[str]]:
    return {split: [f"{task}.{split}.jsonl"] for split in splits}


class RetrievalDataset(Beit3Dataset):
    """Image-text retrieval (``coco_retrieval`` or ``flickr30k``): one item per caption with its ``image_id``."""

    required_fields = ("image_path", "text_segment", "image_id")

    def __init__(self, root: str, split: str, *args: Any, task: str = "coco_retrieval", **kwargs: Any) -> None:
        if task not in RETRIEVAL_TASKS:
            raise ValueError(f"Unknown retrieval task {task!r}; choose one of {RETRIEVAL_TASKS}")
        self.task = task
        self.split_files = _task_split_files(task, ("train", "val", "test"))
        super().__init__(root, split, *args, **kwargs)

    def _validate(self, record: dict[str, Any], where: str) -> None:
        super()._validate(record, where)
        self._check_token_list(record["text_segment"], where)

    def build_item(self, index: int) -> dict[str, Any]:
        return {**self.image_text_item(index), "image_id": self.records[index]["image_id"]}


class CaptioningDataset(Beit3Dataset):
    """Image captioning (``coco_captioning`` or ``nocaps``).

    Records with a caption (train) give the masked-token training item: ``language_tokens`` (targets),
    ``masked_tokens`` (model input), ``language_masked_pos``, ``padding_mask``, ``image_id``. Records with
    ``"text_segment": null`` (val/test: one per image) give ``image`` and ``image_id`` only.
    NoCaps trains on COCO: its train split reads ``coco_captioning.train.jsonl`` (pass the COCO root as ``root``).

    Args (besides the base ones): ``task``; ``mask_prob`` (default 0.6); ``mask_token_id`` and ``vocab_size`` of
    the tokenizer (random replacement ids are drawn from [3, vocab_size - 1]).
    """

    required_fields = ("image_path", "image_id")

    def __init__(
        self,
        root: str,
        split: str,
        *args: Any,
        task: str = "coco_captioning",
        mask_prob: float = 0.6,
        mask_token_id: int | None = None,
        vocab_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        if task not in CAPTIONING_TASKS:
            raise ValueError(f"Unknown captioning task {task!r}; choose one of {CAPTIONING_TASKS}")
        if not 0 < mask_prob <= 1:
            raise ValueError(f"mask_prob must be in (0, 1], got {mask_prob}")
        self.task = task
        if task == "coco_captioning":
            self.split_files = _task_split_files(task, ("train", "val", "test"))
        else:
            self.split_files = {"train": ["coco_captioning.train.jsonl"], **_task_split_files(task, ("val", "test"))}
        self.mask_prob = mask_prob
        self.mask_token_id = mask_token_id
        super().__init__(root, split, *args, vocab_size=vocab_size, **kwargs)
        if any(record.get("text_segment") is not None for record in self.records) and (
            mask_token_id is None or vocab_size is None
        ):
            raise ValueError("CaptioningDataset with captions needs mask_token_id and vocab_size (from the tokenizer)")

    def _validate(self, record: dict[str, Any], where: str) -> None:
        super()._validate(record, where)
        if record.get("text_segment") is not None:
            self._check_token_list(record["text_segment"], where)

    def build_item(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        item: dict[str, Any] = {"image": self.image_tensor(record["image_path"], index)}
        if record.get("text_segment") is not None:
            tokens, padding_mask, num_tokens = self.text(record)
            masked, masked_pos = mask_caption_tokens(
                tokens,
                num_tokens,
                self.mask_prob,
                self.mask_token_id,
                self.vocab_size,
                self.python_random(index, _STREAM_TEXT),
            )
            item.update(
                language_tokens=tokens,
                masked_tokens=masked,
                language_masked_pos=masked_pos,
                padding_mask=padding_mask,
            )
        item["image_id"] = record["image_id"]
        return item
