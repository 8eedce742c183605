"""``import beit3_lightning.modeling`` is plain torch; ``import beit3_lightning`` defers everything to first use."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("lightning", "pytorch_lightning", "albumentations", "cv2", "torchmetrics")


def imported_after(statement: str) -> set[str]:
    """The heavy modules present in ``sys.modules`` of a fresh interpreter after ``statement``."""
    probe = f"import sys; {statement}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    return set(out.stdout.split())


def test_modeling_imports_torch_only():
    assert imported_after("import beit3_lightning.modeling") == set()
    assert imported_after("from beit3_lightning.modeling import create_model, load_checkpoint, beam_search") == set()


def test_package_import_is_lazy_and_still_exports_the_api():
    assert imported_after("import beit3_lightning") == set()
    assert imported_after("from beit3_lightning import Beit3Config; Beit3Config.from_name('tiny')") == set()
    # The inference API works without Lightning; the training side brings it.
    assert "lightning" not in imported_after("from beit3_lightning import load_model")
    assert "lightning" in imported_after("import beit3_lightning.tasks")


def test_unknown_package_attribute_raises_attribute_error():
    import beit3_lightning

    with pytest.raises(AttributeError, match="no_such_name"):
        beit3_lightning.no_such_name  # noqa: B018
