"""The shard set format: WebDataset tar files plus one ``manifest.json``.

A shard set is a directory (local path or URL) holding

* ``<name>-<job>-<part>.tar``: WebDataset shards. One sample = the tar members sharing a key (``000000123``):
  ``<key>.json`` is the sample's index record (the same fields as a line of the JSONL index it replaces) and
  ``<key>.<field>.<ext>`` holds the original bytes of the image the record's ``<field>`` names (``image_path``,
  ``image2_path``). Any WebDataset tool can list or read them (``tar tf``, ``webdataset.WebDataset``).
* ``manifest.json``: what the readers need before touching a shard: the content (``pairs``, ``images``, ``texts`` or a
  fine-tuning dataset name), the split, the tokenizer the text ids come from, and every shard with its sample count.
  The counts give each rank and DataLoader worker its share without opening a shard, and let a resumed run skip
  whole shards.
* ``skipped.log``: one line per input record the converter left out (file, record, reason).

Reading goes through WebDataset's ``gopen``: local paths, ``http(s)://`` (curl), ``gs://`` (gsutil) and
``pipe:<command>`` (e.g. ``pipe:aws s3 cp s3://bucket/{name} -`` for S3) all work.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "IMAGE_FIELDS",
    "MANIFEST_NAME",
    "SKIPPED_LOG_NAME",
    "ShardFormatError",
    "ShardInfo",
    "ShardManifest",
    "iter_shard_samples",
    "join_url",
    "open_url",
    "read_manifest",
    "sample_key",
]

FORMAT_NAME = "beit3-shards"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SKIPPED_LOG_NAME = "skipped.log"
# Record fields that name an image; the converter stores the image bytes under ``<key>.<field>.<ext>``.
IMAGE_FIELDS = ("image_path", "image2_path")
KEY_DIGITS = 9


class ShardFormatError(ValueError):
    """A shard set or shard that cannot be read (missing manifest, wrong format, broken tar)."""


def sample_key(number: int) -> str:
    """Tar key of the ``number``-th sample of a shard (zero-padded, so keys sort in write order)."""
    return f"{number:0{KEY_DIGITS}d}"


@dataclass
class ShardInfo:
    name: str  # file name, relative to the shard set
    samples: int


@dataclass
class ShardManifest:
    content: str  # "pairs" | "images" | "texts" | a fine-tuning dataset name (vqav2, coco_retrieval, ...)
    split: str
    shards: list[ShardInfo]
    tokenizer: str | None = None  # the sentencepiece model the text ids come from (file name and sha256)
    classes: list[str] | None = None  # class-folder inputs: label i is classes[i]
    skipped: int = 0
    format: str = FORMAT_NAME
    version: int = FORMAT_VERSION

    @property
    def num_samples(self) -> int:
        return sum(shard.samples for shard in self.shards)

    def to_json(self) -> str:
        data = asdict(self)
        data["num_samples"] = self.num_samples
        return json.dumps(data, indent=1)

    def write(self, directory: str) -> str:
        """Write ``manifest.json`` atomically (a reader never sees half a manifest)."""
        path = os.path.join(directory, MANIFEST_NAME)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as file:
            file.write(self.to_json() + "\n")
        os.replace(tmp, path)
        return path


def join_url(base: str, name: str) -> str:
    """``base/name`` for a directory or a URL (``pipe:`` commands take ``{name}`` as the placeholder)."""
    if base.startswith("pipe:"):
        return base.replace("{name}", name)
    return base.rstrip("/") + "/" + name


def open_url(url: str) -> BinaryIO:
    """Open a local path or a URL WebDataset's ``gopen`` understands, for binary reading."""
    if "://" not in url and not url.startswith("pipe:"):
        return open(url, "rb")
    from webdataset.gopen import gopen

    return gopen(url, "rb")


def read_manifest(location: str) -> ShardManifest:
    """The manifest of the shard set at ``location`` (directory or URL); one-line errors for the usual mistakes."""
    url = join_url(location, MANIFEST_NAME)
    try:
        with open_url(url) as file:
            data = json.loads(file.read().decode("utf-8"))
    except FileNotFoundError:
        raise ShardFormatError(
            f"{url} not found: {location} is not a shard set; create one with `beit3 prepare shards ... --out "
            f"{location}` (an interrupted conversion writes the manifest only when it completes: run it again)."
        ) from None
    except (OSError, ValueError) as err:
        raise ShardFormatError(f"cannot read the shard manifest {url}: {type(err).__name__}: {err}") from err
    if data.get("format") != FORMAT_NAME:
        raise ShardFormatError(f"{url} is not a {FORMAT_NAME} manifest (format {data.get('format')!r})")
    if data.get("version") != FORMAT_VERSION:
        raise ShardFormatError(
            f"{url}: shard format version {data.get('version')}, this beit3-lightning reads version {FORMAT_VERSION};"
            " convert the data again with this version's `beit3 prepare shards`."
        )
    data.pop("num_samples", None)
    data["shards"] = [ShardInfo(**shard) for shard in data["shards"]]
    return ShardManifest(**data)


def iter_shard_samples(url: str) -> Iterator[tuple[str, dict[str, Any], dict[str, bytes]]]:
    """``(key, record, {field: image bytes})`` of each sample of one shard, in tar order, without decoding images.

    Members of a sample are consecutive in the tar (WebDataset's rule); the record is parsed, images stay bytes.
    """
    key: str | None = None
    record: dict[str, Any] | None = None
    images: dict[str, bytes] = {}
    try:
        with open_url(url) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name = os.path.basename(member.name)
                member_key, _, suffix = name.partition(".")
                if member_key != key:
                    if key is not None:
                        yield _complete(url, key, record, images)
                    key, record, images = member_key, None, {}
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                if suffix == "json":
                    record = json.loads(data)
                else:
                    images[suffix.split(".")[0]] = data
            if key is not None:
                yield _complete(url, key, record, images)
    except (tarfile.TarError, OSError, ValueError) as err:
        raise ShardFormatError(f"cannot read shard {url}: {type(err).__name__}: {err}") from err


def _complete(url: str, key: str, record: dict[str, Any] | None, images: dict[str, bytes]):
    if record is None:
        raise ShardFormatError(f"shard {url}: sample {key} has no {key}.json record; was it written by a converter?")
    return key, record, images
