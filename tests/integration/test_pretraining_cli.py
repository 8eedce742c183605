"""Pretraining through the real ``beit3`` CLI on the sample: a short run learns, mixed batches resume exactly with
loader workers, and a fine-tuning task starts from the pretrained checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from beit3_lightning.cli import main
from tests.integration.test_training_reliability import (
    CONFIGS,
    STEPS_PER_EPOCH,
    RaiseAfterSteps,
    SaveEvalMetrics,
    assert_same_weights,
    callback_arg,
    load,
    sample_args,
    step_checkpoint_arg,
)


class RecordKindIds(L.Callback):
    """Appends ``{kind: sample ids}`` of every training step (one JSON object per line) to ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        with open(self.path, "a") as file:
            file.write(json.dumps({kind: part["index"].tolist() for kind, part in batch.items()}) + "\n")


def record_kind_ids_arg(path: Path) -> str:
    """``--trainer.callbacks+=`` argument instantiating :class:`RecordKindIds` (by this module's import path)."""
    return "--trainer.callbacks+=" + json.dumps(
        {"class_path": f"{__name__}.RecordKindIds", "init_args": {"path": str(path)}}
    )


def pretrain_args(root: Path, out: Path, *extra: str) -> list[str]:
    """The shortened sample run of the reliability tests, at the sample visual tokenizer's 48 px."""
    return sample_args("pretrain.yaml", root, out, "--data.init_args.img_size", "48", *extra)


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["beit3"])


def _ids(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sample_pretraining_learns_and_logs_every_kind(pretrain_root: Path, tmp_path: Path):
    metrics = tmp_path / "metrics.json"
    args = pretrain_args(pretrain_root, tmp_path, "--trainer.max_epochs", "4", "--data.init_args.batch_size", "24",
                         "--trainer.limit_train_batches", "10", "--trainer.limit_val_batches", "1.0")  # fmt: skip
    main(["validate", *args, callback_arg(SaveEvalMetrics, path=str(metrics))])  # the untrained model
    before = json.loads(metrics.read_text())
    main(["fit", *args])
    main(["validate", *args, "--ckpt_path", str(tmp_path / "checkpoints" / "last.ckpt"),
          callback_arg(SaveEvalMetrics, path=str(metrics))])  # fmt: skip
    after = json.loads(metrics.read_text())
    for kind in ("images", "texts", "pairs"):
        assert after[f"val/{kind}_loss"] < before[f"val/{kind}_loss"] - 0.5, kind
    assert after["val/texts_mlm_acc"] > before["val/texts_mlm_acc"] + 5
    # Masked patches of the sample are mostly empty cells (one code): the model learns that first.
    assert after["val/images_mim_acc"] > before["val/images_mim_acc"] + 20
    assert set(after) >= {"val/loss", "val/pairs_mlm_acc", "val/pairs_mim_acc"}
    events = list((tmp_path / "lightning_logs").rglob("events.out.tfevents*"))
    assert events and any(b"pretrain_images/00_masked_patches" in e.read_bytes() for e in events)
    assert any(b"pretrain_texts/00_masked_words" in e.read_bytes() for e in events)


def test_mixed_batches_resume_mid_epoch_with_workers_exactly(pretrain_root: Path, tmp_path: Path):
    workers = ("--data.init_args.num_workers", "2", "--trainer.max_epochs", "3")
    ref, out = tmp_path / "uninterrupted", tmp_path / "resumed"
    main(["fit", *pretrain_args(pretrain_root, ref, step_checkpoint_arg(ref / "steps"), *workers,
                                record_kind_ids_arg(ref / "ids.jsonl"))])  # fmt: skip
    reference, reference_ids = load(ref / "steps" / "last.ckpt"), _ids(ref / "ids.jsonl")
    assert len(reference_ids) == 3 * STEPS_PER_EPOCH and set(reference_ids[0]) == {"images", "texts", "pairs"}
    record = record_kind_ids_arg(out / "ids.jsonl")
    steps = step_checkpoint_arg(out / "steps")
    with pytest.raises(RuntimeError, match="simulated crash after step 9"):
        main(["fit", *pretrain_args(pretrain_root, out, steps, *workers, record,
                                    callback_arg(RaiseAfterSteps, steps=9))])  # fmt: skip
    main(["fit", *pretrain_args(pretrain_root, out, steps, *workers, record), "--ckpt_path", "last"])
    ids = _ids(out / "ids.jsonl")
    assert ids[:8] + ids[9:] == reference_ids  # step 9's batch was lost with the crash, then re-read
    assert_same_weights(load(out / "steps" / "last.ckpt"), reference)


def test_fine_tuning_starts_from_the_pretrained_checkpoint(pretrain_root: Path, sample_dataset, tmp_path: Path):
    main(["fit", *pretrain_args(pretrain_root, tmp_path / "pre", "--trainer.max_epochs", "1")])
    pretrained = load(tmp_path / "pre" / "checkpoints" / "last.ckpt")["state_dict"]
    from beit3_lightning.cli import make_cli

    cli = make_cli(["--config", str(CONFIGS / "vqav2.yaml"),
                    "--data.init_args.root", str(sample_dataset("vqav2")),
                    "--model.init_args.init_from", str(tmp_path / "pre" / "checkpoints" / "last.ckpt"),
                    "--trainer.default_root_dir", str(tmp_path / "vqa")], run=False)  # fmt: skip
    weights = cli.model.model.state_dict()
    backbone = {k.removeprefix("model."): v for k, v in pretrained.items() if k.startswith("model.beit3.")}
    shared = [k for k in backbone if k in weights]
    assert len(shared) == len([k for k in weights if k.startswith("beit3.")])  # every backbone weight came from it
    for key in shared:
        assert torch.equal(weights[key], backbone[key]), key
