"""Checkpoints are never lost: atomic writes (killed writes, a full disk), refused overwrites and unwritable
directories, and ``--ckpt_path`` / weights that cannot be right are refused before anything runs."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from beit3_lightning.checkpoint_io import atomic_torch_save
from beit3_lightning.cli import check_run_checkpoint, main
from beit3_lightning.inference import load_model
from beit3_lightning.modeling.checkpoint import CheckpointError, load_checkpoint, read_checkpoint

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "sample"


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["beit3"])


# ----- atomic writes ----------------------------------------------------------------------------------------------
def test_a_write_killed_midway_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1}, path)
    real_save = torch.save

    def killed(obj, file, *args, **kwargs):
        file.write(b"partial bytes of a checkpoint")
        raise KeyboardInterrupt  # stands for SIGINT / a kill arriving in the middle of the write

    monkeypatch.setattr("beit3_lightning.checkpoint_io.torch.save", killed)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"step": 2}, path)
    monkeypatch.setattr("beit3_lightning.checkpoint_io.torch.save", real_save)
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary file left behind


def test_the_temporary_file_lives_beside_the_target_and_the_result_is_0644(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path / "elsewhere"))  # Lightning's old path went through $TMPDIR
    seen = []
    real_open = os.open

    def recording_open(name, flags, *args, **kwargs):  # every file the save creates goes through os.open
        if flags & os.O_CREAT:
            seen.append(Path(name).parent)
        return real_open(name, flags, *args, **kwargs)

    monkeypatch.setattr("beit3_lightning.atomic_files.os.open", recording_open)
    old_mask = os.umask(0o022)
    try:
        atomic_torch_save({"a": torch.ones(2)}, tmp_path / "out" / "best.ckpt")
    finally:
        os.umask(old_mask)
    assert seen == [tmp_path / "out"]
    assert (tmp_path / "out" / "best.ckpt").stat().st_mode & 0o777 == 0o644


@pytest.fixture
def tiny_tmpfs(tmp_path: Path):
    """A 1 MiB tmpfs, a filesystem of its own that fills up (needs root and mount; CI runs as root)."""
    mount_point = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mount_point.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command on this machine")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (not root or no CAP_SYS_ADMIN): {result.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=False)


def test_a_full_disk_keeps_the_previous_checkpoint_on_another_filesystem(tiny_tmpfs: Path) -> None:
    path = tiny_tmpfs / "checkpoints" / "last.ckpt"
    atomic_torch_save({"w": torch.ones(1000)}, path)  # 4 KB: fits
    with pytest.raises(OSError, match=r"could not write checkpoint .*last\.ckpt.*the previous file is kept"):
        atomic_torch_save({"w": torch.ones(1_000_000)}, path)  # 4 MB: the disk fills up during the write
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(1000))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


# ----- the run directory ----------------------------------------------------------------------------------------
def fit_args(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "fit", "--config", str(CONFIGS / "nlvr2.yaml"),
        "--data.init_args.root", str(root), "--data.init_args.num_workers", "0", "--data.init_args.batch_size", "4",
        "--data.init_args.img_size", "32", "--trainer.max_steps", "2", "--trainer.limit_val_batches", "2",
        "--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", str(out), *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def trained(sample_dataset: Callable[[str], Path], tmp_path_factory) -> tuple[Path, Path]:
    """(data root, last.ckpt) of a 2-step NLVR2 sample run."""
    root, out = sample_dataset("nlvr2"), tmp_path_factory.mktemp("run")
    main(fit_args(root, out))
    return root, out / "checkpoints" / "last.ckpt"


def test_an_unwritable_checkpoint_directory_is_refused_before_training(trained, tmp_path: Path) -> None:
    root, _ = trained
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(PermissionError, match=r"checkpoint directory .*a_file/ckpts is not writable"):
        main(fit_args(root, tmp_path / "run", "--checkpoint.dirpath", str(blocker / "ckpts")))
    assert not (tmp_path / "run" / "lightning_logs").exists() or not any((tmp_path / "run").rglob("*.ckpt"))


# ----- --ckpt_path and weights that cannot be right -------------------------------------------------------------
def test_a_checkpoint_of_another_task_is_refused_naming_both(trained, capsys) -> None:
    root, ckpt = trained
    with pytest.raises(SystemExit):
        main(["validate", "--config", str(CONFIGS / "vqav2.yaml"), "--ckpt_path", str(ckpt)])
    assert "was saved by NLVR2Task but the config trains VQATask" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty (0 bytes)"),
        ("list", "holds list, not a checkpoint saved by `beit3 fit`"),
        ("weights", "holds weights without training state"),
        (b"\x00garbage", "is not a readable checkpoint"),
    ],
)
def test_broken_ckpt_paths_get_one_clear_message(tmp_path: Path, content, message) -> None:
    path = tmp_path / "bad.ckpt"
    if content == "list":
        torch.save([1, 2], path)
    elif content == "weights":
        torch.save({"model": {"w": torch.ones(1)}}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        check_run_checkpoint(str(path), "beit3_lightning.tasks.NLVR2Task")


def test_non_finite_weights_are_refused_by_validate_and_load_model(trained, tmp_path: Path) -> None:
    root, ckpt = trained
    checkpoint = torch.load(ckpt, weights_only=True)
    name = "model.head.dense1.weight"
    checkpoint["state_dict"][name][0, 0] = float("nan")
    bad = tmp_path / "nan.ckpt"
    torch.save(checkpoint, bad)
    with pytest.raises(CheckpointError, match=r"non-finite values in model\.head\.dense1\.weight \(1 of"):
        main(["validate", "--config", str(CONFIGS / "nlvr2.yaml"), "--data.init_args.root", str(root),
              "--data.init_args.img_size", "32", "--ckpt_path", str(bad)])  # fmt: skip
    with pytest.raises(CheckpointError, match=r"non-finite values in head\.dense1\.weight"):
        load_model(bad, tokenizer="sample")
    network = load_model(ckpt, tokenizer="sample").model  # the good file loads
    with pytest.raises(CheckpointError, match="non-finite"):
        load_checkpoint(network, read_checkpoint(bad).state)


def test_a_truncated_safetensors_file_names_the_path(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(100)}, str(path))
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(CheckpointError, match=r"model\.safetensors is not a readable \.safetensors file"):
        read_checkpoint(path)


KILLED_WRITER = """
import sys, torch
from beit3_lightning.checkpoint_io import atomic_torch_save
path = sys.argv[1]
step = 1
while True:  # rewrite a 64 MB checkpoint until killed
    atomic_torch_save({"step": step, "w": torch.full((16_000_000,), float(step))}, path)
    print(step, flush=True)
    step += 1
"""


def test_sigkill_during_writes_on_another_filesystem_leaves_a_whole_checkpoint(tmp_path: Path) -> None:
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(mount_point)]
    mounted = subprocess.run(mount, capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (not root or no CAP_SYS_ADMIN): {mounted.stderr.decode().strip()}")
    try:
        path = mount_point / "last.ckpt"
        writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True)
        writer.stdout.readline()  # one checkpoint is complete
        full_size = path.stat().st_size
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # kill in the middle of a later write
            writing = any(p.name != "last.ckpt" for p in mount_point.iterdir())  # our temporary file
            if writing or path.stat().st_size < full_size:  # or a direct write's half-written target
                break
        else:
            pytest.fail("never caught a write in progress")
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        checkpoint = torch.load(path, weights_only=True)  # whole and readable: the old or the new one, never half
        assert checkpoint["step"] >= 1 and bool((checkpoint["w"] == float(checkpoint["step"])).all())
        leftovers = [p.name for p in mount_point.iterdir() if p.name != "last.ckpt"]
        assert all(name.startswith(".last.ckpt.") for name in leftovers)  # at most the killed write's temp file
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def test_fit_and_predict_say_what_they_wrote(sample_dataset: Callable[[str], Path], tmp_path: Path, caplog) -> None:
    # Lightning's console logger does not propagate to the root logger: listen to it directly.
    lightning_logger = logging.getLogger("lightning.pytorch")
    lightning_logger.addHandler(caplog.handler)
    try:
        root = sample_dataset("nlvr2")
        main(fit_args(root, tmp_path / "run", "--trainer.limit_train_batches", "2"))  # the epoch ends: it validates
        best = tmp_path / "run" / "checkpoints" / "best.ckpt"
        main(["predict", "--config", str(CONFIGS / "nlvr2.yaml"), "--data.init_args.root", str(root),
              "--data.init_args.img_size", "32", "--trainer.default_root_dir", str(tmp_path / "run"),
              "--predictions.output_dir", str(tmp_path / "pred"), "--ckpt_path", str(best)])  # fmt: skip
    finally:
        lightning_logger.removeHandler(caplog.handler)
    said = caplog.text
    assert re.search(rf"best checkpoint: {re.escape(str(best))} \(val/acc = \d+\.\d{{4}}\)", said)
    assert f"last checkpoint: {tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}" in said
    assert re.search(rf"wrote \d+ predictions to {re.escape(str(tmp_path / 'pred'))}/submit_nlvr2_test\.json", said)
