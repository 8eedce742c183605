"""``export_onnx`` / ``beit3 export --format onnx``: a fine-tuned model → a self-contained ONNX directory.

The directory holds one ``.onnx`` graph per model entry point (the retrieval model has two: the image and the text
encoder), the tokenizer file, and ``beit3_export.json``, which records everything ``load_model(directory)`` needs to
serve it through ONNX Runtime with the same predictor calls (``encode_image``, ``answer``, ``verify``, ``classify``):
the task, the backbone config, the processor settings, the answer vocabulary or class names.

Graphs are exported with ``torch.onnx.export(..., dynamo=True)`` from the plain torch head model in float32, with a
dynamic batch axis (and a dynamic text-length axis). Each graph is checked right after export: ONNX Runtime and eager
PyTorch run the same random inputs at another batch size and text length, and the export fails when they differ by
more than :data:`PARITY_ATOL` (the largest difference is recorded in the manifest). ``quantize="int8"`` then
replaces each graph by ONNX Runtime's dynamic int8 quantisation of its MatMul weights (activations quantised per
call), which is checked against a looser bound (:data:`INT8_MIN_COSINE`, cosine similarity of the outputs).

Captioning is exported as two graphs: ``caption_first`` (image + ``[CLS, MASK]`` → the first word's logits and
every layer's keys / values) and ``caption_step`` (``[last word, MASK]`` + the cache → the next word's logits and
the extended cache), so the beam search of :mod:`beit3_lightning.modeling.generation` runs unchanged on top of
ONNX Runtime. Segmentation (sliding windows) is not exported yet: it raises :class:`ExportError` naming the torch
options (``dtype``, ``compile``, ``quantize``) that serve it.

Needs the optional extra: ``pip install "beit3-lightning[onnx]"`` (onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from beit3_lightning.inference.base import Beit3Predictor

MANIFEST = "beit3_export.json"
FORMAT = "beit3-onnx"
FORMAT_VERSION = 1
TOKENIZER_FILE = "tokenizer.spm"
# Max |ONNX Runtime − eager| allowed for a float32 graph (both compute in fp32; op order differs).
PARITY_ATOL = 1e-4
# int8 changes every matmul: its outputs are compared by cosine similarity with the float32 graph's instead.
INT8_MIN_COSINE = 0.99
QUANTIZATIONS = ("int8",)
# Example batch for tracing: 2, because export would specialise a size-1 axis to the constant 1.
TRACE_BATCH = 2
ONNX_EXTRA_HINT = 'pip install "beit3-lightning[onnx]"'


class ExportError(ValueError):
    """The model cannot be exported as asked, or the exported graph disagrees with the eager model."""


class MissingExtraError(ImportError):
    """An optional dependency (the ``onnx`` extra) is not installed."""


@dataclass(frozen=True)
class GraphSpec:
    """One exported entry point: its input / output names, the module exposing it, and its dynamic axes
    (``{input: {axis: dim name}}``; inputs sharing a dim name share the size)."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    wrap: Callable[[nn.Module], nn.Module]
    dynamic: dict[str, dict[int, str]] | None = None

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        if self.dynamic is not None:
            return self.dynamic
        return {name: ({0: "batch", 1: "text_len"} if name in TEXT_INPUTS else {0: "batch"}) for name in self.inputs}

    def has_text_axis(self) -> bool:
        return any("text_len" in axes.values() for axes in self.dynamic_axes().values())


TEXT_INPUTS = ("text_tokens", "padding_mask")


class _ImageEncoder(nn.Module):
    """``encode_image`` of a retrieval model as ``forward`` (export needs one named argument per input)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Tensor:
        return self.model.encode_image(image)


class _TextEncoder(nn.Module):
    """``encode_text`` of a retrieval model as ``forward``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, text_tokens: Tensor, padding_mask: Tensor) -> Tensor:
        return self.model.encode_text(text_tokens, padding_mask)


class _CaptionFirst(nn.Module):
    """First decoding step: image + ``[CLS, MASK]`` → the MASK's logits and every layer's keys / values
    stacked (layers, B, heads, image + 2, head_dim), the cache the later steps extend."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: Tensor, text_tokens: Tensor, padding_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        cache: dict[int, dict[str, Tensor]] = {}
        logits, _ = self.model(image, text_tokens, padding_mask, None, incremental_state=cache)  # (B, 2, V)
        return logits[:, -1], *_stack_cache(cache)


class _CaptionStep(nn.Module):
    """A later step: ``[last word, MASK]`` against the cached keys / values → the MASK's logits and the cache
    extended by the two new positions. The text length so far follows from the cache length."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.image_len = model.beit3.vision_embed.num_position_embeddings()

    def forward(self, text_tokens: Tensor, past_keys: Tensor, past_values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        cache = {i: {"prev_key": past_keys[i], "prev_value": past_values[i]} for i in range(past_keys.shape[0])}
        # The cache holds the image and the text before the last word: text_len = cached text + the 2 new tokens.
        text_len = past_keys.shape[3] - self.image_len + text_tokens.shape[1]
        logits, _ = self.model(None, text_tokens, None, None, text_len=text_len, incremental_state=cache)
        return logits[:, -1], *_stack_cache(cache)


def _stack_cache(cache: dict[int, dict[str, Tensor]]) -> tuple[Tensor, Tensor]:
    layers = range(len(cache))
    keys = torch.stack([cache[i]["prev_key"] for i in layers])  # (layers, B, heads, S, head_dim)
    return keys, torch.stack([cache[i]["prev_value"] for i in layers])


def _same(model: nn.Module) -> nn.Module:
    return model


# Per head: the graphs written, in the order the runtime model calls them. Output names must not clash with the
# names the exporter gives inner values (an output called "embedding" does).
GRAPHS: dict[str, tuple[GraphSpec, ...]] = {
    "retrieval": (
        GraphSpec("image_encoder", ("image",), ("image_embeds",), _ImageEncoder),
        GraphSpec("text_encoder", ("text_tokens", "padding_mask"), ("text_embeds",), _TextEncoder),
    ),
    "vqav2": (GraphSpec("vqa", ("image", "text_tokens", "padding_mask"), ("answer_logits",), _same),),
    "nlvr2": (GraphSpec("nlvr2", ("image", "image2", "text_tokens", "padding_mask"), ("logits",), _same),),
    "imageclassification": (GraphSpec("classifier", ("image",), ("class_logits",), _same),),
    "captioning": (
        GraphSpec(
            "caption_first",
            ("image", "text_tokens", "padding_mask"),
            ("word_logits", "keys", "values"),
            _CaptionFirst,
            dynamic={"image": {0: "batch"}, "text_tokens": {0: "batch"}, "padding_mask": {0: "batch"}},
        ),
        GraphSpec(
            "caption_step",
            ("text_tokens", "past_keys", "past_values"),
            ("word_logits", "keys", "values"),
            _CaptionStep,
            dynamic={
                "text_tokens": {0: "batch"},
                "past_keys": {1: "batch", 3: "past"},
                "past_values": {1: "batch", 3: "past"},
            },
        ),
    ),
}
# Text of the captioning steps: [CLS or last word, MASK].
STEP_TOKENS = 2


def require_onnx() -> None:
    """Fail with the install line when the optional ONNX packages are missing."""
    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if _missing(name)]
    if missing:
        raise MissingExtraError(f"ONNX export / ONNX Runtime need {', '.join(missing)}: {ONNX_EXTRA_HINT}")


def _missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


def example_inputs(spec: GraphSpec, config: Any, batch: int, text_len: int, vocab: int, seed: int = 0) -> dict:
    """Random inputs of the graph's names and shapes (images N(0, 1), token ids < vocab, a padded tail; for a
    captioning step, a cache of the image and ``text_len`` text positions)."""
    gen = torch.Generator().manual_seed(seed)
    size = config.img_size
    past = (size // config.patch_size) ** 2 + 1 + text_len  # image tokens + CLS + cached text
    if not spec.has_text_axis() and "text_tokens" in spec.inputs:
        text_len = STEP_TOKENS
    cache_shape = (config.num_layers, batch, config.num_heads, past, config.embed_dim // config.num_heads)
    values: dict[str, Tensor] = {}
    for name in spec.inputs:
        if name in ("image", "image2"):
            values[name] = torch.randn(batch, config.in_chans, size, size, generator=gen)
        elif name == "text_tokens":
            values[name] = torch.randint(0, vocab, (batch, text_len), generator=gen)
        elif name == "padding_mask":
            mask = torch.zeros(batch, text_len, dtype=torch.long)
            if spec.has_text_axis():  # row r keeps text_len - r tokens (at least 2): every row differently padded
                for row in range(batch):
                    mask[row, max(2, text_len - row) :] = 1
            values[name] = mask
        elif name in ("past_keys", "past_values"):
            values[name] = torch.randn(cache_shape, generator=gen)
    return values


def _dynamic_shapes(spec: GraphSpec, max_text_len: int, config: Any) -> dict[str, dict[int, Any]]:
    image_tokens = (config.img_size // config.patch_size) ** 2 + 1
    dims = {
        "batch": torch.export.Dim("batch", min=1, max=4096),
        "text_len": torch.export.Dim("text_len", min=2, max=max(max_text_len, 3)),
        "past": torch.export.Dim("past", min=image_tokens + 1, max=image_tokens + config.max_text_positions),
    }
    return {name: {axis: dims[dim] for axis, dim in spec.dynamic_axes().get(name, {}).items()} for name in spec.inputs}


def _quiet() -> contextlib.ExitStack:
    """Silence the exporter's progress prints and warnings (the export reports its own result)."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    # "" is the root logger: ONNX Runtime's quantiser logs its advice there.
    for name in ("", "torch.onnx", "torch.export", "torch._dynamo", "onnxscript"):
        logger = logging.getLogger(name)
        level = logger.level
        logger.setLevel(logging.ERROR)
        stack.callback(logger.setLevel, level)
    return stack


def session(
    path: Path, threads: int | None = None, providers: list[str] | None = None, memory_arena: bool = True
) -> Any:
    """An ONNX Runtime session on ``path`` (``threads``: intra-op threads, default torch's thread count).

    ``memory_arena=False`` allocates per run instead of from ONNX Runtime's CPU arena: the arena keeps its peak and,
    fed a new shape at every call (a caption's growing key/value cache), fragments and grows by gigabytes."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = memory_arena
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])


def run_session(sess: Any, inputs: dict[str, Tensor]) -> Tensor:
    """Run a session on torch tensors (cast to the graph's input types); the first output as a float32 tensor."""
    return run_session_all(sess, inputs)[0]


def run_session_all(sess: Any, inputs: dict[str, Tensor]) -> list[Tensor]:
    """Every output of a session run on torch tensors, as float32 tensors."""
    feeds = {}
    for meta in sess.get_inputs():
        value = inputs[meta.name]
        if meta.type == "tensor(int64)":
            value = value.long()
        elif meta.type == "tensor(float)":
            value = value.float()
        feeds[meta.name] = value.detach().cpu().numpy()
    return [torch.from_numpy(out).float() for out in sess.run(None, feeds)]


def _export_graph(
    model: nn.Module, spec: GraphSpec, config: Any, max_text_len: int, vocab: int, path: Path, opset: int | None
) -> float:
    """Write one graph and return its max |ONNX Runtime − eager| on inputs of another batch size / text length."""
    wrapped = spec.wrap(model).eval()
    trace = example_inputs(spec, config, TRACE_BATCH, max_text_len, vocab)
    kwargs: dict[str, Any] = {"opset_version": opset} if opset is not None else {}
    try:
        with _quiet(), torch.no_grad():
            torch.onnx.export(
                wrapped,
                tuple(trace.values()),
                str(path),
                input_names=list(spec.inputs),
                output_names=list(spec.outputs),
                dynamic_shapes=tuple(_dynamic_shapes(spec, max_text_len, config).values()),
                dynamo=True,
                external_data=False,
                **kwargs,
            )
    except Exception as err:  # the exporter's own errors are pages long; keep the line that names the cause
        lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
        cause = next((line for line in lines if line.startswith("<class")), lines[0])
        raise ExportError(f"torch.onnx.export failed for the {spec.name} graph: {cause}") from err
    check_len = max(3, max_text_len - 1)  # another text length (and cache length) than the trace
    check = example_inputs(spec, config, TRACE_BATCH + 1, check_len, vocab, seed=1)
    with torch.no_grad():
        expected = wrapped(*check.values())
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = run_session_all(session(path), check)
    return max(float((g - e.float()).abs().max()) for g, e in zip(got, expected, strict=True))


def _quantize_graph(path: Path) -> None:
    """Replace ``path`` by ONNX Runtime's dynamic int8 quantisation (int8 weights, per-call activation scales)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = path.with_suffix(".int8.onnx")
    with _quiet():
        quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8)
    quantized.replace(path)


def _cosine_to_eager(model: nn.Module, spec: GraphSpec, config: Any, text_len: int, vocab: int, path: Path) -> float:
    check = example_inputs(spec, config, TRACE_BATCH + 1, text_len, vocab, seed=2)
    with torch.no_grad():
        expected = spec.wrap(model).eval()(*check.values())
    expected = (expected[0] if isinstance(expected, tuple) else expected).float().flatten(1)
    got = run_session(session(path), check).flatten(1)
    return float(torch.nn.functional.cosine_similarity(got, expected, dim=-1).min())


def export_onnx(
    source: str | Path | Beit3Predictor,
    out_dir: str | Path,
    *,
    task: str | None = None,
    tokenizer: str | Path | None = None,
    quantize: str | None = None,
    opset: int | None = None,
    overwrite: bool = False,
    **load_kwargs: Any,
) -> Path:
    """Export a fine-tuned model to ``out_dir`` (see the module docstring); returns the directory.

    Args:
        source: a checkpoint (``.ckpt`` / official ``.pth`` / ``.safetensors`` / official name) or a float32 torch
            predictor from :func:`load_model`.
        out_dir: the directory to write (created; it must not exist unless ``overwrite``).
        task / tokenizer / **load_kwargs: as :func:`load_model` (``answers=``, ``labels=``, ``img_size=``, ...).
        quantize: ``"int8"``: dynamic int8 quantisation of the graphs' matrix multiplications.
        opset: ONNX opset (default: the exporter's).
        overwrite: replace an existing ``out_dir``.
    """
    require_onnx()
    if quantize not in (None, *QUANTIZATIONS):
        raise ExportError(f"quantize must be one of {QUANTIZATIONS} or None, got {quantize!r}")
    from beit3_lightning.inference.loading import load_model

    predictor = source if isinstance(source, Beit3Predictor) else load_model(source, task=task, tokenizer=tokenizer,
                                                                             **load_kwargs)  # fmt: skip
    if getattr(predictor.model, "input_dtype", None) is not None:
        raise ExportError("this predictor already runs through ONNX Runtime: export its checkpoint instead")
    if predictor.dtype != torch.float32:
        raise ExportError(f"export a float32 model (this one is {predictor.dtype}): load it without dtype=")
    head = predictor.head
    if head not in GRAPHS:
        raise ExportError(
            f"ONNX export covers {', '.join(GRAPHS)}; {predictor.task} ({head}) is not exported yet: serve it with "
            "load_model(..., dtype=torch.bfloat16, compile=True) or quantize='int8' on the torch backend"
        )
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists: choose another directory or pass overwrite=True (--overwrite)")
    model = predictor.model.cpu().eval()
    config = model.config
    processor = predictor.processor
    vocab = processor.tokenizer.vocab_size if processor.tokenizer is not None else config.vocab_size
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))  # renamed into place when complete
    try:
        graphs, checks = {}, {}
        for spec in GRAPHS[head]:
            path = staging / f"{spec.name}.onnx"
            diff = _export_graph(model, spec, config, processor.max_text_len, vocab, path, opset)
            if diff > PARITY_ATOL:
                raise ExportError(
                    f"the exported {spec.name} graph differs from the eager model by {diff:.2e} > {PARITY_ATOL:.0e}"
                )
            checks[spec.name] = {"max_abs_diff_fp32": diff}
            if quantize == "int8":
                _quantize_graph(path)
                cosine = _cosine_to_eager(model, spec, config, processor.max_text_len, vocab, path)
                if cosine < INT8_MIN_COSINE:
                    raise ExportError(
                        f"int8 {spec.name} outputs have cosine {cosine:.4f} < {INT8_MIN_COSINE} to float32: keep fp32"
                    )
                checks[spec.name]["min_cosine_int8"] = cosine
            graphs[spec.name] = path.name
        if processor.tokenizer is not None:
            shutil.copyfile(processor.tokenizer.path, staging / TOKENIZER_FILE)
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "task": predictor.task,
            "head": head,
            "precision": quantize or "fp32",
            "config": asdict(config),
            "processor": {
                "img_size": processor.img_size,
                "max_text_len": processor.max_text_len,
                "interpolation": processor.interpolation,
                "crop_pct": processor.crop_pct,
            },
            "tokenizer": TOKENIZER_FILE if processor.tokenizer is not None else None,
            "num_classes": getattr(model, "num_classes", None),
            "task_kwargs": _task_kwargs(predictor),
            "graphs": graphs,
            "checks": checks,
            "source": predictor.source,
            "torch": torch.__version__,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out


def _task_kwargs(predictor: Beit3Predictor) -> dict[str, Any]:
    """The predictor's vocabulary: VQA answers, class names (what ``load_model`` would otherwise ask for)."""
    kwargs: dict[str, Any] = {}
    if getattr(predictor, "label2ans", None) is not None:
        kwargs["answers"] = list(predictor.label2ans)
    if getattr(predictor, "labels", None) is not None:
        kwargs["labels"] = list(predictor.labels)
    return kwargs


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of an export directory, checked for its format and version."""
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ExportError(f"{path}: not a readable export manifest ({err}); re-run beit3 export") from err
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise ExportError(
            f"{path}: format {manifest.get('format')!r} version {manifest.get('version')!r}, expected {FORMAT!r} "
            f"version {FORMAT_VERSION}: re-export it with this version of beit3-lightning"
        )
    return manifest


def is_export_dir(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / MANIFEST).is_file()
