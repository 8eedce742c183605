"""``beit3 predict`` → submission files (the format of unilm ``utils.dump_predictions``).

Every process's predictions are gathered, de-duplicated (a ``DistributedSampler`` pads the last shard with
repeated samples) and written once, atomically, by global rank 0:

* record tasks → ``<output_dir>/submit_<task>_<split>.json`` (indent 2, like the reference's
  ``submit_vqav2_test.json``): VQA ``[{"question_id", "answer"}]`` (de-duplicated by question id), captioning
  ``[{"image_id", "caption"}]`` (by image id), ImageNet / NLVR2 records with an ``index`` (by dataset index);
  sorted by that id, so the file does not depend on the number of processes.
* segmentation → ``<output_dir>/<task>_<split>/<image name>.png`` (the predicted class ids; for datasets indexed
  with ``reduce_zero_label`` such as ADE20k, id + 1, the benchmark's submission format) and ``<image name>_color.png``
  (a palette PNG: class ids shown in colour), written by each process as its batches come, plus
  ``submit_<task>_<split>.json`` listing them by dataset index.
* retrieval → ``<output_dir>/embeddings_<task>_<split>.pt``: a dict with ``image_ids`` (sorted, unique),
  ``image_embeddings`` (one row per image id), ``text_index`` (sorted dataset indexes), ``text_image_ids`` (the
  image each text belongs to) and ``text_embeddings`` (one row per text, in index order).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning.fabric.utilities import move_data_to_device
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

# The id that identifies a record, in order of preference: VQA answers by question, captions by image, else index.
RECORD_KEYS = ("question_id", "image_id", "index")
# The tensors a retrieval ``predict_step`` returns per batch.
EMBEDDING_KEYS = ("index", "image_id", "image_emb", "text_emb")


def record_key(record: dict[str, Any]) -> str:
    """The id field of a prediction record (``question_id``, ``image_id`` or ``index``)."""
    for key in RECORD_KEYS:
        if key in record:
            return key
    raise ValueError(f"prediction record {record!r} has none of the id fields {RECORD_KEYS}")


def dedupe_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the first record of every id and sort by id (all records must share the same id field)."""
    key: str | None = None
    first: dict[Any, dict[str, Any]] = {}
    for record in records:
        this_key = record_key(record)
        if key is None:
            key = this_key
        elif this_key != key:
            raise ValueError(f"prediction records mix id fields {key!r} and {this_key!r}: {record!r}")
        first.setdefault(record[key], record)
    return [first[i] for i in sorted(first)]


def _first_rows_by_id(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sorted unique ids, the row of each id's first occurrence in ``ids``)."""
    unique, inverse = torch.unique(ids, sorted=True, return_inverse=True)
    positions = torch.arange(len(ids), dtype=torch.long)
    # Scatter-min of the positions per unique id: the first occurrence wins (the reference keeps the first).
    first = torch.full((len(unique),), len(ids), dtype=torch.long).scatter_reduce(0, inverse, positions, reduce="amin")
    return unique, first


def merge_embeddings(batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate retrieval ``predict_step`` outputs and de-duplicate images by image id, texts by index."""
    batches = list(batches)
    if not batches:
        raise ValueError("no retrieval predictions to merge")
    for batch in batches:
        missing = [key for key in EMBEDDING_KEYS if key not in batch]
        if missing:
            raise ValueError(f"a retrieval prediction lacks {missing}; it has {sorted(batch)}")
    cat = {key: torch.cat([torch.as_tensor(b[key]).cpu() for b in batches]) for key in EMBEDDING_KEYS}
    image_ids, image_rows = _first_rows_by_id(cat["image_id"].long())
    text_index, text_rows = _first_rows_by_id(cat["index"].long())
    return {
        "image_ids": image_ids,
        "image_embeddings": cat["image_emb"][image_rows],
        "text_index": text_index,
        "text_image_ids": cat["image_id"].long()[text_rows],
        "text_embeddings": cat["text_emb"][text_rows],
    }


def atomic_write(path: str | os.PathLike[str], write: Callable[[Any], None], binary: bool = False) -> Path:
    """Write ``path`` through a temporary file in the same directory, then ``os.replace`` it into place, so a
    reader never sees a half-written file (and a crash leaves the previous file intact)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Atomically write ``data`` as indented JSON (the reference's ``indent=2``)."""
    return atomic_write(path, lambda f: json.dump(data, f, indent=2, ensure_ascii=False))


def save_tensors(path: str | os.PathLike[str], data: dict[str, torch.Tensor]) -> Path:
    """Atomically ``torch.save`` a dict of tensors."""
    return atomic_write(path, lambda f: torch.save(data, f), binary=True)


def gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` via ``all_gather_object``; ``[obj]`` without a process group."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


class PredictionWriter(BasePredictionWriter):
    """Writes the submission / embedding file of ``beit3 predict`` (see the module docstring).

    Each process keeps its own batch outputs (``write_on_batch_end``) and they are gathered and written at the end
    of the epoch. Keeping them here rather than reading the predict loop's list makes the writer independent of
    ``return_predictions`` (always off under ``ddp_spawn``).

    Args:
        output_dir: directory of the files; default ``<trainer log dir>/predictions``.
        split: split name in the file name; default the DataModule's ``test_split`` (what predict runs on).
    """

    def __init__(self, output_dir: str | None = None, split: str | None = None) -> None:
        super().__init__(write_interval="batch_and_epoch")
        self.output_dir = output_dir
        self.split = split
        self.written: list[Path] = []
        self._batches: list[Any] = []
        self._resolved_dir: Path | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "predict":
            # On every process: trainer.log_dir broadcasts rank 0's directory (a collective call).
            log_dir = trainer.log_dir or trainer.default_root_dir
            self._resolved_dir = Path(self.output_dir) if self.output_dir else Path(log_dir) / "predictions"

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._batches = []

    def file_stem(self, trainer: L.Trainer, pl_module: L.LightningModule) -> str:
        """``<task>_<split>``: the DataModule's dataset name (coco_captioning, flickr30k, ...) else the head's."""
        datamodule = getattr(trainer, "datamodule", None)
        task = getattr(datamodule, "task", None) or getattr(pl_module, "head", "") or type(pl_module).__name__
        split = self.split or getattr(datamodule, "test_split", None) or "test"
        return f"{task}_{split}"

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        if isinstance(prediction, list) and prediction and "label_map" in prediction[0]:
            # Label maps are large: written here, by the process that made them; only their file names are kept.
            prediction = self.write_label_maps(trainer, pl_module, prediction)
        # To the CPU: gathered CUDA tensors would unpickle onto their source GPU in every process.
        self._batches.append(move_data_to_device(prediction, "cpu"))

    def write_label_maps(self, trainer: L.Trainer, pl_module: L.LightningModule,
                         items: list[dict[str, Any]]) -> list[dict[str, Any]]:  # fmt: skip
        """Write a label PNG and a colour PNG per item; returns ``{"index", "image_path", "label_png",
        "color_png"}`` records."""
        from PIL import Image

        from beit3_lightning.segmentation_colors import palette_png

        datamodule = getattr(trainer, "datamodule", None)
        split = self.split or getattr(datamodule, "test_split", None) or "test"
        records = getattr(getattr(datamodule, "datasets", {}).get(split), "records", None)
        offset = 1 if getattr(datamodule, "reduce_zero_label", False) else 0
        folder = (self._resolved_dir or Path(self.output_dir or "predictions")) / self.file_stem(trainer, pl_module)
        folder.mkdir(parents=True, exist_ok=True)
        num_classes = pl_module.model.num_classes
        written = []
        for item in items:
            index = int(item["index"])
            image_path = records[index]["image_path"] if records is not None else None
            stem = Path(image_path).stem if image_path else f"{index:08d}"
            labels = item["label_map"].numpy().astype("int64") + offset
            raw = Image.fromarray(labels.astype("uint8" if labels.max(initial=0) < 256 else "uint16"))
            atomic_write(folder / f"{stem}.png", lambda f, image=raw: image.save(f, format="PNG"), binary=True)
            colour = palette_png(item["label_map"].numpy(), num_classes) if num_classes <= 256 else raw
            atomic_write(folder / f"{stem}_color.png", lambda f, image=colour: image.save(f, format="PNG"), binary=True)
            written.append({"index": index, "image_path": image_path, "label_png": str(folder / f"{stem}.png"),
                            "color_png": str(folder / f"{stem}_color.png")})  # fmt: skip
        return written

    def write_on_epoch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        gathered = [batch for rank_batches in gather_objects(self._batches) for batch in rank_batches]
        self._batches = []
        if trainer.is_global_zero:
            self.written.append(self.write(gathered, self.file_stem(trainer, pl_module)))
        trainer.strategy.barrier("predictions_written")  # nobody moves on before the file exists

    def write(self, batches: list[Any], stem: str) -> Path:
        """Merge and write gathered per-batch outputs; returns the path written."""
        directory = self._resolved_dir or Path(self.output_dir or "predictions")
        if batches and isinstance(batches[0], dict):
            merged = merge_embeddings(batches)
            path = save_tensors(directory / f"embeddings_{stem}.pt", merged)
            # Lightning's console logger: the user sees where the file went (our own logger is silent at INFO).
            images, texts = len(merged["image_ids"]), len(merged["text_index"])
            rank_zero_info(f"wrote {images} image and {texts} text embeddings to {path}")
            return path
        records = dedupe_records(record for batch in batches for record in batch)
        path = write_json(directory / f"submit_{stem}.json", records)
        if records and "label_png" in records[0]:
            rank_zero_info(f"wrote {len(records)} label maps to {directory / stem} (listed in {path})")
        else:
            rank_zero_info(f"wrote {len(records)} predictions to {path}")
        return path
