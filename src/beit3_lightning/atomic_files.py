"""Creating the temporary file of an atomic write: beside its target, with the permissions an ordinary file gets.

Both atomic writers (index files in ``data/index/common.py``, checkpoints in ``checkpoint_io.py``) write here, then
``os.replace`` the temporary file over the target: within one directory the rename is atomic on any filesystem.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def temp_file_beside(path: Path) -> tuple[int, str]:
    """``(fd, name)`` of a new file next to ``path``, mode 0666 minus the umask as ``open(path, "w")`` would give.

    ``tempfile.mkstemp`` creates 0600 files and ``os.replace`` keeps that mode, which made indexes and checkpoints
    unreadable for the other users of a shared directory. Asking the kernel for 0666 applies the process umask
    without reading it (``os.umask`` can only be read by changing it, which races with other threads).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        temp_name = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(temp_name, flags, 0o666), temp_name
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file next to {path}")


def fsync_directory(directory: Path) -> None:
    """Make a rename inside ``directory`` survive a power loss (best effort where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
