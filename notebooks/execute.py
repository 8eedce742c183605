"""Re-execute the notebooks in place, so the committed copies show real outputs (pictures visible on GitHub).

    python notebooks/execute.py                      # every notebook, full sample recipes (about 25 min on 2 cores)
    python notebooks/execute.py 04_segmentation      # one of them

Each notebook runs top to bottom in a fresh kernel from the repository root (the sample data goes to data/sample,
training runs to outputs/, both git-ignored), with ``BEIT3_QUICK`` unset: the full recipes, as a user gets them.
Outputs are written back into the ``.ipynb``; a failing cell stops with the error and leaves the file untouched.
The test suite checks that every committed notebook carries the outputs of one complete top-to-bottom run and runs
each notebook itself in quick mode.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import nbclient
import nbformat

NOTEBOOKS = Path(__file__).resolve().parent
TIMEOUT_PER_CELL_S = 3600


def execute(path: Path) -> float:
    """Run ``path`` in a fresh kernel and write it back with its outputs; returns the seconds it took."""
    notebook = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    client = nbclient.NotebookClient(notebook, timeout=TIMEOUT_PER_CELL_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS.parent)}})  # fmt: skip
    client.execute()
    for cell in notebook.cells:  # timestamps would make every re-run a diff
        cell.metadata.pop("execution", None)
    nbformat.write(notebook, path)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebook names (stem or file name); default: all")
    args = parser.parse_args()
    os.environ.pop("BEIT3_QUICK", None)
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    if args.names:
        wanted = {Path(name).stem for name in args.names}
        paths = [p for p in paths if p.stem in wanted]
        if len(paths) != len(wanted):
            parser.error(f"unknown notebook(s) {sorted(wanted - {p.stem for p in paths})}")
    for path in paths:
        print(f"{path.name}: {execute(path):.0f} s", flush=True)


if __name__ == "__main__":
    main()
