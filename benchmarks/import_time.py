"""How much does importing the package cost beyond ``import torch``? Fresh interpreters, interleaved, median of N.

    python benchmarks/import_time.py            # 5 rounds
    python benchmarks/import_time.py --rounds 9

Each variant runs in a new process (imports are cached per process), rounds interleave the variants so machine load
hits all of them alike, and the table prints the median seconds of each import on top of ``import torch``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

VARIANTS = {
    "beit3_lightning": "import beit3_lightning",
    "beit3_lightning.modeling": "import beit3_lightning.modeling",
    "beit3_lightning.load_model": "from beit3_lightning import load_model",
    "beit3_lightning.tasks": "import beit3_lightning.tasks",
}
PROBE = (
    "import time; t0 = time.perf_counter(); import torch; t1 = time.perf_counter(); {stmt}; "
    "t2 = time.perf_counter(); print(t2 - t1)"
)


def measure(statement: str) -> float:
    command = [sys.executable, "-c", PROBE.format(stmt=statement)]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, statement in VARIANTS.items():
            times[name].append(measure(statement))
    print(f"{'import (after torch)':32} {'median s':>9} {'min s':>7}")
    for name, values in times.items():
        print(f"{name:32} {statistics.median(values):9.3f} {min(values):7.3f}")


if __name__ == "__main__":
    main()
