"""Throughput and peak memory of the BEiT-3 backbone: ours (SDPA / math attention, compiled layers) vs the official
torchscale.

By default each configuration runs in a fresh subprocess (so peak memory is its own) and the table compares, for
every preset × input × precision, inference and train-step (forward + backward) samples/s and peak memory.
``--interleave N`` instead builds every implementation in one process and alternates them for N rounds (each
round times ``--steps`` calls of each), so a busier moment of a shared machine hits all of them alike; it reports
the median per implementation and, for the train step, the share of its time spent in matrix multiplications
(``mm``/``addmm``/``bmm`` in the profiler): the part no framework-level change can speed up, which bounds what
any implementation with the same arithmetic can gain over the official one.

    python benchmarks/backbone.py                       # tiny + base, CPU, fp32 + bf16
    bash benchmarks/setup_reference.sh                  # once, to add the official implementation as a column
    python benchmarks/backbone.py --presets base --modes image_text --text-len 32 --interleave 5
    python benchmarks/backbone.py --device cuda --batch 32 --presets base

Peak memory is the growth of the process's peak RSS over the measured loop on CPU, and
``torch.cuda.max_memory_allocated`` on GPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REF_PATH = Path(__file__).resolve().parents[1] / ".bench-ref"
IMPLS = ("ours-auto", "ours-sdpa", "ours-math", "ours-compile", "official")
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def official_available() -> bool:
    sys.path.insert(0, str(REF_PATH))
    try:
        import torchscale.model.BEiT3  # noqa: F401
    except ImportError:
        return False
    return True


def official_model(config):
    """torchscale's ``BEiT3`` configured as unilm ``beit3`` does for ``config`` (random weights)."""
    sys.path.insert(0, str(REF_PATH))
    from torchscale.architecture.config import EncoderConfig
    from torchscale.model.BEiT3 import BEiT3

    return BEiT3(
        EncoderConfig(
            encoder_embed_dim=config.embed_dim,
            encoder_attention_heads=config.num_heads,
            encoder_ffn_embed_dim=config.ffn_dim,
            encoder_layers=config.num_layers,
            patch_size=config.patch_size,
            img_size=config.img_size,
            vocab_size=config.vocab_size,
            multiway=True,
            layernorm_embedding=False,
            normalize_output=config.normalize_output,
            no_output_layer=True,
            drop_path_rate=0.0,
        )
    )


def build(impl: str, preset: str, img_size: int):
    from beit3_lightning.modeling import Beit3Backbone, Beit3Config

    config = Beit3Config.from_name(preset, img_size=img_size, vocab_size=64010)
    attn_impl = impl.removeprefix("ours-") if impl in ("ours-auto", "ours-sdpa", "ours-math") else "auto"
    ours = Beit3Backbone(config.replace(attn_impl=attn_impl))
    if impl == "ours-compile":
        ours.compile_layers()  # the task option ``compile: true``
    if impl != "official":
        return ours
    ref = official_model(config)
    ref.load_state_dict(ours.state_dict(), strict=True)  # same weights, same key names
    return ref


def make_steps(spec: dict, model: torch.nn.Module) -> dict:
    """``{"infer": fn, "train": fn}``: one inference call and one train step (forward, backward, zero_grad)."""
    device = torch.device(spec["device"])
    batch, text_len = spec["batch"], spec["text_len"]
    generator = torch.Generator().manual_seed(0)  # the same inputs for every implementation
    images = torch.randn(batch, 3, spec["img_size"], spec["img_size"], generator=generator).to(device)
    inputs = {"visual_tokens": images}
    if spec["mode"] == "image_text":
        tokens = torch.randint(3, 64000, (batch, text_len), generator=generator).to(device)
        padding = torch.zeros(batch, text_len, dtype=torch.bool, device=device)
        padding[:, text_len * 3 // 4 :] = True
        inputs.update(textual_tokens=tokens, text_padding_position=padding)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec["dtype"] == "bf16")

    def infer():
        model.eval()
        with torch.no_grad(), autocast:
            model(**inputs)

    def train():
        model.train()
        with autocast:
            out = model(**inputs)["encoder_out"]
        out.float().square().mean().backward()
        model.zero_grad(set_to_none=True)

    return {"infer": infer, "train": train}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_child(spec: dict) -> dict:
    torch.manual_seed(0)
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    model = build(spec["impl"], spec["preset"], spec["img_size"]).to(device)
    steps = make_steps(spec, model)
    batch = spec["batch"]

    result = {}
    for name, step in steps.items():
        for _ in range(spec["warmup"]):
            step()
        sync(spec["device"])
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        clock = time.process_time if spec["timer"] == "cpu" else time.perf_counter
        start = clock()
        for _ in range(spec["steps"]):
            step()
        sync(spec["device"])
        elapsed = clock() - start
        if device.type == "cuda":
            peak_mb = torch.cuda.max_memory_allocated() / 2**20
        else:  # ru_maxrss is in KiB on Linux; its growth bounds what the loop needed beyond the model
            peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
        result[name] = {"samples_s": batch * spec["steps"] / elapsed, "peak_mb": peak_mb}
    return result


def matmul_share(step, device: str) -> float:
    """Fraction of one call's self time (CPU; CUDA kernels on GPU) spent in matrix multiplications."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        step()
        sync(device)
    attr = "self_device_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    events = prof.key_averages()
    total = sum(getattr(e, attr) for e in events)
    return sum(getattr(e, attr) for e in events if e.key in MATMUL_OPS) / max(total, 1e-9)


def run_interleaved(spec: dict, impls: list[str]) -> dict:
    """Every implementation in this process, alternated round by round; medians of samples/s per implementation."""
    torch.manual_seed(0)
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    steps = {}
    for impl in impls:
        torch.manual_seed(0)
        steps[impl] = make_steps(spec, build(impl, spec["preset"], spec["img_size"]).to(spec["device"]))
    clock = time.process_time if spec["timer"] == "cpu" else time.perf_counter
    result: dict[str, dict] = {impl: {} for impl in impls}
    for name in ("infer", "train"):
        for impl in impls:  # warm-up (and compilation) before any timing
            for _ in range(spec["warmup"]):
                steps[impl][name]()
        rates: dict[str, list[float]] = {impl: [] for impl in impls}
        for _ in range(spec["rounds"]):
            for impl in impls:
                sync(spec["device"])
                start = clock()
                for _ in range(spec["steps"]):
                    steps[impl][name]()
                sync(spec["device"])
                rates[impl].append(spec["batch"] * spec["steps"] / (clock() - start))
        for impl in impls:
            result[impl][name] = {"samples_s": statistics.median(rates[impl]), "peak_mb": float("nan")}
    for impl in impls:
        result[impl]["train_matmul_share"] = matmul_share(steps[impl]["train"], spec["device"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "base"], help="backbone presets to measure")
    parser.add_argument("--modes", nargs="+", default=["image", "image_text"], choices=["image", "image_text"])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument(
        "--impls", nargs="+", default=list(IMPLS), choices=IMPLS,
        help="ours with attn_impl auto / sdpa / math, ours with compiled layers (auto attention), official torchscale",
    )  # fmt: skip
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: tiny 32, others 4 on CPU)")
    parser.add_argument("--img-size", type=int, default=None, help="image size (default: tiny 48, others 224)")
    parser.add_argument("--text-len", type=int, default=64, help="text tokens for image_text (last quarter padded)")
    parser.add_argument("--steps", type=int, default=5, help="measured iterations (per round with --interleave)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first (compilation included)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--interleave", type=int, default=0, metavar="ROUNDS",
        help="all implementations in one process, alternated for ROUNDS rounds (medians; no memory column; adds "
        "the train step's matmul share)",
    )  # fmt: skip
    parser.add_argument(
        "--timer",
        choices=["wall", "cpu"],
        default="wall",
        help="wall clock, or CPU time of the process (with --threads 1: robust to other load on the machine; "
        "samples/s is then per CPU-second)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        spec = json.loads(args.child)
        if "impls" in spec:
            print(json.dumps(run_interleaved(spec, spec["impls"])))
            return
        print(json.dumps(run_child(spec)))
        return

    impls = [i for i in args.impls if i != "official" or official_available()]
    if "official" in args.impls and "official" not in impls:
        print("(official torchscale not found: run benchmarks/setup_reference.sh to add it)\n")
    threads = args.threads or torch.get_num_threads()
    print(f"device={args.device} torch={torch.__version__} threads={threads} timer={args.timer}", end="")
    print(f" interleaved rounds={args.interleave} steps/round={args.steps}" if args.interleave else "")
    last = "matmul %" if args.interleave else "train MB"
    header = (
        f"{'preset':6} {'input':10} {'dtype':5} {'impl':12} {'infer/s':>9} {'train/s':>9} {last:>9} "
        f"{'vs official (infer/train)':>26}"
    )
    print(header)
    print("-" * len(header))
    for preset in args.presets:
        batch = args.batch or (32 if preset == "tiny" else 4)
        img_size = args.img_size or (48 if preset == "tiny" else 224)
        for mode in args.modes:
            for dtype in args.dtypes:
                spec = dict(
                    preset=preset, mode=mode, dtype=dtype, device=args.device, batch=batch, img_size=img_size,
                    text_len=args.text_len, threads=args.threads, timer=args.timer, steps=args.steps,
                    warmup=args.warmup,
                )  # fmt: skip
                label = f"{preset:6} {mode:10} {dtype:5}"
                if args.interleave:
                    rows = child({**spec, "impls": impls, "rounds": args.interleave}, label)
                else:
                    rows = {}
                    for impl in impls:
                        result = child({**spec, "impl": impl}, f"{label} {impl:12}")
                        if result is not None:
                            rows[impl] = result
                print_rows(label, rows or {}, args.interleave > 0)


def child(spec: dict, label: str) -> dict | None:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, check=False
    )
    if proc.returncode:
        print(f"{label} failed: {proc.stderr.strip()[-300:]}")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def print_rows(label: str, rows: dict, interleaved: bool) -> None:
    base = rows.get("official")
    for impl, r in rows.items():
        ratio = ""
        if base and impl != "official":
            ratio = (
                f"{r['infer']['samples_s'] / base['infer']['samples_s']:.2f}x/"
                f"{r['train']['samples_s'] / base['train']['samples_s']:.2f}x"
            )
        last = f"{100 * r['train_matmul_share']:9.0f}" if interleaved else f"{r['train']['peak_mb']:9.0f}"
        print(
            f"{label} {impl:12} {r['infer']['samples_s']:9.2f} {r['train']['samples_s']:9.2f} {last} {ratio:>26}",
            flush=True,
        )
    if interleaved and base:
        # Amdahl: an implementation with the same matrix multiplications, whose every other op took no time at all.
        print(f"{label} {'(bound)':12} train ≤ {1 / base['train_matmul_share']:.2f}x official with the same matmuls")


if __name__ == "__main__":
    main()
