"""Shard sets at scale on this machine: conversion and read throughput, memory per worker, coverage and resume.

    python benchmarks/shards.py                                  # 100k and 1M text records, 2000 image pairs
    python benchmarks/shards.py --records 100000 --pairs 500     # quicker

Prints one table per question:

1. Conversion: samples/s and bytes per sample of ``beit3 prepare shards`` for img2dataset tars (synthetic 256 px
   JPEG + caption pairs written exactly like img2dataset) with 1 and 2 worker processes, and for text corpora.
2. Reading: pairs/s of one DataLoader worker, decoded and augmented at 224 px (what a training step consumes), next
   to the samples/s of a training step of the tiny and base models on this CPU.
3. Peak RSS of one process that builds the dataset and reads 20k items: today's JSONL index (every record in memory in
   every worker) against the shard stream, for a 100k and a 1M record text corpus. The stream must stay flat.
4. Coverage (2 ranks x 2 workers see every sample once) and exact resume (a worker resumed mid-epoch yields the rest
   of the uninterrupted sequence) on the largest set, read without decoding.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.shard_fixtures import write_img2dataset_tar  # noqa: E402

WORDS = [
    "red",
    "green",
    "blue",
    "yellow",
    "circle",
    "square",
    "triangle",
    "star",
    "above",
    "below",
    "left",
    "right",
    "of",
    "the",
    "a",
    "two",
    "three",
]


def write_corpus(folder: Path, records: int, files: int = 8) -> None:
    import random

    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    per_file = records // files
    for f in range(files):
        lines = (" ".join(rng.choices(WORDS, k=12)) for _ in range(per_file))
        (folder / f"{f}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_jsonl_from_shards(shards: Path, path: Path) -> None:
    from beit3_lightning.data.shards.format import iter_shard_samples, read_manifest

    manifest = read_manifest(str(shards))
    with open(path, "w", encoding="utf-8") as file:
        for shard in manifest.shards:
            for _, record, _ in iter_shard_samples(str(shards / shard.name)):
                file.write(json.dumps(record) + "\n")


PEAK_RSS = """
import sys, itertools
from beit3_lightning.data.pretraining import PretrainTextDataset
from beit3_lightning.data.shards.stream import ShardStream
from beit3_lightning.data.tokenizer import Beit3Tokenizer
kind, location = sys.argv[1], sys.argv[2]
tok = Beit3Tokenizer("sample")
kw = dict(split="train", transform=None, max_text_len=24, vocab_size=tok.vocab_size, mask_token_id=tok.mask_token_id)
if kind == "jsonl":
    data = PretrainTextDataset(root=location, **kw)
    items = (data[i] for i in range(len(data)))
else:
    data = ShardStream(location, PretrainTextDataset(root=location, records=[], **kw), shuffle_buffer=1000)
    items = iter(data)
for item in itertools.islice(items, 20000):
    pass
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the parent process that started this one.
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(int(hwm.split()[1]) / 1024)
"""


def peak_rss_mb(kind: str, location: Path) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", PEAK_RSS, kind, str(location)], check=True, capture_output=True,
                         text=True, env=env)  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def read_throughput(shards: Path, seconds: float = 20.0) -> float:
    """Pairs/s of one process (= one DataLoader worker) building pretraining pair items at 224 px."""
    from beit3_lightning.data.masking import BlockMaskingGenerator
    from beit3_lightning.data.pretraining import PretrainPairDataset
    from beit3_lightning.data.shards.stream import ShardStream
    from beit3_lightning.data.tokenizer import Beit3Tokenizer
    from beit3_lightning.data.transforms import build_vl_transform

    tok = Beit3Tokenizer("sample")
    items = PretrainPairDataset(root=str(shards), split="train", transform=build_vl_transform(True, 224), records=[],
                                max_text_len=64, vocab_size=tok.vocab_size, mask_token_id=tok.mask_token_id,
                                text_mask_prob=0.5, image_masking=BlockMaskingGenerator(14, 0.4))  # fmt: skip
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in ShardStream(str(shards), items):
            count += 1
            if time.perf_counter() - start >= seconds:
                break
    return count / (time.perf_counter() - start)


def step_throughput(model: str, batch: int, steps: int = 3) -> float:
    """Samples/s of a pretraining training step (pairs: image 224 + 64 text tokens, fp32) on this CPU."""
    import torch

    from beit3_lightning.modeling.config import Beit3Config
    from beit3_lightning.modeling.heads.pretraining import Beit3ForPretraining

    net = Beit3ForPretraining(Beit3Config.from_name(f"beit3_{model}_patch16_224"), codebook_size=8192)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    image = torch.randn(batch, 3, 224, 224)
    text = torch.randint(3, 1000, (batch, 64))
    image_mask = torch.rand(batch, 196) < 0.4
    text_mask = torch.rand(batch, 64) < 0.5
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        out = net(image=image, image_mask=image_mask, text_ids=text, padding_mask=torch.zeros_like(text),
                  text_mask=text_mask)  # fmt: skip
        loss = sum(logits.float().logsumexp(-1).mean() for logits in out.values())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return batch / (sum(times[1:]) / steps)


def check_coverage_and_resume(shards: Path) -> tuple[bool, bool]:
    from beit3_lightning.data.pretraining import PretrainTextDataset
    from beit3_lightning.data.shards.stream import ShardStream

    def stream(rank: int) -> ShardStream:
        items = PretrainTextDataset(root=str(shards), split="train", transform=None, records=[])
        return ShardStream(str(shards), items, rank=rank, world_size=2, batch_size=8)

    seen = [i for rank in range(2) for w in range(2) for i in stream(rank).sample_ids_of(3, w, 2)]
    total = sum(1 for _ in seen)
    covered = sorted(seen) == list(range(total)) and total == stream(0).manifest.num_samples // 2 * 2
    reference = list(stream(0).sample_ids_of(3, 1, 2))
    resumed = stream(0)
    resumed.num_workers = 2
    resumed.set_epoch(3)
    resumed.skip_batches(101)  # worker 1 of 2 produced 50 batches, worker 0 51: the next batch is worker 1's
    part, skip = resumed._resume_position(0, 2)  # the first worker of the resumed loader
    exact = part == 1 and skip == 50 * 8 and list(resumed.sample_ids_of(3, part, 2))[skip:] == reference[skip:]
    return covered, exact


PARTS = ("conversion", "reading", "memory", "coverage")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS, help="which tables (default all)")
    args = parser.parse_args()
    from beit3_lightning.data.shards.convert import convert_to_shards

    work = args.work or Path(tempfile.mkdtemp(prefix="beit3-shards-bench-"))
    raw = work / "img2dataset"
    raw.mkdir(parents=True, exist_ok=True)
    per_tar = 500
    for shard in range(max(1, args.pairs // per_tar)):
        write_img2dataset_tar(raw / f"{shard:05d}.tar", shard, per_tar, size=(256, 256))
    print("| conversion | workers | samples | samples/s | bytes/sample |\n|---|---|---|---|---|")
    for workers in (1, 2, 1, 2):  # interleaved: the first runs also pay for warm-up
        s = convert_to_shards("img2dataset", [raw], work / f"pairs{workers}", tokenizer="sample", workers=workers,
                              overwrite=True, show_progress=False)  # fmt: skip
        print(f"| img2dataset tars -> pairs | {workers} | {s.samples} | {s.samples / s.seconds:.0f} | "
              f"{s.bytes / s.samples:.0f} |", flush=True)  # fmt: skip
    sets = {}
    for n in args.records if {"memory", "coverage"} & set(args.parts) else []:
        corpus = work / f"corpus{n}"
        write_corpus(corpus, n)
        s = convert_to_shards("texts", [corpus], work / f"texts{n}", tokenizer="sample", workers=2, overwrite=True,
                              show_progress=False)  # fmt: skip
        print(f"| text corpus -> texts | 2 | {s.samples} | {s.samples / s.seconds:.0f} | {s.bytes / s.samples:.0f} |",
              flush=True)  # fmt: skip
        sets[n] = work / f"texts{n}"
        write_jsonl_from_shards(sets[n], sets[n] / "pretrain.texts.train.jsonl")

    if "reading" in args.parts:
        reading_table(work / "pairs1")
    if "memory" in args.parts:
        print("\n| records | JSONL index, peak RSS (MB) | shard stream, peak RSS (MB) |\n|---|---|---|")
        for n, location in sets.items():
            print(f"| {n} | {peak_rss_mb('jsonl', location):.0f} | {peak_rss_mb('shards', location):.0f} |", flush=True)
    if "coverage" in args.parts:
        covered, exact = check_coverage_and_resume(sets[max(sets)])
        print(f"\ncoverage, 2 ranks x 2 workers, every sample once: {covered}; mid-epoch resume exact: {exact}")


def reading_table(pairs_shards: Path) -> None:
    pairs = read_throughput(pairs_shards)
    print("\n| reading / training | samples/s |\n|---|---|")
    print(f"| one worker: pairs decoded + augmented at 224 px | {pairs:.0f} |", flush=True)
    for model, batch in (("tiny", 16), ("base", 4)):
        print(f"| training step, {model}@224, pairs, fp32, batch {batch} | {step_throughput(model, batch):.1f} |",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
