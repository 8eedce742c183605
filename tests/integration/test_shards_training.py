"""Training from shard sets through the real ``beit3`` CLI: pretraining mixes three streamed kinds and resumes
mid-epoch with workers exactly, fine-tuning streams its train split, and a DDP step over two CPU processes gives
the gradients one process computes on the same two batches."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from beit3_lightning.cli import main
from beit3_lightning.data.prepare import main as prepare_main
from beit3_lightning.data.pretraining_datamodule import split_batch_size
from beit3_lightning.data.shards.format import ShardFormatError
from tests.integration.test_pretraining_cli import _ids, pretrain_args, record_kind_ids_arg
from tests.integration.test_training_reliability import (
    STEPS_PER_EPOCH,
    RaiseAfterSteps,
    RecordSampleIds,
    assert_same_weights,
    callback_arg,
    load,
    sample_args,
    step_checkpoint_arg,
)

KINDS = ("images", "texts", "pairs")


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["beit3"])


@pytest.fixture(scope="module")
def pretrain_shards(pretrain_root: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pretrain_shards")
    for kind in KINDS:
        args = ["shards", "--from", "index", "--dataset", "pretrain", "--kind", kind, "--data-root",
                str(pretrain_root), "--out", str(out / kind), "--samples-per-shard", "97"]  # fmt: skip
        assert prepare_main(args) == 0
    return out


def test_pretraining_from_shards_resumes_mid_epoch_with_workers_exactly(pretrain_root, pretrain_shards, tmp_path):
    common = ("--data.init_args.shards", str(pretrain_shards), "--data.init_args.num_workers", "2",
              "--trainer.max_epochs", "3")  # fmt: skip
    ref, out = tmp_path / "uninterrupted", tmp_path / "resumed"
    main(["fit", *pretrain_args(pretrain_root, ref, step_checkpoint_arg(ref / "steps"), *common,
                                record_kind_ids_arg(ref / "ids.jsonl"))])  # fmt: skip
    reference, reference_ids = load(ref / "steps" / "last.ckpt"), _ids(ref / "ids.jsonl")
    assert len(reference_ids) == 3 * STEPS_PER_EPOCH and set(reference_ids[0]) == set(KINDS)
    sizes = split_batch_size(4, dict.fromkeys(KINDS, 1.0))
    assert all({kind: len(step[kind]) for kind in KINDS} == sizes for step in reference_ids)
    epochs = [reference_ids[e * STEPS_PER_EPOCH : (e + 1) * STEPS_PER_EPOCH] for e in range(3)]
    for kind in KINDS:
        firsts = [[i for step in epoch for i in step[kind]] for epoch in epochs]
        assert all(len(set(ids)) == len(ids) for ids in firsts)  # no sample twice in an epoch
        assert firsts[0] != firsts[1]  # a new order every epoch
    record, steps = record_kind_ids_arg(out / "ids.jsonl"), step_checkpoint_arg(out / "steps")
    with pytest.raises(RuntimeError, match="simulated crash after step 9"):
        main(["fit", *pretrain_args(pretrain_root, out, steps, *common, record,
                                    callback_arg(RaiseAfterSteps, steps=9))])  # fmt: skip
    main(["fit", *pretrain_args(pretrain_root, out, steps, *common, record), "--ckpt_path", "last"])
    ids = _ids(out / "ids.jsonl")
    assert ids[:8] + ids[9:] == reference_ids  # step 9's batch was lost with the crash, then re-read
    assert_same_weights(load(out / "steps" / "last.ckpt"), reference)


def test_fine_tuning_streams_its_train_split_from_shards(sample_dataset, tmp_path: Path):
    root = sample_dataset("vqav2")
    shards = tmp_path / "shards"
    assert prepare_main(["shards", "--from", "index", "--dataset", "vqa", "--data-root", str(root), "--out",
                         str(shards), "--samples-per-shard", "200"]) == 0  # fmt: skip
    num_train = sum(1 for name in ("vqa.train.jsonl", "vqa.trainable_val.jsonl")
                    for _ in (root / name).read_text().splitlines())  # fmt: skip
    ids_file = tmp_path / "ids.jsonl"
    args = sample_args("vqav2.yaml", root, tmp_path / "run", "--data.init_args.shards", str(shards),
                       "--data.init_args.num_workers", "2", "--trainer.limit_train_batches", "1.0",
                       "--trainer.max_epochs", "1")  # fmt: skip
    main(["fit", *args, callback_arg(RecordSampleIds, path=str(ids_file))])
    seen = [i for line in ids_file.read_text().splitlines() for i in json.loads(line)]
    assert len(seen) == len(set(seen)) == num_train // 2 // 4 * 4 * 2  # 2 workers, batch 4, drop_last per worker
    assert max(seen) < num_train


def test_datamodule_counts_the_batches_its_stream_gives(sample_dataset, pretrain_shards, tmp_path: Path):
    from beit3_lightning.data.datamodules import VQAv2DataModule
    from beit3_lightning.data.pretraining_datamodule import PretrainDataModule

    root = sample_dataset("vqav2")
    shards = tmp_path / "shards"
    args = ["shards", "--from", "index", "--dataset", "vqav2", "--data-root", str(root), "--out", str(shards)]
    assert prepare_main([*args, "--samples-per-shard", "150"]) == 0
    vqa = VQAv2DataModule(root=str(root), img_size=32, batch_size=20, num_workers=2, shards=str(shards), seed=3)
    vqa.setup("fit")
    loader = vqa.train_dataloader()
    batches = [batch["index"] for batch in loader]
    assert len(batches) == len(loader) == vqa.num_train_batches() > 0
    assert all(len(b) == 20 for b in batches) and loader.dataset.seed == 3  # 2 x (790 // 20), not 1581 // 20
    pretrain = PretrainDataModule(root=str(sample_dataset("pretrain")), img_size=48, batch_size=30, num_workers=0,
                                  shards=str(pretrain_shards))  # fmt: skip
    pretrain.setup("fit")
    combined = pretrain.train_dataloader()
    steps = list(combined)
    assert len(steps) == pretrain.num_train_batches() == min(len(s) for s in combined.flattened)
    assert {kind: len(part["index"]) for kind, part in steps[0][0].items()} == pretrain.kind_batch_sizes


@pytest.mark.parametrize("dataset", ["imagenet", "nlvr2", "coco_captioning", "coco_retrieval"])
def test_every_fine_tuning_datamodule_trains_from_shards(sample_dataset, tmp_path: Path, dataset: str):
    from beit3_lightning.task_table import DATASETS, resolve

    root = sample_dataset(dataset)
    shards = tmp_path / "shards"
    assert prepare_main(["shards", "--from", "index", "--dataset", dataset, "--data-root", str(root), "--out",
                         str(shards), "--tokenizer", "sample"]) == 0  # fmt: skip
    spec = DATASETS[dataset]
    extra = {"task": dataset} if spec.head in ("retrieval", "captioning") else {}
    streamed = resolve(spec.datamodule_class)(root=str(root), img_size=32, batch_size=4, num_workers=0,
                                              shards=str(shards), **extra)  # fmt: skip
    jsonl = resolve(spec.datamodule_class)(root=str(root), img_size=32, batch_size=4, num_workers=0, **extra)
    for data in (streamed, jsonl):
        data.setup("fit")
    batch, reference = next(iter(streamed.train_dataloader())), next(iter(jsonl.train_dataloader()))
    assert batch.keys() == reference.keys()
    for key, value in reference.items():
        if isinstance(value, torch.Tensor):
            assert batch[key].shape == value.shape and batch[key].dtype == value.dtype, key
    if dataset == "imagenet":
        assert streamed.num_classes == jsonl.num_classes


def test_several_shard_sets_per_kind_are_read_as_one(pretrain_root, pretrain_shards, tmp_path: Path):
    from beit3_lightning.data.pretraining_datamodule import PretrainDataModule

    extra = tmp_path / "coco_pairs"  # a second pairs source, converted separately
    args = ["shards", "--from", "index", "--dataset", "pretrain", "--kind", "pairs", "--data-root", str(pretrain_root),
            "--out", str(extra), "--split", "val"]  # fmt: skip
    assert prepare_main(args) == 0
    mapping = {"images": str(pretrain_shards / "images"), "texts": str(pretrain_shards / "texts"),
               "pairs": [str(pretrain_shards / "pairs"), str(extra)]}  # fmt: skip
    data = PretrainDataModule(root=str(pretrain_root), img_size=48, batch_size=30, num_workers=0, shards=mapping)
    data.setup("fit")
    stream = data.kind_train_stream("pairs")
    one = PretrainDataModule(root=str(pretrain_root), img_size=48, batch_size=30, num_workers=0,
                             shards=str(pretrain_shards))  # fmt: skip
    one.setup("fit")
    first = one.kind_train_stream("pairs")
    assert len(stream) == len(first) + sum(1 for _ in (pretrain_root / "pretrain.pairs.val.jsonl").open())
    ids = list(stream.sample_ids_of(0))
    assert sorted(ids) == list(range(len(stream)))
    with pytest.raises(ValueError, match="different contents"):
        from beit3_lightning.data.shards.stream import ShardStream

        ShardStream([str(pretrain_shards / "pairs"), str(pretrain_shards / "texts")], stream.item_dataset)


def test_a_shard_set_of_other_content_is_refused(pretrain_shards, sample_dataset, tmp_path: Path):
    root = sample_dataset("vqav2")
    args = sample_args("vqav2.yaml", root, tmp_path, "--data.init_args.shards", str(pretrain_shards / "pairs"))
    with pytest.raises(ShardFormatError, match=r"holds 'pairs' samples, this DataModule needs 'vqav2'"):
        main(["fit", *args])


def test_ddp_step_on_two_processes_matches_one_process(pretrain_root, pretrain_shards, tmp_path: Path):
    script = Path(__file__).with_name("ddp_pretrain_step.py")
    subprocess.run([sys.executable, str(script), str(pretrain_root), str(pretrain_shards), str(tmp_path), "2"],
                   check=True, timeout=300, cwd=Path(__file__).parents[2])  # fmt: skip
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for kind in KINDS:  # each rank read its own samples
        assert not set(ranks[0]["batch"][kind]["index"].tolist()) & set(ranks[1]["batch"][kind]["index"].tolist())
    sys.path.insert(0, str(script.parent))
    from ddp_pretrain_step import build

    data, task = build(str(pretrain_root), str(pretrain_shards))
    data.setup("fit")
    task.attach_data(data)
    task.load_state_dict(torch.load(tmp_path / "init.pt", weights_only=False))
    losses = []
    for rank in ranks:
        per_kind = {kind: task.kind_outputs(kind, batch)["loss"] for kind, batch in rank["batch"].items()}
        losses.append(task.weighted_loss(per_kind))
    for loss, rank in zip(losses, ranks, strict=True):
        torch.testing.assert_close(loss.detach(), rank["loss"], rtol=0, atol=1e-6)
    (sum(losses) / 2).backward()  # DDP averages the ranks' gradients
    grads = {n: p.grad for n, p in task.named_parameters() if p.grad is not None}
    assert grads.keys() == ranks[0]["grads"].keys() == ranks[1]["grads"].keys()
    for name, grad in grads.items():
        torch.testing.assert_close(ranks[0]["grads"][name], ranks[1]["grads"][name], rtol=0, atol=0)
        torch.testing.assert_close(ranks[0]["grads"][name], grad, rtol=1e-5, atol=1e-7, msg=name)
