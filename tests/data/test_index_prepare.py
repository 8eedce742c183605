"""``beit3 prepare`` (data/prepare.py main) end to end on the sample data, plus its error handling."""

from __future__ import annotations

from pathlib import Path

import pytest
from index_fixtures import read_jsonl

from beit3_lightning.data.prepare import build_parser, main
from beit3_lightning.data.sample import generate_sample_raw
from beit3_lightning.data.sample.nlvr2 import SPLITS as NLVR2_SPLITS
from beit3_lightning.data.tokenizer import Beit3Tokenizer


def test_prepare_sample_subcommand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sample", "--data-root", str(tmp_path), "--datasets", "nlvr2", "nocaps"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "nlvr2"), str(tmp_path / "nocaps")]
    dev_statements = dict(NLVR2_SPLITS)["dev"]  # every generated dev statement is indexed
    assert len(read_jsonl(tmp_path / "nlvr2" / "nlvr2.dev.index.jsonl")) == dev_statements
    assert (tmp_path / "nocaps" / "nocaps.test.jsonl").is_file()
    assert not (tmp_path / "vqav2").exists()


def test_prepare_dataset_on_raw_sample_matches_tokenizer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = generate_sample_raw("coco_retrieval", tmp_path / "coco")
    argv = ["coco_retrieval", "--data-root", str(root), "--tokenizer", "sample", "--index-dir", str(tmp_path / "idx")]
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert printed.out.split() == [
        str(tmp_path / "idx" / f"coco_retrieval.{split}.jsonl") for split in ("train", "val", "test")
    ]
    counts = {
        split: len(read_jsonl(tmp_path / "idx" / f"coco_retrieval.{split}.jsonl")) for split in ("train", "val", "test")
    }
    assert printed.err.strip().splitlines()[-1] == (
        "beit3 prepare coco_retrieval: wrote 3 index files (records): "
        + ", ".join(f"coco_retrieval.{split}.jsonl ({n})" for split, n in counts.items())
    )
    first = read_jsonl(tmp_path / "idx" / "coco_retrieval.train.jsonl")[0]
    tokenizer = Beit3Tokenizer.sample()
    assert tokenizer.decode(first["text_segment"]) == "A red square in the bottom left corner."
    assert (root / first["image_path"]).is_file()


def test_prepare_vqav2_options(tmp_path: Path) -> None:
    root = generate_sample_raw("vqav2", tmp_path / "vqa")
    argv = ["vqav2", "--data-root", str(root), "--tokenizer", "sample", "--min-answer-count", "1"]
    assert main([*argv, "--rest-val-images", "10", "--seed", "3"]) == 0
    rest_images = {item["image_path"] for item in read_jsonl(root / "vqa.rest_val.jsonl")}
    assert len(rest_images) == 10


def test_prepare_bad_input_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flickr30k", "--data-root", str(tmp_path), "--tokenizer", "sample"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "dataset_flickr30k.json" in err and "Traceback" not in err
    assert main(["nlvr2", "--data-root", str(tmp_path), "--tokenizer", str(tmp_path / "beit3.spm")]) == 2
    err = capsys.readouterr().err
    assert "beit3.spm" in err and "addf400" in err


def test_parser_requires_tokenizer_for_text_datasets() -> None:
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["vqav2", "--data-root", "x"])
    args = parser.parse_args(["vqav2", "--data-root", "x", "--tokenizer", "t.spm"])
    assert (args.min_answer_count, args.rest_val_images, args.seed, args.annotation_dir) == (9, 1000, 0, None)
    assert parser.parse_args(["imagenet", "--data-root", "x"]).index_dir is None
    assert parser.parse_args(["nlvr2", "--data-root", "x", "--tokenizer", "t"]).nlvr_repo is None
    for action in parser._subparsers._group_actions[0].choices["vqav2"]._actions:
        assert action.help, action.dest


def test_prepare_reads_the_karpathy_file_given_by_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = generate_sample_raw("coco_captioning", tmp_path / "coco")
    moved = tmp_path / "elsewhere" / "karpathy.json"
    moved.parent.mkdir()
    (root / "dataset_coco.json").rename(moved)
    args = ["coco_captioning", "--data-root", str(root), "--tokenizer", "sample"]
    assert main(args) == 2 and "dataset_coco.json" in capsys.readouterr().err  # the default place is empty
    assert main([*args, "--karpathy-json", str(moved)]) == 0
    assert read_jsonl(root / "coco_captioning.train.jsonl")
