"""The shard reader: every sample once per epoch across ranks and workers, a new order every epoch, exact resume
inside an epoch with DataLoader workers, bad samples replaced without changing a rank's length, URLs."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import pytest
import torch

from beit3_lightning.data.datasets import BadSampleError, collate
from beit3_lightning.data.masking import BlockMaskingGenerator
from beit3_lightning.data.pretraining import PretrainImageDataset, PretrainTextDataset
from beit3_lightning.data.shards.convert import convert_to_shards
from beit3_lightning.data.shards.format import read_manifest
from beit3_lightning.data.shards.stream import ShardStream, StreamingLoader, batches_per_worker_after, plan_worker
from beit3_lightning.data.tokenizer import Beit3Tokenizer
from tests.shard_fixtures import write_class_folders

DOCS_PER_FILE = (37, 25, 40)  # 102 one-chunk documents; 10 per shard leaves shards of 7 and 5 too


@pytest.fixture(scope="module")
def text_shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stream")
    corpus = root / "corpus"
    corpus.mkdir()
    for f, count in enumerate(DOCS_PER_FILE):
        (corpus / f"{f}.txt").write_text("".join(f"doc {f} {i} red\n" for i in range(count)), encoding="utf-8")
    convert_to_shards("texts", [corpus], root / "texts", tokenizer="sample", samples_per_shard=10, show_progress=False)
    return root / "texts"


def text_items(root: Path) -> PretrainTextDataset:
    tokenizer = Beit3Tokenizer("sample")
    return PretrainTextDataset(root=str(root), split="train", transform=None, records=[], max_text_len=16,
                               vocab_size=tokenizer.vocab_size, mask_token_id=tokenizer.mask_token_id)  # fmt: skip


def stream(location: Path, **kwargs) -> ShardStream:
    return ShardStream(str(location), text_items(location), **kwargs)


def test_plan_covers_each_sample_once_across_ranks_and_workers(text_shards: Path):
    counts = [s.samples for s in read_manifest(str(text_shards)).shards]
    assert sorted(set(counts)) == [5, 7, 10]  # uneven shards
    total = sum(counts)
    orders = []
    for epoch in (0, 1, 2):
        seen = []
        for rank in range(2):
            for worker in range(2):
                ids = list(stream(text_shards, rank=rank, world_size=2, seed=3).sample_ids_of(epoch, worker, 2))
                assert abs(len(ids) - total / 4) <= 1
                seen += ids
        assert sorted(seen) == list(range(total))  # complete and disjoint
        orders.append(seen)
    assert orders[0] != orders[1] != orders[2]  # shard order and in-shard buffer reshuffled per epoch
    again = [i for r in range(2) for w in range(2)
             for i in stream(text_shards, rank=r, world_size=2, seed=3).sample_ids_of(0, w, 2)]  # fmt: skip
    assert again == orders[0]


def test_ranks_get_equal_counts_and_the_remainder_rotates(text_shards: Path):
    total = 102
    left_out = []
    for epoch in (0, 1):
        seen = [i for rank in range(4) for i in stream(text_shards, rank=rank, world_size=4).sample_ids_of(epoch, 0, 1)]
        assert len(seen) == 4 * (total // 4) and len(set(seen)) == len(seen)
        left_out.append(set(range(total)) - set(seen))
    assert len(left_out[0]) == 2 and left_out[0] != left_out[1]


def test_plan_reads_only_the_shards_a_worker_needs():
    chunks = plan_worker([10, 10, 10, 10], rank=1, world_size=2, worker=0, num_workers=2, seed=0, epoch=0,
                         shuffle=False)  # fmt: skip
    assert [(c.shard, c.begin, c.end) for c in chunks] == [(2, 0, 10)]
    chunks = plan_worker([10, 10, 10, 10], rank=0, world_size=2, worker=1, num_workers=3, seed=0, epoch=0,
                         shuffle=False)  # fmt: skip
    assert [(c.shard, c.begin, c.end) for c in chunks] == [(0, 6, 10), (1, 0, 3)]


def test_batches_per_worker_follow_the_round_robin():
    assert batches_per_worker_after(0, [3, 2]) == ([0, 0], 0)
    assert batches_per_worker_after(3, [3, 2]) == ([2, 1], 1)
    assert batches_per_worker_after(5, [3, 2]) == ([3, 2], 1)
    assert batches_per_worker_after(4, [1, 3, 2]) == ([1, 2, 1], 2)  # w0 ran out after one: w1, w2, (w0) w1
    assert batches_per_worker_after(5, [1, 3, 2]) == ([1, 2, 2], 0)
    with pytest.raises(ValueError, match="only have 6"):
        batches_per_worker_after(7, [1, 3, 2])


def _batches(loader) -> list[list[int]]:
    return [batch["index"].tolist() for batch in loader]


@pytest.mark.parametrize(("workers", "batch"), [(0, 4), (2, 4), (5, 7)])  # 5 workers: 2 or 3 batches each
def test_resume_mid_epoch_gives_exactly_the_remaining_batches(text_shards: Path, workers: int, batch: int):
    def loader():
        data = stream(text_shards, batch_size=batch, shuffle_buffer=6, seed=1)
        return StreamingLoader(data, num_workers=workers, collate_fn=collate)

    full = loader()
    full.dataset.set_epoch(1)
    reference = _batches(full)
    per_worker = [102 * (w + 1) // max(workers, 1) - 102 * w // max(workers, 1) for w in range(max(workers, 1))]
    assert len(reference) == len(full) == sum(n // batch for n in per_worker)
    items = [i for b in reference for i in b]
    assert len(set(items)) == len(items)
    for done in (1, 5, 9, len(reference) - 1):
        resumed = loader()
        resumed.load_state_dict({"epoch": 1, "batches_done": done, "batch_size": batch})
        assert _batches(resumed) == reference[done:], done
        resumed.dataset.set_epoch(2)
        assert len(_batches(resumed)) == len(reference)  # the skip applies once


def test_items_are_the_same_as_from_the_jsonl_dataset(sample_dataset, tmp_path: Path):
    root = sample_dataset("pretrain")
    out = tmp_path / "pairs"
    from beit3_lightning.data.prepare import main as prepare_main

    assert prepare_main(["shards", "--from", "index", "--dataset", "pretrain", "--kind", "pairs", "--data-root",
                         str(root), "--out", str(out), "--samples-per-shard", "300"]) == 0  # fmt: skip
    from beit3_lightning.data.pretraining import PretrainPairDataset
    from beit3_lightning.data.transforms import build_vl_transform

    tokenizer = Beit3Tokenizer("sample")
    kwargs = dict(root=str(root), split="train", transform=build_vl_transform(True, 48), max_text_len=24,
                  vocab_size=tokenizer.vocab_size, mask_token_id=tokenizer.mask_token_id, text_mask_prob=0.5,
                  image_masking=BlockMaskingGenerator(3, 0.4), seed=5)  # fmt: skip
    jsonl = PretrainPairDataset(**kwargs)
    streamed = ShardStream(str(out), PretrainPairDataset(**kwargs, records=[]), shuffle=False, seed=5)
    streamed.set_epoch(2)
    jsonl.set_epoch(2)
    for n, item in enumerate(streamed):
        if n == 40:
            break
        want = jsonl[item["index"]]
        assert want.keys() == item.keys()
        for key in want:
            assert torch.equal(torch.as_tensor(want[key]), torch.as_tensor(item[key])), key


@pytest.fixture(scope="module")
def image_shards_with_a_bad_image(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    write_class_folders(root / "images", {"a": 8})
    convert_to_shards("images", [root / "images"], root / "shards", samples_per_shard=4, show_progress=False)
    # Damage one image inside a written shard (a disk error after conversion).
    import io
    import tarfile

    shard = root / "shards" / "images-000000-0000.tar"
    members = []
    with tarfile.open(shard) as tar:
        for member in tar.getmembers():
            members.append((member, tar.extractfile(member).read()))
    with tarfile.open(shard, "w") as tar:
        for member, data in members:
            if member.name == "000000001.image_path.jpg":
                data = data[:40]
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return root / "shards"


def image_items(root: Path, skip: bool) -> PretrainImageDataset:
    from beit3_lightning.data.transforms import build_vl_transform

    return PretrainImageDataset(root=str(root), split="train", transform=build_vl_transform(False, 32), records=[],
                                image_masking=BlockMaskingGenerator(2, 0.5), skip_bad_samples=skip)  # fmt: skip


def test_a_bad_image_stops_the_run_naming_shard_and_sample(image_shards_with_a_bad_image: Path):
    data = ShardStream(str(image_shards_with_a_bad_image), image_items(image_shards_with_a_bad_image, False),
                       shuffle=False)  # fmt: skip
    with pytest.raises(BadSampleError, match=r"images-000000-0000.tar, sample 000000001.*skip_bad_samples=True"):
        list(data)


def test_skipped_bad_images_keep_the_rank_length(image_shards_with_a_bad_image: Path):
    items = image_items(image_shards_with_a_bad_image, True)
    data = ShardStream(str(image_shards_with_a_bad_image), items, shuffle=False)
    got = [item["index"] for item in data]
    assert len(got) == len(data) == 8
    assert 1 not in got and got.count(0) == 2  # replaced by the last good item
    assert items.num_skipped == 1


def test_a_shard_set_over_http(text_shards: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(text_shards))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        remote = ShardStream(url, text_items(text_shards), shuffle=False)
        local = ShardStream(str(text_shards), text_items(text_shards), shuffle=False)
        assert [i["index"] for i in remote] == [i["index"] for i in local] == list(range(102))
    finally:
        server.shutdown()
