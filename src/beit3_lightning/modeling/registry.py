"""Model registry: the 15 official names of unilm ``modeling_finetune`` plus our tiny variants (unilm
``beit3/modeling_finetune.py``).

A name reads ``beit3_<size>_patch<p>_<img>_<head>``; ``create_model(name, **overrides)`` builds it with random
weights (load a checkpoint afterwards). ``model_name_for_task`` turns ``--model beit3_base_patch16_480`` and
``--task coco_captioning`` into ``beit3_base_patch16_480_captioning`` as ``run_beit3_finetuning.py`` does.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch

from beit3_lightning.modeling.checkpoint import BACKBONE_PREFIX
from beit3_lightning.modeling.config import Beit3Config
from beit3_lightning.modeling.heads import Beit3TaskModel
from beit3_lightning.task_table import DATASETS, resolve, resolve_dataset
from beit3_lightning.task_table import HEADS as HEAD_SPECS

# Head suffix of a registered name → class (from the task table).
HEADS: dict[str, type[Beit3TaskModel]] = {name: resolve(spec.model_class) for name, spec in HEAD_SPECS.items()}
# Dataset (``--task``) → head suffix appended to ``--model``.
TASK_SUFFIX: dict[str, str] = {name: spec.head for name, spec in DATASETS.items()}
# Official aliases of Beit3Config fields (the kwargs the reference registry passes through).
CONFIG_ALIASES = {"checkpoint_activations": "grad_checkpointing", "drop_path": "drop_path_rate"}
# Fields a registered name fixes: changing them would build a different architecture under the same name.
FIXED_BY_NAME = ("embed_dim", "num_heads", "ffn_dim", "num_layers", "img_size", "patch_size", "normalize_output")


@dataclass(frozen=True)
class ModelSpec:
    """One registered model: backbone preset, image size and head."""

    size: str
    img_size: int
    head: str
    patch_size: int = 16
    official: bool = True

    @property
    def name(self) -> str:
        return f"beit3_{self.size}_patch{self.patch_size}_{self.img_size}_{self.head}"

    @property
    def head_class(self) -> type[Beit3TaskModel]:
        return HEADS[self.head]

    def config(self, **overrides: Any) -> Beit3Config:
        return Beit3Config.from_name(self.size, img_size=self.img_size, patch_size=self.patch_size, **overrides)


def _specs() -> dict[str, ModelSpec]:
    official = [
        ModelSpec("base", 224, "imageclassification"),
        ModelSpec("large", 224, "imageclassification"),
        ModelSpec("base", 224, "nlvr2"),
        ModelSpec("large", 224, "nlvr2"),
        ModelSpec("base", 384, "vqav2"),
        ModelSpec("base", 480, "vqav2"),
        ModelSpec("large", 384, "vqav2"),
        ModelSpec("large", 480, "vqav2"),
        ModelSpec("large", 768, "vqav2"),
        ModelSpec("base", 224, "captioning"),
        ModelSpec("base", 480, "captioning"),
        ModelSpec("large", 480, "captioning"),
        ModelSpec("base", 224, "retrieval"),
        ModelSpec("base", 384, "retrieval"),
        ModelSpec("large", 384, "retrieval"),
    ]
    extra = [
        # Zero-shot retrieval with the large ITC checkpoint at its pre-training size; upstream has no such entry
        # (docs/reference.md#zero-shot-retrieval).
        ModelSpec("large", 224, "retrieval", official=False),
        # The architecture of the pretrained release checkpoints (beit3_{base,large}_patch16_224.pth): backbone plus
        # the masked data modeling heads, for continued pretraining.
        ModelSpec("base", 224, "pretraining", official=False),
        ModelSpec("large", 224, "pretraining", official=False),
        # Semantic segmentation (UperNet) at the crops of the BEiT ADE20k recipes; no official release.
        ModelSpec("base", 512, "segmentation", official=False),
        ModelSpec("large", 640, "segmentation", official=False),
        # 1.5 M-parameter variants for the sample data, tests and CPU demos.
        *(ModelSpec("tiny", 48, head, official=False) for head in HEADS),
    ]
    return {spec.name: spec for spec in official + extra}


MODEL_SPECS: dict[str, ModelSpec] = _specs()


def list_models(pattern: str = "*", official_only: bool = False) -> list[str]:
    """Registered names matching a shell-style ``pattern`` (e.g. ``"*_captioning"``), sorted."""
    return sorted(
        name
        for name, spec in MODEL_SPECS.items()
        if fnmatch.fnmatchcase(name, pattern) and (spec.official or not official_only)
    )


def get_model_spec(name: str) -> ModelSpec:
    """The registry entry of ``name``; a clear error lists the names available."""
    try:
        return MODEL_SPECS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; registered models are: {', '.join(list_models())}. Other sizes can be built "
            "directly, e.g. Beit3ForCaptioning(Beit3Config.from_name('base', img_size=384))"
        ) from None


def head_class_for_task(task: str) -> type[Beit3TaskModel]:
    """The head class a ``--task`` trains (e.g. ``"nocaps"`` → ``Beit3ForCaptioning``)."""
    return HEADS[_task_suffix(task)]


def model_name_for_task(model: str, task: str) -> str:
    """``--model`` plus the task's head suffix unless already present (``run_beit3_finetuning.py``).

    The reference tests ``model.endswith(task)``, which appends a second suffix to names like
    ``..._captioning`` given with ``--task coco_captioning``; we test the head suffix instead.
    """
    suffix = _task_suffix(task)
    return model if model.endswith(f"_{suffix}") else f"{model}_{suffix}"


def create_model(name: str, **overrides: Any) -> Beit3TaskModel:
    """Build a registered model with fresh official initialisation.

    ``overrides``: Beit3Config fields that do not change the architecture (``drop_path_rate``, ``vocab_size``,
    ``grad_checkpointing``, ``attn_impl``, ...; official aliases ``drop_path``, ``checkpoint_activations``
    accepted) and head arguments (``num_classes`` for the classification heads).
    """
    spec = get_model_spec(name)
    config_fields = {f.name for f in dataclasses.fields(Beit3Config)}
    head_params = set(inspect.signature(spec.head_class.__init__).parameters) - {"self", "config"}
    config_overrides, head_kwargs = {}, {}
    for key, value in overrides.items():
        key = CONFIG_ALIASES.get(key, key)
        if key in FIXED_BY_NAME:
            raise ValueError(
                f"create_model({name!r}): {key} is fixed by the model name; pick another registered name "
                f"(list_models()) or build the model class directly from a Beit3Config"
            )
        if key in config_fields:
            config_overrides[key] = value
        elif key in head_params:
            head_kwargs[key] = value
        else:
            allowed = sorted((config_fields - set(FIXED_BY_NAME)) | head_params | set(CONFIG_ALIASES))
            raise ValueError(f"create_model({name!r}): unknown argument {key!r}; allowed: {', '.join(allowed)}")
    return spec.head_class(spec.config(**config_overrides), **head_kwargs)


def _task_suffix(task: str) -> str:
    return TASK_SUFFIX[resolve_dataset(task)]


@cache
def head_keys(head: str) -> frozenset[str]:
    """State-dict keys of ``head`` outside the ``beit3.*`` backbone, read from the head class itself (built on the
    meta device: no memory, no init), so checkpoint inspection never keeps a hand-written copy of them."""
    with torch.device("meta"):
        model = HEADS[head](Beit3Config.from_name("tiny"))
    return frozenset(key for key in model.state_dict() if not key.startswith(BACKBONE_PREFIX))
