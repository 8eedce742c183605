"""Transparent huge pages for PyTorch's big CPU tensors, requested when the package is imported.

A CPU tensor larger than 32 MB gets freshly mapped memory from the C library, which the kernel faults in and
zero-fills 4 KB page by page. A training step allocates several every step: the dense gradient of the 64010 × 768
text embedding alone is 196 MB (48,000 page faults). PyTorch's CPU allocator asks the kernel for 2 MB pages on
allocations of 2 MB and more when ``THP_MEM_ALLOC_ENABLE=1`` (PyTorch's CPU performance tuning guide; off by default
because small allocations are then page-aligned, a little more memory). Measured on a 2-core CPU: a fresh
64010 × 768 ``torch.zeros`` 104 → 16 ms, ~500 page faults instead of 48,000 (README, "Measured").

PyTorch reads the variable once, at its first CPU allocation: ``import beit3_lightning`` (which the ``beit3`` command
and every submodule import does first) sets it when it is not set already; in a script that creates tensors before
importing beit3_lightning, export it in the shell. ``THP_MEM_ALLOC_ENABLE=0`` keeps PyTorch's default. It takes effect
where the kernel's ``/sys/kernel/mm/transparent_hugepage/enabled`` is ``madvise`` (most distributions) or ``always``;
with ``never`` nothing changes.
"""

from __future__ import annotations

import os

THP_ENV = "THP_MEM_ALLOC_ENABLE"
THP_SYSFS = "/sys/kernel/mm/transparent_hugepage/enabled"


def request_huge_pages() -> None:
    """Set ``THP_MEM_ALLOC_ENABLE=1`` unless the environment already says otherwise."""
    os.environ.setdefault(THP_ENV, "1")


def kernel_huge_page_mode() -> str | None:
    """The kernel's THP mode (``always``, ``madvise`` or ``never``), ``None`` where it has none (not Linux)."""
    try:
        with open(THP_SYSFS) as f:
            text = f.read()
    except OSError:
        return None
    return text[text.index("[") + 1 : text.index("]")] if "[" in text else None
