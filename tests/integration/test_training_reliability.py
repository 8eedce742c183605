"""Training reliability through the real ``beit3`` CLI on the tiny sample configs: resume after a crash, stop on a
non-finite loss without saving broken state, DDP evaluation equal to one process.

Runs are shortened (32 px, batch 4, 6 train batches per epoch, 2 epochs) and use ``num_workers=0`` unless a test is
about loader workers (two runs with the same seed are bit-identical either way; workers only cost start-up time).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from beit3_lightning.cli import main
from beit3_lightning.tasks.schedule import total_training_steps

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "sample"
STEPS_PER_EPOCH = 6


# ----- callbacks given to the CLI by class path (importable by DDP workers too) -----------------------------------
class RaiseAfterSteps(L.Callback):
    """Simulates a crash (killed job, lost node) once ``steps`` optimiser steps are done."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.steps:
            raise RuntimeError(f"simulated crash after step {trainer.global_step}")


class RecordSampleIds(L.Callback):
    """Appends the sample ids of every training batch (one JSON list per line) to ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        with open(self.path, "a") as file:
            file.write(json.dumps(batch["index"].tolist()) + "\n")


def recorded_ids(path: Path) -> list[list[int]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class PoisonWeightsAtStep(L.Callback):
    """Writes NaN into one weight before the batch of optimiser step ``step`` (0-based) and records its ids."""

    def __init__(self, step: int, ids_file: str) -> None:
        self.step, self.ids_file = step, ids_file

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                pl_module.model.beit3.vision_embed.proj.bias[0] = float("nan")
            Path(self.ids_file).write_text(json.dumps(batch["index"].tolist()))


class SaveEvalMetrics(L.Callback):
    """Writes the logged metrics of a validate/test run to a JSON file (rank 0)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.is_global_zero:
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
            Path(self.path).write_text(json.dumps(metrics))

    def on_validation_end(self, trainer, pl_module) -> None:
        self._save(trainer)

    def on_test_end(self, trainer, pl_module) -> None:
        self._save(trainer)


class CompareStepEstimate(L.Callback):
    """Records our total step count next to Lightning's ``estimated_stepping_batches`` (into ``out``)."""

    def __init__(self, out: str):
        self.out = out

    def on_train_start(self, trainer, pl_module) -> None:
        schedule = trainer.lr_scheduler_configs[0].scheduler.lr_lambdas[0]
        values = [total_training_steps(trainer), trainer.estimated_stepping_batches, schedule.warmup_steps]
        Path(self.out).write_text(json.dumps(values))


def callback_arg(cls: type, **init_args: Any) -> str:
    """``--trainer.callbacks+=`` argument instantiating one of the callbacks above."""
    return "--trainer.callbacks+=" + json.dumps({"class_path": f"{__name__}.{cls.__name__}", "init_args": init_args})


def step_checkpoint_arg(dirpath: Path, every: int = 2) -> str:
    """A ModelCheckpoint writing ``last.ckpt`` every ``every`` optimiser steps (mid-epoch)."""
    init = {"dirpath": str(dirpath), "every_n_train_steps": every, "save_top_k": 0, "save_last": True}
    return "--trainer.callbacks+=" + json.dumps({"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                                 "init_args": init})  # fmt: skip


def sample_args(config: str, data_root: Path, out: Path, *extra: str) -> list[str]:
    """CLI arguments of a shortened sample run: tiny model, 32 px, batch 4, 2 epochs of 6 batches, no workers."""
    return [
        "--config", str(CONFIGS / config),
        "--data.init_args.root", str(data_root),
        "--data.init_args.num_workers", "0",
        "--data.init_args.batch_size", "4",
        "--data.init_args.img_size", "32",
        "--data.init_args.max_text_len", "16",
        "--trainer.max_epochs", "2",
        "--trainer.limit_train_batches", str(STEPS_PER_EPOCH),
        "--trainer.limit_val_batches", "2",
        "--trainer.num_sanity_val_steps", "0",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--trainer.default_root_dir", str(out),
        *extra,
    ]  # fmt: skip


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


def assert_same_weights(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=0, atol=0, msg=key)


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    """LightningCLI warns when it gets ``args`` while sys.argv holds pytest's options."""
    monkeypatch.setattr("sys.argv", ["beit3"])


# ----- resume ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vqa_root(sample_dataset: Callable[[str], Path]) -> Path:
    return sample_dataset("vqav2")


@pytest.fixture(scope="module")
def uninterrupted(vqa_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Final checkpoint of an uninterrupted 12-step VQA run (the reference for the resumed runs)."""
    out = tmp_path_factory.mktemp("uninterrupted")
    main(["fit", *sample_args("vqav2.yaml", vqa_root, out, step_checkpoint_arg(out / "steps"))])
    final = load(out / "steps" / "last.ckpt")
    assert final["global_step"] == 2 * STEPS_PER_EPOCH
    return final


def crash_and_resume(vqa_root: Path, out: Path, crash_after: int, *extra: str) -> dict[str, Any]:
    """Run until a crash after ``crash_after`` steps, resume with ``--ckpt_path last``; the final checkpoint."""
    steps = step_checkpoint_arg(out / "steps")
    crash = callback_arg(RaiseAfterSteps, steps=crash_after)
    with pytest.raises(RuntimeError, match=f"simulated crash after step {crash_after}"):
        main(["fit", *sample_args("vqav2.yaml", vqa_root, out, steps, crash, *extra)])
    assert load(out / "steps" / "last.ckpt")["global_step"] == crash_after - crash_after % 2  # the last save
    main(["fit", *sample_args("vqav2.yaml", vqa_root, out, steps, *extra), "--ckpt_path", "last"])
    return load(out / "steps" / "last.ckpt")


def test_resume_from_an_epoch_end_checkpoint_equals_an_uninterrupted_run(
    vqa_root: Path, uninterrupted: dict[str, Any], tmp_path: Path
) -> None:
    # Crash during step 7; the last checkpoint is from step 6, the end of epoch 0.
    resumed = crash_and_resume(vqa_root, tmp_path, crash_after=7)
    assert_same_weights(resumed, uninterrupted)
    for key in ("optimizer_states", "lr_schedulers"):
        assert str(resumed[key]) == str(uninterrupted[key]), key


def test_resume_mid_epoch_equals_an_uninterrupted_run(
    vqa_root: Path, uninterrupted: dict[str, Any], tmp_path: Path
) -> None:
    # Crash during step 9; the last checkpoint is from step 8, two batches into epoch 1.
    assert_same_weights(crash_and_resume(vqa_root, tmp_path, crash_after=9), uninterrupted)


def test_resume_mid_epoch_with_loader_workers_trains_on_the_same_samples_as_an_uninterrupted_run(
    vqa_root: Path, tmp_path: Path
) -> None:
    """With worker processes Lightning creates the resumed epoch's loader iterator (and so forks the workers, which
    prefetch at once) before it sets the sampler's epoch: the loader state must restore the epoch itself. Three
    epochs, so that a whole epoch follows the resumed one."""
    workers = ("--data.init_args.num_workers", "2", "--trainer.max_epochs", "3")
    ref, out = tmp_path / "uninterrupted", tmp_path / "resumed"
    record_ref, record = (callback_arg(RecordSampleIds, path=str(run / "ids.jsonl")) for run in (ref, out))
    main(["fit", *sample_args("vqav2.yaml", vqa_root, ref, step_checkpoint_arg(ref / "steps"), *workers, record_ref)])
    reference, reference_ids = load(ref / "steps" / "last.ckpt"), recorded_ids(ref / "ids.jsonl")
    assert len(reference_ids) == 3 * STEPS_PER_EPOCH
    epochs = [reference_ids[i : i + STEPS_PER_EPOCH] for i in range(0, 3 * STEPS_PER_EPOCH, STEPS_PER_EPOCH)]
    assert epochs[0] != epochs[1] != epochs[2]  # each epoch is shuffled anew

    # Crash during step 9; the last checkpoint is from step 8, two batches into epoch 1 (step 9's batch is lost).
    resumed = crash_and_resume(vqa_root, out, 9, *workers, record)
    ids = recorded_ids(out / "ids.jsonl")
    assert ids[:8] + ids[9:] == reference_ids
    assert_same_weights(resumed, reference)


@pytest.mark.parametrize(
    ("extra", "warmup"),
    [
        # 6 batches per epoch, warmup_epochs 1 → 6 warmup steps, capped at total - 1 (the schedule needs a cosine step)
        ([], 5),
        (["--trainer.accumulate_grad_batches", "4"], 1),  # ceil(6 / 4) = 2 steps in all
        (["--trainer.max_steps", "5"], 4),
        (["--trainer.max_steps", "9", "--trainer.max_epochs", "-1"], 6),  # bounded by steps only: 1 epoch = 6 steps
        (["--trainer.limit_train_batches", "0.5", "--trainer.accumulate_grad_batches", "3"], None),  # None: total - 1
    ],
)
def test_step_count_without_building_the_loader_equals_lightnings_estimate(vqa_root, tmp_path, extra, warmup):
    """The schedule length is computed from the dataset size (so the loader is built after a checkpoint restore),
    and warmup epochs are converted with the steps of one epoch."""
    out = tmp_path / "steps.json"
    args = sample_args("vqav2.yaml", vqa_root, tmp_path / "run", callback_arg(CompareStepEstimate, out=str(out)))
    main(["fit", *args, "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0", *extra])
    ours, lightning, ours_warmup = json.loads(out.read_text())
    assert ours == lightning
    assert ours_warmup == (warmup if warmup is not None else ours - 1)


# ----- non-finite loss ------------------------------------------------------------------------------------------
def test_non_finite_loss_stops_the_run_and_saves_nothing_after_the_last_good_step(
    vqa_root: Path, tmp_path: Path
) -> None:
    ids_file = tmp_path / "bad_batch_ids.json"
    poison = callback_arg(PoisonWeightsAtStep, step=5, ids_file=str(ids_file))
    args = sample_args(
        "vqav2.yaml", vqa_root, tmp_path / "run", step_checkpoint_arg(tmp_path / "run" / "steps"), poison
    )
    with pytest.raises(FloatingPointError) as error:
        main(["fit", *args])

    ids = json.loads(ids_file.read_text())
    assert len(ids) == 4
    assert "at global step 5 " in str(error.value) and str(ids) in str(error.value)
    checkpoints = sorted((tmp_path / "run").rglob("*.ckpt"))
    assert checkpoints, "the steps before the failure were checkpointed"
    for path in checkpoints:  # nothing saved at or after the failing step, and no NaN saved
        saved = load(path)
        assert saved["global_step"] <= 4, path
        assert all(torch.isfinite(v).all() for v in saved["state_dict"].values()), path
    assert load(tmp_path / "run" / "steps" / "last.ckpt")["global_step"] == 4


# ----- DDP ------------------------------------------------------------------------------------------------------
def eval_metrics(subcommand: str, config: str, root: Path, out: Path, ckpt: Path, *extra: str) -> dict[str, float]:
    metrics_file = out / f"{subcommand}_metrics.json"
    args = sample_args(config, root, out, callback_arg(SaveEvalMetrics, path=str(metrics_file)), *extra)
    main([subcommand, *args, "--trainer.limit_val_batches", "1.0", "--ckpt_path", str(ckpt)])
    return json.loads(metrics_file.read_text())


@pytest.mark.slow
def test_ddp_training_then_ddp_validation_equals_one_process(
    sample_dataset: Callable[[str], Path], tmp_path: Path
) -> None:
    root = sample_dataset("coco_retrieval")
    ddp = ["--trainer.strategy", "ddp_spawn", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    # 300 validation rows in batches of 25: each process gets exactly half, no padding repeats.
    evaluation = ["--data.init_args.eval_batch_size", "25"]
    main(["fit", *sample_args("coco_retrieval.yaml", root, tmp_path / "fit", *ddp, "--trainer.max_epochs", "1")])
    ckpt = tmp_path / "fit" / "checkpoints" / "last.ckpt"
    assert load(ckpt)["global_step"] == STEPS_PER_EPOCH  # limit_train_batches counts per process

    single = eval_metrics("validate", "coco_retrieval.yaml", root, tmp_path / "one", ckpt, *evaluation)
    double = eval_metrics("validate", "coco_retrieval.yaml", root, tmp_path / "two", ckpt, *evaluation, *ddp)
    assert "val/average_score" in single
    assert double.keys() == single.keys()
    for key in single:
        assert double[key] == pytest.approx(single[key], abs=1e-4), key


class WorseEveryEpoch(L.Callback):
    """Makes the key metric fall every validation, so only epoch 0 is ever 'best'."""

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        trainer.callback_metrics["val/score"] = torch.tensor(-float(trainer.current_epoch))


def test_last_checkpoint_is_the_final_step_even_when_it_is_not_the_best(vqa_root, tmp_path):
    out = tmp_path / "run"
    args = sample_args("vqav2.yaml", vqa_root, out, callback_arg(WorseEveryEpoch), "--trainer.max_epochs", "3")
    main(["fit", *args])
    last, best = load(out / "checkpoints" / "last.ckpt"), load(out / "checkpoints" / "best.ckpt")
    assert last["global_step"] == 3 * STEPS_PER_EPOCH
    assert best["global_step"] == STEPS_PER_EPOCH


def test_a_run_without_logger_trains(vqa_root, tmp_path):
    args = sample_args(
        "vqav2.yaml", vqa_root, tmp_path / "run", "--trainer.logger", "false", "--trainer.max_epochs", "1"
    )
    main(["fit", *args])
    assert load(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == STEPS_PER_EPOCH


def test_a_second_run_into_the_same_directory_is_refused_unless_told_to_overwrite(vqa_root, tmp_path):
    out = tmp_path / "run"
    main(["fit", *sample_args("vqav2.yaml", vqa_root, out, "--trainer.max_epochs", "1")])
    best = (out / "checkpoints" / "best.ckpt").read_bytes()
    refused = r"already holds best\.ckpt and last\.ckpt .*--checkpoint\.overwrite true"
    with pytest.raises(FileExistsError, match=refused):
        main(["fit", *sample_args("vqav2.yaml", vqa_root, out, "--trainer.max_epochs", "2")])
    assert (out / "checkpoints" / "best.ckpt").read_bytes() == best  # the earlier run's best survives
    overwrite = ("--checkpoint.overwrite", "true")
    main(["fit", *sample_args("vqav2.yaml", vqa_root, out, "--trainer.max_epochs", "2", *overwrite)])
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert load(out / "checkpoints" / "last.ckpt")["global_step"] == 2 * STEPS_PER_EPOCH
