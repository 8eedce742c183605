"""The ``beit3`` command: help texts, ``prepare``, ``--print_config`` and the data → model argument links."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from beit3_lightning.cli import main, make_cli
from beit3_lightning.data.tokenizer import model_vocab_size
from beit3_lightning.modeling.config import OFFICIAL_VOCAB_SIZE
from beit3_lightning.tasks import RetrievalTask, VQATask

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "sample"


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    """LightningCLI warns when it gets ``args`` while sys.argv holds pytest's options."""
    monkeypatch.setattr("sys.argv", ["beit3"])


def help_text(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """stdout of ``beit3 <args>`` for a command that prints and exits with status 0."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_subcommand_help_ends_with_where_the_beit3_options_are(capsys: pytest.CaptureFixture[str]) -> None:
    tail = " ".join(help_text(["fit", "--help"], capsys).split()[-120:])
    assert "The options a BEiT-3 run needs" in tail and "`beit3 fit --model.help <Task>`" in tail
    assert "SegmentationTask" in tail and "--data.init_args.root" in tail
    task_help = help_text(["test", "--model.help", "SegmentationTask"], capsys)
    assert "--model.test_scales" in task_help and "--trainer.max_epochs" not in task_help


def test_top_level_help_lists_the_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(["--help"], capsys)
    for word in ("fit", "validate", "test", "predict", "prepare"):
        assert word in text


def test_fit_help_lists_model_data_trainer_and_callback_options(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(["fit", "--help"], capsys)
    for option in ("--model", "--data", "--trainer.max_epochs", "--trainer.accumulate_grad_batches",
                   "--checkpoint.monitor", "--checkpoint.save_last", "--ckpt_path", "--seed_everything"):  # fmt: skip
        assert option in text, option


def test_prepare_help_lists_the_datasets(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(["prepare", "--help"], capsys)
    for dataset in ("imagenet", "vqav2", "nlvr2", "coco_captioning", "nocaps", "coco_retrieval", "flickr30k"):
        assert dataset in text


def test_print_config_shows_the_linked_and_default_values(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(["fit", "--config", str(CONFIGS / "vqav2.yaml"), "--print_config"], capsys)
    config = yaml.safe_load(text)
    assert config["model"]["class_path"] == "beit3_lightning.tasks.VQATask"
    assert config["model"]["init_args"]["lr"] == 1e-3
    assert config["data"]["init_args"]["img_size"] == 48
    assert config["trainer"]["max_epochs"] == 10
    assert config["checkpoint"]["save_last"] is True


def sample_cli(config: str, root: Path, *extra: str):
    args = ["--config", str(CONFIGS / config), "--data.init_args.root", str(root), "--data.init_args.img_size", "32"]
    return make_cli([*args, *extra], run=False)


def test_model_takes_img_size_vocab_and_answers_from_the_datamodule(sample_dataset: Callable[[str], Path]) -> None:
    cli = sample_cli("vqav2.yaml", sample_dataset("vqav2"))
    model, data = cli.model, cli.datamodule
    assert isinstance(model, VQATask)
    assert model.config.img_size == data.img_size == 32
    assert model.config.vocab_size == data.vocab_size == 1002  # the sample tokenizer
    assert model.model.head[-1].out_features == data.num_answers == len(data.label2ans)
    # The vision position table matches: 2 × 2 patches + CLS + 2 offset rows.
    assert model.model.beit3.encoder.embed_positions.A.weight.shape[0] == 7


@pytest.mark.parametrize(
    "args",
    [
        ["--model.init_args.img_size", "64"],
        ["--model.init_args.img_size=64"],
        ["--model.init_args.vocab_size", "500"],
        ["--model.init_args.num_classes", "3"],
    ],
)
def test_a_model_argument_the_data_sets_is_refused_on_the_command_line(args, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(CONFIGS / "vqav2.yaml"), *args])
    assert exit_info.value.code != 0
    key = args[0].split("=")[0].rsplit(".", 1)[1]
    assert f"{key} is set in the command line" in capsys.readouterr().err


def test_a_model_img_size_in_a_config_file_is_refused(tmp_path: Path, capsys) -> None:
    extra = tmp_path / "size.yaml"
    extra.write_text("model:\n  init_args:\n    img_size: 64\n")
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(CONFIGS / "vqav2.yaml"), "--config", str(extra)])
    assert f"img_size is set in {extra}" in capsys.readouterr().err


def test_a_model_name_whose_size_disagrees_with_the_data_is_refused(sample_dataset: Callable[[str], Path]) -> None:
    with pytest.raises(ValueError, match="names image size 96 but img_size=32"):
        sample_cli("vqav2.yaml", sample_dataset("vqav2"), "--model.init_args.model", "beit3_tiny_patch16_96")
    # The same size in both places is no conflict.
    cli = sample_cli("vqav2.yaml", sample_dataset("vqav2"), "--model.init_args.model", "beit3_tiny_patch16_32")
    assert cli.model.config.img_size == 32


def test_tasks_without_classes_get_no_num_classes(sample_dataset: Callable[[str], Path]) -> None:
    cli = sample_cli("coco_retrieval.yaml", sample_dataset("coco_retrieval"))
    assert isinstance(cli.model, RetrievalTask)
    assert cli.model.config.img_size == 32 and cli.model.config.vocab_size == 1002


def test_the_official_tokenizer_maps_to_the_checkpoints_64010_rows() -> None:
    assert model_vocab_size(64002) == OFFICIAL_VOCAB_SIZE == 64010
    assert model_vocab_size(1002) == 1002


def test_validate_from_a_checkpoint_of_a_task_without_classes(
    sample_dataset: Callable[[str], Path], tmp_path: Path
) -> None:
    """Lightning re-parses the checkpoint's hyperparameters on ``--ckpt_path``; the ``num_classes`` link must not
    leave a ``num_classes: None`` there that RetrievalTask would reject."""
    root = sample_dataset("coco_retrieval")
    args = ["--config", str(CONFIGS / "coco_retrieval.yaml"), "--data.init_args.root", str(root),
            "--data.init_args.img_size", "32", "--data.init_args.num_workers", "0", "--trainer.max_epochs", "1",
            "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps",
            "0", "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path)]  # fmt: skip
    fit = make_cli(["fit", *args])
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    assert "num_classes" not in torch.load(ckpt, weights_only=False)["hyper_parameters"]
    fitted = {k: float(v) for k, v in fit.trainer.callback_metrics.items()}
    recalls = [f"val/{side}_r{k}" for side in ("tr", "ir") for k in (1, 5, 10)]
    assert set(recalls) | {"val/average_score", "train/loss"} <= set(fitted)
    assert all(math.isfinite(v) for v in fitted.values()), fitted
    assert all(0.0 <= fitted[name] <= 100.0 for name in recalls), fitted
    for side in ("tr", "ir"):  # recall can only grow with k
        assert fitted[f"val/{side}_r1"] <= fitted[f"val/{side}_r5"] <= fitted[f"val/{side}_r10"]
    assert fitted["val/average_score"] == pytest.approx(sum(fitted[name] for name in recalls) / 6)
    assert fitted["train/loss"] > 0  # a contrastive loss over a batch of 32 pairs

    validated = make_cli(["validate", *args, "--ckpt_path", str(ckpt)])
    again = {k: float(v) for k, v in validated.trainer.callback_metrics.items()}
    # last.ckpt holds the weights the fit's final validation ran with: the same metrics, not a fresh model's.
    assert {k: again[k] for k in recalls} == pytest.approx({k: fitted[k] for k in recalls}, abs=1e-4)


def test_compile_option_trains_with_compiled_layers_and_saves_the_usual_checkpoint(
    sample_dataset: Callable[[str], Path], tmp_path: Path
) -> None:
    root = sample_dataset("vqav2")
    args = ["--config", str(CONFIGS / "vqav2.yaml"), "--data.init_args.root", str(root),
            "--data.init_args.img_size", "32", "--data.init_args.num_workers", "0", "--trainer.max_epochs", "1",
            "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps",
            "0", "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path),
            "--model.init_args.ema_decay", "0.9"]  # fmt: skip
    assert sample_cli("vqav2.yaml", root).model.model.beit3._compiled_layers is None  # off by default
    fit = make_cli(["fit", *args, "--model.init_args.compile", "true"])
    backbone = fit.model.model.beit3
    assert len(backbone._compiled_layers) == len(backbone.encoder.layers)
    assert math.isfinite(float(fit.trainer.callback_metrics["train/loss"]))
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert list(saved["state_dict"]) == list(fit.model.state_dict())  # no ``_orig_mod`` keys
    assert saved["hyper_parameters"]["compile"] is True
