"""``load_model``: an official fine-tuned ``.pth`` or one of our Lightning ``.ckpt`` files → a task predictor.

Official files carry only weights, so the architecture comes from their shapes (``checkpoint_info``); Lightning
checkpoints also carry the task's and the DataModule's hyper-parameters (tokenizer, text length, answer vocabulary
directory, decoding settings), which become the defaults here. The LightningModule itself is never built, so its
``init_from`` checkpoint is not read again.
"""

from __future__ import annotations

import inspect
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from beit3_lightning.data.tokenizer import BEIT3_SPM_URL, OFFICIAL_TOKENIZER_VOCAB, Beit3Tokenizer
from beit3_lightning.hub import cache_dir, file_sha256, resolve_file
from beit3_lightning.inference.base import Beit3Predictor
from beit3_lightning.inference.checkpoint_info import CheckpointInfo, inspect_state_dict
from beit3_lightning.inference.onnx_export import QUANTIZATIONS, is_export_dir
from beit3_lightning.modeling.checkpoint import CheckpointError, LoadedCheckpoint, load_checkpoint, read_checkpoint
from beit3_lightning.modeling.config import OFFICIAL_VOCAB_SIZE, Beit3Config
from beit3_lightning.modeling.heads import Beit3TaskModel
from beit3_lightning.modeling.registry import HEADS, TASK_SUFFIX, head_keys
from beit3_lightning.processor import TASKS, Beit3Processor, resolve_task
from beit3_lightning.task_table import HEADS as HEAD_SPECS
from beit3_lightning.task_table import resolve

__all__ = ["LoadedCheckpoint", "load_model", "predictor_class", "read_checkpoint"]

BACKENDS = ("torch", "onnxruntime")
# The reference's --num_max_bpe_tokens default.
DEFAULT_MAX_TEXT_LEN = 64
# Heads that never read text: no tokenizer needed.
IMAGE_ONLY_HEADS = ("imageclassification", "segmentation")
# CaptioningTask hyper-parameters that are also CaptioningPredictor defaults.
DECODING_HPARAMS = ("num_beams", "max_len", "length_penalty")


def predictor_class(head: str) -> type[Beit3Predictor]:
    """The predictor class serving ``head`` (from the task table)."""
    return resolve(HEAD_SPECS[head].predictor_class)


# ----- choosing task, architecture and tokenizer ----------------------------------------------------------------
def choose_task(path: Path, info: CheckpointInfo, task: str | None, saved_task: str | None = None) -> str:
    """The dataset name of the task: ``task`` when it fits the head, else the saved or first task of the head."""
    if info.head is None:
        if not info.other_keys:
            raise CheckpointError(
                f"{path} holds a BEiT-3 backbone without a task head (a pretrained checkpoint?). load_model needs a "
                f"checkpoint fine-tuned for one of {', '.join(TASKS)}; fine-tune it first, e.g. "
                f"`beit3 fit --config configs/... --model.init_args.init_from {path}`."
            )
        raise CheckpointError(
            f"{path}: the keys outside the backbone {info.other_keys[:8]} match no BEiT-3 task head; expected exactly "
            + "; ".join(f"{head}: {sorted(head_keys(head))[:3]}..." for head in HEADS)
        )
    fitting = [name for name in TASKS if TASK_SUFFIX[name] == info.head]
    if task is None:
        return saved_task if saved_task in fitting else fitting[0]
    wanted = resolve_task(task)
    if TASK_SUFFIX[wanted] != info.head:
        raise CheckpointError(
            f"{path} looks like {info.describe()}, not a {wanted} checkpoint: its head keys are "
            f"{sorted(head_keys(info.head))}, while task={task!r} needs {sorted(head_keys(TASK_SUFFIX[wanted]))}. "
            f"Load it with task={fitting[0]!r} (tasks that fit: {', '.join(fitting)}) or leave task unset."
        )
    return wanted


def build_config(
    path: Path, info: CheckpointInfo, model: str | None, img_size: int | None, hparams: Mapping[str, Any]
) -> Beit3Config:
    """Backbone config: preset from ``model`` / the Lightning hparams / the shapes; sizes from the state dict."""
    name = model or hparams.get("model") or info.size
    if name is None:
        raise CheckpointError(
            f"{path}: a backbone of {info.num_layers} layers × {info.embed_dim} dims matches no preset "
            "(tiny / base / large); pass model='...' naming its preset"
        )
    overrides: dict[str, Any] = {"vocab_size": info.vocab_size, "patch_size": info.patch_size}
    if hparams.get("attn_impl"):
        overrides["attn_impl"] = hparams["attn_impl"]
    if img_size is not None:
        overrides["img_size"] = img_size
    elif not re.search(r"_\d+$", name):  # a registry-style name such as beit3_base_patch16_480 fixes the size
        overrides["img_size"] = info.img_size
    config = Beit3Config.from_name(name, **overrides)
    if (config.embed_dim, config.num_layers) != (info.embed_dim, info.num_layers):
        looks = f" (a {info.size!r} model)" if info.size else ""
        raise CheckpointError(
            f"model={name!r} has {config.num_layers} layers × {config.embed_dim} dims but {path} holds "
            f"{info.num_layers} × {info.embed_dim}{looks}; pass the matching model= or leave it unset"
        )
    return config


def build_tokenizer(
    path: Path, info: CheckpointInfo, tokenizer: str | Path | Beit3Tokenizer | None, ckpt: LoadedCheckpoint
) -> Beit3Tokenizer | None:
    """The tokenizer given, or the one the Lightning checkpoint was trained with; checked against the model."""
    source = tokenizer
    if source is None:
        source = ckpt.data_hparams.get("tokenizer") or ckpt.hparams.get("tokenizer_path")
    if source is None:
        if info.head in IMAGE_ONLY_HEADS:
            return None
        raise ValueError(
            f"{path} is {info.describe()} and needs its tokenizer: pass tokenizer='path/to/beit3.spm' for the "
            f"official checkpoints ({BEIT3_SPM_URL}) or tokenizer='sample' for models trained on the sample data"
        )
    saved = ckpt.tokenizer
    if tokenizer is None and saved.get("path") and not Path(saved["path"]).is_file() and source == saved["path"]:
        raise ValueError(
            f"{path} was trained with the tokenizer {saved['path']} (sha256 {saved.get('sha256', '?')}), which is not "
            "on this machine: pass tokenizer='path/to/that file' (beit3.spm for models fine-tuned from the official "
            "checkpoints)"
        )
    tok = source if isinstance(source, Beit3Tokenizer) else Beit3Tokenizer(source)
    if saved.get("sha256") and file_sha256(tok.path) != saved["sha256"]:
        warnings.warn(
            f"{path} was trained with the tokenizer {saved.get('path')} (sha256 {saved['sha256'][:12]}...) but "
            f"{tok.path} is a different file: its token ids will not mean what the model learned",
            UserWarning,
            stacklevel=3,
        )
    if tok.vocab_size > info.vocab_size:
        raise ValueError(
            f"the tokenizer {tok.path} has {tok.vocab_size} ids but the model in {path} embeds only "
            f"{info.vocab_size}: it is not the tokenizer this model was trained with"
        )
    if info.vocab_size == OFFICIAL_VOCAB_SIZE and tok.vocab_size != OFFICIAL_TOKENIZER_VOCAB:
        warnings.warn(
            f"{path} has the official {OFFICIAL_VOCAB_SIZE}-row text embedding but the tokenizer {tok.path} has "
            f"{tok.vocab_size} ids; official checkpoints need beit3.spm ({BEIT3_SPM_URL})",
            UserWarning,
            stacklevel=3,
        )
    return tok


def build_network(
    info: CheckpointInfo, config: Beit3Config, hparams: Mapping[str, Any] | None = None
) -> Beit3TaskModel:
    """The head model with uninitialised weights, to be filled by a strict load.

    The official random init of a base model takes tens of seconds on a CPU (truncated normals) and is then
    overwritten, so the modules are built on the meta device and only allocated on the CPU.
    """
    head_kwargs: dict[str, Any] = {"num_classes": info.num_classes} if info.num_classes is not None else {}
    head_kwargs.update(info.head_kwargs)
    if info.head == "segmentation" and (hparams or {}).get("out_indices") is not None:
        head_kwargs["out_indices"] = tuple(hparams["out_indices"])  # which layers feed the neck: not in the shapes
    with torch.device("meta"):
        network = HEADS[info.head](config, **head_kwargs)
    return network.to_empty(device="cpu")


def task_defaults(info: CheckpointInfo, ckpt: LoadedCheckpoint) -> dict[str, Any]:
    """Predictor arguments a Lightning checkpoint implies: decoding settings, the VQA answer vocabulary."""
    defaults: dict[str, Any] = {}
    if info.head == "captioning":
        defaults = {key: ckpt.hparams[key] for key in DECODING_HPARAMS if key in ckpt.hparams}
    if info.head == "segmentation":
        # The class names travel in the checkpoint; the test-time settings become the predictor's defaults.
        names = ckpt.hparams.get("class_names")
        if names is not None and len(names) == info.num_classes:
            defaults["class_names"] = list(names)
        for key, name in (("inference", "inference"), ("stride", "stride"), ("test_scales", "scales"),
                          ("test_flip", "flip")):  # fmt: skip
            if ckpt.hparams.get(key) is not None:
                defaults[name] = ckpt.hparams[key]
    if info.head == "vqav2" and ckpt.hparams.get("answers") is not None:
        defaults["answers"] = list(ckpt.hparams["answers"])  # saved in the checkpoint by VQATask
    elif info.head == "vqav2" and ckpt.data_hparams:
        index_dir = ckpt.data_hparams.get("index_dir") or ckpt.data_hparams.get("root")
        answers = Path(index_dir) / "answer2label.txt" if index_dir else None
        if answers is not None and answers.is_file():
            defaults["answers"] = answers
        elif answers is not None:
            defaults["answers_hint"] = f"{answers}, the training DataModule's answer2label.txt"
    return defaults


def _check_task_kwargs(predictor_class: type[Beit3Predictor], task: str, kwargs: Mapping[str, Any]) -> None:
    params = inspect.signature(predictor_class.__init__).parameters
    accepted = {name for name, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    unknown = sorted(set(kwargs) - accepted - {"answers_hint"})
    if unknown:
        accepted_text = ", ".join(sorted(accepted - {"answers_hint"})) or "none"
        raise TypeError(f"load_model(task={task!r}): unknown argument(s) {unknown}; this task accepts: {accepted_text}")


# ----- the entry point ------------------------------------------------------------------------------------------
def load_model(
    path: str | Path,
    task: str | None = None,
    tokenizer: str | Path | Beit3Tokenizer | None = None,
    device: str | torch.device = "cpu",
    img_size: int | None = None,
    model: str | None = None,
    max_text_len: int | None = None,
    batch_size: int = 32,
    dtype: torch.dtype | str | None = None,
    compile: bool = False,
    quantize: str | None = None,
    backend: str = "torch",
    **task_kwargs: Any,
) -> Beit3Predictor:
    """Load a fine-tuned checkpoint as a predictor in eval mode on ``device``.

    Args:
        path: an official fine-tuned ``.pth`` (e.g. ``beit3_base_patch16_480_vqa.pth``), a Lightning ``.ckpt``
            saved by ``beit3 fit``, a ``.safetensors`` file with official key names, or a directory written by
            ``beit3 export --format onnx`` (served by ONNX Runtime).
        task: one of ``imagenet, vqav2, nlvr2, coco_captioning, nocaps, coco_retrieval, flickr30k`` (aliases
            ``classification``, ``vqa``, ``captioning``, ``retrieval``). ``None``: read from the checkpoint. A task
            whose head the file lacks raises ``CheckpointError`` naming the task that fits.
        tokenizer: sentencepiece model (``beit3.spm`` for official checkpoints, ``"sample"`` for the sample
            models); Lightning checkpoints default to the one they were trained with. Not needed for ImageNet.
        device: where the model runs (``"cpu"``, ``"cuda"``, ...).
        img_size: input resolution; default: the checkpoint's (the position table is resized when it differs).
        model: backbone preset ``tiny``/``base``/``large`` (or ``beit3_base_patch16_480``); default: from the shapes.
        max_text_len: text length in tokens incl. ``<s>``/``</s>``; default: the training DataModule's, else 64.
        batch_size: inputs per forward pass.
        dtype: weights and inputs in this floating-point type: ``torch.bfloat16`` / ``"bfloat16"`` (about 2x
            less memory; on CPUs with bf16 instructions faster), ``torch.float16`` (GPU), default float32. Scores
            come back as float32; they differ from float32 inference by bf16's 3 significant digits.
        compile: ``torch.compile`` the backbone (inductor; the first call of each input shape compiles, which
            takes a while; later calls are faster). Not for captioning (a new cache length every step).
        quantize: ``"int8"``: dynamic int8 quantisation of every ``nn.Linear`` (int8 weights, activations scaled
            per call; CPU only). With ``backend="onnxruntime"``: ONNX Runtime's int8 quantisation of the graphs.
        backend: ``"torch"`` (default) or ``"onnxruntime"``: the checkpoint is exported once to ONNX (cached in
            ``$BEIT3_HOME/onnx``, see ``beit3 export``) and run by ONNX Runtime (``pip install
            "beit3-lightning[onnx]"``). Every task except segmentation; ``dtype``, ``compile``,
            ``img_size``, ``model`` and ``max_text_len`` are torch-backend options.
        **task_kwargs: per task: ``labels=`` (ImageNet class names, list or file), ``answers=`` (VQA
            ``answer2label.txt`` or list), ``num_beams=`` / ``max_len=`` / ``length_penalty=`` (captioning).

    Returns:
        An :class:`ImageClassificationPredictor`, :class:`VQAPredictor`, :class:`NLVR2Predictor`,
        :class:`CaptioningPredictor` or :class:`RetrievalPredictor`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if quantize not in (None, *QUANTIZATIONS):
        raise ValueError(f"quantize must be one of {QUANTIZATIONS} or None, got {quantize!r}")
    if backend == "onnxruntime" or is_export_dir(path):
        torch_only = {"dtype": dtype, "img_size": img_size, "model": model, "max_text_len": max_text_len}
        torch_only["compile"] = compile or None
        given = sorted(name for name, value in torch_only.items() if value is not None)
        if given:
            raise ValueError(
                f"{', '.join(given)}: torch-backend option(s), not for ONNX Runtime; the export fixed them (re-export "
                "to change them) or drop backend='onnxruntime'"
            )
        return _load_onnxruntime(path, task, tokenizer, device, batch_size, quantize, task_kwargs)
    path = resolve_file(path)  # an official name → the cached file (downloaded on first use)
    ckpt = read_checkpoint(path)
    try:
        info = inspect_state_dict(ckpt.state)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from err
    task = choose_task(path, info, task, ckpt.data_hparams.get("task"))
    if compile and info.head == "captioning":
        raise ValueError(
            "compile=True does not speed up captioning: every decoding step has a new key/value cache length, so "
            "torch.compile recompiles at each step; use backend='onnxruntime' or dtype=torch.bfloat16 instead"
        )
    predictor = predictor_class(info.head)
    kwargs = {**task_defaults(info, ckpt), **task_kwargs}
    _check_task_kwargs(predictor, task, kwargs)

    config = build_config(path, info, model, img_size, ckpt.hparams)
    network = build_network(info, config, ckpt.hparams)
    report = load_checkpoint(network, ckpt.state)  # strict: any key that does not fit raises CheckpointError
    if report.allowed_missing:  # never with the default arguments; guards the uninitialised tensors
        raise CheckpointError(f"{path} leaves weights unset: {report.allowed_missing}")

    if dtype is not None:
        network.to(_floating_dtype(dtype))
    if quantize == "int8":
        network = quantize_int8(network, dtype, device)
    if compile:
        network.beit3.compile()  # in place: the state dict and every head call stay the same
    data = ckpt.data_hparams
    processor = Beit3Processor(
        build_tokenizer(path, info, tokenizer, ckpt),
        img_size=config.img_size,
        task=task,
        max_text_len=max_text_len or data.get("max_text_len") or DEFAULT_MAX_TEXT_LEN,
        interpolation=data.get("interpolation", "bicubic"),
        crop_pct=data.get("crop_pct", 1.0),
    )
    return predictor(network, processor, task, device=device, batch_size=batch_size, source=path, **kwargs)


def quantize_int8(network: Beit3TaskModel, dtype: Any, device: str | torch.device) -> Beit3TaskModel:
    """Dynamic int8 quantisation of every ``nn.Linear`` (PyTorch's eager dynamic quantisation, CPU kernels)."""
    if dtype is not None and _floating_dtype(dtype) != torch.float32:
        raise ValueError(f"quantize='int8' quantises a float32 model; drop dtype={dtype!r}")
    if torch.device(device).type != "cpu":
        raise ValueError(f"quantize='int8' runs on the CPU only (torch's dynamic int8 kernels); got device={device!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notices that its eager quantisation API is deprecated
        return torch.ao.quantization.quantize_dynamic(network, {torch.nn.Linear}, dtype=torch.qint8)


def _load_onnxruntime(
    path: str | Path,
    task: str | None,
    tokenizer: str | Path | Beit3Tokenizer | None,
    device: str | torch.device,
    batch_size: int,
    quantize: str | None,
    task_kwargs: dict[str, Any],
) -> Beit3Predictor:
    """An export directory as is, or a checkpoint exported once into the ``$BEIT3_HOME/onnx`` cache."""
    from beit3_lightning.inference.onnx_export import export_onnx, read_manifest
    from beit3_lightning.inference.onnx_runtime import load_onnx_predictor

    if is_export_dir(path):
        precision = read_manifest(path).get("precision")
        if quantize is not None and quantize != precision:
            raise ValueError(f"{path} holds a {precision} export; export again with --quantize {quantize} for that")
        directory = Path(path)
    else:
        source = resolve_file(path)
        key = f"{source.stem}-{file_sha256(source)[:12]}-{task or 'auto'}-{quantize or 'fp32'}"
        directory = cache_dir() / "onnx" / key
        if not is_export_dir(directory):
            export_onnx(source, directory, task=task, tokenizer=tokenizer, quantize=quantize, overwrite=True,
                        **task_kwargs)  # fmt: skip
    predictor = load_onnx_predictor(directory, tokenizer=tokenizer, batch_size=batch_size, **task_kwargs)
    return predictor.to(device)


def _floating_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """``torch.bfloat16`` or its name (``"bfloat16"``, ``"bf16"``, ``"float16"``, ``"fp16"``, ``"float32"``)."""
    names = {"bf16": torch.bfloat16, "fp16": torch.float16, "half": torch.float16, "fp32": torch.float32}
    resolved = names.get(dtype, getattr(torch, dtype, None)) if isinstance(dtype, str) else dtype
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch dtype (torch.bfloat16, 'bfloat16', ...), got {dtype!r}")
    return resolved
