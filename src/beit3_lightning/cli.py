"""The ``beit3`` command: LightningCLI subcommands (fit / validate / test / predict) plus ``prepare``, ``download``
and ``export``.

beit3 prepare vqav2 --data-root data/vqav2 --tokenizer beit3.spm    # official raw data → *.jsonl indexes
beit3 fit --config configs/sample/vqav2.yaml                         # train
beit3 test --config configs/sample/vqav2.yaml --ckpt_path best        # official metrics of a checkpoint
beit3 export best.ckpt --out vqa_onnx                                # ONNX graphs for ONNX Runtime
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from beit3_lightning.callbacks import PredictionWriter, TensorBoardSamples
from beit3_lightning.data.datamodules import Beit3DataModule
from beit3_lightning.data.tokenizer import model_vocab_size
from beit3_lightning.modeling.checkpoint import LIGHTNING_VERSION_KEY, CheckpointError
from beit3_lightning.tasks import Beit3Task


def datamodule_model_vocab_size(datamodule: Beit3DataModule) -> int:
    """Text-embedding rows for the DataModule's tokenizer. A module-level function, not a lambda: the parser
    (with its links) travels inside SaveConfigCallback to ``ddp_spawn`` workers, and lambdas cannot be pickled."""
    return model_vocab_size(datamodule.vocab_size)


def datamodule_num_classes(datamodule: Beit3DataModule) -> int | None:
    """Classes of the head the data implies: ImageNet classes or VQA answers; None for other tasks."""
    for attr in ("num_classes", "num_answers"):
        if hasattr(type(datamodule), attr):
            return getattr(datamodule, attr)
    return None


def datamodule_codebook_size(datamodule: Beit3DataModule) -> int | None:
    """Codes of the pretraining DataModule's visual tokenizer (the MIM head's size); None for other tasks."""
    return datamodule.codebook_size if hasattr(type(datamodule), "codebook_size") else None


class KeyMetricCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that, left without ``monitor``, keeps the best model by the task's key metric
    (``val/<key_metric>`` of the task table, e.g. acc1 / score / acc / average_score / CIDEr) as ``best.ckpt``, next to
    ``last.ckpt``, in ``<trainer.default_root_dir>/checkpoints`` unless ``dirpath`` is given — fixed names, so
    ``beit3 test --ckpt_path <dir>/best.ckpt`` works from a fresh process.

    A new ``fit`` (not a resume) into a directory that already holds ``best.ckpt`` / ``last.ckpt`` of an earlier run
    is refused before training starts, so a worse run never replaces a better ``best.ckpt``; ``overwrite=True``
    (``--checkpoint.overwrite true``) replaces them. A directory that cannot be written is refused at start too.

    Args:
        overwrite: let a new run replace the checkpoints an earlier run left in the directory.
    """

    def __init__(self, *args: Any, overwrite: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.overwrite = overwrite

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.monitor is None and getattr(pl_module, "key_metric", ""):
            self.monitor = f"val/{pl_module.key_metric}"
            self.mode = pl_module.key_metric_mode
            worst = torch.inf if self.mode == "min" else -torch.inf
            self.kth_value, self.kth_best_model_path = torch.tensor(worst), ""
            self.best_model_score = None
            if self.filename is None:
                self.filename = "best"
            self.auto_insert_metric_name = False
        key = f"val/{pl_module.key_metric}" if getattr(pl_module, "key_metric", "") else None
        # The key metric is a validation metric: save after validation, not at the end of the training epoch
        # (Lightning may pick the latter before it knows the run validates, and then never finds the metric).
        if self.monitor == key and self._save_on_train_epoch_end is None and trainer.limit_val_batches != 0:
            self._save_on_train_epoch_end = False
        if self.dirpath is None:
            self.dirpath = os.path.join(trainer.default_root_dir, "checkpoints")
        if stage == "fit":
            self._check_directory(trainer)
        super().setup(trainer, pl_module, stage)

    def _check_directory(self, trainer) -> None:
        """Refuse, before anything runs, a directory that cannot be written."""
        directory = Path(self.dirpath)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
                pass
        except OSError as err:
            raise PermissionError(
                f"checkpoint directory {directory} is not writable ({err.strerror}); choose another "
                "--trainer.default_root_dir or --checkpoint.dirpath"
            ) from err

    def on_fit_start(self, trainer, pl_module) -> None:
        # Checked here rather than in setup: Lightning knows whether the run resumes (trainer.ckpt_path) only after
        # restoring the checkpoint, which comes after setup and before the first step.
        directory = Path(self.dirpath)
        earlier = [name for name in ("best.ckpt", "last.ckpt") if (directory / name).exists()]
        if earlier and trainer.ckpt_path is None and not self.overwrite:
            raise FileExistsError(
                f"{directory} already holds {' and '.join(earlier)} of an earlier run; resume it with --ckpt_path "
                f"{directory / 'last.ckpt'}, write elsewhere with --trainer.default_root_dir, or replace them with "
                "--checkpoint.overwrite true"
            )
        super().on_fit_start(trainer, pl_module)

    def on_fit_end(self, trainer, pl_module) -> None:
        super().on_fit_end(trainer, pl_module)
        # Tell the user what the run produced (Lightning's console logger; rank 0 only).
        if self.best_model_path:
            score = self.best_model_score.item() if self.best_model_score is not None else float("nan")
            rank_zero_info(f"best checkpoint: {self.best_model_path} ({self.monitor} = {score:.4f})")
        if self.last_model_path:
            rank_zero_info(f"last checkpoint: {self.last_model_path}")

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        # Lightning writes last.ckpt only at steps where a top-k checkpoint was saved: when the final epochs do not
        # improve the key metric, last.ckpt would stay behind the run. Keep it current.
        if (
            self.save_last
            and not self._should_skip_saving_checkpoint(trainer)
            and self._last_global_step_saved != trainer.global_step
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class LoggerOptionalLRMonitor(LearningRateMonitor):
    """``LearningRateMonitor`` that does nothing when the run has no logger (``--trainer.logger false``) instead of
    failing at start."""

    def on_train_start(self, trainer, *args, **kwargs) -> None:
        if trainer.loggers:
            super().on_train_start(trainer, *args, **kwargs)

    def on_train_batch_start(self, trainer, *args, **kwargs) -> None:
        if trainer.loggers:
            super().on_train_batch_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer, *args, **kwargs) -> None:
        if trainer.loggers:
            super().on_train_epoch_start(trainer, *args, **kwargs)


# Task arguments the CLI sets from the DataModule: given on the model side too, they would be silently overwritten.
LINKED_FROM_DATA = {
    "img_size": "give the size once, on the data side: --data.init_args.img_size",
    "vocab_size": "it is computed from the DataModule's tokenizer (--data.init_args.tokenizer)",
    "num_classes": "it is computed from the DataModule (ImageNet classes, VQA answers in answer2label.txt)",
    "codebook_size": "it is the visual tokenizer's (--data.init_args.visual_tokenizer)",
}


def model_args_linked_from_data(args: list[str]) -> list[tuple[str, str]]:
    """``(argument, where it was given)`` for each task argument of ``LINKED_FROM_DATA`` that ``args`` (command line
    and the ``--config`` files it names) sets on the model side."""
    found = []
    for position, token in enumerate(args):
        name = token.split("=", 1)[0]
        for key in LINKED_FROM_DATA:
            if name in (f"--model.init_args.{key}", f"--model.{key}"):
                found.append((key, f"the command line ({name})"))
        if name in ("--config", "-c"):
            path = token.split("=", 1)[1] if "=" in token else (args[position + 1] if position + 1 < len(args) else "")
            found.extend((key, f"{path} (model.init_args.{key})") for key in _config_model_keys(path))
    return found


def _config_model_keys(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as file:
            config = yaml.safe_load(file)
    except (OSError, yaml.YAMLError):
        return []  # the parser itself reports unreadable configs
    model = config.get("model") if isinstance(config, dict) else None
    init_args = model.get("init_args", model) if isinstance(model, dict) else None
    return [key for key in LINKED_FROM_DATA if isinstance(init_args, dict) and key in init_args]


# --ckpt_path values Lightning resolves itself (not file names).
CKPT_PATH_KEYWORDS = ("best", "last", "hpc", "registry")


def check_run_checkpoint(path: str, model_class_path: str | None) -> None:
    """Refuse, before anything is built, a ``--ckpt_path`` that is not a readable Lightning checkpoint of the task
    the config trains (Lightning would swap in the checkpoint's task class and fail much later)."""
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"--ckpt_path {path}: no such file")
    if file.stat().st_size == 0:
        raise CheckpointError(f"--ckpt_path {path} is empty (0 bytes): an interrupted copy? use another checkpoint")
    try:
        # Memory-mapped: only the pickled structure is read here; Lightning reads the tensors when it restores.
        checkpoint = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - any failure here means the same thing to the user
        raise CheckpointError(f"--ckpt_path {path} is not a readable checkpoint: {err}") from err
    if not isinstance(checkpoint, dict) or LIGHTNING_VERSION_KEY not in checkpoint:
        what = type(checkpoint).__name__ if not isinstance(checkpoint, dict) else "weights without training state"
        raise CheckpointError(
            f"--ckpt_path {path} holds {what}, not a checkpoint saved by `beit3 fit`; to start from weights use "
            "--model.init_args.init_from instead"
        )
    saved = (checkpoint.get("hyper_parameters") or {}).get("_class_path")
    if saved and model_class_path and saved != model_class_path:
        raise CheckpointError(
            f"--ckpt_path {path} was saved by {saved.rsplit('.', 1)[-1]} but the config trains "
            f"{model_class_path.rsplit('.', 1)[-1]}; use a config of the checkpoint's task, or start from its "
            f"weights with --model.init_args.init_from {path}"
        )


class Beit3ArgumentParser(LightningArgumentParser):
    """LightningCLI's parser, whose "unrecognized arguments" error names the closest known option, and whose
    parsed config (``--print_config`` included) shows the checkpoint ``monitor`` / ``mode`` / ``filename`` the run
    really uses: the task's key metric, which :class:`KeyMetricCheckpoint` would otherwise only fill in at setup."""

    def _parse_common(self, cfg, *args: Any, **kwargs: Any):
        fill_key_metric_checkpoint(cfg)
        return super()._parse_common(cfg, *args, **kwargs)

    def error(self, message: str, ex: Exception | None = None):
        message = unknown_init_option_message(message) or message
        if message.startswith("unrecognized arguments:"):
            known = [option for option in self._option_string_actions if option.startswith("--")]
            hints = []
            for given in (word.split("=")[0] for word in message.split(":", 1)[1].split() if word.startswith("--")):
                close = difflib.get_close_matches(given, known, n=1, cutoff=0.8)
                if close:
                    hints.append(f"{given} → {close[0]}")
            if hints:
                message += f" (did you mean: {', '.join(hints)}?)"
        super().error(message, ex)


_NOT_ACCEPTED = re.compile(
    r"Parser key \"(model|data)\".*?class_path '([\w.]+)':\s*Option '(\w+)' is not accepted", re.S
)


def init_option_names(cls: type) -> list[str]:
    """``__init__`` argument names of ``cls`` and of the bases it passes ``**kwargs`` on to."""
    names: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass.__module__.startswith(("lightning", "builtins")):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        names += [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "self"]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return list(dict.fromkeys(names))


def unknown_init_option_message(message: str) -> str | None:
    """jsonargparse's many-line report of a misspelt ``--model.init_args.X`` / ``--data.init_args.X`` as one line
    naming the class and the closest option it does take."""
    match = _NOT_ACCEPTED.search(message)
    if match is None:
        return None
    key, class_path, option = match.groups()
    try:
        module, _, name = class_path.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None
    close = difflib.get_close_matches(option, init_option_names(cls), n=1, cutoff=0.6)
    hint = f" (did you mean --{key}.init_args.{close[0]}?)" if close else ""
    return (
        f"--{key}.init_args.{option} is not an option of {cls.__name__}{hint}; its options: "
        f"`beit3 fit --{key}.help {cls.__name__}`"
    )


def fill_key_metric_checkpoint(cfg) -> None:
    """Set ``checkpoint.monitor`` / ``mode`` / ``filename`` from the task class's key metric where unset."""
    try:
        class_path, monitor = cfg.get("model.class_path"), cfg.get("checkpoint.monitor")
    except (AttributeError, KeyError, TypeError):
        return
    if not class_path or monitor is not None or cfg.get("checkpoint") is None:
        return
    try:
        module, _, name = str(class_path).rpartition(".")
        task = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return  # the parser reports a bad class_path itself
    if getattr(task, "key_metric", ""):
        cfg["checkpoint.monitor"] = f"val/{task.key_metric}"
        cfg["checkpoint.mode"] = task.key_metric_mode
        if cfg.get("checkpoint.filename") is None:
            cfg["checkpoint.filename"] = "best"


class Beit3CLI(LightningCLI):
    """LightningCLI with the data ↔ model links and the default callbacks of beit3-lightning."""

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        if args is None or isinstance(args, (list, tuple)):
            given = model_args_linked_from_data(list(sys.argv[1:] if args is None else args))
            if given:
                key, where = given[0]
                parser.error(
                    f"model img_size/vocab_size/num_classes/codebook_size come from the data: {key} is set in {where}; "
                    f"{LINKED_FROM_DATA[key]}"
                )
        super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and str(ckpt_path) not in CKPT_PATH_KEYWORDS:
            model = self.config[subcommand].get("model")
            try:
                check_run_checkpoint(str(ckpt_path), model.get("class_path") if model is not None else None)
            except CheckpointError as err:
                self.parser.error(str(err))
        super()._parse_ckpt_path()

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(KeyMetricCheckpoint, "checkpoint")
        # Fixed names that a new run into the same directory overwrites (not best-v1.ckpt next to a stale best.ckpt).
        parser.set_defaults(
            {"checkpoint.save_last": True, "checkpoint.save_top_k": 1, "checkpoint.enable_version_counter": False}
        )
        parser.add_lightning_class_args(LoggerOptionalLRMonitor, "lr_monitor")
        parser.set_defaults({"lr_monitor.logging_interval": "step"})
        # `beit3 predict` writes submit_<task>_<split>.json / embeddings_<task>_<split>.pt (--predictions.*).
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        # Validation images with predicted vs true labels in TensorBoard (--tb_samples.num_samples 0 disables).
        parser.add_lightning_class_args(TensorBoardSamples, "tb_samples")
        # Arguments that must agree between data and model are given once, on the data side.
        parser.link_arguments("data.init_args.img_size", "model.init_args.img_size")
        parser.link_arguments(
            "data",
            "model.init_args.vocab_size",
            compute_fn=datamodule_model_vocab_size,
            apply_on="instantiate",
        )
        parser.link_arguments(
            "data", "model.init_args.num_classes", compute_fn=datamodule_num_classes, apply_on="instantiate"
        )
        parser.link_arguments(
            "data", "model.init_args.codebook_size", compute_fn=datamodule_codebook_size, apply_on="instantiate"
        )


def default_precision() -> str:
    """bf16 mixed precision where the GPU supports it, full precision elsewhere."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def help_epilog(subcommand: str) -> str:
    """The end of ``beit3 <subcommand> --help``: where a BEiT-3 user's options are among Lightning's hundreds."""
    from beit3_lightning.task_table import HEADS

    tasks = ", ".join(spec.task_class.rsplit(":", 1)[1] for spec in HEADS.values())
    return (
        f"The options a BEiT-3 run needs (most of the list above is Lightning's): --config "
        f"configs/<dataset>/<recipe>.yaml (or configs/sample/<dataset>.yaml); data: --data.init_args.root, "
        f"tokenizer, img_size, batch_size, num_workers; model: --model.init_args.init_from, lr, layer_decay, "
        f"warmup_epochs / warmup_steps, drop_path, grad_checkpointing; --ckpt_path (resume or evaluate a "
        f"checkpoint). Every option of one task: `beit3 {subcommand} --model.help <Task>` ({tasks}); of its "
        f"DataModule: `beit3 {subcommand} --data.help <DataModule>` (e.g. VQAv2DataModule). The full resolved "
        f"config: `beit3 {subcommand} --config ... --print_config`."
    )


def make_cli(args: list[str] | None = None, run: bool = True) -> Beit3CLI:
    """The ``beit3`` LightningCLI; ``run=False`` only parses ``args`` and instantiates (tests, notebooks)."""
    return Beit3CLI(
        Beit3Task,
        Beit3DataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,  # None: LightningCLI reads sys.argv itself
        run=run,
        seed_everything_default=42,
        trainer_defaults={"precision": default_precision()},
        save_config_kwargs={"overwrite": True},
        # No --optimizer / --lr_scheduler: they would silently replace the task's recipe (layer-wise lr decay
        # parameter groups, warmup + cosine); the recipe is set by --model.init_args.lr, layer_decay, warmup_*...
        auto_configure_optimizers=False,
        parser_class=Beit3ArgumentParser,
        parser_kwargs={
            "description": "BEiT-3 on PyTorch Lightning. Subcommands: fit, validate, test, predict (below) and "
            "prepare (build dataset indexes: `beit3 prepare --help`), download (official files by name: "
            "`beit3 download --list`), export (ONNX graphs for ONNX Runtime: `beit3 export --help`).",
            **{command: {"epilog": help_epilog(command)} for command in ("fit", "validate", "test", "predict")},
        },
    )


def main(argv: list[str] | None = None) -> int | None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "prepare":
        from beit3_lightning.data.prepare import main as prepare_main

        return prepare_main(args[1:])
    if args and args[0] == "download":
        from beit3_lightning.hub import main as download_main

        return download_main(args[1:])
    if args and args[0] == "export":
        from beit3_lightning.inference.export_command import main as export_main

        return export_main(args[1:])
    make_cli(argv)
    return 0


DEBUG_FLAG, DEBUG_ENV = "--debug", "BEIT3_DEBUG"


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the input is wrong" (their messages say what to do), not "the code is wrong"."""
    from beit3_lightning.data.datasets import BadSampleError
    from beit3_lightning.data.index.common import DatasetFormatError
    from beit3_lightning.data.references import MissingAnswersError
    from beit3_lightning.data.shards.format import ShardFormatError
    from beit3_lightning.data.tokenizer import TokenizerError
    from beit3_lightning.hub import DownloadError
    from beit3_lightning.inference.onnx_export import ExportError, MissingExtraError

    return (CheckpointError, TokenizerError, DatasetFormatError, ShardFormatError, BadSampleError, DownloadError,
            MissingAnswersError, ExportError, MissingExtraError, FileNotFoundError, FileExistsError,
            PermissionError)  # fmt: skip


def user_error_of(err: BaseException) -> BaseException | None:
    """The user error behind ``err``: itself or one in its cause / context chain (jsonargparse wraps errors raised
    while it instantiates the model and data in its own ValueError)."""
    kinds, seen = _user_errors(), set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, kinds):
            return err
        err = err.__cause__ or err.__context__
    return None


def _missing_config(args: list[str]) -> str | None:
    for flag, value in zip(args, args[1:]):
        if flag == "--config" and not os.path.isfile(value):
            return f"config file {value} does not exist (the recipes are in configs/, e.g. configs/sample/vqav2.yaml)"
    return None


def console_main() -> int | None:
    """The ``beit3`` console script: :func:`main`, with known start-up mistakes reported as one line and exit code 2
    instead of a traceback (``--debug`` or ``BEIT3_DEBUG=1`` shows the traceback)."""
    args = sys.argv[1:]
    debug = DEBUG_FLAG in args or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    args = [arg for arg in args if arg != DEBUG_FLAG]
    command = f"beit3 {args[0]}" if args and not args[0].startswith("-") else "beit3"
    missing = _missing_config(args)
    if missing and not debug:
        print(f"{command}: error: {missing}", file=sys.stderr)
        return 2
    sys.argv = [sys.argv[0], *args]  # without --debug, which LightningCLI does not know
    try:
        return main()
    except Exception as err:
        cause = user_error_of(err)
        if debug or cause is None:
            raise
        message = " ".join(str(cause).split())  # one line, whatever the exception's layout
        print(
            f"{command}: error: {message}\n(run with {DEBUG_FLAG} or {DEBUG_ENV}=1 for the traceback)", file=sys.stderr
        )
        return 2


if __name__ == "__main__":
    sys.exit(console_main())
