"""Official BEiT-3 files by name: ``beit3 download``, and the cache behind ``load_model("beit3_base_patch16_480_vqa")``,
``--model.init_args.init_from beit3_base_patch16_224`` and ``--data.init_args.tokenizer beit3.spm``.

A known name (with or without ``.pth``) resolves to ``$BEIT3_HOME/<file>`` (default ``~/.cache/beit3``), downloaded
on first use from the official release (``https://github.com/addf400/files/releases/download/beit3/<file>``; set
``BEIT3_BASE_URL`` for a mirror) with a progress bar. The download goes to ``<file>.part``: an interrupted one is
resumed with an HTTP range request, and the file is renamed into place only when complete, so a cached file is
always whole. The size is checked against the server's ``Content-Length``; the release publishes no checksums, so the
first complete download records its size and sha256 in ``$BEIT3_HOME/checksums.json`` and later downloads of the same
file must match them (a corrupted mirror or a changed release is refused). Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "OFFICIAL_FILES",
    "RELEASE_URL",
    "DownloadError",
    "OfficialFile",
    "cache_dir",
    "download",
    "file_sha256",
    "official_file",
    "resolve_file",
]

RELEASE_URL = "https://github.com/addf400/files/releases/download/beit3/"
HOME_ENV, BASE_URL_ENV = "BEIT3_HOME", "BEIT3_BASE_URL"
CHECKSUMS = "checksums.json"
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A file that could not be fetched or verified; the message says what to do (one line)."""


@dataclass(frozen=True)
class OfficialFile:
    name: str  # file name in the release
    task: str  # what it is for
    metric: str  # the reference metric the release reports ("" for pretrained backbones)
    params: str  # parameter count as the release gives it


def _table() -> dict[str, OfficialFile]:
    rows = [
        ("beit3.spm", "tokenizer (sentencepiece, 64002 ids)", "", ""),
        ("beit3_base_patch16_224.pth", "pretrained backbone", "", "276M"),
        ("beit3_large_patch16_224.pth", "pretrained backbone", "", "746M"),
        ("beit3_base_itc_patch16_224.pth", "pretrained backbone (image-text contrastive)", "", "222M"),
        ("beit3_large_itc_patch16_224.pth", "pretrained backbone (image-text contrastive)", "", "674M"),
        ("beit3_base_indomain_patch16_224.pth", "pretrained backbone (in-domain)", "", "276M"),
        ("beit3_large_indomain_patch16_224.pth", "pretrained backbone (in-domain)", "", "746M"),
        ("beit3_base_patch16_224_in1k.pth", "imagenet", "acc@1 85.4 / acc@5 97.6", "87M"),
        ("beit3_base_indomain_patch16_224_in1k.pth", "imagenet", "acc@1 85.4 / acc@5 97.6", "87M"),
        ("beit3_large_patch16_224_in1k.pth", "imagenet", "acc@1 87.6 / acc@5 98.3", "305M"),
        ("beit3_large_indomain_patch16_224_in1k.pth", "imagenet", "acc@1 87.5 / acc@5 98.3", "305M"),
        ("beit3_base_patch16_480_vqa.pth", "vqav2", "test-dev 77.65", "228M"),
        ("beit3_base_indomain_patch16_480_vqa.pth", "vqav2", "test-dev 78.46", "228M"),
        ("beit3_large_patch16_480_vqa.pth", "vqav2", "test-dev 81.85", "683M"),
        ("beit3_large_indomain_patch16_480_vqa.pth", "vqav2", "test-dev 82.53", "683M"),
        ("beit3_large_indomain_patch16_768_vgqaaug_vqa.pth", "vqav2", "test-dev 82.97 / test-std 83.03", "684M"),
        ("beit3_base_patch16_224_nlvr2.pth", "nlvr2", "dev 83.6 / test-P 84.4", "226M"),
        ("beit3_base_indomain_patch16_224_nlvr2.pth", "nlvr2", "dev 84.6 / test-P 85.3", "226M"),
        ("beit3_large_patch16_224_nlvr2.pth", "nlvr2", "dev 88.5 / test-P 89.4", "681M"),
        ("beit3_large_indomain_patch16_224_nlvr2.pth", "nlvr2", "dev 89.2 / test-P 90.0", "681M"),
        ("beit3_base_patch16_480_coco_captioning.pth", "coco_captioning", "test CIDEr 133.6", "271M"),
        ("beit3_base_indomain_patch16_480_coco_captioning.pth", "coco_captioning", "test CIDEr 135.0", "271M"),
        ("beit3_large_patch16_480_coco_captioning.pth", "coco_captioning", "test CIDEr 143.2", "739M"),
        ("beit3_base_patch16_480_nocaps.pth", "nocaps", "val CIDEr 104.4", "271M"),
        ("beit3_base_indomain_patch16_480_nocaps.pth", "nocaps", "val CIDEr 105.6", "271M"),
        ("beit3_large_patch16_480_nocaps.pth", "nocaps", "val CIDEr 120.2", "739M"),
        ("beit3_base_patch16_384_coco_retrieval.pth", "coco_retrieval", "IR@1 61.4 / TR@1 79.1", "222M"),
        ("beit3_large_patch16_384_coco_retrieval.pth", "coco_retrieval", "IR@1 63.4 / TR@1 82.1", "675M"),
        ("beit3_base_patch16_384_f30k_retrieval.pth", "flickr30k", "IR@1 86.2 / TR@1 96.3", "222M"),
        ("beit3_large_patch16_384_f30k_retrieval.pth", "flickr30k", "IR@1 88.1 / TR@1 97.2", "675M"),
    ]
    return {name: OfficialFile(name, task, metric, params) for name, task, metric, params in rows}


# Every file of the official release (unilm beit3 README), with the task and reference metric it reports.
OFFICIAL_FILES: dict[str, OfficialFile] = _table()


def official_file(name: str) -> OfficialFile | None:
    """The official file called ``name`` (``beit3_base_patch16_224`` and ``beit3_base_patch16_224.pth`` alike)."""
    base = os.path.basename(str(name))
    return OFFICIAL_FILES.get(base) or OFFICIAL_FILES.get(base + ".pth")


def cache_dir() -> Path:
    """``$BEIT3_HOME`` or ``~/.cache/beit3``."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "beit3")


def _url(name: str) -> str:
    return (os.environ.get(BASE_URL_ENV) or RELEASE_URL).rstrip("/") + "/" + name


def _checksums(home: Path) -> dict[str, dict[str, object]]:
    path = home / CHECKSUMS
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(name: str, force: bool = False, progress: bool = True) -> Path:
    """The cached official file ``name``, downloaded (or its download resumed) when missing; see the module doc."""
    spec = official_file(name)
    if spec is None:
        known = ", ".join(sorted(n.removesuffix(".pth") for n in OFFICIAL_FILES))
        raise DownloadError(f"{name!r} is not an official BEiT-3 file; known names: {known}")
    home = cache_dir()
    target, part = home / spec.name, home / (spec.name + ".part")
    if target.is_file() and not force:
        return target
    home.mkdir(parents=True, exist_ok=True)
    url = _url(spec.name)
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # the .part already holds the whole file
            response = None
        else:
            raise DownloadError(f"cannot download {url}: HTTP {err.code} {err.reason}. Download it by hand and put it "
                                f"at {target}") from None  # fmt: skip
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(f"cannot download {url} ({reason}); offline? Download it elsewhere and put it at "
                            f"{target} (or set {HOME_ENV} to the folder holding it)") from None  # fmt: skip
    if response is not None:
        with response:
            resumed = response.status == 206
            if not resumed:
                offset = 0  # the server ignored the range: start over
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            _copy(response, part, offset, total, spec.name, progress and sys.stderr.isatty())
        if total is not None and part.stat().st_size != total:
            raise DownloadError(f"download of {url} stopped at {part.stat().st_size} of {total} bytes; run the same "
                                "command again to resume it")  # fmt: skip
    _verify(home, spec.name, part, url)
    os.replace(part, target)
    return target


def _copy(response, part: Path, offset: int, total: int | None, name: str, show: bool) -> None:
    from tqdm import tqdm

    bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=name, disable=not show, leave=False)
    try:
        with open(part, "ab" if offset else "wb") as file:
            while True:
                try:
                    block = response.read(CHUNK)
                except (OSError, ValueError):  # connection dropped mid-way: keep the .part for a resume
                    break
                if not block:
                    break
                file.write(block)
                bar.update(len(block))
    finally:
        bar.close()


def _verify(home: Path, name: str, part: Path, url: str) -> None:
    """Compare with the size and sha256 recorded by the first download of ``name``, or record them."""
    recorded = _checksums(home)
    size, digest = part.stat().st_size, file_sha256(part)
    known = recorded.get(name)
    if known is not None and (known.get("size") != size or known.get("sha256") != digest):
        part.unlink()
        first = f"{known.get('size')} bytes, sha256 {str(known.get('sha256'))[:12]}…"
        raise DownloadError(f"{url} gave {size} bytes with sha256 {digest[:12]}…, but the first download recorded "
                            f"{first} (in {home / CHECKSUMS}); "
                            "the file is corrupt or the release changed: delete that entry only if you trust the new "
                            "file")  # fmt: skip
    if known is None:
        recorded[name] = {"size": size, "sha256": digest}
        tmp = home / (CHECKSUMS + ".tmp")
        tmp.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, home / CHECKSUMS)


def resolve_file(path_or_name: str | os.PathLike[str]) -> Path:
    """An existing path as is; an official name (``beit3_base_patch16_224``, ``beit3.spm``) → the cached file,
    downloaded when missing. Anything else is returned unchanged for the caller's own "not found" message."""
    path = Path(path_or_name)
    if path.exists() or official_file(str(path_or_name)) is None or len(path.parts) > 1:
        return path
    return download(str(path_or_name))


def main(argv: list[str] | None = None) -> int:
    """``beit3 download NAME... | --list``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="beit3 download",
        description=f"Download official BEiT-3 files into {HOME_ENV} (default ~/.cache/beit3) and print their paths.",
    )
    parser.add_argument("names", nargs="*", help="official file names (with or without .pth), e.g. beit3.spm "
                        "beit3_base_patch16_480_vqa")  # fmt: skip
    parser.add_argument("--list", action="store_true", help="list every official file with its task and metric")
    parser.add_argument("--force", action="store_true", help="download again even when cached")
    args = parser.parse_args(argv)
    if args.list or not args.names:
        home = cache_dir()
        print(f"{'file':52} {'task':44} {'params':>6}  reference metric   (cache: {home})")
        for spec in OFFICIAL_FILES.values():
            cached = " [cached]" if (home / spec.name).is_file() else ""
            print(f"{spec.name:52} {spec.task:44} {spec.params:>6}  {spec.metric}{cached}")
        return 0
    try:
        for name in args.names:
            print(download(name, force=args.force))
    except DownloadError as err:
        print(f"beit3 download: error: {err}", file=sys.stderr)
        return 2
    return 0
