"""Does the tiny model learn every embedded sample task on CPU? Fit + test each sample config, compare with chance.

    python benchmarks/sample_learning.py                  # all tasks (about 2-5 min each on 2 cores)
    python benchmarks/sample_learning.py --tasks vqav2 nlvr2
    python benchmarks/sample_learning.py --seeds 42 7 1   # the README table: a range over three seeds

Prints one row per task: wall time of the fit, the key test metric (VQAv2 and NoCaps: validation, their test splits
have no public answers), and the chance / prior baseline computed from the same data (majority answer, majority class,
random ranking k/N, most frequent training caption for every image). With several `--seeds` (passed as
`--seed_everything`, which seeds the weights, the loader order and every per-item augmentation), one row per task
gives the mean, the range and each seed's value: on a CPU the tiny model's result moves by several points with the
seed and with the machine's kernels, so a single number is not reproducible elsewhere but the range is the claim.
Segmentation and pretraining have their own benchmarks (`segmentation.py`, `pretraining_helps.py`).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from beit3_lightning.task_table import DATASETS

ROOT = Path(__file__).resolve().parents[1]
TASKS = tuple(name for name, spec in DATASETS.items() if spec.head not in ("segmentation", "pretraining"))
KEY = {name: spec.key_metric for name, spec in DATASETS.items()}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def chance(task: str, root: Path) -> float:
    """The metric a model gets without looking at the image (or at random)."""
    if task == "imagenet":
        train = Counter(r["label"] for r in read_jsonl(root / "imagenet.train.index.jsonl"))
        val = [r["label"] for r in read_jsonl(root / "imagenet.val.index.jsonl")]
        return 100 * sum(label == train.most_common(1)[0][0] for label in val) / len(val)
    if task == "vqav2":
        counts = Counter()
        for r in read_jsonl(root / "vqa.train.jsonl") + read_jsonl(root / "vqa.trainable_val.jsonl"):
            for label, score in zip(r["labels"], r["scores"]):
                counts[label] += score
        best = counts.most_common(1)[0][0]
        val = read_jsonl(root / "vqa.rest_val.jsonl")
        return 100 * sum(dict(zip(r["labels"], r["scores"])).get(best, 0.0) for r in val) / len(val)
    if task == "nlvr2":
        train = Counter(r["label"] for r in read_jsonl(root / "nlvr2.train.index.jsonl"))
        test = [r["label"] for r in read_jsonl(root / "nlvr2.test-P.index.jsonl")]
        return 100 * sum(label == train.most_common(1)[0][0] for label in test) / len(test)
    if task in ("coco_retrieval", "flickr30k"):
        rows = read_jsonl(root / f"{task}.test.jsonl")
        images = len({r["image_id"] for r in rows})
        per_image = len(rows) / images
        tr = [100 * (1 - math.comb(len(rows) - int(per_image), k) / math.comb(len(rows), k)) for k in (1, 5, 10)]
        ir = [100 * min(k, images) / images for k in (1, 5, 10)]
        return sum(tr + ir) / 6
    # captioning: the most frequent training caption for every image
    from beit3_lightning.data.references import caption_references
    from beit3_lightning.metrics.caption import cider_d

    coco_root = root if task == "coco_captioning" else root.parent / "coco_captioning"
    train = caption_references("coco_captioning", coco_root, "train")
    common = Counter(c.lower() for caps in train.values() for c in caps).most_common(1)[0][0]
    split = "test" if task == "coco_captioning" else "val"
    refs = caption_references(task, root, split)
    return cider_d({i: common for i in refs}, refs)


def run(task: str, seed: int | None, extra: list[str]) -> tuple[float, float]:
    config = ROOT / "configs" / "sample" / f"{task}.yaml"
    out = ROOT / "outputs" / "sample" / task
    seeded = [] if seed is None else ["--seed_everything", str(seed)]
    common = ["--config", str(config), "--trainer.enable_progress_bar", "false", *seeded, *extra]
    start = time.perf_counter()
    subprocess.run(  # each benchmark run replaces the previous one's checkpoints
        [sys.executable, "-m", "beit3_lightning.cli", "fit", *common, "--checkpoint.overwrite", "true"],
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    fit_seconds = time.perf_counter() - start
    best = out / "checkpoints" / "best.ckpt"
    # VQAv2 and NoCaps test splits have no public answers (EvalAI): report the validation metric of the best model.
    stage = "val" if task in ("vqav2", "nocaps") else "test"
    subcommand = "validate" if stage == "val" else "test"
    proc = subprocess.run(
        [sys.executable, "-m", "beit3_lightning.cli", subcommand, *common, "--ckpt_path", str(best)],
        check=True, cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    for line in proc.stdout.splitlines():
        if f"{stage}/{KEY[task]} " in line or line.strip().startswith(f"{stage}/{KEY[task]}"):
            numbers = [tok for tok in line.replace("│", " ").split() if tok[0].isdigit()]
            return fit_seconds, float(numbers[-1])
    raise RuntimeError(f"no {KEY[task]} in the output of {task}:\n{proc.stdout[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=None,
        help="seed_everything values, one fit per seed (default: the config's seed, one fit)",
    )  # fmt: skip
    parser.add_argument("extra", nargs="*", help="extra CLI overrides passed to every run (after --)")
    args = parser.parse_args()
    seeds = args.seeds or [None]
    print(f"{'task':16} {'fit s':>7} {'metric':>14} {'mean':>8} {'range':>15} {'chance':>8}  per seed")
    for task in args.tasks:
        runs = [run(task, seed, args.extra) for seed in seeds]
        values = [value for _, value in runs]
        seconds = max(s for s, _ in runs)  # the slowest fit: an upper bound
        base = chance(task, ROOT / "data" / "sample" / task)
        mean, spread = sum(values) / len(values), f"{min(values):.2f}-{max(values):.2f}"
        each = " / ".join(f"{v:.2f}" for v in values)
        print(f"{task:16} {seconds:7.0f} {KEY[task]:>14} {mean:8.2f} {spread:>15} {base:8.2f}  {each}", flush=True)


if __name__ == "__main__":
    main()
