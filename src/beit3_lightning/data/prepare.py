"""``beit3 prepare``: build the official ``*.jsonl`` indexes from raw downloads, or generate the sample data.

Examples::

    beit3 prepare vqav2 --data-root /data/coco --tokenizer beit3.spm
    beit3 prepare nlvr2 --data-root /data/nlvr2 --tokenizer beit3.spm --nlvr-repo /src/nlvr
    beit3 prepare sample --data-root data/sample
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from .index.captioning import build_coco_captioning_index, build_nocaps_index
from .index.common import DatasetFormatError
from .index.imagenet import build_imagenet_index
from .index.nlvr2 import build_nlvr2_index
from .index.retrieval import build_coco_retrieval_index, build_flickr30k_index
from .index.vqav2 import build_vqav2_index
from .sample import SAMPLE_DATASETS, ensure_sample_dataset
from .tokenizer import BEIT3_SPM_URL, Beit3Tokenizer, TokenizerError

RAW_LAYOUTS = {
    "imagenet": "train/<class>/*.JPEG and val/<class>/*.JPEG (ImageFolder)",
    "vqav2": "train2014/, val2014/, test2015/ COCO images and vqa/ with the 6 official VQA v2 JSON files",
    "nlvr2": "images/train/<dir>/*.png, dev/*.png, test1/*.png and the lil-lab nlvr repo (nlvr2/data/*.json)",
    "coco_captioning": "train2014/, val2014/ COCO images and the Karpathy dataset_coco.json",
    "nocaps": "val/, test/ images, nocaps_val_4500_captions.json and nocaps_test_image_info.json",
    "coco_retrieval": "train2014/, val2014/ COCO images and the Karpathy dataset_coco.json",
    "flickr30k": "flickr30k-images/ and the Karpathy dataset_flickr30k.json",
}
NEEDS_TOKENIZER = {"vqav2", "nlvr2", "coco_captioning", "coco_retrieval", "flickr30k"}


def _add_common(parser: argparse.ArgumentParser, dataset: str) -> None:
    parser.add_argument("--data-root", type=Path, required=True, help=f"raw dataset root: {RAW_LAYOUTS[dataset]}")
    parser.add_argument(
        "--index-dir", type=Path, default=None, help="where to write the index files (default: --data-root)"
    )
    if dataset in NEEDS_TOKENIZER:
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


def build_parser() -> argparse.ArgumentParser:
    """The ``beit3 prepare`` argument parser: one subcommand per dataset plus ``sample``."""
    parser = argparse.ArgumentParser(
        prog="beit3 prepare",
        description="Build the official BEiT-3 index files (*.jsonl) from raw dataset downloads, "
        "or generate the embedded sample datasets.",
    )
    sub = parser.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    for dataset in RAW_LAYOUTS:
        child = sub.add_parser(dataset, help=f"index {dataset} ({RAW_LAYOUTS[dataset]})")
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
    return parser


def _run_sample(args: argparse.Namespace) -> list[Path]:
    tokenizer = Beit3Tokenizer(args.tokenizer)
    return [ensure_sample_dataset(name, args.data_root / name, tokenizer=tokenizer) for name in args.datasets]


def _run_dataset(args: argparse.Namespace) -> list[Path]:
    builders: dict[str, Callable[[], list[Path]]] = {
        "imagenet": lambda: build_imagenet_index(args.data_root, args.index_dir),
        "vqav2": lambda: build_vqav2_index(
            args.data_root,
            Beit3Tokenizer(args.tokenizer),
            annotation_dir=args.annotation_dir,
            index_dir=args.index_dir,
            min_answer_count=args.min_answer_count,
            rest_val_images=args.rest_val_images,
            seed=args.seed,
        ),
        "nlvr2": lambda: build_nlvr2_index(
            args.data_root, Beit3Tokenizer(args.tokenizer), args.nlvr_repo, args.index_dir
        ),
        "coco_captioning": lambda: build_coco_captioning_index(
            args.data_root, Beit3Tokenizer(args.tokenizer), args.karpathy_json, args.index_dir
        ),
        "nocaps": lambda: build_nocaps_index(args.data_root, args.index_dir),
        "coco_retrieval": lambda: build_coco_retrieval_index(
            args.data_root, Beit3Tokenizer(args.tokenizer), args.karpathy_json, args.index_dir
        ),
        "flickr30k": lambda: build_flickr30k_index(
            args.data_root, Beit3Tokenizer(args.tokenizer), args.karpathy_json, args.index_dir
        ),
    }
    return builders[args.dataset]()


def main(argv: list[str] | None = None) -> int:
    """Run ``beit3 prepare``; returns 0 on success and 2 (with a one-line message) on bad input."""
    args = build_parser().parse_args(argv)
    try:
        written = _run_sample(args) if args.dataset == "sample" else _run_dataset(args)
    except (DatasetFormatError, TokenizerError, FileNotFoundError, ValueError) as err:
        print(f"beit3 prepare {args.dataset}: error: {err}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
