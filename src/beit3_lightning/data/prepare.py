"""``beit3 prepare``: build the official ``*.jsonl`` indexes from raw downloads, or generate the sample data.

Examples::

    beit3 prepare vqav2 --data-root /data/coco --tokenizer beit3.spm
    beit3 prepare nlvr2 --data-root /data/nlvr2 --tokenizer beit3.spm --nlvr-repo /src/nlvr
    beit3 prepare imagenet --data-root /data/imagenet --verify-images   # also decode every indexed image
    beit3 prepare pretrain --data-root /data/my_corpus --tokenizer beit3.spm   # images/, texts/, pairs.jsonl
    beit3 prepare ade20k --data-root /data/ADEChallengeData2016
    beit3 prepare segmentation --data-root /data/my_masks   # images/, masks/, classes.txt
    beit3 prepare sample --data-root data/sample
    beit3 prepare visual-tokenizer --images my_images/ --codebook-size 512 --out kmeans512.safetensors
    beit3 prepare shards --from img2dataset --input cc3m/ --out shards/pairs --tokenizer beit3.spm --workers 8
    beit3 prepare shards --from index --dataset vqav2 --split train --data-root /data/coco --out shards/vqav2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..task_table import DATASETS, resolve, resolve_dataset
from .index.common import DatasetFormatError
from .index.pretrain import DEFAULT_TEXT_CHUNK_TOKENS
from .sample import SAMPLE_DATASETS, ensure_sample_dataset
from .tokenizer import BEIT3_SPM_URL, Beit3Tokenizer, TokenizerError
from .visual_tokenizer import (
    DEFAULT_ITERATIONS,
    DEFAULT_MAX_PATCHES,
    IMAGE_SUFFIXES,
    FitSummary,
    fit_kmeans_tokenizer,
)


def _add_common(parser: argparse.ArgumentParser, dataset: str) -> None:
    layout = DATASETS[dataset].raw_layout
    parser.add_argument("--data-root", type=Path, required=True, help=f"raw dataset root: {layout}")
    parser.add_argument(
        "--index-dir", type=Path, default=None, help="where to write the index files (default: --data-root)"
    )
    parser.add_argument(
        "--verify-images",
        action="store_true",
        help="after writing the indexes, decode every image they reference (in parallel, with a progress bar) and "
        "list each empty, truncated or undecodable file with its index file and line; exit code 2 if any is bad",
    )
    if DATASETS[dataset].needs_tokenizer:
        parser.add_argument(
            "--tokenizer",
            required=True,
            help=f"sentencepiece model used to pre-tokenize the texts: the official beit3.spm ({BEIT3_SPM_URL}), "
            f"or 'sample' for the small shipped model; it must be the tokenizer used for training",
        )


def _add_karpathy(parser: argparse.ArgumentParser, file_name: str) -> None:
    parser.add_argument(
        "--karpathy-json",
        type=Path,
        default=None,
        help=f"Karpathy split file (default: <data-root>/{file_name})",
    )


def _add_pretrain(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.05,
        help="fraction of each kind held out as the val split (default 0.05; at least one record per kind)",
    )
    parser.add_argument(
        "--text-chunk-tokens",
        type=int,
        default=DEFAULT_TEXT_CHUNK_TOKENS,
        help=f"documents longer than this many tokens become several texts (default {DEFAULT_TEXT_CHUNK_TOKENS}: "
        "a 64-token segment with bos and eos)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the val hold-out (default 0)")
    parser.add_argument(
        "--visual-tokenizer",
        default=None,
        help="pre-compute the visual tokens of every image with this tokenizer (k-means .safetensors or VQ-KD .pth) "
        "and store them in the index; training then skips the tokenizer but uses no crop / flip augmentation",
    )
    parser.add_argument(
        "--img-size",
        type=int,
        default=None,
        help="with --visual-tokenizer: the model's image size, checked against the tokenizer's",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``beit3 prepare`` argument parser: one subcommand per dataset plus ``sample`` and ``visual-tokenizer``."""
    parser = argparse.ArgumentParser(
        prog="beit3 prepare",
        description="Build the official BEiT-3 index files (*.jsonl) from raw dataset downloads, "
        "generate the embedded sample datasets, or fit a visual tokenizer on your images.",
    )
    sub = parser.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    for dataset, spec in DATASETS.items():
        child = sub.add_parser(dataset, help=f"index {dataset} ({spec.raw_layout})")
        _add_common(child, dataset)
        if dataset == "vqav2":
            child.add_argument(
                "--annotation-dir", type=Path, default=None, help="VQA v2 JSON files (default: <data-root>/vqa)"
            )
            child.add_argument(
                "--min-answer-count",
                type=int,
                default=9,
                help="keep answers that are the majority answer at least this often (default 9: 3129 answers)",
            )
            child.add_argument(
                "--rest-val-images",
                type=int,
                default=1000,
                help="val2014 images held out as vqa.rest_val.jsonl, the validation split (default 1000, as ViLT)",
            )
            child.add_argument(
                "--seed", type=int, default=0, help="seed of the image shuffles and the rest_val choice (default 0)"
            )
        elif dataset == "nlvr2":
            child.add_argument(
                "--nlvr-repo", type=Path, default=None, help="clone of lil-lab/nlvr (default: <data-root>/nlvr)"
            )
        elif dataset in {"coco_captioning", "coco_retrieval"}:
            _add_karpathy(child, "dataset_coco.json")
        elif dataset == "flickr30k":
            _add_karpathy(child, "dataset_flickr30k.json")
        elif dataset == "pretrain":
            _add_pretrain(child)
        elif dataset == "segmentation":
            child.add_argument(
                "--reduce-zero-label",
                action="store_true",
                help="your masks use 0 = unlabeled and 1..K for the K classes of classes.txt (as ADE20k): 0 is "
                "ignored and v trains as class v-1 (default: masks hold class ids 0..K-1, 255 = ignore)",
            )
    sample = sub.add_parser("sample", help="generate the embedded sample datasets with their indexes")
    sample.add_argument(
        "--data-root", type=Path, required=True, help="each dataset goes to <data-root>/<dataset> (e.g. data/sample)"
    )
    sample.add_argument(
        "--datasets",
        nargs="+",
        choices=SAMPLE_DATASETS,
        default=list(SAMPLE_DATASETS),
        help="which sample datasets to generate (default: all)",
    )
    sample.add_argument(
        "--tokenizer", default="sample", help="sentencepiece model for the index token ids (default: sample)"
    )
    _add_visual_tokenizer(sub)
    _add_shards(sub)
    return parser


def _add_shards(sub: argparse._SubParsersAction) -> None:
    from .shards.convert import DEFAULT_SAMPLES_PER_SHARD, SOURCES

    child = sub.add_parser(
        "shards",
        help="convert img2dataset tars, image folders, text corpora or an index into streaming WebDataset shards",
        description="Write a shard set (WebDataset .tar files + manifest.json + skipped.log) that the DataModules "
        "stream with --data.init_args.shards DIR: every rank and worker reads its own shards, memory per worker does "
        "not grow with the dataset, resume is exact. Re-running an interrupted conversion redoes only unfinished jobs.",
    )
    child.add_argument(
        "--from", dest="source", required=True, choices=SOURCES,
        help="img2dataset: WebDataset tars of img2dataset (jpg + txt + json per sample) -> image-text pairs; "
        "images: image folders, class folders (--labels-from-folders) or tars of images -> images; "
        "texts: .txt (one document per line) / .jsonl ({\"text\"}) corpora -> token chunks; "
        "index: a JSONL index of --dataset / --split under --data-root -> the same records with their images",
    )  # fmt: skip
    child.add_argument(
        "--input", nargs="+", default=[], help="input files or folders (folders are searched recursively)"
    )
    child.add_argument("--out", type=Path, required=True, help="the shard set directory to write")
    child.add_argument(
        "--tokenizer", default=None,
        help="sentencepiece model for the texts (img2dataset, texts): beit3.spm or 'sample'; it must be the one "
        "you train with. With --from index it checks the index's token ids (needed for captioning indexes)",
    )  # fmt: skip
    child.add_argument(
        "--samples-per-shard", type=int, default=DEFAULT_SAMPLES_PER_SHARD,
        help=f"most samples per .tar (default {DEFAULT_SAMPLES_PER_SHARD})",
    )  # fmt: skip
    child.add_argument("--workers", type=int, default=1, help="parallel conversion processes (default 1)")
    child.add_argument(
        "--text-chunk-tokens", type=int, default=DEFAULT_TEXT_CHUNK_TOKENS,
        help=f"texts: documents become chunks of at most this many tokens (default {DEFAULT_TEXT_CHUNK_TOKENS})",
    )  # fmt: skip
    child.add_argument(
        "--labels-from-folders", action="store_true",
        help="images: each image's label is its top-level folder (ImageNet-21k style); class names go in the manifest",
    )  # fmt: skip
    child.add_argument(
        "--dataset", dest="index_dataset", default=None,
        help=f"index: which dataset's index ({', '.join(DATASETS)})",
    )  # fmt: skip
    child.add_argument("--split", default="train", help="index: which split (default train)")
    child.add_argument(
        "--kind",
        default=None,
        choices=("images", "texts", "pairs"),
        help="index: with --dataset pretrain, which kind; with another dataset, write its records as this "
        "pretraining kind (e.g. --dataset coco_captioning --kind pairs: COCO captions as image-text pairs)",
    )
    child.add_argument("--data-root", type=Path, default=None, help="index: the dataset root (image paths)")
    child.add_argument("--index-dir", type=Path, default=None, help="index: where the index files are (default: root)")
    child.add_argument("--seed", type=int, default=0, help="seed of the image-file order (default 0)")
    child.add_argument("--overwrite", action="store_true", help="replace a completed shard set at --out")


def _index_records(args: argparse.Namespace) -> tuple[list[tuple[dict, str]], str]:
    """(record, source) of every line of the ``--dataset`` / ``--split`` index, and the manifest content name."""
    if args.index_dataset is None or args.data_root is None:
        raise ValueError("--from index needs --dataset and --data-root")
    if args.index_dataset == "pretrain":
        from .pretraining import DATASET_OF_KIND

        if args.kind is None:
            raise ValueError("--dataset pretrain needs --kind images|texts|pairs")
        dataset_class, extra, content = DATASET_OF_KIND[args.kind], {}, args.kind
    else:
        spec = DATASETS[resolve_dataset(args.index_dataset)]
        if spec.head == "segmentation":  # shards carry the images of image_path / image2_path, not the masks
            raise ValueError(f"{spec.dataset} indexes cannot be converted to shards yet; train from the JSONL index")
        dataset_class = resolve(spec.datamodule_class).dataset_class
        content = spec.dataset
        extra = {"task": content} if spec.head in ("retrieval", "captioning") else {}
    if args.tokenizer is not None:  # checks the index's token ids against the tokenizer you will train with
        tokenizer = Beit3Tokenizer(args.tokenizer)
        extra["vocab_size"] = tokenizer.vocab_size
        if content in DATASETS and DATASETS[content].head == "captioning":
            extra["mask_token_id"] = tokenizer.mask_token_id
    elif content in DATASETS and DATASETS[content].head == "captioning":
        raise ValueError(f"--from index --dataset {content} needs --tokenizer (the one its index was built with)")
    dataset = dataset_class(
        root=str(args.data_root), split=args.split, transform=None, index_dir=args.index_dir, **extra
    )
    records = [(dataset.records[i], dataset.source_of(i)) for i in range(len(dataset))]
    if args.kind is not None and args.index_dataset != "pretrain":  # e.g. COCO captions as pretraining pairs
        from .pretraining import DATASET_OF_KIND

        needed = DATASET_OF_KIND[args.kind].required_fields
        missing = [name for name in needed if records and name not in records[0][0]]
        if missing:
            raise ValueError(f"{args.index_dataset} records have no {missing}: they cannot be pretraining {args.kind}")
        content = args.kind
    return records, content


def _run_shards(args: argparse.Namespace) -> tuple[list[Path], str]:
    from .shards.convert import convert_to_shards

    records, content = _index_records(args) if args.source == "index" else (None, None)
    if args.source != "index" and not args.input:
        raise ValueError(f"--from {args.source} needs --input")
    summary = convert_to_shards(
        args.source, args.input, args.out, tokenizer=args.tokenizer, content=content, split=args.split,
        samples_per_shard=args.samples_per_shard, workers=args.workers, text_chunk_tokens=args.text_chunk_tokens,
        labels_from_folders=args.labels_from_folders, index_records=records, data_root=args.data_root,
        overwrite=args.overwrite, seed=args.seed,
    )  # fmt: skip
    line = (
        f"{summary.samples} samples in {summary.shards} shards ({summary.bytes / max(summary.samples, 1):.0f} bytes "
        f"per sample, {summary.samples / max(summary.seconds, 1e-9):.0f} samples/s); {summary.skipped} skipped"
        + (f", listed in {summary.out / 'skipped.log'}" if summary.skipped else "")
    )
    return [summary.out / "manifest.json"], line


def _add_visual_tokenizer(sub: argparse._SubParsersAction) -> None:
    child = sub.add_parser(
        "visual-tokenizer",
        help="fit a k-means visual tokenizer (the masked-image-modelling target) on your images, on a CPU",
        description="Fit a k-means visual tokenizer on the images under --images and write it as one .safetensors "
        "file: each patch's colour layout (average-pooled to --feature-grid cells a side, standardised) is mapped "
        "to the nearest of --codebook-size centres. Deterministic for a seed.",
    )
    child.add_argument(
        "--images",
        type=Path,
        required=True,
        help=f"directory searched recursively for {', '.join(IMAGE_SUFFIXES)} files (any case)",
    )
    child.add_argument("--codebook-size", type=int, required=True, help="number of codes K (at least 2)")
    child.add_argument("--out", type=Path, required=True, help="the .safetensors file to write")
    child.add_argument(
        "--image-size", type=int, default=224, help="the pretraining image size it tokenizes (default 224)"
    )
    child.add_argument("--patch-size", type=int, default=16, help="the model's patch size (default 16)")
    child.add_argument(
        "--feature-grid",
        type=int,
        default=4,
        help="cells a side each patch is average-pooled to; must divide the patch size (default 4: 48 features)",
    )
    child.add_argument(
        "--center-images",
        action="store_true",
        help="subtract each image's median colour before pooling: codes describe what a patch shows relative to its "
        "image, not the global shade (a flat background is one code whatever its brightness)",
    )
    child.add_argument(
        "--iterations",
        type=int,
        default=DEFAULT_ITERATIONS,
        help=f"most Lloyd iterations; stops earlier when nothing changes (default {DEFAULT_ITERATIONS})",
    )
    child.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    child.add_argument(
        "--max-images", type=int, default=None, help="use a seeded random subset of this many images (default: all)"
    )
    child.add_argument(
        "--max-patches",
        type=int,
        default=DEFAULT_MAX_PATCHES,
        help=f"most patches clustered, spread evenly over the images (default {DEFAULT_MAX_PATCHES})",
    )


def _run_visual_tokenizer(args: argparse.Namespace) -> tuple[list[Path], str]:
    tokenizer = fit_kmeans_tokenizer(
        args.images,
        codebook_size=args.codebook_size,
        image_size=args.image_size,
        patch_size=args.patch_size,
        feature_grid=args.feature_grid,
        center_images=args.center_images,
        iterations=args.iterations,
        seed=args.seed,
        max_patches=args.max_patches,
        max_images=args.max_images,
    )
    try:
        written = tokenizer.save(args.out)
    except OSError as err:
        raise ValueError(f"cannot write {args.out}: {err.strerror or err}") from err
    return [written], FitSummary(**tokenizer.fit_summary).line()


def _run_sample(args: argparse.Namespace) -> list[Path]:
    tokenizer = Beit3Tokenizer(args.tokenizer)
    return [ensure_sample_dataset(name, args.data_root / name, tokenizer=tokenizer) for name in args.datasets]


# Options of `beit3 prepare <dataset>` passed to the dataset's index builder (by the builder's argument name).
BUILDER_OPTIONS: dict[str, tuple[str, ...]] = {
    "vqav2": ("annotation_dir", "min_answer_count", "rest_val_images", "seed"),
    "nlvr2": ("nlvr_repo",),
    "coco_captioning": ("karpathy_json",),
    "coco_retrieval": ("karpathy_json",),
    "flickr30k": ("karpathy_json",),
    "pretrain": ("val_fraction", "text_chunk_tokens", "seed", "visual_tokenizer", "img_size"),
    "segmentation": ("reduce_zero_label",),
}
# The CLI says which file it is; the builders take any path.
BUILDER_ARGUMENT = {"karpathy_json": "karpathy_path"}


def _run_dataset(args: argparse.Namespace) -> list[Path]:
    spec = DATASETS[args.dataset]
    positional = [args.data_root, Beit3Tokenizer(args.tokenizer)] if spec.needs_tokenizer else [args.data_root]
    options = {BUILDER_ARGUMENT.get(name, name): getattr(args, name) for name in BUILDER_OPTIONS.get(args.dataset, ())}
    return resolve(spec.index_builder)(*positional, index_dir=args.index_dir, **options)


def _verify_images(args: argparse.Namespace, written: list[Path]) -> int:
    """``--verify-images``: 0 when every referenced image decodes, else 2 with one line per bad image."""
    from .index.verify import verify_index_images  # only this option needs the thread pool and decoders

    index_files = [path for path in written if path.suffix == ".jsonl"]
    checked, bad = verify_index_images(index_files, args.data_root)
    if not bad:
        print(f"beit3 prepare {args.dataset}: all {checked} images decode", file=sys.stderr)
        return 0
    print(
        f"beit3 prepare {args.dataset}: error: {len(bad)} of {checked} images referenced by the indexes are empty, "
        "truncated or undecodable (the indexes were written); replace or delete these files and run again:",
        file=sys.stderr,
    )
    for image in bad:
        print(f"  {image}", file=sys.stderr)
    return 2


def _index_summary(written: list[Path]) -> str | None:
    """``wrote N index files: name (records), ...`` for the JSONL files a builder wrote."""
    counts = []
    for path in written:
        if path.suffix == ".jsonl" and path.is_file():
            with open(path, encoding="utf-8") as file:
                counts.append(f"{path.name} ({sum(1 for line in file if line.strip())})")
    if not counts:
        return None
    return f"wrote {len(counts)} index files (records): {', '.join(counts)}"


def main(argv: list[str] | None = None) -> int:
    """Run ``beit3 prepare``; returns 0 on success and 2 (with a one-line message) on bad input."""
    args = build_parser().parse_args(argv)
    summary = None
    try:
        if args.dataset == "visual-tokenizer":
            written, summary = _run_visual_tokenizer(args)
        elif args.dataset == "shards":
            written, summary = _run_shards(args)
        else:
            written = _run_sample(args) if args.dataset == "sample" else _run_dataset(args)
    except (DatasetFormatError, TokenizerError, FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"beit3 prepare {args.dataset}: error: {err}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    code = 0
    if getattr(args, "verify_images", False):  # `prepare sample` has no such option
        code = _verify_images(args, written)
    summary = summary if summary is not None else _index_summary(written)
    if summary:  # last: what was written, after any list of bad images
        print(f"beit3 prepare {args.dataset}: {summary}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
