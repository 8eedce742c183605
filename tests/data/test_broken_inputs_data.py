"""Broken inputs on the data side fail loudly, naming file and line: 16-bit images, bad index bytes / token ids /
paths, bad raw annotation ids, undecodable images at prepare time, index file permissions, lone surrogates."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from index_fixtures import read_jsonl, write_json, write_json_lines
from PIL import Image
from test_datasets import (
    VOCAB,
    make_dataset,
    write_imagenet,
    write_jsonl,
    write_nlvr2,
    write_retrieval,
)
from test_index_karpathy import make_coco, make_nocaps
from test_index_vqav2 import make_vqa

from beit3_lightning.data.datamodules import RetrievalDataModule
from beit3_lightning.data.datasets import BadSampleError, ImageNetDataset, NLVR2Dataset, RetrievalDataset
from beit3_lightning.data.index.captioning import build_nocaps_index
from beit3_lightning.data.index.common import DatasetFormatError, read_json_lines, write_jsonl_atomic
from beit3_lightning.data.index.nlvr2 import build_nlvr2_index
from beit3_lightning.data.prepare import build_parser, main
from beit3_lightning.data.tokenizer import Beit3Tokenizer
from beit3_lightning.task_table import DATASETS

README = Path(__file__).resolve().parents[2] / "README.md"


def gradient_16bit(width: int = 256, height: int = 3) -> np.ndarray:
    """A horizontal 16-bit gradient over the whole range (0 .. 65535), uint16 (height, width)."""
    row = np.round(np.linspace(0, 65535, width)).astype(np.uint16)
    return np.repeat(row[None, :], height, axis=0)


def expected_8bit(samples: np.ndarray) -> np.ndarray:
    """The 8-bit value of each 16-bit sample: value / 257 rounded (never a tie, 257 being odd)."""
    return np.round(samples.astype(np.float64) / 257).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------------
# 1. 16-bit images
# ---------------------------------------------------------------------------------------------------------------


def test_16bit_png_loads_as_the_scaled_gradient_in_datasets(tmp_path: Path) -> None:
    root = write_imagenet(tmp_path)
    samples = gradient_16bit()
    Image.fromarray(samples).save(root / "val/n00/gradient.png")
    assert Image.open(root / "val/n00/gradient.png").mode == "I;16"  # a real 16-bit greyscale PNG
    write_jsonl(root / "imagenet.val.index.jsonl", [{"image_path": "val/n00/gradient.png", "label": 0}])
    dataset = make_dataset(ImageNetDataset, root, "val")
    loaded = np.asarray(dataset.load_image("val/n00/gradient.png", 0))
    assert loaded.shape == (3, 256, 3) and loaded.dtype == np.uint8
    for channel in range(3):
        np.testing.assert_array_equal(loaded[:, :, channel], expected_8bit(samples))
    assert (loaded == 255).mean() < 0.01  # before: everything but the first column was clipped to white
    image = dataset[0]["image"]  # through the eval transform: dark on the left, bright on the right
    assert image[:, :, 0].mean() < image[:, :, -1].mean()


def test_32bit_int_and_float_images_are_scaled_and_out_of_range_ones_refused(tmp_path: Path) -> None:
    from beit3_lightning.data.images import to_rgb_image

    samples = gradient_16bit()
    Image.fromarray(samples.astype(np.int32)).save(tmp_path / "int.tif")
    Image.fromarray((samples / 65535).astype(np.float32)).save(tmp_path / "float.tif")
    with Image.open(tmp_path / "int.tif") as image:
        assert image.mode == "I"
        np.testing.assert_array_equal(np.asarray(to_rgb_image(image))[:, :, 1], expected_8bit(samples))
    with Image.open(tmp_path / "float.tif") as image:
        assert image.mode == "F"
        scaled = np.asarray(to_rgb_image(image))[:, :, 2].astype(int)
        assert np.abs(scaled - expected_8bit(samples)).max() <= 1  # float32 rounding of value / 65535
    with pytest.raises(ValueError, match=r"float image \(mode F\) with values 0\.\.255: .*\[0, 1\]"):
        to_rgb_image(Image.fromarray(np.linspace(0, 255, 8, dtype=np.float32)[None]))
    with pytest.raises(ValueError, match=r"mode I\) with values -5\.\.70000"):
        to_rgb_image(Image.fromarray(np.array([[-5, 70000]], dtype=np.int32)))


def test_unscalable_float_image_is_a_bad_sample_naming_file_and_line(tmp_path: Path) -> None:
    root = write_imagenet(tmp_path)
    Image.fromarray(np.full((4, 4), 200.0, dtype=np.float32)).save(root / "val/n00/0.tif")
    write_jsonl(root / "imagenet.val.index.jsonl", [{"image_path": "val/n00/0.tif", "label": 0}])
    with pytest.raises(BadSampleError, match=r"0\.tif \(from .*imagenet\.val\.index\.jsonl, line 1\).*\[0, 1\]"):
        make_dataset(ImageNetDataset, root, "val")[0]


# ---------------------------------------------------------------------------------------------------------------
# 2. Bad index content: bytes that are not UTF-8, token ids outside the vocabulary
# ---------------------------------------------------------------------------------------------------------------


def test_non_utf8_byte_in_an_index_names_file_line_and_rebuild(tmp_path: Path) -> None:
    root = write_retrieval(tmp_path)
    path = root / "coco_retrieval.val.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"val2014/', b'"val\xff2014/')  # a Latin-1 byte inside a JSON string
    path.write_bytes(b"".join(lines))
    with pytest.raises(
        DatasetFormatError,
        match=r"coco_retrieval\.val\.jsonl, line 3: not UTF-8 \(byte 0xff at column \d+\).*"
        r"rebuild it with `beit3 prepare coco_retrieval`",
    ):
        make_dataset(RetrievalDataset, root, "val")
    with pytest.raises(DatasetFormatError, match=r"line 3: not UTF-8.*re-download it"):
        read_json_lines(path, "NLVR2 annotation file")  # raw files get the raw-file remedy


def test_token_id_beyond_the_vocabulary_fails_at_read_time(tmp_path: Path) -> None:
    root = write_retrieval(tmp_path)
    path = root / "coco_retrieval.val.jsonl"
    records = read_jsonl(path)
    records[1]["text_segment"] = [12, VOCAB + 3000, 14]  # built with a larger tokenizer (e.g. beit3.spm)
    write_jsonl(path, records)
    make_dataset(RetrievalDataset, root, "val")  # without a vocabulary size there is nothing to compare to
    with pytest.raises(
        DatasetFormatError,
        match=rf"coco_retrieval\.val\.jsonl, line 2: token id {VOCAB + 3000} .*\({VOCAB} ids\).*"
        r"`beit3 prepare coco_retrieval --tokenizer <the tokenizer you train with>`",
    ):
        make_dataset(RetrievalDataset, root, "val", vocab_size=VOCAB)
    records[1]["text_segment"] = [12, -1]
    write_jsonl(path, records)
    with pytest.raises(DatasetFormatError, match=r"line 2: token id -1 "):
        make_dataset(RetrievalDataset, root, "val")


def test_datamodule_checks_token_ids_against_its_tokenizer(tmp_path: Path) -> None:
    root = write_retrieval(tmp_path)
    path = root / "coco_retrieval.val.jsonl"
    records = read_jsonl(path)
    records[4]["text_segment"] = [VOCAB]  # one past the sample tokenizer's last id
    write_jsonl(path, records)
    module = RetrievalDataModule(str(root), tokenizer="sample", img_size=16, num_workers=0, max_text_len=8)
    assert module.tokenizer.vocab_size == VOCAB
    with pytest.raises(DatasetFormatError, match=rf"coco_retrieval\.val\.jsonl, line 5: token id {VOCAB} "):
        module.setup("validate")


# ---------------------------------------------------------------------------------------------------------------
# 4. Index image paths must stay inside the data root
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_path", ["../../../etc/passwd", "/etc/passwd", "val/../../outside.png", ".."])
def test_index_image_path_outside_the_root_is_refused(tmp_path: Path, bad_path: str) -> None:
    root = write_nlvr2(tmp_path / "data")
    (tmp_path / "outside.png").write_bytes((root / "dev/0/dev-0-img0.png").read_bytes())
    path = root / "nlvr2.dev.index.jsonl"
    records = read_jsonl(path)
    records[3]["image_path"] = bad_path
    write_jsonl(path, records)
    with pytest.raises(DatasetFormatError, match=r"nlvr2\.dev\.index\.jsonl, line 4: 'image_path' .* outside the data"):
        make_dataset(NLVR2Dataset, root, "val")
    records = read_jsonl(path)
    records[3]["image_path"] = "dev/0/../3/dev-3-img0.png"  # ".." that stays inside the root is fine
    records[5]["image2_path"] = bad_path
    write_jsonl(path, records)
    with pytest.raises(DatasetFormatError, match=r"line 6: 'image2_path' .* outside the data root"):
        make_dataset(NLVR2Dataset, root, "val")


def test_prepare_refuses_raw_file_names_outside_the_root(tmp_path: Path) -> None:
    root = make_nocaps(tmp_path / "nocaps")
    (tmp_path / "secret.jpg").write_bytes((root / "val/aa.jpg").read_bytes())
    info = json.loads((root / "nocaps_test_image_info.json").read_text())
    info["images"][0]["file_name"] = "../../secret.jpg"
    write_json(root / "nocaps_test_image_info.json", info)
    with pytest.raises(DatasetFormatError, match=r"nocaps_test_image_info\.json, images\[0\].*outside the data root"):
        build_nocaps_index(root)
    assert not (root / "nocaps.test.jsonl").exists()


# ---------------------------------------------------------------------------------------------------------------
# 3. beit3 prepare: ids in the raw files, --verify-images, file permissions
# ---------------------------------------------------------------------------------------------------------------


def _edit_json(path: Path, edit) -> None:
    document = json.loads(path.read_text())
    edit(document)
    write_json(path, document)


def _prepare_vqa(root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["vqav2", "--data-root", str(root), "--tokenizer", "sample", "--min-answer-count", "2"])
    return code, capsys.readouterr().err.strip()


def test_prepare_non_integer_image_id_names_file_and_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_vqa(tmp_path)
    questions = root / "vqa/v2_OpenEnded_mscoco_val2014_questions.json"
    _edit_json(questions, lambda d: d["questions"][1].update(image_id="eleven"))
    code, err = _prepare_vqa(root, capsys)
    assert code == 2 and "\n" not in err and "Traceback" not in err
    assert "v2_OpenEnded_mscoco_val2014_questions.json, questions[1] (question_id 11000): image_id 'eleven'" in err
    _edit_json(questions, lambda d: d["questions"][1].update(image_id=11.5))  # int() would truncate it silently
    assert _prepare_vqa(root, capsys)[0] == 2
    _edit_json(questions, lambda d: d["questions"][1].update(image_id="11"))  # a digit string is still an integer
    assert _prepare_vqa(root, capsys)[0] == 0
    annotations = root / "vqa/v2_mscoco_train2014_annotations.json"
    _edit_json(annotations, lambda d: d["annotations"][2].update(image_id=None))
    code, err = _prepare_vqa(root, capsys)
    assert code == 2 and "v2_mscoco_train2014_annotations.json, annotations[2] (question_id 2000): image_id None" in err


def test_prepare_non_integer_cocoid_and_nocaps_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_coco(tmp_path / "coco")
    _edit_json(root / "dataset_coco.json", lambda d: d["images"][0].update(cocoid="x1"))
    assert main(["coco_captioning", "--data-root", str(root), "--tokenizer", "sample"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "dataset_coco.json, images[0]" in err and "cocoid 'x1' is not an integer" in err
    root = make_nocaps(tmp_path / "nocaps")
    _edit_json(root / "nocaps_val_4500_captions.json", lambda d: d["images"][1].update(id=[1]))
    assert main(["nocaps", "--data-root", str(root)]) == 2
    assert "nocaps_val_4500_captions.json, images[1]: id [1] is not an integer" in capsys.readouterr().err


def test_prepare_duplicate_question_id_names_both_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_vqa(tmp_path)
    questions = root / "vqa/v2_OpenEnded_mscoco_train2014_questions.json"
    _edit_json(questions, lambda d: d["questions"][2].update(question_id=1000))  # same image or not: both are lost
    code, err = _prepare_vqa(root, capsys)
    assert code == 2 and "\n" not in err
    assert "train2014_questions.json, questions[2]: duplicate question_id 1000 (first at questions[0])" in err
    make_vqa(tmp_path)
    annotations = root / "vqa/v2_mscoco_val2014_annotations.json"
    _edit_json(annotations, lambda d: d["annotations"].append(d["annotations"][0]))
    code, err = _prepare_vqa(root, capsys)
    assert code == 2 and "val2014_annotations.json, annotations[3]: duplicate question_id 10000" in err


def _noise_jpeg(size: int = 64) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_prepare_verify_images_lists_every_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_nocaps(tmp_path)
    assert main(["nocaps", "--data-root", str(root), "--verify-images"]) == 0
    assert "all 3 images decode" in capsys.readouterr().err
    (root / "val/aa.jpg").write_bytes(b"")  # zero bytes (an interrupted download)
    (root / "val/bb.jpg").write_bytes(_noise_jpeg()[:600])  # truncated: Image.open succeeds, decoding does not
    (root / "test/cc.jpg").write_bytes(b"<html>404 Not Found</html>")  # an error page saved as .jpg
    assert main(["nocaps", "--data-root", str(root), "--verify-images"]) == 2
    captured = capsys.readouterr()
    assert captured.out.split() == [str(root / "nocaps.val.jsonl"), str(root / "nocaps.test.jsonl")]
    header, *listed, summary = captured.err.strip().splitlines()
    assert header.startswith("beit3 prepare nocaps: error: 3 of 3 images") and "replace or delete" in header
    assert summary == "beit3 prepare nocaps: wrote 2 index files (records): nocaps.val.jsonl (2), nocaps.test.jsonl (1)"
    assert len(listed) == 3
    assert listed[0] == f"  {root / 'nocaps.val.jsonl'}, line 1: {root / 'val/aa.jpg'}: empty file (0 bytes)"
    # The decoder's own words for a truncated file vary between Pillow versions; its type and the file do not.
    assert listed[1].startswith(
        f"  {root / 'nocaps.val.jsonl'}, line 2: {root / 'val/bb.jpg'}: cannot be decoded (OSError"
    )
    assert listed[2].startswith(
        f"  {root / 'nocaps.test.jsonl'}, line 1: {root / 'test/cc.jpg'}: cannot be decoded (UnidentifiedImageError"
    )


def test_verify_images_reports_each_image_once_with_its_other_lines(tmp_path: Path) -> None:
    from beit3_lightning.data.index.verify import verify_index_images

    root = write_nlvr2(tmp_path)
    (root / "dev/2/dev-2-img1.png").write_bytes(b"")
    records = read_jsonl(root / "nlvr2.dev.index.jsonl")
    records[4]["image_path"] = "dev/2/dev-2-img1.png"  # the same bad image, referenced again on line 5
    write_jsonl(root / "nlvr2.dev.index.jsonl", records)
    checked, bad = verify_index_images([root / "nlvr2.dev.index.jsonl"], root, workers=2)
    assert checked == 11 and [(b.line, b.other_lines, b.reason) for b in bad] == [(3, 1, "empty file (0 bytes)")]
    assert str(bad[0]).endswith(
        "line 3 (and 1 more line(s)): " + str(root / "dev/2/dev-2-img1.png") + ": empty file (0 bytes)"
    )


def test_verify_images_flag_is_documented_for_every_dataset() -> None:
    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices
    for name, subparser in subcommands.items():
        if name not in DATASETS:  # `sample` and `visual-tokenizer` write no index
            continue
        assert "--verify-images" in subparser.format_help(), name
        argv = [name, "--data-root", "x", *(["--tokenizer", "t"] if DATASETS[name].needs_tokenizer else [])]
        assert parser.parse_args(argv).verify_images is False
        assert parser.parse_args([*argv, "--verify-images"]).verify_images is True
    assert "--verify-images" in README.read_text(encoding="utf-8")


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_index_files_get_the_mode_of_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        path = write_jsonl_atomic(tmp_path / "x.jsonl", [{"a": 1}])
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert [p.name for p in tmp_path.iterdir()] == ["x.jsonl"]


# ---------------------------------------------------------------------------------------------------------------
# 5. Lone surrogates in texts
# ---------------------------------------------------------------------------------------------------------------


def test_lone_surrogate_is_a_value_error_naming_its_position() -> None:
    tokenizer = Beit3Tokenizer.sample()
    with pytest.raises(ValueError, match=r"lone surrogate '\\ud800' at character 4 \(of 9\)"):
        tokenizer.encode_ids("red \ud800 box")
    with pytest.raises(ValueError, match=r"lone surrogate '\\udc00' at character 0"):
        tokenizer.tokenize("\udc00")
    assert tokenizer.encode_ids("red \U0001f600 box")  # a proper (paired) astral character is fine


def test_prepare_names_the_record_with_a_lone_surrogate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_vqa(tmp_path)
    path = root / "vqa/v2_OpenEnded_mscoco_test2015_questions.json"
    # json.dumps writes the surrogate as the escape "\ud800", which json.load turns back into a lone surrogate.
    _edit_json(path, lambda d: d["questions"][1].update(question="where \ud800 is it?"))
    assert "\\ud800" in path.read_text()
    code, err = _prepare_vqa(root, capsys)
    assert code == 2 and "\n" not in err
    assert "test2015_questions.json, questions[1] (question_id 21000): text has a lone surrogate" in err


def test_nlvr2_raw_line_with_a_lone_surrogate(tmp_path: Path) -> None:
    root = tmp_path
    for raw, prefix in (("train", "images/train"), ("dev", "dev"), ("test1", "test1")):
        write_json_lines(
            root / "nlvr/nlvr2/data" / f"{raw}.json",
            [{"identifier": f"{raw}-1-0-0", "sentence": "two dogs \udfff", "label": "True"}],
        )
        for k in (0, 1):
            (root / prefix).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (4, 4)).save(root / prefix / f"{raw}-1-0-img{k}.png")
    with pytest.raises(DatasetFormatError, match=r"train\.json, line 1 \(identifier train-1-0-0\): text has a lone"):
        build_nlvr2_index(root, Beit3Tokenizer.sample())
