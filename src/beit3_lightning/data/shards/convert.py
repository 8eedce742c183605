"""``beit3 prepare shards``: convert what users have into a shard set (:mod:`beit3_lightning.data.shards.format`).

Inputs (``--from``):

* ``img2dataset``: img2dataset's WebDataset output (``00000.tar`` ... with ``<key>.jpg``, ``<key>.txt``,
  ``<key>.json`` per sample: how CC3M, CC12M, SBU and LAION subsets are downloaded) → image-text ``pairs``;
* ``images``: image folders (any depth), ImageNet-21k-style class folders (``--labels-from-folders``: label = the
  top-level folder, class names in the manifest) or tar files of images → ``images``;
* ``texts``: ``.txt`` (one document per line) or ``.jsonl`` (``{"text": ...}``) corpora, split into chunks of
  ``--text-chunk-tokens`` token ids with the BEiT-3 tokenizer → ``texts``;
* ``index``: a JSONL index of ours / the official code (``--dataset vqav2 --split train --data-root ...``; for
  pretraining indexes ``--dataset pretrain --kind pairs``) → the same records with the images inside the shards.

The input is cut into jobs (an input tar, a text file, or ``--samples-per-shard`` images / records); ``--workers``
processes convert jobs in parallel, each writing its own shards (``<name>-<job>-<part>.tar``, at most
``--samples-per-shard`` samples each) and, when done, a small ``.progress/job-<job>.json``. Running the same command
again after an interruption redoes only the jobs without one. At the end the manifest is written (in job order, so
the result does not depend on ``--workers``) and every record that was left out — undecodable or empty image,
empty text, broken line — is listed in ``skipped.log``.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import random
import shutil
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from beit3_lightning.data.index.common import DatasetFormatError, progress
from beit3_lightning.data.index.imagenet import IMAGE_EXTENSIONS
from beit3_lightning.data.index.pretrain import DEFAULT_TEXT_CHUNK_TOKENS, chunk_tokens, find_images
from beit3_lightning.data.shards.format import (
    IMAGE_FIELDS,
    MANIFEST_NAME,
    SKIPPED_LOG_NAME,
    ShardInfo,
    ShardManifest,
    sample_key,
)
from beit3_lightning.hub import file_sha256

__all__ = ["ConversionSummary", "DEFAULT_SAMPLES_PER_SHARD", "SOURCES", "convert_to_shards"]

DEFAULT_SAMPLES_PER_SHARD = 1000
SOURCES = ("img2dataset", "images", "texts", "index")
PROGRESS_DIR = ".progress"
CAPTION_KEYS = ("txt", "caption", "text")


@dataclass
class Job:
    """One unit of conversion: an input file, or a slice of image files / index records."""

    number: int
    kind: str  # img2dataset_tar | image_files | image_tar | text_file | records
    path: str = ""
    items: list[Any] = field(default_factory=list)


@dataclass
class ConversionSummary:
    out: Path
    samples: int
    shards: int
    skipped: int
    bytes: int
    seconds: float = 0.0


# -- per-process state of the conversion workers (set by _init_worker) ---------------------------------------------
_STATE: dict[str, Any] = {}


def _init_worker(options: dict[str, Any]) -> None:
    _STATE.clear()
    _STATE.update(options)
    if options.get("tokenizer"):
        from beit3_lightning.data.tokenizer import Beit3Tokenizer

        _STATE["encoder"] = Beit3Tokenizer(options["tokenizer"])


def _check_image(data: bytes) -> str | None:
    """None when ``data`` decodes as an image, else the reason it is skipped."""
    if not data:
        return "empty image file"
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        detail = "" if "BytesIO" in str(err) else f": {err}"  # PIL names the in-memory buffer, not the file
        return f"undecodable image ({type(err).__name__}{detail})"
    return None


def _encode(text: str) -> list[int]:
    return _STATE["encoder"].encode_ids(text)


# -- the jobs' sample generators: yield (record, {field: bytes}) or a skip reason string ---------------------------
def _tar_groups(path: str) -> Iterator[tuple[str, dict[str, bytes]] | str]:
    """``(key, {extension: bytes})`` of each sample of a WebDataset tar, one sample in memory at a time (its members
    are consecutive: WebDataset's rule), or a skip reason when the tar breaks off."""
    key, parts = None, {}
    try:
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                stem, _, ext = os.path.basename(member.name).partition(".")
                member_key = os.path.join(os.path.dirname(member.name), stem)
                if member_key != key:
                    if key is not None:
                        yield key, parts
                    key, parts = member_key, {}
                parts[ext.lower()] = tar.extractfile(member).read()  # type: ignore[union-attr]
    except (tarfile.TarError, OSError) as err:
        yield f"{path}: unreadable tar ({type(err).__name__}: {err}); samples after the break are lost"
        return
    if key is not None:
        yield key, parts


def _img2dataset_samples(path: str) -> Iterator[tuple[dict[str, Any], dict[str, bytes]] | str]:
    """Samples of one img2dataset tar: consecutive members sharing a key (``<key>.jpg``, ``.txt``, ``.json``)."""
    for group in _tar_groups(path):
        if isinstance(group, str):
            yield group
            continue
        key, parts = group
        where = f"{path}: {key}"
        image_ext = next((ext for ext in parts if f".{ext}" in IMAGE_EXTENSIONS), None)
        if image_ext is None:
            yield f"{where}: no image member ({', '.join(sorted(parts))})"
            continue
        caption = None
        if "txt" in parts:
            caption = parts["txt"].decode("utf-8", errors="replace")
        elif "json" in parts:
            try:
                meta = json.loads(parts["json"])
                caption = next((meta[k] for k in CAPTION_KEYS if isinstance(meta.get(k), str)), None)
            except ValueError:
                caption = None
        if caption is None or not caption.strip():
            yield f"{where}: empty caption"
            continue
        reason = _check_image(parts[image_ext])
        if reason:
            yield f"{where}: {reason}"
            continue
        ids = _encode(caption.strip())
        if not ids:
            yield f"{where}: caption has no tokens"
            continue
        record = {"image_path": f"{key}.{image_ext}", "text_segment": ids, "text": caption.strip()}
        yield record, {"image_path": parts[image_ext]}


def _image_file_samples(items: list[tuple[str, str, int | None]]) -> Iterator[Any]:
    for path, name, label in items:
        try:
            data = Path(path).read_bytes()
        except OSError as err:
            yield f"{path}: unreadable ({type(err).__name__}: {err})"
            continue
        reason = _check_image(data)
        if reason:
            yield f"{path}: {reason}"
            continue
        record: dict[str, Any] = {"image_path": name}
        if label is not None:
            record["label"] = label
        yield record, {"image_path": data}


def _image_tar_samples(path: str) -> Iterator[Any]:
    try:
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                if not (member.isfile() and member.name.lower().endswith(IMAGE_EXTENSIONS)):
                    continue
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                reason = _check_image(data)
                if reason:
                    yield f"{path}: {member.name}: {reason}"
                    continue
                yield {"image_path": member.name}, {"image_path": data}
    except (tarfile.TarError, OSError) as err:
        yield f"{path}: unreadable tar ({type(err).__name__}: {err}); images after the break are lost"


def _text_file_samples(path: str) -> Iterator[Any]:
    chunk = _STATE["text_chunk_tokens"]
    with open(path, encoding="utf-8", errors="strict") as file:
        try:
            for number, line in enumerate(file, 1):
                text = line.strip()
                if path.endswith(".jsonl"):
                    if not text:
                        continue
                    try:
                        text = json.loads(text).get("text")
                    except (ValueError, AttributeError):
                        yield f"{path}, line {number}: not a JSON object"
                        continue
                    if not isinstance(text, str):
                        yield f'{path}, line {number}: no "text" string'
                        continue
                    text = text.strip()
                if not text:
                    continue  # blank lines separate nothing: not worth a log line
                ids = _encode(text)
                for part in chunk_tokens(ids, chunk):
                    yield {"text_segment": part}, {}
        except UnicodeDecodeError as err:
            yield f"{path}: not UTF-8 after line {number} ({err}); convert it to UTF-8"


def _record_samples(items: list[tuple[dict[str, Any], str]]) -> Iterator[Any]:
    root = _STATE["root"]
    for record, where in items:
        images: dict[str, bytes] = {}
        reason = None
        for name in IMAGE_FIELDS:
            if isinstance(record.get(name), str):
                path = os.path.join(root, record[name])
                try:
                    data = Path(path).read_bytes()
                except OSError as err:
                    reason = f"{path}: unreadable ({type(err).__name__})"
                    break
                reason = _check_image(data)
                if reason:
                    reason = f"{path}: {reason}"
                    break
                images[name] = data
        if reason:
            yield f"{where}: {reason}"
            continue
        yield record, images


_GENERATORS = {
    "img2dataset_tar": lambda job: _img2dataset_samples(job.path),
    "image_files": lambda job: _image_file_samples(job.items),
    "image_tar": lambda job: _image_tar_samples(job.path),
    "text_file": lambda job: _text_file_samples(job.path),
    "records": lambda job: _record_samples(job.items),
}


# -- writing -------------------------------------------------------------------------------------------------------
def _suffix(record: dict[str, Any], name: str) -> str:
    ext = os.path.splitext(record[name])[1].lower().lstrip(".")
    return ext or "jpg"


class _PartWriter:
    """Writes one job's samples into parts of at most ``per_shard`` samples; each part is renamed into place when
    complete, so a shard file in the output is always whole."""

    def __init__(self, out: Path, prefix: str, job: int, per_shard: int) -> None:
        self.out, self.prefix, self.job, self.per_shard = out, prefix, job, per_shard
        self.parts: list[tuple[str, int]] = []
        self._tar: tarfile.TarFile | None = None
        self._count = 0

    def _name(self) -> str:
        return f"{self.prefix}-{self.job:06d}-{len(self.parts):04d}.tar"

    def add(self, record: dict[str, Any], images: dict[str, bytes]) -> None:
        if self._tar is None:
            self._tar = tarfile.open(self.out / (self._name() + ".tmp"), "w")  # noqa: SIM115 (open across add calls)
            self._count = 0
        key = sample_key(self._count)
        members = [(f"{key}.json", json.dumps(record, ensure_ascii=False).encode("utf-8"))]
        members += [(f"{key}.{name}.{_suffix(record, name)}", data) for name, data in images.items()]
        for member_name, data in members:
            info = tarfile.TarInfo(member_name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644  # fixed metadata: reproducible shards
            self._tar.addfile(info, io.BytesIO(data))
        self._count += 1
        if self._count >= self.per_shard:
            self._close_part()

    def _close_part(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        name = self._name()
        os.replace(self.out / (name + ".tmp"), self.out / name)
        self.parts.append((name, self._count))
        self._tar = None

    def close(self) -> list[tuple[str, int]]:
        self._close_part()
        return self.parts


def _run_job(job: Job) -> dict[str, Any]:
    out = Path(_STATE["out"])
    writer = _PartWriter(out, _STATE["prefix"], job.number, _STATE["samples_per_shard"])
    skipped: list[str] = []
    for sample in _GENERATORS[job.kind](job):
        if isinstance(sample, str):
            skipped.append(sample)
        else:
            writer.add(*sample)
    result = {"job": job.number, "parts": writer.close(), "skipped": skipped}
    done = out / PROGRESS_DIR / f"job-{job.number:06d}.json"
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(result), encoding="utf-8")
    os.replace(tmp, done)
    return result


# -- planning ------------------------------------------------------------------------------------------------------
def _expand(inputs: Sequence[str | Path], suffixes: tuple[str, ...]) -> list[Path]:
    """Files of ``inputs`` (directories are searched recursively) with one of ``suffixes``, sorted."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.is_file() and p.name.lower().endswith(suffixes))
        elif item.is_file():
            files.append(item)
        else:
            raise DatasetFormatError(f"input {item} does not exist")
    return files


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def _plan(source: str, inputs: Sequence[str | Path], per_shard: int, *, labels_from_folders: bool, seed: int,
          index_records: list[tuple[dict[str, Any], str]] | None) -> tuple[list[Job], list[str] | None]:  # fmt: skip
    """The jobs of a conversion (and the class names of class folders)."""
    if source == "img2dataset":
        tars = _expand(inputs, (".tar",))
        if not tars:
            raise DatasetFormatError(f"no .tar files in {', '.join(map(str, inputs))} (img2dataset output expected)")
        return [Job(i, "img2dataset_tar", str(p)) for i, p in enumerate(tars)], None
    if source == "texts":
        files = _expand(inputs, (".txt", ".jsonl"))
        if not files:
            raise DatasetFormatError(f"no .txt / .jsonl files in {', '.join(map(str, inputs))}")
        return [Job(i, "text_file", str(p)) for i, p in enumerate(files)], None
    if source == "index":
        assert index_records is not None
        return [Job(i, "records", items=chunk) for i, chunk in enumerate(_chunks(index_records, per_shard))], None
    # images: folders (optionally class folders) and tars of images
    jobs: list[Job] = []
    files: list[tuple[str, str, int | None]] = []
    classes: list[str] | None = None
    for item in map(Path, inputs):
        if item.is_file() and item.name.endswith((".tar", ".tar.gz", ".tgz")):
            jobs.append(Job(0, "image_tar", str(item)))
            continue
        if not item.is_dir():
            what = "does not exist" if not item.exists() else "is neither a folder nor a tar of images"
            raise DatasetFormatError(f"input {item} {what}")
        found = find_images(item)
        if labels_from_folders:
            names = sorted({path.relative_to(item).parts[0] for path in found if len(path.relative_to(item).parts) > 1})
            if not names:
                raise DatasetFormatError(f"{item} has no class folders (images directly inside it)")
            if classes is not None and classes != names:
                raise DatasetFormatError(f"{item}: its class folders differ from the previous input's")
            classes = names
            label_of = {name: i for i, name in enumerate(names)}
            found = [path for path in found if len(path.relative_to(item).parts) > 1]
            files += [(str(p), p.relative_to(item).as_posix(), label_of[p.relative_to(item).parts[0]]) for p in found]
        else:
            files += [(str(p), p.relative_to(item).as_posix(), None) for p in found]
    # Class folders are sorted by class: without this shuffle a shard would hold one class.
    random.Random(seed).shuffle(files)
    jobs += [Job(0, "image_files", items=chunk) for chunk in _chunks(files, per_shard)]
    if not jobs:
        raise DatasetFormatError(f"no images in {', '.join(map(str, inputs))} ({', '.join(IMAGE_EXTENSIONS)})")
    for number, job in enumerate(jobs):
        job.number = number
    return jobs, classes


def convert_to_shards(
    source: str,
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    tokenizer: str | None = None,
    content: str | None = None,
    split: str = "train",
    samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD,
    workers: int = 1,
    text_chunk_tokens: int = DEFAULT_TEXT_CHUNK_TOKENS,
    labels_from_folders: bool = False,
    index_records: list[tuple[dict[str, Any], str]] | None = None,
    data_root: str | Path | None = None,
    overwrite: bool = False,
    seed: int = 0,
    show_progress: bool = True,
) -> ConversionSummary:
    """Convert ``inputs`` into the shard set ``out``; see the module docstring. Returns what was written."""
    start = time.perf_counter()
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    if samples_per_shard < 1 or workers < 1:
        raise ValueError("samples_per_shard and workers must be >= 1")
    if source in ("img2dataset", "texts") and tokenizer is None:
        raise ValueError(f"--from {source} needs --tokenizer (the text is stored as token ids)")
    out = Path(out)
    content = content or {"img2dataset": "pairs", "images": "images", "texts": "texts"}.get(source, source)
    jobs, classes = _plan(source, inputs, samples_per_shard, labels_from_folders=labels_from_folders, seed=seed,
                          index_records=index_records)  # fmt: skip
    if (out / MANIFEST_NAME).exists():
        if not overwrite:
            raise FileExistsError(f"{out} already holds a converted shard set; pass --overwrite to convert again")
        shutil.rmtree(out)
    (out / PROGRESS_DIR).mkdir(parents=True, exist_ok=True)
    results: dict[int, dict[str, Any]] = {}
    for job in jobs:  # an interrupted conversion: keep the jobs that completed
        done = out / PROGRESS_DIR / f"job-{job.number:06d}.json"
        if done.exists():
            results[job.number] = json.loads(done.read_text(encoding="utf-8"))
    todo = [job for job in jobs if job.number not in results]
    for stale in out.glob("*.tmp"):
        stale.unlink()
    options = {
        "out": str(out),
        "prefix": content.replace("_", "-"),
        "samples_per_shard": samples_per_shard,
        "tokenizer": tokenizer,
        "text_chunk_tokens": text_chunk_tokens,
        "root": str(data_root) if data_root is not None else "",
    }
    bar = progress(range(len(todo)), f"shards ({len(results)} of {len(jobs)} jobs done before)", len(todo))
    if not show_progress:
        bar = iter(range(len(todo)))
    if workers == 1 or len(todo) <= 1:
        _init_worker(options)
        for job in todo:
            results[job.number] = _run_job(job)
            next(bar, None)
    else:
        context = multiprocessing.get_context("spawn")  # no fork of a parent that may hold torch threads
        with context.Pool(min(workers, len(todo)), initializer=_init_worker, initargs=(options,)) as pool:
            for result in pool.imap_unordered(_run_job, todo):
                results[result["job"]] = result
                next(bar, None)
    shards = [ShardInfo(name, count) for number in sorted(results) for name, count in results[number]["parts"]]
    skipped = [line for number in sorted(results) for line in results[number]["skipped"]]
    (out / SKIPPED_LOG_NAME).write_text("".join(line + "\n" for line in skipped), encoding="utf-8")
    tokenizer_id = tokenizer
    if tokenizer and os.path.isfile(tokenizer):
        tokenizer_id = f"{Path(tokenizer).name} sha256:{file_sha256(tokenizer)}"
    if source == "index" and tokenizer_id is None:
        tokenizer_id = "as the index"
    manifest = ShardManifest(content=content, split=split, shards=shards, tokenizer=tokenizer_id, classes=classes,
                             skipped=len(skipped))  # fmt: skip
    if manifest.num_samples == 0:
        raise DatasetFormatError(f"no usable samples in {', '.join(map(str, inputs))}; see {out / SKIPPED_LOG_NAME}")
    manifest.write(str(out))
    shutil.rmtree(out / PROGRESS_DIR)
    size = sum((out / shard.name).stat().st_size for shard in shards)
    return ConversionSummary(out, manifest.num_samples, len(shards), len(skipped), size, time.perf_counter() - start)
