"""Callbacks a task adds by itself (throughput) and the CLI's key-metric checkpoint, on stand-in trainers."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest
import torch

from beit3_lightning.callbacks import SkippedSamples, Throughput
from beit3_lightning.cli import KeyMetricCheckpoint
from beit3_lightning.task_table import DATASETS
from beit3_lightning.tasks import CaptioningTask, NLVR2Task, RetrievalTask, VQATask


class RecordingModule:
    """Stands for a LightningModule: records what ``log`` receives."""

    def __init__(self) -> None:
        self.logged: list[tuple[str, float, int]] = []

    def log(self, name: str, value: float, batch_size: int) -> None:
        self.logged.append((name, value, batch_size))


def test_throughput_logs_samples_per_second_between_batch_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([10.0, 12.0, 12.5, 100.0, 101.0])
    monkeypatch.setattr("beit3_lightning.callbacks.throughput.time.perf_counter", lambda: next(clock))
    callback, module = Throughput(), RecordingModule()
    batch = {"image": torch.zeros(4, 3, 8, 8)}
    callback.on_train_epoch_start(None, module)
    for index in range(3):  # ends at 10, 12, 12.5: 4 samples in 2 s, then in 0.5 s
        callback.on_train_batch_end(None, module, None, batch, index)
    callback.on_train_epoch_start(None, module)  # the first batch of an epoch is not a sample (loader start-up)
    callback.on_train_batch_end(None, module, None, batch, 0)
    callback.on_train_batch_end(None, module, None, batch, 1)
    assert module.logged == [("train/samples_per_sec", 2.0, 4), ("train/samples_per_sec", 8.0, 4),
                             ("train/samples_per_sec", 4.0, 4)]  # fmt: skip


@pytest.mark.parametrize("task_class", [VQATask, NLVR2Task, RetrievalTask, CaptioningTask])
def test_best_checkpoint_follows_the_key_metric_of_the_task_table(task_class, tmp_path) -> None:
    callback = KeyMetricCheckpoint()
    trainer = SimpleNamespace(default_root_dir=str(tmp_path), limit_val_batches=1.0)
    # ModelCheckpoint.setup goes on to read trainer internals the stand-in lacks; our part runs first.
    with contextlib.suppress(AttributeError):
        callback.setup(trainer, task_class, "fit")
    assert callback.monitor == f"val/{task_class.key_metric}"
    assert callback.mode == task_class.key_metric_mode == "max"
    assert callback.filename == "best" and callback.dirpath == str(tmp_path / "checkpoints")
    assert {DATASETS[name].key_metric for name in DATASETS if DATASETS[name].head == task_class.head} == {
        task_class.key_metric
    }


class SkippingDataModule:
    """Stands for a DataModule with ``skip_bad_samples``: a count, the skip reasons, a fraction check."""

    skip_bad_samples = True
    skip_log = "skipped.txt"

    def __init__(self, reasons: list[str], fail: bool = False) -> None:
        self.reasons, self.fail, self.checks = reasons, fail, 0

    @property
    def num_skipped(self) -> int:
        return len(self.reasons)

    def skipped_samples(self) -> list[str]:
        return list(self.reasons)

    def check_skip_fraction(self) -> None:
        self.checks += 1
        if self.fail:
            raise RuntimeError("too many bad samples")


class LoggingModule(RecordingModule):
    def log(self, name: str, value: float, **kwargs) -> None:
        self.logged.append((name, value, kwargs.get("prog_bar")))


def test_skipped_samples_are_logged_checked_and_summarised(caplog) -> None:
    datamodule = SkippingDataModule([f"img{i}.jpg missing (index.jsonl, line {i})" for i in range(25)])
    trainer, module, callback = SimpleNamespace(datamodule=datamodule), LoggingModule(), SkippedSamples()
    callback.on_train_batch_end(trainer, module, None, {}, 0)
    callback.on_validation_batch_end(trainer, module, None, {}, 0)
    assert module.logged == [("data/skipped", 25.0, True)] and datamodule.checks == 2
    with caplog.at_level("WARNING", logger="beit3_lightning.callbacks.skipped"):
        callback.teardown(trainer, module, "fit")
    (summary,) = [r.getMessage() for r in caplog.records]
    assert "25 bad samples were skipped during fit" in summary and "img0.jpg" in summary and "img19.jpg" in summary
    assert "img20.jpg" not in summary and "and 5 more (all in skipped.txt)" in summary
    failing = SimpleNamespace(datamodule=SkippingDataModule(["x"], fail=True))
    with pytest.raises(RuntimeError, match="too many bad samples"):
        callback.on_train_batch_end(failing, module, None, {}, 0)
    quiet = SimpleNamespace(datamodule=SimpleNamespace(skip_bad_samples=False))
    callback.on_train_batch_end(quiet, module, None, {}, 0)  # nothing to do without skip_bad_samples
    assert len(module.logged) == 1
