"""``beit3 prepare shards``: every input kind converted from files in its real format, skipped records logged,
interrupted conversions resumed, outputs readable by WebDataset itself."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image

from beit3_lightning.data.index.pretrain import chunk_tokens
from beit3_lightning.data.prepare import main as prepare_main
from beit3_lightning.data.shards.convert import convert_to_shards
from beit3_lightning.data.shards.format import iter_shard_samples, read_manifest
from beit3_lightning.data.tokenizer import Beit3Tokenizer
from tests.shard_fixtures import write_class_folders, write_img2dataset_tar


def all_samples(out: Path) -> list[tuple[dict, dict]]:
    manifest = read_manifest(str(out))
    return [
        (record, images) for shard in manifest.shards for _, record, images in iter_shard_samples(str(out / shard.name))
    ]


@pytest.fixture(scope="module")
def tokenizer() -> Beit3Tokenizer:
    return Beit3Tokenizer("sample")


def test_img2dataset_tars_become_pairs_and_bad_samples_are_logged(tmp_path: Path, tokenizer, capsys):
    raw = tmp_path / "cc"
    raw.mkdir()
    expected = write_img2dataset_tar(raw / "00000.tar", 0, 7, bad={2: "image", 4: "caption"})
    expected += write_img2dataset_tar(raw / "00001.tar", 1, 5, bad={0: "missing_image"})
    out = tmp_path / "pairs"
    code = prepare_main(["shards", "--from", "img2dataset", "--input", str(raw), "--out", str(out),
                         "--tokenizer", "sample", "--samples-per-shard", "3"])  # fmt: skip
    assert code == 0
    assert "9 samples in 4 shards" in capsys.readouterr().err
    manifest = read_manifest(str(out))
    assert manifest.content == "pairs" and manifest.skipped == 3 and manifest.num_samples == 9
    assert all(s.samples <= 3 for s in manifest.shards)
    samples = all_samples(out)
    assert [r["image_path"] for r, _ in samples] == [f"{e['key']}.jpg" for e in expected]
    for (record, images), want in zip(samples, expected, strict=True):
        assert record["text_segment"] == tokenizer.encode_ids(want["caption"])
        assert images == {"image_path": want["image"]}  # the original bytes, not re-encoded
    log = (out / "skipped.log").read_text().splitlines()
    assert len(log) == 3
    assert "000000002: undecodable image" in log[0] and "000000004: empty caption" in log[1]
    assert "000010000: no image member" in log[2]


def test_shards_are_plain_webdataset(tmp_path: Path):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_img2dataset_tar(raw / "00000.tar", 0, 4)
    convert_to_shards("img2dataset", [raw], tmp_path / "out", tokenizer="sample", show_progress=False)
    shard = next((tmp_path / "out").glob("*.tar"))
    read = list(wds.WebDataset(str(shard), shardshuffle=False, empty_check=False))
    assert len(read) == 4
    assert json.loads(read[0]["json"])["image_path"] == "000000000.jpg"
    assert Image.open(io.BytesIO(read[0]["image_path.jpg"])).size == (24, 20)


def test_class_folders_get_labels_and_are_mixed_across_shards(tmp_path: Path):
    files = write_class_folders(tmp_path / "in21k", {"cat": 6, "dog": 6, "eel": 6}, corrupt="dog/002.jpg")
    out = tmp_path / "images"
    convert_to_shards("images", [tmp_path / "in21k"], out, labels_from_folders=True, samples_per_shard=6,
                      show_progress=False)  # fmt: skip
    manifest = read_manifest(str(out))
    assert manifest.classes == ["cat", "dog", "eel"] and manifest.num_samples == 17
    seen = all_samples(out)
    for record, images in seen:
        assert manifest.classes[record["label"]] == record["image_path"].split("/")[0]
        assert images["image_path"] == files[record["image_path"]]
    assert "dog/002.jpg" not in {r["image_path"] for r, _ in seen}
    assert "dog/002.jpg: undecodable image" in (out / "skipped.log").read_text()
    first_shard = {r["label"] for r, _ in seen[:6]}
    assert len(first_shard) > 1  # files are shuffled before sharding: a shard is not one class


def test_tar_of_images_and_plain_folders(tmp_path: Path):
    files = write_class_folders(tmp_path / "folder", {"a": 3})
    with tarfile.open(tmp_path / "more.tar", "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo("x/" + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out = tmp_path / "out"
    convert_to_shards("images", [tmp_path / "folder", tmp_path / "more.tar"], out, show_progress=False)
    paths = sorted(r["image_path"] for r, _ in all_samples(out))
    assert paths == ["a/000.jpg", "a/001.jpg", "a/002.jpg", "x/a/000.jpg", "x/a/001.jpg", "x/a/002.jpg"]
    assert all("label" not in r for r, _ in all_samples(out))


def test_text_corpora_are_chunked_with_the_tokenizer(tmp_path: Path, tokenizer):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    long_doc = " ".join(f"word{i} red blue" for i in range(40))
    (corpus / "a.txt").write_text(f"{long_doc}\n\nshort one\n", encoding="utf-8")
    (corpus / "b.jsonl").write_text('{"text": "a jsonl document"}\nnot json\n{"title": "no text"}\n', encoding="utf-8")
    out = tmp_path / "texts"
    convert_to_shards("texts", [corpus], out, tokenizer="sample", text_chunk_tokens=10, show_progress=False)
    got = [r["text_segment"] for r, _ in all_samples(out)]
    want = chunk_tokens(tokenizer.encode_ids(long_doc), 10) + [tokenizer.encode_ids("short one")]
    want += [tokenizer.encode_ids("a jsonl document")]
    assert got == want and len(chunk_tokens(tokenizer.encode_ids(long_doc), 10)) > 3
    log = (out / "skipped.log").read_text()
    assert "b.jsonl, line 2: not a JSON object" in log and 'b.jsonl, line 3: no "text" string' in log


def test_index_records_keep_their_fields_and_carry_their_images(sample_dataset, tmp_path: Path):
    root = sample_dataset("nlvr2")
    out = tmp_path / "nlvr2"
    code = prepare_main(["shards", "--from", "index", "--dataset", "nlvr2", "--split", "train", "--data-root",
                         str(root), "--out", str(out), "--samples-per-shard", "50"])  # fmt: skip
    assert code == 0
    index = [json.loads(line) for line in (root / "nlvr2.train.index.jsonl").read_text().splitlines()]
    samples = all_samples(out)
    assert [record for record, _ in samples] == index
    record, images = samples[5]
    assert images["image_path"] == (root / record["image_path"]).read_bytes()
    assert images["image2_path"] == (root / record["image2_path"]).read_bytes()
    assert read_manifest(str(out)).content == "nlvr2"


def test_interrupted_conversion_redoes_only_unfinished_jobs(tmp_path: Path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for shard in range(3):
        write_img2dataset_tar(raw / f"{shard:05d}.tar", shard, 4)
    out = tmp_path / "out"
    convert_to_shards("img2dataset", [raw], out, tokenizer="sample", show_progress=False)
    complete = (out / "manifest.json").read_text()
    shard_bytes = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    # Simulate a crash during job 1: its shard is gone, the manifest not yet written, jobs 0 and 2 recorded done.
    (out / "manifest.json").unlink()
    (out / "pairs-000001-0000.tar").unlink()
    (out / ".progress").mkdir()
    for job in (0, 2):
        parts = [[f"pairs-{job:06d}-0000.tar", 4]]
        (out / ".progress" / f"job-{job:06d}.json").write_text(json.dumps({"job": job, "parts": parts, "skipped": []}))
    (out / "pairs-000001-0000.tar.tmp").write_bytes(b"half a tar")
    before = {name: (out / name).stat().st_mtime_ns for name in ("pairs-000000-0000.tar", "pairs-000002-0000.tar")}
    convert_to_shards("img2dataset", [raw], out, tokenizer="sample", show_progress=False)
    assert (out / "manifest.json").read_text() == complete
    assert {p.name: p.read_bytes() for p in out.glob("*.tar")} == shard_bytes
    assert {name: (out / name).stat().st_mtime_ns for name in before} == before  # not rewritten
    assert not list(out.glob("*.tmp")) and not (out / ".progress").exists()


def test_parallel_workers_write_the_same_shard_set(tmp_path: Path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for shard in range(3):
        write_img2dataset_tar(raw / f"{shard:05d}.tar", shard, 5, bad={1: "image"})
    one, two = tmp_path / "one", tmp_path / "two"
    convert_to_shards("img2dataset", [raw], one, tokenizer="sample", samples_per_shard=2, show_progress=False)
    convert_to_shards("img2dataset", [raw], two, tokenizer="sample", samples_per_shard=2, workers=2,
                      show_progress=False)  # fmt: skip
    assert (one / "manifest.json").read_text() == (two / "manifest.json").read_text()
    assert (one / "skipped.log").read_text() == (two / "skipped.log").read_text()
    assert {p.name: p.read_bytes() for p in one.glob("*.tar")} == {p.name: p.read_bytes() for p in two.glob("*.tar")}


def test_refusals(tmp_path: Path, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_img2dataset_tar(raw / "00000.tar", 0, 2)
    out = tmp_path / "out"
    args = ["shards", "--from", "img2dataset", "--input", str(raw), "--out", str(out)]
    assert prepare_main(args) == 2
    assert "needs --tokenizer" in capsys.readouterr().err
    assert prepare_main([*args, "--tokenizer", "sample"]) == 0
    assert prepare_main([*args, "--tokenizer", "sample"]) == 2
    assert "already holds a converted shard set; pass --overwrite" in capsys.readouterr().err
    assert prepare_main([*args, "--tokenizer", "sample", "--overwrite"]) == 0
    assert prepare_main(["shards", "--from", "images", "--input", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert prepare_main(["shards", "--from", "index", "--out", str(tmp_path / "x")]) == 2
    assert "needs --dataset and --data-root" in capsys.readouterr().err


def test_a_captioning_index_becomes_pretraining_pairs(sample_dataset, tmp_path: Path):
    root = sample_dataset("coco_captioning")
    out = tmp_path / "pairs"
    assert prepare_main(["shards", "--from", "index", "--dataset", "coco_captioning", "--kind", "pairs",
                         "--data-root", str(root), "--out", str(out), "--tokenizer", "sample"]) == 0  # fmt: skip
    assert read_manifest(str(out)).content == "pairs"
    index = [json.loads(line) for line in (root / "coco_captioning.train.jsonl").read_text().splitlines()]
    assert [record for record, _ in all_samples(out)] == index
    assert prepare_main(["shards", "--from", "index", "--dataset", "imagenet", "--kind", "texts", "--data-root",
                         str(sample_dataset("imagenet")), "--out", str(tmp_path / "x")]) == 2  # fmt: skip
