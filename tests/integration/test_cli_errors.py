"""The ``beit3`` console script turns known start-up mistakes into one line and exit code 2 (``--debug`` shows the
traceback); run as a user runs it, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def beit3(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "beit3_lightning.cli", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})  # fmt: skip


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line and not line.startswith(("Seed set", "/"))]


def test_a_missing_config_file(tmp_path: Path):
    proc = beit3("fit", "--config", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2
    assert error_lines(proc) == [
        f"beit3 fit: error: config file {tmp_path / 'nope.yaml'} does not exist (the recipes are in configs/, e.g. "
        "configs/sample/vqav2.yaml)"
    ]


@pytest.fixture(scope="module")
def vqa_args(sample_dataset) -> list[str]:
    return ["--config", str(CONFIGS / "sample" / "vqav2.yaml"), "--data.init_args.root", str(sample_dataset("vqav2"))]


def test_a_missing_init_from_file(vqa_args, tmp_path: Path):
    proc = beit3("fit", *vqa_args, "--model.init_args.init_from", str(tmp_path / "missing.pth"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert error_lines(proc) == [
        f"beit3 fit: error: checkpoint file not found: {tmp_path / 'missing.pth'} (give a file, or an official name: "
        "see `beit3 download --list`)",
        "(run with --debug or BEIT3_DEBUG=1 for the traceback)",
    ]


def test_a_missing_tokenizer_and_debug_shows_the_traceback(vqa_args, tmp_path: Path):
    args = ("validate", *vqa_args, "--data.init_args.tokenizer", str(tmp_path / "beit3.spm"))
    proc = beit3(*args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = error_lines(proc)
    assert len(lines) == 2 and lines[0].startswith(f"beit3 validate: error: sentencepiece model not found: {tmp_path}")
    debug = beit3(*args, "--debug")
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "TokenizerError" in debug.stderr
    assert "Traceback" in beit3(*args, env={"BEIT3_DEBUG": "1"}).stderr


def test_optimizer_options_that_would_bypass_the_recipe_are_refused(vqa_args):
    proc = beit3("fit", *vqa_args, "--optimizer", "torch.optim.SGD", "--trainer.fast_dev_run", "true")
    assert proc.returncode == 2 and "--optimizer" in proc.stderr and "Traceback" not in proc.stderr


def test_a_misspelt_option_names_the_closest_one(vqa_args):
    proc = beit3("fit", *vqa_args, "--trainer.max_epohcs", "2")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: unrecognized arguments: --trainer.max_epohcs 2 (did you mean: --trainer.max_epohcs → "
        "--trainer.max_epochs?)"
    )


def test_test_on_a_split_without_public_answers(vqa_args):
    proc = beit3("test", *vqa_args, "--data.init_args.test_split", "test-dev", "--trainer.logger", "false",
                 "--trainer.enable_progress_bar", "false")  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert error_lines(proc)[-2:] == [
        "beit3 test: error: the VQAv2 test split has no public answers to score; use `beit3 predict` to write the "
        "submission file, or `beit3 validate` to score rest_val",
        "(run with --debug or BEIT3_DEBUG=1 for the traceback)",
    ]


@pytest.mark.parametrize(("option", "expected"), [
    ("--model.init_args.layer_decy", "--model.init_args.layer_decy is not an option of VQATask (did you mean "
                                     "--model.init_args.layer_decay?); its options: `beit3 fit --model.help VQATask`"),
    ("--data.init_args.batch_sze", "--data.init_args.batch_sze is not an option of VQAv2DataModule (did you "
                                   "mean --data.init_args.batch_size?); its options: "
                                   "`beit3 fit --data.help VQAv2DataModule`"),
])  # fmt: skip
def test_a_misspelt_task_or_data_option_names_the_closest_one(vqa_args, option, expected):
    proc = beit3("fit", *vqa_args, option, "0.5")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"error: {expected}" in proc.stderr.splitlines()
