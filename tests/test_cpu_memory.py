"""Importing beit3_lightning puts PyTorch's big CPU tensors on transparent huge pages: page faults are counted (not
timed) in a fresh interpreter, since PyTorch reads the setting once, at its first CPU allocation."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from beit3_lightning.cpu_memory import THP_ENV, kernel_huge_page_mode

# Imports the package, then allocates, touches and frees a 196 MB tensor (the text embedding's gradient) the way
# every training step does; reports the variable as torch saw it and the minor page faults of the last round.
PROBE = """
import json, os, resource
import beit3_lightning
import torch
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    before = faults()
    torch.empty(64010, 768).fill_(1.0)
print(json.dumps({"env": os.environ.get("THP_MEM_ALLOC_ENABLE"), "faults": faults() - before}))
"""
SMALL_PAGES = 64010 * 768 * 4 // 4096  # 48,007 faults when every 4 KB page is faulted in


def probe(**env: str | None) -> dict:
    environ = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, env=environ)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_requests_huge_pages_and_keeps_the_users_choice():
    default, opted_out = probe(**{THP_ENV: None}), probe(**{THP_ENV: "0"})
    assert default["env"] == "1" and opted_out["env"] == "0"
    mode = kernel_huge_page_mode()
    huge_when_asked = mode in ("madvise", "always")  # "never" (or no THP at all): 4 KB pages whatever we ask
    assert (default["faults"] < SMALL_PAGES // 20) == huge_when_asked, (mode, default)
    # Without the request only a kernel in "always" mode gives huge pages (to the 2 MB-aligned parts).
    assert (opted_out["faults"] > SMALL_PAGES // 2) == (mode != "always"), (mode, opted_out)
