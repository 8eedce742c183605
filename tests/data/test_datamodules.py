"""DataModules on hand-written index fixtures: loaders per task, seeding across workers/epochs, properties, CLI."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from PIL import Image
from test_datasets import IMG, WRITERS, eval_value, texture_images, write_captioning
from torch.utils.data import SequentialSampler

from beit3_lightning.data import datamodules
from beit3_lightning.data.datamodules import (
    CaptioningDataModule,
    EpochDistributedSampler,
    ImageNetDataModule,
    NLVR2DataModule,
    RetrievalDataModule,
    VQAv2DataModule,
)
from beit3_lightning.data.datasets import BadSampleError
from beit3_lightning.data.transforms import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, build_transform

TEXT = {"language_tokens", "padding_mask"}
BATCH_KEYS = {
    "vqav2": {"image", "qid", "labels", "index"} | TEXT,
    "nlvr2": {"image", "image2", "label", "index"} | TEXT,
    "imagenet": {"image", "label", "index"},
    "coco_retrieval": {"image", "image_id", "index"} | TEXT,
    "flickr30k": {"image", "image_id", "index"} | TEXT,
    "coco_captioning": {"image", "image_id", "index", "masked_tokens", "language_masked_pos"} | TEXT,
    "nocaps": {"image", "image_id", "index", "masked_tokens", "language_masked_pos"} | TEXT,
}


def make_datamodule(task: str, tmp_path: Path, **kwargs) -> L.LightningDataModule:
    """DataModule for ``task`` over a fresh fixture (6 items per split, 16 px images, batch size 4)."""
    root = tmp_path / task
    WRITERS[task](root)
    options = {"img_size": IMG, "batch_size": 4, "num_workers": 0, "max_text_len": 8, **kwargs}
    if task == "vqav2":
        return VQAv2DataModule(str(root), **options)
    if task == "nlvr2":
        return NLVR2DataModule(str(root), **options)
    if task == "imagenet":
        return ImageNetDataModule(str(root), **options)
    if task in ("coco_retrieval", "flickr30k"):
        return RetrievalDataModule(str(root), task=task, **options)
    coco_root = None
    if task == "nocaps":
        coco_root = str(write_captioning(tmp_path / "coco"))
    return CaptioningDataModule(str(root), task=task, coco_root=coco_root, **options)


def first_batch(loader) -> dict:
    return next(iter(loader))


@pytest.mark.parametrize("task", sorted(BATCH_KEYS))
def test_train_and_eval_loaders_for_every_task(task: str, tmp_path: Path) -> None:
    dm = make_datamodule(task, tmp_path)
    dm.setup("fit")
    train = dm.train_dataloader()
    # train + trainable_val for VQA (12 items); 6 elsewhere. drop_last=True → full batches only.
    assert len(train) == len(dm.datasets["train"]) // 4
    assert isinstance(train.sampler, EpochDistributedSampler) and train.drop_last
    batch = first_batch(train)
    assert set(batch) == BATCH_KEYS[task]
    assert batch["image"].shape == (4, 3, IMG, IMG) and batch["image"].dtype == torch.float32
    if set(batch) >= TEXT:
        assert batch["language_tokens"].shape == (4, 8) and batch["language_tokens"].dtype == torch.long
        assert (batch["language_tokens"][:, 0] == 0).all() and batch["padding_mask"].dtype == torch.long

    val = dm.val_dataloader()
    assert isinstance(val.sampler, SequentialSampler) and not val.drop_last and val.batch_size == 6
    val_batch = first_batch(val)
    assert val_batch["index"].tolist() == list(range(len(val_batch["index"])))
    # Eval transform: flat fixture images give exactly their normalised grey value (no crop/flip/augment).
    corner = val_batch["image"][:, :, :1, :1]
    assert torch.equal(val_batch["image"], corner.expand_as(val_batch["image"]))
    # Every fixture's first image is black: -1 after the VL normalisation, -mean/std for ImageNet.
    expected = (
        (-torch.tensor(IMAGENET_DEFAULT_MEAN) / torch.tensor(IMAGENET_DEFAULT_STD)) if task == "imagenet" else None
    )
    expected = expected if expected is not None else torch.full((3,), eval_value(0))
    torch.testing.assert_close(corner[0].flatten(), expected)
    dm.setup("test")
    assert len(first_batch(dm.test_dataloader())["index"]) == 6
    assert len(first_batch(dm.predict_dataloader())["index"]) == 6


def test_eval_batches_have_no_shuffling_or_augmentation(tmp_path: Path) -> None:
    dm = make_datamodule("coco_captioning", tmp_path, randaug=True)
    dm.setup("validate")
    first = [b["image"] for b in dm.val_dataloader()]
    second = [b["image"] for b in dm.val_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert sum(len(b) for b in first) == 6  # drop_last=False keeps the partial batch


VL_TASKS = ["vqav2", "nlvr2", "coco_captioning", "nocaps", "coco_retrieval", "flickr30k"]


@pytest.mark.parametrize("task", VL_TASKS)
def test_eval_loaders_give_exactly_the_eval_transform_of_textured_images(task: str, tmp_path: Path) -> None:
    dm = make_datamodule(task, tmp_path)
    texture_images(tmp_path)
    eval_transform = build_transform(task, False, IMG)

    def transformed(dataset, index: int, field: str, transform) -> torch.Tensor:
        with Image.open(Path(dataset.root) / dataset.records[index][field]) as image:
            return transform(image.convert("RGB"))

    image_fields = ["image_path", "image2_path"] if task == "nlvr2" else ["image_path"]
    dm.setup("fit")
    # The textured images make the two transforms distinguishable: a training item is not the eval tensor.
    train = dm.datasets["train"]
    assert not torch.equal(train[0]["image"], transformed(train, 0, "image_path", eval_transform))
    dm.setup("test")
    loaders = {"val": dm.val_dataloader(), "test": dm.test_dataloader(), "predict": dm.predict_dataloader()}
    for name, loader in loaders.items():
        dataset = loader.dataset
        checked = 0
        for batch in loader:
            for row, index in enumerate(batch["index"].tolist()):
                for field, key in zip(image_fields, ["image", "image2"]):
                    expected = transformed(dataset, index, field, eval_transform)
                    assert torch.equal(batch[key][row], expected), (name, index, key)
                checked += 1
        assert checked == len(dataset) == 6, name


@pytest.mark.parametrize(("mask_prob", "masked_per_caption"), [(0.2, 2), (0.9, 7)])
def test_captioning_mask_prob_reaches_the_training_items(mask_prob: float, masked_per_caption: int, tmp_path: Path):
    # Fixture captions: 8 ids cut to max_text_len - 2 = 6, so bos + 6 + eos = 8 real tokens; k = round_half_up(8·p)
    # clamped to [1, 7]: 8 x 0.2 = 1.6 -> 2 and 8 x 0.9 = 7.2 -> 7 (the dataset default 0.6 would give 5).
    dm = make_datamodule("coco_captioning", tmp_path, mask_prob=mask_prob, batch_size=6)
    dm.setup("fit")
    batch = first_batch(dm.train_dataloader())
    assert batch["language_masked_pos"].sum(dim=1).tolist() == [masked_per_caption] * 6


def test_batches_do_not_depend_on_the_number_of_workers(tmp_path: Path) -> None:
    in_process = make_datamodule("coco_captioning", tmp_path, randaug=True, batch_size=2)
    in_process.setup("fit")
    workers = make_datamodule("coco_captioning", tmp_path, randaug=True, batch_size=2, num_workers=2)
    workers.setup("fit")
    expected = list(in_process.train_dataloader())
    got = list(workers.train_dataloader())
    assert len(got) == len(expected) == 3
    for a, b in zip(expected, got):
        assert a["index"].tolist() == b["index"].tolist()
        torch.testing.assert_close(a["image"], b["image"])
        assert torch.equal(a["masked_tokens"], b["masked_tokens"])


def test_set_epoch_reshuffles_and_reaugments_reproducibly(tmp_path: Path) -> None:
    dm = make_datamodule("coco_captioning", tmp_path, randaug=True, batch_size=2)
    dm.setup("fit")
    loader = dm.train_dataloader()

    def epoch(number: int) -> tuple[list[int], torch.Tensor]:
        loader.sampler.set_epoch(number)
        batches = list(loader)
        return [i for b in batches for i in b["index"].tolist()], torch.cat([b["masked_tokens"] for b in batches])

    order0, masks0 = epoch(0)
    order1, masks1 = epoch(1)
    assert dm.datasets["train"].epoch == 1
    assert sorted(order0) == sorted(order1) == list(range(6))
    assert order0 != order1 or not torch.equal(masks0, masks1)
    masks1_by_item = dict(zip(order1, masks1))
    assert any(not torch.equal(masks0[k], masks1_by_item[i]) for k, i in enumerate(order0))
    again_order, again_masks = epoch(0)
    assert again_order == order0 and torch.equal(again_masks, masks0)


def test_skipped_samples_are_counted_across_workers(tmp_path: Path) -> None:
    dm = make_datamodule("nlvr2", tmp_path, skip_bad_samples=True, num_workers=2, batch_size=2)
    (tmp_path / "nlvr2/images/train/1/train-1-img1.png").unlink()
    dm.setup("fit")
    batches = list(dm.train_dataloader())  # the warning is emitted (and shown) in the worker process
    assert len(batches) == 3
    assert dm.num_skipped == 1  # counted in a worker, visible here
    assert 1 not in torch.cat([b["index"] for b in batches]).tolist()
    (reason,) = dm.skipped_samples()  # written by the worker, read back here
    assert "train-1-img1.png" in reason and "nlvr2.train.index.jsonl, line 2" in reason


def test_a_run_skipping_more_than_max_skip_fraction_stops(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("beit3_lightning.data.datamodules.MIN_ITEMS_FOR_SKIP_FRACTION", 6)
    dm = make_datamodule("nlvr2", tmp_path, skip_bad_samples=True, batch_size=2, max_skip_fraction=0.1)
    (tmp_path / "nlvr2/images/train/1/train-1-img1.png").unlink()
    dm.setup("fit")
    list(dm.train_dataloader())  # 6 items served, 1 skipped: 1/7 = 14% > 10%
    with pytest.raises(BadSampleError, match=r"1 of 7 items read were bad \(14\.3% > max_skip_fraction 0\.1\)"):
        dm.check_skip_fraction()
    dm.max_skip_fraction = 0.2
    dm.check_skip_fraction()  # within the allowed fraction: no error


@pytest.mark.parametrize(("task", "batch_size"), [("nlvr2", 4), ("nlvr2", 3), ("nlvr2", 5), ("vqav2", 5)])
def test_num_train_batches_counts_the_batches_of_the_train_loader(task: str, batch_size: int, tmp_path: Path):
    """Warmup epochs are converted with num_train_batches(): it must equal the loader's length (drop_last)."""
    dm = make_datamodule(task, tmp_path, batch_size=batch_size)
    dm.setup("fit")
    expected = len(dm.datasets["train"]) // batch_size  # 6 (NLVR2) or 12 (VQA) items, full batches only
    assert dm.num_train_batches() == len(dm.train_dataloader()) == len(list(dm.train_dataloader())) == expected


def test_model_facing_properties(tmp_path: Path) -> None:
    vqa = make_datamodule("vqav2", tmp_path)
    assert vqa.num_answers == 3 and vqa.label2ans == ["yes", "no", "2"]
    assert vqa.vocab_size == 1002 and vqa.tokenizer.mask_token_id == 1001
    imagenet = make_datamodule("imagenet", tmp_path)
    assert imagenet.num_classes == 3  # before setup: read from the train index
    imagenet.setup("fit")
    assert imagenet.num_classes == 3
    assert make_datamodule("nlvr2", tmp_path, batch_size=10).eval_batch_size == 15
    assert make_datamodule("nlvr2", tmp_path, eval_batch_size=3).eval_batch_size == 3
    assert VQAv2DataModule(str(tmp_path / "vqav2"), test_split="test-dev").test_split == "test-dev"


def test_bad_arguments_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        NLVR2DataModule(str(tmp_path), batch_size=0)
    with pytest.raises(ValueError, match="num_workers"):
        NLVR2DataModule(str(tmp_path), num_workers=-1)
    dm = make_datamodule("nocaps", tmp_path)
    dm.coco_root = None
    with pytest.raises(ValueError, match="coco_root"):
        dm.setup("fit")
    with pytest.raises(FileNotFoundError, match="beit3 prepare"):
        NLVR2DataModule(str(tmp_path / "empty")).setup("fit")


def test_generate_sample_calls_ensure_sample_dataset_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr("beit3_lightning.data.sample.ensure_sample_dataset", lambda *args, **kw: calls.append(args))
    dm = CaptioningDataModule("/x/sample/nocaps", task="nocaps", coco_root="/x/sample/coco", generate_sample=True)
    dm.prepare_data()
    dm.prepare_data()
    assert calls == [("nocaps", "/x/sample/nocaps"), ("coco_captioning", "/x/sample/coco")]
    calls.clear()
    NLVR2DataModule("/data/nlvr2").prepare_data()
    assert calls == []


def test_generate_sample_refuses_a_root_that_is_not_a_sample_directory(tmp_path: Path) -> None:
    # A mistyped path to real data must not be filled with the sample: only `.../sample/<dataset>` is generated.
    typo = tmp_path / "data" / "vqa2"
    with pytest.raises(FileNotFoundError, match=r"does not hold the vqav2 sample, and generate_sample only writes"):
        VQAv2DataModule(str(typo), generate_sample=True).prepare_data()
    assert not typo.exists()
    made = VQAv2DataModule(str(tmp_path / "sample" / "vqav2"), generate_sample=True)
    made.prepare_data()
    # Once generated, the sample is recognised wherever it is (its marker file), e.g. after moving it.
    moved = tmp_path / "elsewhere"
    (tmp_path / "sample" / "vqav2").rename(moved)
    VQAv2DataModule(str(moved), generate_sample=True).prepare_data()


def test_datamodule_arguments_parse_with_jsonargparse(tmp_path: Path) -> None:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(CaptioningDataModule, "data")
    config = parser.parse_args(
        ["--data.root", "x", "--data.task", "nocaps", "--data.mask_prob", "0.7", "--data.seed=3"]
    )
    assert config.data.task == "nocaps" and config.data.mask_prob == 0.7 and config.data.seed == 3
    assert config.data.batch_size == 32 and config.data.max_text_len == 64 and config.data.tokenizer == "sample"
    dm = parser.instantiate(config).data
    assert isinstance(dm, CaptioningDataModule) and dm.task == "nocaps" and dm.eval_batch_size == 48


class _RecordingModule(L.LightningModule):
    """Records which items and masks each epoch trains on."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: dict[int, list[tuple[int, torch.Tensor]]] = {}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        for index, masked in zip(batch["index"].tolist(), batch["masked_tokens"]):
            self.seen.setdefault(self.current_epoch, []).append((index, masked.clone()))
        return (self.weight * batch["image"].mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.filterwarnings("ignore:You passed in a `val_dataloader`", "ignore:.*LeafSpec")
def test_lightning_keeps_the_sampler_and_advances_the_dataset_epoch(tmp_path: Path) -> None:
    dm = make_datamodule("coco_captioning", tmp_path, batch_size=2, num_workers=1)
    model = _RecordingModule()
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(model, datamodule=dm)
    assert isinstance(trainer.train_dataloader.sampler, EpochDistributedSampler)
    assert dm.datasets["train"].epoch == 1
    epoch0 = dict(model.seen[0])
    epoch1 = dict(model.seen[1])
    assert sorted(epoch0) == sorted(epoch1) == list(range(6))
    assert any(not torch.equal(epoch0[i], epoch1[i]) for i in epoch0), "masks should change between epochs"


def test_seed_worker_seeds_python_and_numpy_from_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    import random

    import numpy as np

    monkeypatch.setattr(torch, "initial_seed", lambda: 2**40 + 5)
    datamodules.seed_worker(0)
    a = (random.random(), np.random.rand())
    datamodules.seed_worker(1)
    assert (random.random(), np.random.rand()) == a  # same torch seed → same streams (worker id is in the seed)


@pytest.mark.parametrize("task", ["vqav2", "coco_captioning"])
def test_generated_sample_dataset_end_to_end(task: str, tmp_path: Path) -> None:
    """The real sample generator + index builders + this DataModule (what the sample configs run)."""
    cls = VQAv2DataModule if task == "vqav2" else CaptioningDataModule
    dm = cls(
        str(tmp_path / "sample" / task), generate_sample=True, img_size=48, batch_size=8, num_workers=0, max_text_len=32
    )
    dm.setup("fit")
    assert len(dm.datasets["train"]) >= 50 and len(dm.datasets["val"]) >= 50
    batch = first_batch(dm.train_dataloader())
    assert set(batch) == BATCH_KEYS[task] and batch["image"].shape == (8, 3, 48, 48)
    assert batch["language_tokens"].max() < dm.vocab_size
    if task == "vqav2":
        assert batch["labels"].shape == (8, dm.num_answers) and batch["labels"].max() <= 1.0
    else:
        assert (batch["masked_tokens"] == dm.tokenizer.mask_token_id).any()
    val = first_batch(dm.val_dataloader())
    assert val["image"].shape == (12, 3, 48, 48)


def test_checkpointed_hyper_parameters_hold_absolute_data_paths(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "coco").mkdir()
    (tmp_path / "spm.model").write_bytes(b"")
    dm = CaptioningDataModule("nocaps_dir", task="nocaps", coco_root="coco", tokenizer="spm.model")
    assert dm.hparams["root"] == str(tmp_path / "nocaps_dir")
    assert dm.hparams["coco_root"] == str(tmp_path / "coco")
    assert dm.hparams["tokenizer"] == str(tmp_path / "spm.model")
    assert CaptioningDataModule("x").hparams["tokenizer"] == "sample"  # a name stays a name
