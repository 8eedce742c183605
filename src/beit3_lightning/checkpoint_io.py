"""``AtomicCheckpointIO``: checkpoint files are replaced whole or not at all, on any filesystem.

Lightning's ``TorchCheckpointIO`` writes through an fsspec transaction whose temporary file lives in ``$TMPDIR``: when
the output directory is on another filesystem the final move becomes a copy, and a kill during it leaves a 0-byte
``last.ckpt`` with the previous good one gone; a full disk leaves a truncated file. Here the temporary file is created
in the destination directory itself, flushed and fsync'ed, then renamed over the target with ``os.replace`` (atomic
within one filesystem); on any error the temporary file is removed and the previous checkpoint stays as it was.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from beit3_lightning.atomic_files import fsync_directory, temp_file_beside


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save(obj, path)`` that never leaves a partial ``path``: temp file beside it, fsync, ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = temp_file_beside(path)  # same directory: os.replace stays a rename, never a copy
    try:
        with os.fdopen(fd, "wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp_name, path)
    except Exception as err:
        Path(tmp_name).unlink(missing_ok=True)
        # torch reports a full disk as a RuntimeError from its zip writer; say what happened and what was kept.
        kept = "the previous file is kept" if path.exists() else "nothing was written"
        raise OSError(f"could not write checkpoint {path}: {err} ({kept}; is the disk full?)") from err
    except BaseException:  # a kill (KeyboardInterrupt, SystemExit): clean up and let it through
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)  # the rename itself survives a power loss


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local writes are atomic (see the module docstring); remote URLs (``s3://``...)
    keep Lightning's own path."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, path)


def use_atomic_checkpoint_io(trainer: Any) -> None:
    """Make the trainer's plain ``TorchCheckpointIO`` atomic; strategies with their own format (DeepSpeed, sharded
    FSDP) or a user's custom CheckpointIO are left alone."""
    strategy = trainer.strategy
    if type(strategy.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()
