"""Caption-generation throughput: captions/s with and without the k/v cache, for 1 and 3 beams.

Random weights, so captions rarely stop early: every caption runs to ``max_len - 3`` words, which makes runs
comparable (report the words/caption column with the numbers). Usage::

    python benchmarks/generation.py                        # tiny@48 and base@224 on CPU
    python benchmarks/generation.py --device cuda --batch-base 16 --max-len 32
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable
from functools import partial

import torch

from beit3_lightning.modeling import Beit3Config
from beit3_lightning.modeling.generation import beam_search
from beit3_lightning.modeling.heads import Beit3ForCaptioning

MASK_ID = 64001  # XLM-R <mask> of the official tokenizer


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "base"], choices=["tiny", "base", "large"])
    parser.add_argument("--img-size", type=int, default=None, help="default: 48 for tiny, 224 otherwise")
    parser.add_argument("--beams", nargs="+", type=int, default=[1, 3])
    parser.add_argument("--max-len", type=int, default=20, help="reference --num_max_bpe_tokens (eval default 64)")
    parser.add_argument("--batch-tiny", type=int, default=16, help="images per call for the tiny preset")
    parser.add_argument("--batch-base", type=int, default=2, help="images per call for base/large")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per setting (the best is kept)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    return parser.parse_args()


def measure(run: Callable[[], list[list[int]]], device: torch.device, repeats: int) -> tuple[float, float]:
    """Best wall time of ``repeats`` runs after one warm-up (allocator, kernels), and the mean words per caption."""
    run()
    best, captions = float("inf"), []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        captions = run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best, sum(map(len, captions)) / len(captions)


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()
    print(f"device={device} threads={torch.get_num_threads()} max_len={args.max_len} bf16={args.bf16}")
    header = f"{'preset':<7}{'img':>5}{'beams':>6}{'cache':>7}{'batch':>6}{'words':>7}{'seconds':>9}{'caps/s':>9}"
    print(header + f"{'cache speed-up':>16}")
    print("-" * (len(header) + 16))
    for preset in args.presets:
        img = args.img_size or (48 if preset == "tiny" else 224)
        torch.manual_seed(0)
        model = Beit3ForCaptioning(Beit3Config.from_name(preset, img_size=img)).to(device).eval()
        batch = args.batch_tiny if preset == "tiny" else args.batch_base
        images = torch.randn(batch, 3, img, img, device=device)
        for beams in args.beams:
            seconds = {}
            for use_cache in (True, False):
                run = partial(
                    beam_search,
                    model,
                    images,
                    num_beams=beams,
                    max_len=args.max_len,
                    mask_id=MASK_ID,
                    use_cache=use_cache,
                )
                with autocast:
                    seconds[use_cache], words = measure(run, device, args.repeats)
                speed = f"{seconds[False] / seconds[True]:.1f}x" if not use_cache else ""
                print(
                    f"{preset:<7}{img:>5}{beams:>6}{'yes' if use_cache else 'no':>7}{batch:>6}{words:>7.1f}"
                    f"{seconds[use_cache]:>9.2f}{batch / seconds[use_cache]:>9.2f}{speed:>16}"
                )


if __name__ == "__main__":
    main()
