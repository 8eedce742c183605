"""The task table is complete and consistent, and every per-task table of the package is derived from it."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path

import pytest
import yaml

from beit3_lightning.data.prepare import build_parser
from beit3_lightning.data.sample import SAMPLE_DATASETS
from beit3_lightning.inference.base import Beit3Predictor
from beit3_lightning.modeling.heads import Beit3TaskModel
from beit3_lightning.modeling.registry import HEADS as HEAD_CLASSES
from beit3_lightning.modeling.registry import TASK_SUFFIX, head_keys, list_models, model_name_for_task
from beit3_lightning.processor import TASKS, resolve_task
from beit3_lightning.task_table import ALIASES, DATASETS, HEADS, datasets_of_head, resolve
from beit3_lightning.tasks.base import Beit3Task

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("head", list(HEADS))
def test_each_head_names_its_model_task_and_predictor(head):
    spec = HEADS[head]
    model_class, task_class = resolve(spec.model_class), resolve(spec.task_class)
    assert issubclass(model_class, Beit3TaskModel) and HEAD_CLASSES[head] is model_class
    assert issubclass(task_class, Beit3Task) and task_class.head == head
    if spec.predictor_class is None:  # trained only (pretraining): no predictor, no calls to name
        assert spec.calls == "" and head == "pretraining"
    else:
        predictor = resolve(spec.predictor_class)
        assert issubclass(predictor, Beit3Predictor) and predictor.head == head
        # The predictor's own call exists (the base class answers every other call with WrongTaskError).
        own_calls = [call.split("(")[0] for call in spec.calls.replace(" or ", ", ").split(", ")]
        assert all(getattr(predictor, call) is not getattr(Beit3Predictor, call) for call in own_calls)
    assert datasets_of_head(head), f"head {head} trains no dataset"
    if spec.classifier_weight is not None:
        assert spec.classifier_weight in head_keys(head)
    assert list_models(f"*_{head}"), f"no registered model name ends with _{head}"


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_each_dataset_is_complete(dataset):
    spec = DATASETS[dataset]
    assert spec.head in HEADS
    task_class = resolve(HEADS[spec.head].task_class)
    assert (task_class.key_metric, task_class.key_metric_mode) == (spec.key_metric, spec.key_metric_mode)
    datamodule = resolve(spec.datamodule_class)
    # The DataModule serves this dataset: its class attribute, or a choice of its `task` argument.
    task_arg = inspect.signature(datamodule.__init__).parameters.get("task")
    if task_arg is None:
        assert datamodule.task == dataset
    else:
        assert dataset in typing.get_args(task_arg.annotation if not isinstance(task_arg.annotation, str)
                                          else typing.get_type_hints(datamodule.__init__)["task"])  # fmt: skip
    builder = resolve(spec.index_builder)
    params = list(inspect.signature(builder).parameters)
    assert params[0] == "data_root" and ("tokenizer" in params) == spec.needs_tokenizer and "index_dir" in params
    assert callable(resolve(spec.sample_generator))
    assert all(name.startswith("beit3_") and name.endswith(".pth") for name in spec.official_checkpoints)
    # BEiT-3 released no segmentation code or checkpoints: segmentation starts from the pretrained files.
    assert spec.official_checkpoints or spec.head == "segmentation", "official datasets have released checkpoints"
    assert model_name_for_task("beit3_base_patch16_224", dataset).endswith(f"_{spec.head}")


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_each_dataset_has_a_sample_config_and_official_recipes_wired_to_its_classes(dataset):
    spec = DATASETS[dataset]
    for config in [CONFIGS / "sample" / f"{dataset}.yaml", *sorted((CONFIGS / dataset).glob("*.yaml"))]:
        cfg = yaml.safe_load(config.read_text())
        task_path, data_path = cfg["model"]["class_path"], cfg["data"]["class_path"]
        assert resolve(":".join(task_path.rsplit(".", 1))) is resolve(HEADS[spec.head].task_class), config
        assert resolve(":".join(data_path.rsplit(".", 1))) is resolve(spec.datamodule_class), config
        if "task" in inspect.signature(resolve(spec.datamodule_class).__init__).parameters:
            assert cfg["data"]["init_args"]["task"] == dataset, config
    assert len(list((CONFIGS / dataset).glob("*.yaml"))) >= 2  # base and large recipes


def test_aliases_are_unambiguous():
    assert not set(ALIASES) & set(DATASETS)
    for alias, dataset in ALIASES.items():
        assert resolve_task(alias) == dataset


def test_the_package_tables_are_derived_from_the_task_table():
    assert TASKS == tuple(DATASETS) == SAMPLE_DATASETS
    assert {name: spec.head for name, spec in DATASETS.items()} == TASK_SUFFIX
    assert set(HEAD_CLASSES) == set(HEADS)
    prepare_choices = build_parser()._subparsers._group_actions[0].choices
    assert set(prepare_choices) == {*DATASETS, "sample", "visual-tokenizer", "shards"}


def test_head_keys_are_the_official_names():
    # Written out by hand from the official state dicts (unilm modeling_finetune heads).
    assert head_keys("captioning") == {"mlm_head.weight", "mlm_head.bias"}
    assert head_keys("retrieval") == {"language_head.weight", "vision_head.weight", "logit_scale"}
    assert head_keys("imageclassification") == {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}
    assert {k for k in head_keys("vqav2") if k.startswith("pooler.")} == {
        "pooler.norm.weight", "pooler.norm.bias", "pooler.dense.weight", "pooler.dense.bias"}  # fmt: skip
    assert len(head_keys("nlvr2")) == 8 and all(k.startswith("head.") for k in head_keys("nlvr2"))
