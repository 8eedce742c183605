"""Pretraining data: the index builder on each raw kind, masked items, the mixed DataModule and its wiring."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from beit3_lightning.data.index.common import DatasetFormatError
from beit3_lightning.data.index.pretrain import build_pretrain_index, chunk_tokens
from beit3_lightning.data.masking import IGNORE_INDEX
from beit3_lightning.data.prepare import main as prepare_main
from beit3_lightning.data.pretraining_datamodule import PretrainDataModule, split_batch_size
from beit3_lightning.data.tokenizer import Beit3Tokenizer
from beit3_lightning.data.visual_tokenizer import fit_kmeans_tokenizer

TOKENIZER = Beit3Tokenizer("sample")


def _image(path: Path, colour: tuple[int, int, int], size: int = 48) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.zeros((size, size, 3), dtype=np.uint8)
    array[:] = colour
    array[: size // 2, : size // 2] = (255 - colour[0], colour[1], 255 - colour[2])
    Image.fromarray(array).save(path)


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    """A small raw pretraining folder with every kind: 20 images, two text files, 20 pairs."""
    root = tmp_path / "raw"
    for i in range(20):
        _image(root / "images" / f"sub{i % 2}" / f"{i:03d}.png", (10 * i, 100, 200 - 5 * i))
        _image(root / "pair_images" / f"{i:03d}.jpg", (200 - 5 * i, 10 * i, 50))
    (root / "texts").mkdir()
    long_document = " ".join(f"word{i} is a red circle" for i in range(40))
    (root / "texts" / "a.txt").write_text("a red circle on the left\n\n" + long_document + "\n", encoding="utf-8")
    (root / "texts" / "b.jsonl").write_text(json.dumps({"text": "two blue squares"}) + "\n", encoding="utf-8")
    pairs = [{"image_path": f"pair_images/{i:03d}.jpg", "text": f"picture number {i} with a square"} for i in range(20)]
    (root / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    return root


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_index_builder_writes_every_kind_with_a_val_split(raw: Path):
    written = build_pretrain_index(raw, TOKENIZER, val_fraction=0.1, text_chunk_tokens=20)
    assert sorted(p.name for p in written) == sorted(
        f"pretrain.{kind}.{split}.jsonl" for kind in ("images", "texts", "pairs") for split in ("train", "val")
    )
    images = _read(raw / "pretrain.images.train.jsonl") + _read(raw / "pretrain.images.val.jsonl")
    assert len(images) == 20 and len(_read(raw / "pretrain.images.val.jsonl")) == 2
    assert {r["image_path"] for r in images} == {f"images/sub{i % 2}/{i:03d}.png" for i in range(20)}
    texts = _read(raw / "pretrain.texts.train.jsonl") + _read(raw / "pretrain.texts.val.jsonl")
    long_ids = TOKENIZER.encode_ids(" ".join(f"word{i} is a red circle" for i in range(40)))
    chunks = chunk_tokens(long_ids, 20)
    assert [len(c) for c in chunks[:-1]] == [20] * (len(chunks) - 1) and 0 < len(chunks[-1]) <= 20
    assert sum(chunks, []) == long_ids  # consecutive, nothing lost
    expected = [TOKENIZER.encode_ids("a red circle on the left"), *chunks]
    expected.append(TOKENIZER.encode_ids("two blue squares"))
    assert sorted(map(tuple, (r["text_segment"] for r in texts))) == sorted(map(tuple, expected))
    assert all(len(r["text_segment"]) <= 20 for r in texts)
    pairs = _read(raw / "pretrain.pairs.train.jsonl") + _read(raw / "pretrain.pairs.val.jsonl")
    assert len(pairs) == 20 and all(set(r) == {"image_path", "text_segment"} for r in pairs)


def test_pairs_of_one_image_stay_in_one_split(raw: Path):
    # Three captions per picture: a validation picture must not be trained on with its other captions.
    pairs = [{"image_path": f"pair_images/{i:03d}.jpg", "text": f"caption {k} of picture {i}"}
             for i in range(20) for k in range(3)]  # fmt: skip
    (raw / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    build_pretrain_index(raw, TOKENIZER, val_fraction=0.1)
    train = {r["image_path"] for r in _read(raw / "pretrain.pairs.train.jsonl")}
    val = [r["image_path"] for r in _read(raw / "pretrain.pairs.val.jsonl")]
    assert len(val) == 6 and len(set(val)) == 2 and not train & set(val)


def test_val_split_is_seeded(raw: Path, tmp_path: Path):
    build_pretrain_index(raw, TOKENIZER, index_dir=tmp_path / "a", seed=1)
    build_pretrain_index(raw, TOKENIZER, index_dir=tmp_path / "b", seed=1)
    build_pretrain_index(raw, TOKENIZER, index_dir=tmp_path / "c", seed=2)
    name = "pretrain.images.val.jsonl"
    assert _read(tmp_path / "a" / name) == _read(tmp_path / "b" / name) != _read(tmp_path / "c" / name)


def test_bad_raw_inputs_name_the_file_and_line(raw: Path, tmp_path: Path):
    with (raw / "pairs.jsonl").open("a") as file:
        file.write(json.dumps({"image_path": "pair_images/missing.jpg", "text": "x"}) + "\n")
    with pytest.raises(DatasetFormatError, match=r"pairs.jsonl, line 21: image .*missing.jpg does not exist"):
        build_pretrain_index(raw, TOKENIZER)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetFormatError, match="holds no pretraining data"):
        build_pretrain_index(empty, TOKENIZER)
    (raw / "pairs.jsonl").unlink()
    (raw / "texts" / "c.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(DatasetFormatError, match=r"c.txt is not UTF-8"):
        build_pretrain_index(raw, TOKENIZER)


def test_prepare_pretrain_cli_with_precomputed_visual_tokens(raw: Path, tmp_path: Path, capsys):
    tokenizer = fit_kmeans_tokenizer(raw / "images", codebook_size=4, image_size=48, patch_size=16, progress=False)
    tokenizer.save(tmp_path / "vt.safetensors")
    code = prepare_main(["pretrain", "--data-root", str(raw), "--tokenizer", "sample", "--visual-tokenizer",
                         str(tmp_path / "vt.safetensors"), "--img-size", "48"])  # fmt: skip
    assert code == 0
    record = _read(raw / "pretrain.images.train.jsonl")[0]
    assert len(record["visual_tokens"]) == 9 and max(record["visual_tokens"]) < 4
    image = torch.from_numpy(np.asarray(Image.open(raw / record["image_path"]).convert("RGB"), dtype=np.float32))
    expected = tokenizer.get_codebook_indices((image / 255).permute(2, 0, 1)[None])[0].tolist()
    assert record["visual_tokens"] == expected  # the sample images are 48 px: no resize in between
    # Training reads the stored codes and, since they belong to the unaugmented image, does not crop or flip.
    dm = PretrainDataModule(str(raw), img_size=48, batch_size=3, num_workers=0, visual_tokenizer=str(tmp_path /
                            "vt.safetensors"))  # fmt: skip
    dm.setup("fit")
    train = dm.kind_dataset("images", "train")
    assert train.transform.name == dm.kind_dataset("pairs", "train").transform.name == "vl-eval@48"
    assert train[0]["visual_tokens"].tolist() == record["visual_tokens"]
    assert prepare_main(["pretrain", "--data-root", str(raw), "--tokenizer", "sample", "--visual-tokenizer",
                         str(tmp_path / "vt.safetensors"), "--img-size", "64"]) == 2  # fmt: skip
    assert "expects 48px images but --img-size is 64" in capsys.readouterr().err


def test_without_precomputed_tokens_training_images_are_augmented(raw: Path, tmp_path: Path):
    build_pretrain_index(raw, TOKENIZER)
    tokenizer = fit_kmeans_tokenizer(raw / "images", codebook_size=4, image_size=48, patch_size=16, progress=False)
    tokenizer.save(tmp_path / "vt.safetensors")
    dm = PretrainDataModule(str(raw), img_size=48, batch_size=3, num_workers=0, visual_tokenizer=str(tmp_path /
                            "vt.safetensors"))  # fmt: skip
    assert dm.kind_dataset("images", "train").transform.name == "vl-train@48"
    assert dm.kind_dataset("images", "val").transform.name == "vl-eval@48"


def test_split_batch_size_follows_the_mix():
    assert split_batch_size(96, {"images": 1, "texts": 1, "pairs": 1}) == {"images": 32, "texts": 32, "pairs": 32}
    assert split_batch_size(10, {"images": 1, "texts": 1, "pairs": 1}) == {"images": 4, "texts": 3, "pairs": 3}
    assert split_batch_size(8, {"images": 3, "texts": 1, "pairs": 0}) == {"images": 6, "texts": 2}
    with pytest.raises(ValueError, match="unknown pretraining data kind"):
        split_batch_size(8, {"image": 1})
    with pytest.raises(ValueError, match="no kind a positive weight"):
        split_batch_size(8, {"images": 0})


@pytest.fixture(scope="module")
def pretrain_root(sample_dataset) -> Path:
    return sample_dataset("pretrain")


def _datamodule(root: Path, **kwargs) -> PretrainDataModule:
    args = dict(root=str(root), tokenizer="sample", img_size=48, batch_size=9, num_workers=0, max_text_len=24)
    return PretrainDataModule(**{**args, **kwargs})


def test_datamodule_mixes_one_batch_per_kind_with_the_configured_masking(pretrain_root: Path):
    dm = _datamodule(pretrain_root, text_mask_prob=0.15, pair_text_mask_prob=0.5, image_mask_ratio=0.4)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    batch = batch[0] if isinstance(batch, tuple) else batch
    assert set(batch) == {"images", "texts", "pairs"}
    assert {kind: len(b["index"]) for kind, b in batch.items()} == {"images": 3, "texts": 3, "pairs": 3}
    for kind in ("images", "pairs"):
        assert batch[kind]["image"].shape == (3, 3, 48, 48)
        assert batch[kind]["image_mask"].dtype == torch.bool
        assert (batch[kind]["image_mask"].sum(1) == round(0.4 * 9)).all()
    for kind, prob in (("texts", 0.15), ("pairs", 0.5)):
        labels, padding = batch[kind]["mlm_labels"], batch[kind]["padding_mask"]
        real = (padding == 0).sum(1) - 2  # without bos and eos
        predicted = (labels != IGNORE_INDEX).sum(1)
        assert predicted.tolist() == [max(1, int(np.floor(n * prob + 0.5))) for n in real.tolist()]
    assert "mlm_labels" not in batch["images"] and "image" not in batch["texts"]
    # The smallest kind ends the epoch.
    assert dm.codebook_size == 32 and dm.num_train_batches() == min(570 // 3, 1686 // 3)


def test_masks_are_reproducible_and_change_with_the_epoch(pretrain_root: Path):
    dm = _datamodule(pretrain_root)
    dataset = dm.kind_dataset("pairs", "train")
    first = dataset[5]
    again = dataset[5]
    assert torch.equal(first["image_mask"], again["image_mask"]) and first["mlm_labels"] == again["mlm_labels"]
    dataset.set_epoch(1)
    later = dataset[5]
    assert not torch.equal(first["image_mask"], later["image_mask"]) or first["mlm_labels"] != later["mlm_labels"]


def test_mix_weight_zero_leaves_a_kind_out_and_bert_replacement_can_be_turned_off(pretrain_root: Path):
    dm = _datamodule(pretrain_root, mix={"images": 0, "texts": 1, "pairs": 1}, bert_replacement=False, batch_size=4)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    batch = batch[0] if isinstance(batch, tuple) else batch
    assert set(batch) == {"texts", "pairs"} and dm.val_kinds() == ("texts", "pairs")
    mask_id = dm.tokenizer.mask_token_id
    for kind in ("texts", "pairs"):
        labels, inputs = batch[kind]["mlm_labels"], batch[kind]["language_tokens"]
        assert (inputs[labels != IGNORE_INDEX] == mask_id).all()
