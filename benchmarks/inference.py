"""Inference paths on the CPU, one interleaved run, one table: official fp32 eager vs ours (fp32, bf16, compile,
ONNX Runtime fp32, int8 in torch and in ONNX Runtime).

    bash benchmarks/setup_reference.sh        # once: the official torchscale backbone for the first column
    python benchmarks/inference.py            # every workload at batch 1 and 8, 2 threads (takes a while)
    python benchmarks/inference.py --workloads encode_image vqa --batches 8 --variants official fp32 ort-int8

Models are base-size with random weights (speed does not depend on the values), saved as official-layout ``.pth``
files and loaded through ``load_model`` exactly as a user would (ONNX exports go to a temporary ``$BEIT3_HOME``).
"official" is the same head model with its backbone replaced by torchscale's ``BEiT3`` holding the same weights:
the official fp32 eager path. Workloads: ``encode_image`` (retrieval, 384 px), ``encode_text`` (retrieval, 64
tokens), ``vqa`` (480 px, 3129 answers), ``caption`` (480 px, beams 1 and 3, ``--caption-len`` tokens). Each round
runs every variant once per workload and batch, in turn (so a slower or busier moment of the machine hits all
variants alike); a variant's number is the median over ``--rounds`` rounds, after one untimed warm-up call (which
also compiles). Rows: items per second; ``×`` is relative to official fp32 eager.

Memory: a head's variants stay loaded together, and captioning at batch 8 × 3 beams keeps a 24-sequence key/value
cache per variant: on a 24 GB machine measure the torch and the ONNX captioning variants in two runs, e.g.
``--workloads caption --variants official fp32 bf16 torch-int8`` then
``--variants official ort-fp32 ort-int8`` (each run has its own official column).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from backbone import official_available, official_model  # benchmarks/backbone.py: the official reference
from PIL import Image

VARIANTS = ("official", "fp32", "bf16", "compile", "bf16-compile", "ort-fp32", "torch-int8", "ort-int8")
WORKLOADS = ("encode_image", "encode_text", "vqa", "caption")
HEAD = {"encode_image": "retrieval", "encode_text": "retrieval", "vqa": "vqav2", "caption": "captioning"}
IMG_SIZE = {"retrieval": 384, "vqav2": 480, "captioning": 480}
ORT_HEADS = ("retrieval", "vqav2", "captioning")
VQA_ANSWERS = 3129
TEXT_LEN = 64


def official_backbone(config, state: dict) -> torch.nn.Module:
    """torchscale's ``BEiT3`` (``backbone.official_model``) holding the given backbone weights."""
    ref = official_model(config)
    ref.load_state_dict(state, strict=True)
    ref.get_num_layers = lambda: len(ref.encoder.layers)  # our heads ask (unilm's wrapper has it, BEiT3 not)
    return ref.eval()


def write_checkpoints(root: Path, heads: set[str], preset: str) -> dict[str, Path]:
    """Random models in the official key layout, one ``.pth`` per head."""
    from beit3_lightning.modeling.config import Beit3Config
    from beit3_lightning.modeling.registry import HEADS

    paths = {}
    for head in sorted(heads):
        torch.manual_seed(0)
        config = Beit3Config.from_name(preset, img_size=IMG_SIZE[head])
        with torch.device("meta"):
            model = HEADS[head](config, **({"num_classes": VQA_ANSWERS} if head == "vqav2" else {}))
        model = model.to_empty(device="cpu")
        with torch.no_grad():
            for param in model.parameters():
                param.normal_(0, 0.02)
        paths[head] = root / f"{preset}_{head}.pth"
        torch.save({"model": model.state_dict()}, paths[head])
    return paths


def load(variant: str, head: str, path: Path):
    """The predictor of one variant, or None when the variant does not apply to the head."""
    from beit3_lightning.inference import load_model

    kwargs = {"tokenizer": "sample", "batch_size": 64}
    if head == "vqav2":
        kwargs["answers"] = [f"answer {i}" for i in range(VQA_ANSWERS)]
    if variant.startswith("ort") and head not in ORT_HEADS:
        return None
    if "compile" in variant and head == "captioning":
        return None  # load_model refuses it: every decoding step has a new cache length (a recompilation)
    options = {
        "official": {}, "fp32": {}, "bf16": {"dtype": torch.bfloat16}, "compile": {"compile": True},
        "bf16-compile": {"dtype": torch.bfloat16, "compile": True}, "ort-fp32": {"backend": "onnxruntime"},
        "torch-int8": {"quantize": "int8"}, "ort-int8": {"backend": "onnxruntime", "quantize": "int8"},
    }[variant]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the sample tokenizer on an official-size vocabulary; deprecations
        predictor = load_model(path, **kwargs, **options)
    predictor.show_progress = False
    if variant == "official":
        model = predictor.model
        model.beit3 = official_backbone(model.config, model.beit3.state_dict())
    return predictor


def inputs(batch: int) -> tuple[list[Image.Image], list[str]]:
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)) for _ in range(batch)]
    sentence = "a man riding a red bicycle down the street next to two dogs and a parked car near the old bridge"
    texts = [" ".join(sentence.split()[: 8 + i % 12]) + f" number {i}" for i in range(batch)]
    return images, texts


def call(workload: str, predictor, batch: int, beams: int, caption_len: int) -> Callable[[], None]:
    images, texts = inputs(batch)
    if workload == "encode_image":
        return lambda: predictor.encode_image(images)
    if workload == "encode_text":
        return lambda: predictor.encode_text(texts)
    if workload == "vqa":
        return lambda: predictor.answer(images, texts)
    return lambda: predictor.caption(images, num_beams=beams, max_len=caption_len)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--beams", nargs="+", type=int, default=[1, 3], help="caption beams")
    parser.add_argument("--caption-len", type=int, default=16, help="caption max_len in tokens (random weights "
                        "never stop early, so every caption decodes this many steps)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (median)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--preset", default="base", help="backbone preset (tiny: a quick check of the script)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    variants = [v for v in args.variants if v != "official" or official_available()]
    if "official" in args.variants and "official" not in variants:
        print("official torchscale not installed (bash benchmarks/setup_reference.sh): column skipped")
    home = Path(tempfile.mkdtemp(prefix="beit3-bench-"))
    os.environ["BEIT3_HOME"] = str(home)  # ONNX exports land here
    print(f"torch {torch.__version__}, {args.threads} threads, {args.preset} models; loading (exports take minutes)")
    paths = write_checkpoints(home, {HEAD[w] for w in args.workloads}, args.preset)

    cases = []  # (label, workload, batch, beams)
    for workload in args.workloads:
        for batch in args.batches:
            for beams in args.beams if workload == "caption" else [None]:
                cases.append((workload, batch, beams))
    # One head at a time (its variants interleaved), so that only one head's models are in memory.
    times: dict[tuple, list[float]] = {}
    for head in sorted({HEAD[w] for w in args.workloads}):
        predictors = {}
        for variant in variants:
            start = time.perf_counter()
            predictors[variant] = load(variant, head, paths[head])
            if predictors[variant] is not None:
                print(f"  loaded {head:10} {variant:13} {time.perf_counter() - start:6.1f} s", flush=True)
        head_cases = [case for case in cases if HEAD[case[0]] == head]
        for round_index in range(args.rounds + 1):  # round 0 is the warm-up (and the compilation)
            for workload, batch, beams in head_cases:
                for variant in variants:
                    if predictors[variant] is None:
                        continue
                    run = call(workload, predictors[variant], batch, beams, args.caption_len)
                    start = time.perf_counter()
                    run()
                    if round_index:
                        times.setdefault((workload, batch, beams, variant), []).append(time.perf_counter() - start)
            print(f"  {head}: round {round_index}/{args.rounds} done", flush=True)
        del predictors

    header = f"{'workload':14} {'batch':>5} {'beams':>5} " + " ".join(f"{v:>15}" for v in variants)
    print("\nitems/s (× official fp32 eager)\n" + header)
    for workload, batch, beams in cases:
        rates = {
            v: batch / statistics.median(times[workload, batch, beams, v])
            for v in variants
            if (workload, batch, beams, v) in times
        }
        base = rates.get("official")
        cells = []
        for v in variants:
            if v not in rates:
                cells.append(f"{'n/a':>15}")
                continue
            ratio = f" ({rates[v] / base:.2f}×)" if base else ""
            cells.append(f"{rates[v]:>7.2f}{ratio:>8}")
        print(f"{workload:14} {batch:>5} {beams or '':>5} " + " ".join(cells), flush=True)


if __name__ == "__main__":
    main()
