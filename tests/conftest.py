"""Shared fixtures: one thread per torch process, and the embedded sample datasets generated once per session."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

# Why one thread: on a loaded 2-core machine, OpenMP threads of a tiny model spin against each other (and against
# other processes); measured 10× to 20× slower per training step with 2 threads than with 1. The environment
# variable reaches subprocesses (``beit3`` runs, DDP workers); ``set_num_threads`` covers this process.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``sample_dataset("vqav2")`` → directory holding that embedded sample dataset (raw files + indexes).

    Each dataset is generated on first request (about a second) into a session-wide temporary directory and
    reused by every later test; the directories are read-only by convention (tests write elsewhere).
    """
    from beit3_lightning.data.sample import ensure_sample_dataset

    root = tmp_path_factory.mktemp("sample_data")
    return lambda name: ensure_sample_dataset(name, root / name)
