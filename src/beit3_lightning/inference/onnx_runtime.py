"""ONNX Runtime behind the predictor API: ``load_model("export_dir")`` or ``load_model(ckpt, backend="onnxruntime")``.

:class:`OnnxTaskModel` stands in for the plain torch head model inside the usual predictors: it offers the calls
they make (``encode_image`` / ``encode_text`` for retrieval, ``model(...)`` for VQA, NLVR2 and classification) and
runs the exported graphs of :mod:`beit3_lightning.inference.onnx_export` instead. Inputs and outputs stay torch
tensors, so ``answer`` / ``verify`` / ``classify`` / ``rank`` behave exactly as on the torch backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from beit3_lightning.inference.onnx_export import (
    GRAPHS,
    STEP_TOKENS,
    ExportError,
    read_manifest,
    require_onnx,
    run_session,
    run_session_all,
    session,
)
from beit3_lightning.modeling.config import Beit3Config


class OnnxTaskModel:
    """The exported graphs of one task model, called like the torch head model (captioning: like its forward
    under the beam search, see :meth:`caption_step`).

    Attributes:
        config: the backbone config the graphs were exported from.
        num_classes: the classifier width (VQA answers, ImageNet classes, NLVR2's 2), if any.
        input_dtype: float32: the graphs' image input type (what the predictor casts images to).
        precision: ``fp32`` or ``int8``.
    """

    input_dtype = torch.float32

    def __init__(self, directory: str | Path, threads: int | None = None, providers: list[str] | None = None):
        require_onnx()
        self.directory = Path(directory)
        manifest = read_manifest(self.directory)
        self.manifest = manifest
        self.head = manifest["head"]
        self.config = Beit3Config(**manifest["config"])
        self.num_classes = manifest.get("num_classes")
        self.precision = manifest.get("precision", "fp32")
        specs = {spec.name: spec for spec in GRAPHS.get(self.head, ())}
        if set(manifest["graphs"]) != set(specs):
            raise ExportError(
                f"{self.directory}: graphs {sorted(manifest['graphs'])} do not match the {self.head} head's "
                f"{sorted(specs)}: re-export it"
            )
        self.specs = specs
        self.sessions = {}
        for name, file in manifest["graphs"].items():
            path = self.directory / file
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing from the export directory: re-run beit3 export")
            # Captioning feeds a longer cache at every step: no arena (onnx_export.session).
            arena = self.head != "captioning"
            self.sessions[name] = session(path, threads=threads, providers=providers, memory_arena=arena)

    def __repr__(self) -> str:
        return f"OnnxTaskModel({self.directory}, head={self.head!r}, precision={self.precision!r})"

    # ----- the parts of nn.Module the predictors use --------------------------------------------------------
    def eval(self) -> OnnxTaskModel:
        return self

    def to(self, device: str | torch.device) -> OnnxTaskModel:
        if torch.device(device).type != "cpu":
            raise ValueError(
                f"the ONNX Runtime backend takes and returns CPU tensors; got device={device!r} (choose the "
                "execution provider with providers=[...] instead)"
            )
        return self

    # ----- the head models' calls ----------------------------------------------------------------------------
    def _run(self, graph: str, *args: Tensor) -> Tensor:
        spec = self.specs[graph]
        return run_session(self.sessions[graph], dict(zip(spec.inputs, args)))

    def encode_image(self, image: Tensor) -> Tensor:
        return self._run("image_encoder", image)

    def encode_text(self, tokens: Tensor, padding_mask: Tensor | None) -> Tensor:
        if padding_mask is None:
            padding_mask = torch.zeros_like(tokens)
        return self._run("text_encoder", tokens, padding_mask)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.head == "captioning":
            return self.caption_step(*args, **kwargs)
        (graph,) = self.specs if len(self.specs) == 1 else (None,)
        if graph is None:
            raise TypeError(f"the {self.head} export has several graphs ({sorted(self.specs)}): call one of them")
        return self._run(graph, *args)

    def caption_step(
        self,
        image: Tensor | None,
        text_ids: Tensor,
        padding_mask: Tensor | None,
        language_masked_pos: Tensor | None,
        text_len: int | None = None,
        incremental_state: dict | None = None,
    ) -> tuple[Tensor, dict]:
        """``Beit3ForCaptioning.forward`` as the beam search calls it: with the image (``[CLS, MASK]``) or a
        ``[last word, MASK]`` step on the cache; the MASK's logits (B, V) and the cache, filled in place."""
        if incremental_state is None or text_ids.shape[1] != STEP_TOKENS:
            raise ValueError("the ONNX captioning graphs decode with the cache, two tokens per step (use_cache=True)")
        if image is not None:
            feeds = {"image": image, "text_tokens": text_ids, "padding_mask": padding_mask}
            logits, keys, values = run_session_all(self.sessions["caption_first"], feeds)
        else:
            layers = range(self.config.num_layers)
            feeds = {
                "text_tokens": text_ids,
                "past_keys": torch.stack([incremental_state[i]["prev_key"] for i in layers]),
                "past_values": torch.stack([incremental_state[i]["prev_value"] for i in layers]),
            }
            logits, keys, values = run_session_all(self.sessions["caption_step"], feeds)
        for layer in range(self.config.num_layers):
            incremental_state[layer] = {"prev_key": keys[layer], "prev_value": values[layer]}
        return logits, incremental_state


def load_onnx_predictor(
    directory: str | Path,
    *,
    tokenizer: str | Path | None = None,
    batch_size: int = 32,
    threads: int | None = None,
    providers: list[str] | None = None,
    show_progress: bool = True,
    **task_kwargs: Any,
) -> Any:
    """The predictor of an export directory (``load_model`` calls this; use that)."""
    from beit3_lightning.inference.loading import predictor_class
    from beit3_lightning.processor import Beit3Processor

    model = OnnxTaskModel(directory, threads=threads, providers=providers)
    manifest = model.manifest
    saved_tokenizer = manifest.get("tokenizer")
    if tokenizer is None and saved_tokenizer is not None:
        tokenizer = model.directory / saved_tokenizer
    processor = Beit3Processor(tokenizer, task=manifest["task"], **manifest["processor"])
    kwargs = {**manifest.get("task_kwargs", {}), **task_kwargs}
    cls = predictor_class(model.head)
    return cls(
        model, processor, manifest["task"], batch_size=batch_size, source=model.directory,
        show_progress=show_progress, **kwargs,
    )  # fmt: skip


__all__ = ["OnnxTaskModel", "load_onnx_predictor"]
