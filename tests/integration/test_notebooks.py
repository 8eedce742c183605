"""The notebooks run top to bottom on the CPU (quick mode) without errors, and are committed with the outputs of a
full run (``python notebooks/execute.py``).

Each notebook runs with its working directory in a temporary folder that links to the repository's ``configs``, so
the sample data and the training runs it writes land there, not in the checkout.
"""

from __future__ import annotations

from pathlib import Path

import nbclient  # the dev extra (with nbformat and ipykernel)
import nbformat
import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
TIMEOUT_PER_CELL_S = 240


def test_the_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == [
        "01_quickstart.ipynb",
        "02_inference.ipynb",
        "03_embeddings_and_retrieval.ipynb",
        "04_segmentation.ipynb",
        "05_pretraining.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_with_the_outputs_of_one_full_run(path):
    """`python notebooks/execute.py` wrote them: every code cell ran once, in order, without errors, and the
    pictures are there for readers who do not run them."""
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, "a notebook without code"
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), "re-run notebooks/execute.py"
    outputs = [output for cell in code for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, monkeypatch):
    (tmp_path / "configs").symlink_to(REPO / "configs", target_is_directory=True)
    monkeypatch.setenv("BEIT3_QUICK", "1")  # the kernel inherits it: a few training steps per run
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=TIMEOUT_PER_CELL_S, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    # The notebooks show pictures: at least one PNG came out.
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert (tmp_path / "data" / "sample").is_dir(), "the sample data should be written under the working directory"
