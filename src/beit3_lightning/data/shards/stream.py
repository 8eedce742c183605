"""Reading a shard set during training: every rank and DataLoader worker its own part, exact mid-epoch resume.

Per epoch, every process computes the same plan from the manifest alone (no shard is opened for it):

1. the shards are put in a random order drawn from ``(seed, epoch)`` (shuffling across shards);
2. their samples, in that order, form one stream of N samples; rank ``r`` of ``R`` takes the ``r``-th of R equal
   contiguous ranges (N // R samples each: every rank runs the same number of steps, which DDP needs; the < R left-over
   samples at the end of the stream change every epoch);
3. worker ``w`` of ``W`` takes the ``w``-th of W near-equal contiguous parts of its rank's range;
4. a worker reads its part shard by shard (only the shards it touches), shuffling each shard's samples through a
   buffer of ``shuffle_buffer`` samples seeded by ``(seed, epoch, shard, start)``.

So every sample is seen once per epoch across all ranks and workers (when R divides N), memory per worker is one
shuffle buffer of raw samples whatever the dataset size, and the order is a function of ``(seed, epoch)`` only.

Resume: :class:`StreamingLoader` saves ``(epoch, batches trained)``. DataLoader workers hand out batches in turn
(round robin over the workers that still have batches), so the batches each worker produced follow from that count;
on resume each worker skips its samples: whole shards by their manifest counts, and within the first shard it reads,
by replaying the shuffle buffer over the raw bytes without decoding them.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from beit3_lightning.data.datasets import BadSampleError, Beit3Dataset
from beit3_lightning.data.shards.format import ShardManifest, iter_shard_samples, join_url, read_manifest

__all__ = [
    "DEFAULT_SHUFFLE_BUFFER",
    "ShardStream",
    "StreamingLoader",
    "Chunk",
    "batches_per_worker_after",
    "plan_worker",
]

log = logging.getLogger(__name__)
# Lightning warns that an iterable dataset's __len__ may be wrong with several workers; ours is exact (each worker
# reads its own part, StreamingLoader.__len__ counts per worker).
warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")

DEFAULT_SHUFFLE_BUFFER = 1000


@dataclass(frozen=True)
class Chunk:
    """Samples ``[begin, end)`` (tar order) of shard ``shard`` (its position in the manifest)."""

    shard: int
    begin: int
    end: int

    def __len__(self) -> int:
        return self.end - self.begin


def _split(total: int, parts: int, part: int) -> tuple[int, int]:
    """``[start, stop)`` of part ``part`` of ``parts`` near-equal contiguous parts of ``range(total)``."""
    return total * part // parts, total * (part + 1) // parts


def shard_order(counts: list[int], seed: int, epoch: int, shuffle: bool) -> list[int]:
    """The epoch's order of the shards."""
    if not shuffle:
        return list(range(len(counts)))
    return [int(i) for i in np.random.default_rng([seed, epoch, 0x5A4D]).permutation(len(counts))]


def plan_worker(
    counts: list[int], rank: int, world_size: int, worker: int, num_workers: int, seed: int, epoch: int, shuffle: bool
) -> list[Chunk]:
    """The chunks worker ``worker`` of rank ``rank`` reads in ``epoch`` (see the module docstring)."""
    per_rank = sum(counts) // world_size
    rank_start = rank * per_rank
    start, stop = _split(per_rank, num_workers, worker)
    start, stop = rank_start + start, rank_start + stop
    chunks, offset = [], 0
    for shard in shard_order(counts, seed, epoch, shuffle):
        shard_start, shard_stop = offset, offset + counts[shard]
        offset = shard_stop
        begin, end = max(start, shard_start), min(stop, shard_stop)
        if begin < end:
            chunks.append(Chunk(shard, begin - shard_start, end - shard_start))
        if offset >= stop:
            break
    return chunks


def batches_per_worker_after(num_batches: int, worker_batches: list[int]) -> tuple[list[int], int]:
    """How many batches each worker had produced when the loader had yielded ``num_batches``, and which worker
    serves the next one: the DataLoader takes batches from its workers in turn, skipping workers that have run out."""
    done = [0] * len(worker_batches)
    worker, remaining = 0, num_batches
    idle = 0  # workers passed over in a row without a batch
    while remaining > 0:
        if idle == len(worker_batches):
            raise ValueError(f"{num_batches} batches asked, but the workers only have {sum(worker_batches)}")
        if done[worker] < worker_batches[worker]:
            done[worker] += 1
            remaining -= 1
            idle = 0
        else:
            idle += 1
        worker = (worker + 1) % len(worker_batches)
    return done, worker


class ShardStream(IterableDataset):
    """Items of a task dataset, read from a shard set instead of a JSONL index.

    Args:
        location: the shard set (directory or URL), or a list of shard sets of the same content read as one (e.g.
            CC3M, CC12M and COCO pairs converted separately).
        item_dataset: the task's dataset built with ``records=[]``: it turns each record (and its image bytes) into
            the same item the JSONL dataset gives, with the same transforms, masking and per-item seeding (the item
            index is the sample's position in the shard set).
        rank / world_size: this process's share (the DataModule passes the trainer's).
        batch_size / drop_last: the loader's, so the stream knows how many batches each worker makes.
        shuffle: shuffle shard order and samples (training); False reads in manifest order.
        shuffle_buffer: samples held per worker for shuffling inside a shard (memory: this many raw samples).
        seed: seed of the order (with the epoch).
    """

    def __init__(
        self,
        location: str | list[str],
        item_dataset: Beit3Dataset,
        rank: int = 0,
        world_size: int = 1,
        batch_size: int = 1,
        drop_last: bool = True,
        shuffle: bool = True,
        shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
        seed: int = 0,
        manifests: list[ShardManifest] | None = None,
    ) -> None:
        super().__init__()
        if shuffle_buffer < 1:
            raise ValueError(f"shuffle_buffer must be >= 1, got {shuffle_buffer}")
        self.locations = [str(loc) for loc in location] if isinstance(location, (list, tuple)) else [str(location)]
        self.location = ", ".join(self.locations)
        if manifests is None:
            manifests = [read_manifest(loc) for loc in self.locations]
        contents = {m.content for m in manifests}
        if len(contents) > 1:
            raise ValueError(
                f"shard sets {self.location} hold different contents ({sorted(contents)}); read them apart"
            )
        self.manifest = manifests[0]
        self.urls = [join_url(loc, shard.name) for loc, m in zip(self.locations, manifests) for shard in m.shards]
        self.counts = [shard.samples for m in manifests for shard in m.shards]
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(int).tolist() if self.counts else []
        self.item_dataset = item_dataset
        self.rank, self.world_size = rank, world_size
        self.batch_size, self.drop_last = batch_size, drop_last
        self.shuffle, self.shuffle_buffer = shuffle, shuffle_buffer
        self.seed = seed % (1 << 63)
        self.epoch = 0
        self.num_workers = 0  # set by StreamingLoader
        self._skip_batches = 0  # batches of this rank already trained in this epoch (resume)
        if self.num_samples == 0:
            raise ValueError(
                f"shard set {self.location} has {sum(self.counts)} samples: too few for {world_size} ranks"
            )

    # -- sizes --------------------------------------------------------------------------------------------------------
    @property
    def num_samples(self) -> int:
        """Samples of this rank per epoch."""
        return sum(self.counts) // self.world_size

    def __len__(self) -> int:
        return self.num_samples

    def worker_samples(self) -> list[int]:
        workers = max(self.num_workers, 1)
        return [stop - start for start, stop in (_split(self.num_samples, workers, w) for w in range(workers))]

    def worker_batches(self) -> list[int]:
        """Batches each worker makes per epoch (``drop_last`` applies per worker in an iterable DataLoader)."""
        size = self.batch_size
        return [n // size if self.drop_last else -(-n // size) for n in self.worker_samples()]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.item_dataset.set_epoch(epoch)

    def skip_batches(self, num_batches: int) -> None:
        """Start the next iteration after ``num_batches`` batches of this rank (resume)."""
        self._skip_batches = int(num_batches)

    # -- reading ------------------------------------------------------------------------------------------------------
    def _resume_position(self, worker: int, workers: int) -> tuple[int, int]:
        """(the part of the epoch this DataLoader worker reads, samples of it already trained on).

        A fresh DataLoader asks worker 0 first; after a resume the first batch must come from the worker that was
        next in turn, so worker ids are rotated by it."""
        if not self._skip_batches:
            return worker, 0
        done, next_worker = batches_per_worker_after(self._skip_batches, self.worker_batches())
        part = (worker + next_worker) % workers
        return part, done[part] * self.batch_size

    def _raw_samples(self, chunk: Chunk) -> Iterator[tuple[int, dict[str, Any], dict[str, bytes], str]]:
        """``(item index, record, images, source)`` of a chunk, buffer-shuffled, images still bytes."""
        url = self.urls[chunk.shard]
        rng = np.random.default_rng([self.seed, self.epoch, chunk.shard, chunk.begin])
        buffer: list[tuple[int, dict[str, Any], dict[str, bytes], str]] = []
        for number, (key, record, images) in enumerate(iter_shard_samples(url)):
            if number < chunk.begin:
                continue
            if number >= chunk.end:
                break
            sample = (self.starts[chunk.shard] + number, record, images, f"{url}, sample {key}")
            if not self.shuffle:
                yield sample
                continue
            buffer.append(sample)
            if len(buffer) >= self.shuffle_buffer:
                pick = int(rng.integers(len(buffer)))
                buffer[pick], buffer[-1] = buffer[-1], buffer[pick]
                yield buffer.pop()
        while buffer:
            pick = int(rng.integers(len(buffer)))
            buffer[pick], buffer[-1] = buffer[-1], buffer[pick]
            yield buffer.pop()

    def _chunks(self, worker: int, workers: int) -> list[Chunk]:
        return plan_worker(
            self.counts, self.rank, self.world_size, worker, workers, self.seed, self.epoch, self.shuffle
        )

    def sample_ids_of(self, epoch: int, worker: int = 0, workers: int = 1) -> Iterator[int]:
        """Item indices worker ``worker`` of ``workers`` yields in ``epoch``, without decoding them (inspection)."""
        self.set_epoch(epoch)
        for chunk in self._chunks(worker, workers):
            for index, _, _, _ in self._raw_samples(chunk):
                yield index

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        worker, skip = self._resume_position(worker, workers)
        self._skip_batches = 0  # once: the next epoch starts from its beginning
        last_good: tuple[int, dict[str, Any], dict[str, bytes], str] | None = None
        owed = 0  # bad samples not yet replaced (no good one seen yet)
        for chunk in self._chunks(worker, workers):
            if skip >= len(chunk):
                skip -= len(chunk)
                continue  # whole shard part already trained on: not even opened
            for sample in self._raw_samples(chunk):
                if skip:
                    skip -= 1
                    continue
                item = self._build(sample)
                if item is None:  # bad and skipped: replaced by the last good item, so every rank keeps its length
                    if last_good is None:
                        owed += 1
                        continue
                    item = self._build(last_good)
                else:
                    last_good = sample
                yield item
                for _ in range(owed):
                    yield self._build(last_good)
                owed = 0

    def _build(self, sample: tuple[int, dict[str, Any], dict[str, bytes], str]) -> dict[str, Any] | None:
        index, record, images, source = sample
        dataset = self.item_dataset
        try:
            item = dataset.item_from_record(index, record, images, source)
        except BadSampleError as err:
            if not dataset.skip_bad_samples:
                raise BadSampleError(
                    f"{err} Convert the data again (the converter drops undecodable images) or set "
                    "skip_bad_samples=True to replace bad samples by others (they are counted and logged)."
                ) from err.__cause__
            dataset._record_skip(str(err))
            return None
        return item


class StreamingLoader(DataLoader):
    """DataLoader over a :class:`ShardStream` whose mid-epoch position goes into Lightning checkpoints.

    ``state_dict`` / ``load_state_dict`` have the same shape as the JSONL loaders' (``ResumableDataLoader``). Each
    ``iter()`` gives the stream the epoch the trainer is in (``epoch_fn``) before the workers are forked, since an
    iterable dataset has no sampler for Lightning to call ``set_epoch`` on.
    """

    progress: Callable[[], int] | None = None
    epoch_fn: Callable[[], int] | None = None

    def __init__(self, dataset: ShardStream, **kwargs: Any) -> None:
        super().__init__(dataset, batch_size=dataset.batch_size, drop_last=dataset.drop_last, **kwargs)
        dataset.num_workers = self.num_workers

    def __len__(self) -> int:
        return sum(self.dataset.worker_batches())

    def __iter__(self):
        if self.epoch_fn is not None and not self.dataset._skip_batches:
            self.dataset.set_epoch(self.epoch_fn())
        iterator = super().__iter__()
        if self.num_workers > 0:  # the workers took their copies of the skip when they started: the next epoch's
            self.dataset.skip_batches(0)  # iterator starts at its beginning (without workers __iter__ clears it)
        return iterator

    def state_dict(self) -> dict[str, int]:
        done = int(self.progress()) if self.progress is not None else 0
        return {"epoch": int(self.dataset.epoch), "batches_done": done, "batch_size": int(self.batch_size)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("batch_size", self.batch_size) != self.batch_size:
            raise ValueError(
                f"the checkpoint's loader had batch_size {state['batch_size']}, this run has {self.batch_size}: a "
                "stream cannot resume at the same sample with another batch size"
            )
        self.dataset.set_epoch(state["epoch"])
        self.dataset.skip_batches(state["batches_done"])
