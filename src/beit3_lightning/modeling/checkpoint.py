"""Read official BEiT-3 ``.pth`` files, Lightning ``.ckpt`` files and ``.safetensors`` into our models.

Follows unilm ``utils.load_model_and_may_interpolate`` (docs/reference.md#checkpoint-loading): try the ``model``
then ``module`` entry, no key renaming, resize the vision position table to the model's image size, drop a
shape-mismatched ``head``. Unlike the reference it is strict by default: every missing, unexpected or mismatched key
is reported by name and raises, except the differences that are known to be benign and allowed explicitly.
"""

from __future__ import annotations

import fnmatch
import logging
import pickle
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

VISION_POS_KEY = "encoder.embed_positions.A.weight"
# Rows of the vision position table kept as they are when resizing: 2 fairseq offset rows + the CLS row.
NUM_KEPT_POS_ROWS = 3
BACKBONE_PREFIX = "beit3."
# Lightning checkpoints of our task modules hold the plain model under this attribute.
LIGHTNING_MODEL_PREFIX = "model."
# The key that marks a file as a Lightning checkpoint.
LIGHTNING_VERSION_KEY = "pytorch-lightning_version"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


@dataclass
class LoadReport:
    """What happened when a state dict was loaded into a model."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    cast_to_fp32: int = 0
    allowed_missing: list[str] = field(default_factory=list)
    allowed_unexpected: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = []
        for title, names in (
            ("missing keys (left at their initial value)", self.missing),
            ("unexpected keys (ignored)", self.unexpected),
            ("shape-mismatched keys (skipped)", [f"{k}: checkpoint {a} vs model {b}" for k, a, b in self.mismatched]),
            ("allowed missing keys", self.allowed_missing),
            ("allowed unexpected keys", self.allowed_unexpected),
            ("resized", self.resized),
            ("dropped (shape differs, re-initialised)", self.dropped),
        ):
            if names:
                lines.append(f"{title} ({len(names)}):")
                lines.extend(f"  {name}" for name in names)
        if self.cast_to_fp32:
            lines.append(f"{self.cast_to_fp32} half-precision tensors cast to float32")
        return "\n".join(lines) or "all keys matched"


# ----- reading -------------------------------------------------------------------------------------------------
# Top-level entry of our Lightning checkpoints describing the training tokenizer (Beit3Task.on_save_checkpoint).
TOKENIZER_KEY = "beit3_tokenizer"


@dataclass
class LoadedCheckpoint:
    """Weights plus, for Lightning checkpoints, the task's and the DataModule's hyper-parameters."""

    state: dict[str, Tensor]
    hparams: dict[str, Any] = field(default_factory=dict)
    data_hparams: dict[str, Any] = field(default_factory=dict)
    # The tokenizer the model was trained with: {"path", "sha256", "vocab_size"} (saved by our tasks).
    tokenizer: dict[str, Any] = field(default_factory=dict)


def read_checkpoint(path: str | Path, model_key: str = "model|module") -> LoadedCheckpoint:
    """Read an official ``.pth``, a Lightning ``.ckpt`` (weights under ``model.*``) or a ``.safetensors`` file.

    ``model_key``: entries tried in order (``|``-separated) for ``.pth`` files; the whole file is the state dict when
    none is present (a raw ``torch.save(model.state_dict())``). Everything is read with ``weights_only=True``.
    """
    from beit3_lightning.hub import DownloadError, resolve_file  # standard library only: modeling stays torch-only

    try:  # an official name (beit3_base_patch16_224) → the cached file, downloaded when missing
        path = resolve_file(path)
    except DownloadError as err:
        raise CheckpointError(str(err)) from None
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint file not found: {path} (give a file, or an official name: see `beit3 download --list`)"
        )
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return LoadedCheckpoint(load_file(str(path), device="cpu"))
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{path} is not a readable .safetensors file (truncated or corrupt?): {err}") from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" not in str(err):
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {err}") from err
        raise CheckpointError(
            f"{path} cannot be loaded with torch.load(weights_only=True): it contains pickled Python objects "
            f"beyond tensors and plain containers ({err}). Loading it would run arbitrary code, so it is refused. "
            "If you trust the file, re-save only its weights: "
            "torch.save(torch.load(path, weights_only=False)['model'], 'weights.pth')"
        ) from err
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {err}") from err
    if isinstance(obj, Mapping) and LIGHTNING_VERSION_KEY in obj:
        return LoadedCheckpoint(
            lightning_model_weights(obj, str(path)),
            dict(obj.get("hyper_parameters") or {}),
            dict(obj.get("datamodule_hyper_parameters") or {}),
            dict(obj.get(TOKENIZER_KEY) or {}),
        )
    return LoadedCheckpoint(unwrap_state_dict(obj, model_key, source_name=str(path)))


def read_state_dict(path: str | Path, model_key: str = "model|module") -> dict[str, Tensor]:
    """The flat ``{name: tensor}`` of a checkpoint file (see :func:`read_checkpoint`)."""
    return read_checkpoint(path, model_key).state


def lightning_model_weights(checkpoint: Mapping[str, Any], source_name: str = "checkpoint") -> dict[str, Tensor]:
    """The plain model's weights in a Lightning checkpoint of one of our tasks (``model.*`` keys, prefix removed)."""
    state = {
        key[len(LIGHTNING_MODEL_PREFIX) :]: value
        for key, value in (checkpoint.get("state_dict") or {}).items()
        if key.startswith(LIGHTNING_MODEL_PREFIX)
    }
    if not state:
        raise CheckpointError(
            f"{source_name} is a Lightning checkpoint without 'model.*' weights: it was not saved from a "
            "beit3_lightning task"
        )
    return state


def unwrap_state_dict(obj: object, model_key: str = "model|module", source_name: str = "state dict") -> dict:
    """The weights inside a loaded checkpoint object (Lightning ``state_dict``, ``model``/``module`` entry, or raw)."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source_name} holds a {type(obj).__name__}, not a state dict")
    if "state_dict" in obj and LIGHTNING_VERSION_KEY in obj:
        return lightning_model_weights(obj, source_name)
    for key in model_key.split("|"):
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    bad = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(
            f"{source_name}: entries {bad[:5]} are not tensors; pass model_key= naming the entry that holds "
            f"the weights (top-level keys: {sorted(obj)[:10]})"
        )
    return dict(obj)


def first_non_finite(state: Mapping[str, Tensor]) -> str | None:
    """``"name (n of N values)"`` of the first floating-point tensor holding NaN or inf, else ``None``."""
    for name, value in state.items():
        if isinstance(value, Tensor) and value.is_floating_point():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                return f"{name} ({bad} of {value.numel()} values)"
    return None


# ----- adapting ------------------------------------------------------------------------------------------------
def resize_vision_pos_embed(weight: Tensor, num_patches: int) -> Tensor:
    """Resize a vision position table (3 + s*s rows) to ``3 + num_patches`` rows.

    The 2 offset rows and the CLS row stay; the patch rows are resized as an s×s grid with bicubic interpolation
    (align_corners=False), as the reference. Half-precision tables are computed in float32 (CPU bicubic has no fp16
    kernel; unilm issue #1056) and returned in float32.
    """
    old_grid = round((weight.shape[0] - NUM_KEPT_POS_ROWS) ** 0.5)
    new_grid = round(num_patches**0.5)
    if old_grid**2 + NUM_KEPT_POS_ROWS != weight.shape[0] or new_grid**2 != num_patches:
        raise CheckpointError(
            f"cannot resize a vision position table of {weight.shape[0]} rows to {num_patches} patches: "
            "both must be 3 + a square number of patches"
        )
    weight = weight.float()
    if old_grid == new_grid:
        return weight
    kept, grid = weight[:NUM_KEPT_POS_ROWS], weight[NUM_KEPT_POS_ROWS:]
    dim = weight.shape[1]
    grid = grid.reshape(1, old_grid, old_grid, dim).permute(0, 3, 1, 2)  # (1, D, s, s)
    grid = F.interpolate(grid, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(new_grid * new_grid, dim)  # (s'², D)
    return torch.cat([kept, grid], dim=0)


def checkpoint_filter_fn(
    state_dict: Mapping[str, Tensor],
    model: nn.Module,
    report: LoadReport | None = None,
    droppable_on_mismatch: Iterable[str] = ("head.weight", "head.bias"),
) -> dict[str, Tensor]:
    """Adapt an official-layout state dict to ``model`` (timm ``checkpoint_filter_fn`` style).

    - prefix: a bare backbone takes ``beit3.*`` keys without the prefix; a task model given a bare backbone state
      dict gets the prefix added;
    - half precision → float32 (official files hold fp16 tensors);
    - the vision position table is resized to the model's image size;
    - ``head.weight``/``head.bias`` of another shape are dropped (the reference's rule, e.g. 1000 → 10 classes).
    """
    report = report if report is not None else LoadReport()
    target = model.state_dict()
    state = dict(state_dict)
    has_prefix = any(k.startswith(BACKBONE_PREFIX) for k in target)
    if not has_prefix and any(k.startswith(BACKBONE_PREFIX) for k in state):
        state = {k[len(BACKBONE_PREFIX) :]: v for k, v in state.items() if k.startswith(BACKBONE_PREFIX)}
    elif has_prefix and VISION_POS_KEY in state:
        state = {BACKBONE_PREFIX + k: v for k, v in state.items()}

    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if value.dtype in (torch.float16, torch.bfloat16):
            value = value.float()
            report.cast_to_fp32 += 1
        if key.endswith(VISION_POS_KEY) and key in target and value.shape != target[key].shape:
            value = resize_vision_pos_embed(value, target[key].shape[0] - NUM_KEPT_POS_ROWS)
            report.resized.append(f"{key}: {tuple(state[key].shape)} -> {tuple(value.shape)}")
        if key in droppable_on_mismatch and key in target and value.shape != target[key].shape:
            report.dropped.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(target[key].shape)}")
            continue
        out[key] = value
    return out


# ----- loading -------------------------------------------------------------------------------------------------
def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def load_checkpoint(
    model: nn.Module,
    source: str | Path | Mapping[str, Tensor],
    *,
    strict: bool = True,
    model_key: str = "model|module",
    allow_missing: Iterable[str] = (),
    allow_unexpected: Iterable[str] = (),
    backbone_only: bool = False,
) -> LoadReport:
    """Load a checkpoint file (or a state dict) into ``model`` and report what did not match.

    ``allow_missing`` / ``allow_unexpected``: glob patterns of keys that may differ without error, e.g. a task head
    that a pretrained checkpoint does not have (``"head.*"``) or pretraining heads it does have (``"mlm_head.*"``).
    The final encoder LayerNorm of a checkpoint is always allowed as unexpected when the model has none
    (``normalize_output=False``: ImageNet, VQAv2). With ``strict=True`` anything else raises ``CheckpointError``
    listing the keys; with ``strict=False`` it is only reported (returned and logged).

    ``backbone_only``: initialising a task from another task's or a pretrained checkpoint. Only the ``beit3.*``
    keys must match; heads the checkpoint lacks keep their fresh init, heads the model lacks are ignored, and a
    head of another shape (another number of classes) is dropped. All of it is reported.
    """
    report = LoadReport()
    if isinstance(source, (str, Path)):
        state = read_state_dict(source, model_key)
    else:
        state = unwrap_state_dict(source, model_key)
    state = checkpoint_filter_fn(state, model, report)
    target = model.state_dict()

    def is_head(key: str) -> bool:
        return backbone_only and not key.startswith(BACKBONE_PREFIX)

    allow_missing = [*allow_missing, *(k for k in target if is_head(k))]
    allow_unexpected = [*allow_unexpected, *(k for k in state if is_head(k))]
    loadable = {}
    for key, value in state.items():
        if key in target and value.shape != target[key].shape:
            if is_head(key):
                report.dropped.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(target[key].shape)}")
                continue
            report.mismatched.append((key, tuple(value.shape), tuple(target[key].shape)))
        else:
            loadable[key] = value

    benign_unexpected = ["*encoder.layer_norm.*", "*relative_position_index"]
    mismatched = {name for name, _, _ in report.mismatched}
    for key in target:
        if key not in loadable and key not in mismatched:
            (report.allowed_missing if _matches(key, allow_missing) else report.missing).append(key)
    for key in list(loadable):
        if key not in target:
            allowed = _matches(key, allow_unexpected) or _matches(key, benign_unexpected)
            (report.allowed_unexpected if allowed else report.unexpected).append(key)
            del loadable[key]

    source_name = source if isinstance(source, (str, Path)) else "state dict"
    bad = first_non_finite(loadable)
    if bad is not None:  # a diverged run's weights would answer with NaN logits, not an error
        raise CheckpointError(f"checkpoint {source_name} holds non-finite values in {bad}; refusing to load it")
    if not report.ok and strict:
        # Checked before anything is copied, so a refused checkpoint leaves the model untouched.
        raise CheckpointError(f"checkpoint {source_name} does not fit {type(model).__name__}:\n{report}")
    model.load_state_dict(loadable, strict=False)
    log.info("loaded %s into %s: %s", source_name, type(model).__name__, report)
    return report
