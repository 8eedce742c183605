"""Semantic segmentation: does the tiny model learn the samples (against honest baselines), and how fast is a base
training step at 512²?

    python benchmarks/segmentation.py                    # learning on both samples + speed (about 10 min, 2 cores)
    python benchmarks/segmentation.py --skip-speed       # learning only
    python benchmarks/segmentation.py --skip-learning --steps 3

Learning: each sample config is fitted with ``beit3 fit`` (the ADE20k-layout sample, and the generic-layout sample
written by a different generator: other shapes, colours, sizes and textures, so the recipe is not tuned to one
generator), and the best validation mIoU is compared with two baselines computed on the same val split at the
original label size:

* all-background: the most frequent training class everywhere;
* colour lookup: each pixel's colour (16 levels per channel) mapped to the class most often seen with that colour in
  the training images (the best a per-pixel colour threshold can do).

Speed: one training step (forward + backward + AdamW) of the base model at a 512² crop, batch 2, in fp32 and under
bf16 autocast, each in a fresh process (peak resident memory is that process's maximum RSS), plus a slide inference
of one 512 × 683 image (2 windows).
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
LEVELS = 16  # colour lookup: 16 levels per channel


def read_index(root: Path, task: str, split: str) -> list[dict]:
    lines = (root / f"{task}.{split}.index.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def pairs(root: Path, task: str, split: str):
    from PIL import Image

    from beit3_lightning.data.segmentation import load_mask, read_class_info

    reduce = read_class_info(root, task)["reduce_zero_label"]
    for record in read_index(root, task, split):
        image = np.asarray(Image.open(root / record["image_path"]).convert("RGB"))
        yield image, load_mask(root / record["mask_path"], reduce_zero_label=reduce)


def colour_bins(image: np.ndarray) -> np.ndarray:
    q = image.astype(np.int64) * LEVELS // 256
    return (q[..., 0] * LEVELS + q[..., 1]) * LEVELS + q[..., 2]


def baselines(root: Path, task: str) -> dict[str, float]:
    """mIoU of the all-background and colour-lookup baselines on the val split."""
    from beit3_lightning.data.segmentation import read_class_info
    from beit3_lightning.metrics import SegmentationMetric

    num_classes = len(read_class_info(root, task)["classes"])
    counts = np.zeros((LEVELS**3, num_classes), dtype=np.int64)
    totals: Counter = Counter()
    for image, mask in pairs(root, task, "train"):
        keep = mask != 255
        np.add.at(counts, (colour_bins(image)[keep], mask[keep].astype(np.int64)), 1)
        totals.update(mask[keep].tolist())
    background = totals.most_common(1)[0][0]
    lookup = np.where(counts.sum(1) > 0, counts.argmax(1), background)
    metrics = {"all-background": SegmentationMetric(num_classes), "colour lookup": SegmentationMetric(num_classes)}
    for image, mask in pairs(root, task, "val"):
        truth = torch.from_numpy(mask.astype(np.int64))
        metrics["all-background"].update(torch.full_like(truth, background), truth)
        metrics["colour lookup"].update(torch.from_numpy(lookup[colour_bins(image)]), truth)
    return {name: float(metric.compute()["mIoU"]) for name, metric in metrics.items()}


def fit(config: str, data_root: Path, run_dir: Path, seed: int) -> tuple[float, float]:
    """(best val mIoU, fit seconds) of ``beit3 fit --config config`` on ``data_root``."""
    args = [sys.executable, "-m", "beit3_lightning.cli", "fit", "--config", str(ROOT / config),
            f"--data.init_args.root={data_root}", f"--trainer.default_root_dir={run_dir}",
            "--trainer.enable_progress_bar=false", f"--seed_everything={seed}"]  # fmt: skip
    start = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    match = re.search(r"val/mIoU = ([0-9.]+)", out.stdout + out.stderr)
    if out.returncode or match is None:
        raise RuntimeError(f"fit failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return float(match.group(1)), seconds


def speed_child(spec: dict) -> dict:
    """One variant in this (fresh) process: seconds per training step / inference, peak RSS."""
    from beit3_lightning.modeling import Beit3Config
    from beit3_lightning.modeling.heads import Beit3ForSemanticSegmentation
    from beit3_lightning.modeling.segmentation_inference import slide_logits
    from beit3_lightning.tasks.segmentation import segmentation_loss

    torch.manual_seed(0)
    torch.set_num_threads(spec["threads"])
    with torch.device("meta"):
        model = Beit3ForSemanticSegmentation(Beit3Config.from_name("base", img_size=512), num_classes=150)
    model = model.to_empty(device="cpu")
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    model.freeze_unused_parameters_()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    image, label = torch.randn(2, 3, 512, 512), torch.randint(0, 150, (2, 512, 512))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=spec["bf16"])
    times = []
    for _ in range(spec["steps"] + 1):  # the first step warms up
        start = time.perf_counter()
        with autocast:
            out = model.train()(image)
            loss = segmentation_loss(out["logits"], label) + 0.4 * segmentation_loss(out["aux_logits"], label)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    model.eval()
    with torch.no_grad(), autocast:
        start = time.perf_counter()
        slide_logits(lambda x: model(x)["logits"], torch.randn(1, 3, 512, 683), crop=512, stride=341)
        infer = time.perf_counter() - start
    return {"step_s": float(np.median(times[1:])), "infer_s": infer,
            "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}  # fmt: skip


def speed(steps: int, threads: int) -> None:
    print(f"\nbase@512, batch 2, 150 classes, {threads} threads ({steps} timed steps, median)")
    print(f"{'variant':<16}{'s / step':>10}{'images/s':>10}{'slide s':>10}{'peak RSS GB':>13}")
    for name, bf16 in (("fp32", False), ("bf16 autocast", True)):
        spec = json.dumps({"bf16": bf16, "steps": steps, "threads": threads})
        out = subprocess.run([sys.executable, __file__, "--child", spec], capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(out.stderr[-3000:])
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name:<16}{r['step_s']:>10.1f}{2 / r['step_s']:>10.2f}{r['infer_s']:>10.1f}{r['peak_gb']:>13.2f}")


def learning(seeds: list[int]) -> None:
    from beit3_lightning.data.sample import ensure_sample_dataset

    print(f"{'dataset':<16}{'all-background':>16}{'colour lookup':>15}{'tiny model (val mIoU)':>26}{'fit s':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for task, config in (("ade20k", "configs/sample/ade20k.yaml"),
                             ("segmentation", "configs/sample/segmentation.yaml")):  # fmt: skip
            root = ensure_sample_dataset(task, Path(tmp) / task)
            base = baselines(root, task)
            runs = [fit(config, root, Path(tmp) / f"run_{task}_{seed}", seed) for seed in seeds]
            scores = [score for score, _ in runs]
            spread = f" ± {np.std(scores):.1f} ({len(seeds)} seeds)" if len(seeds) > 1 else ""
            shown = f"{np.mean(scores):.1f}{spread}"
            print(f"{task:<16}{base['all-background']:>16.1f}{base['colour lookup']:>15.1f}{shown:>26}"
                  f"{np.mean([s for _, s in runs]):>8.0f}", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42], help="seeds of the sample fits")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per speed variant")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (speed)")
    parser.add_argument("--skip-learning", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(speed_child(json.loads(args.child))))
        return
    if not args.skip_learning:
        learning(args.seeds)
    if not args.skip_speed:
        speed(args.steps, args.threads)


if __name__ == "__main__":
    main()
