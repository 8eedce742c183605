"""Prediction files (gather, de-duplicate, atomic write) and TensorBoard sample panels."""

from __future__ import annotations

import contextlib
import json
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from beit3_lightning.callbacks import PredictionWriter, TensorBoardSamples
from beit3_lightning.callbacks.predictions import (
    atomic_write,
    dedupe_records,
    merge_embeddings,
    record_key,
    write_json,
)
from beit3_lightning.callbacks.tensorboard import denormalize
from beit3_lightning.cli import main
from beit3_lightning.data.datasets import load_answer2label

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


# ----------------------------------------------------------------------------------------------- unit tests
def test_record_key_prefers_question_then_image_then_index():
    assert record_key({"question_id": 1, "image_id": 2, "index": 3}) == "question_id"
    assert record_key({"image_id": 2, "caption": "a dog"}) == "image_id"
    assert record_key({"index": 3, "prediction": True}) == "index"
    with pytest.raises(ValueError, match="none of the id fields"):
        record_key({"answer": "yes"})


def test_dedupe_records_keeps_first_occurrence_sorted_by_id():
    # Rank 0 saw questions 5, 1; rank 1 saw 3 and, as DistributedSampler padding, 5 again (another answer
    # would only come from a non-deterministic model: the first one must win).
    records = [
        {"question_id": 5, "answer": "two"},
        {"question_id": 1, "answer": "yes"},
        {"question_id": 3, "answer": "red"},
        {"question_id": 5, "answer": "padding copy"},
    ]
    assert dedupe_records(records) == [
        {"question_id": 1, "answer": "yes"},
        {"question_id": 3, "answer": "red"},
        {"question_id": 5, "answer": "two"},
    ]
    assert dedupe_records([]) == []


def test_dedupe_records_rejects_mixed_id_fields():
    with pytest.raises(ValueError, match="mix id fields 'image_id' and 'index'"):
        dedupe_records([{"image_id": 1, "caption": "x"}, {"index": 2}])


def test_merge_embeddings_dedupes_images_by_id_and_texts_by_index():
    # Five caption rows of three images (ids 7, 9, 4); the second batch repeats row 0 (sampler padding).
    first = {
        "index": torch.tensor([2, 0, 1]),
        "image_id": torch.tensor([9, 7, 7]),
        "image_emb": torch.tensor([[9.0, 0.0], [7.0, 0.0], [7.5, 0.0]]),  # 7.5: a second pass over image 7
        "text_emb": torch.tensor([[0.0, 2.0], [0.0, 0.0], [0.0, 1.0]]),
    }
    second = {
        "index": torch.tensor([4, 3, 0]),
        "image_id": torch.tensor([4, 9, 7]),
        "image_emb": torch.tensor([[4.0, 0.0], [9.5, 0.0], [7.9, 0.0]]),
        "text_emb": torch.tensor([[0.0, 4.0], [0.0, 3.0], [0.0, 99.0]]),
    }
    merged = merge_embeddings([first, second])
    assert merged["image_ids"].tolist() == [4, 7, 9]
    # First occurrence of every image id: 4 → row of batch 2, 7 → 7.0 (not 7.5 / 7.9), 9 → 9.0 (not 9.5).
    assert merged["image_embeddings"][:, 0].tolist() == [4.0, 7.0, 9.0]
    assert merged["text_index"].tolist() == [0, 1, 2, 3, 4]
    assert merged["text_embeddings"][:, 1].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]  # padding copy (99) dropped
    assert merged["text_image_ids"].tolist() == [7, 7, 9, 9, 4]


def test_merge_embeddings_names_missing_keys():
    with pytest.raises(ValueError, match=r"lacks \['text_emb'\]"):
        merge_embeddings([{"index": torch.zeros(1), "image_id": torch.zeros(1), "image_emb": torch.zeros(1, 2)}])
    with pytest.raises(ValueError, match="no retrieval predictions"):
        merge_embeddings([])


def test_atomic_write_leaves_the_old_file_and_no_temp_file_on_failure(tmp_path):
    path = tmp_path / "out" / "submit.json"
    write_json(path, [{"question_id": 1, "answer": "yes"}])
    assert json.loads(path.read_text()) == [{"question_id": 1, "answer": "yes"}]
    assert path.read_text().startswith('[\n  {\n    "question_id"')  # indent 2, as the reference

    def broken(f):
        f.write("[{half a file")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, broken)
    assert json.loads(path.read_text()) == [{"question_id": 1, "answer": "yes"}]
    assert sorted(p.name for p in path.parent.iterdir()) == ["submit.json"]


def test_denormalize_inverts_normalisation_and_clamps():
    image = torch.tensor([[[0.0, 1.0]], [[-1.0, 2.0]], [[0.5, -3.0]]])  # (3, 1, 2)
    out = denormalize(image, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert out.tolist() == [[[0.5, 1.0]], [[0.0, 1.0]], [[0.75, 0.0]]]  # 1.5 and -1.0 clamped
    imagenet = denormalize(torch.zeros(3, 1, 1), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    assert imagenet.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])


def test_tensorboard_samples_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_samples must be >= 0"):
        TensorBoardSamples(num_samples=-1)
    with pytest.raises(ValueError, match="every_n_epochs must be >= 1"):
        TensorBoardSamples(every_n_epochs=0)


def test_tensorboard_samples_is_a_no_op_without_tensorboard_logger():
    called = []
    module = SimpleNamespace(describe_batch=lambda batch, n: called.append(n) or [])
    trainer = SimpleNamespace(loggers=[], sanity_checking=False, current_epoch=0, is_global_zero=True)
    TensorBoardSamples().on_validation_batch_end(trainer, module, None, {}, batch_idx=0)
    assert called == []


def test_tensorboard_samples_log_the_first_batch_every_n_epochs_from_epoch_0(tmp_path):
    described = []  # (epoch, batch index, num_samples) of every describe_batch call
    callback = TensorBoardSamples(num_samples=2, every_n_epochs=2)
    logger = TensorBoardLogger(str(tmp_path))
    for epoch in range(5):
        module = SimpleNamespace(
            image_mean=(0.5,) * 3,
            image_std=(0.5,) * 3,
            describe_batch=lambda batch, n, e=epoch: described.append((e, batch["i"], n)) or [],
        )
        trainer = SimpleNamespace(loggers=[logger], sanity_checking=False, current_epoch=epoch, is_global_zero=True,
                                  strategy=SimpleNamespace(), global_step=10 * epoch,
                                  precision_plugin=SimpleNamespace(forward_context=contextlib.nullcontext))  # fmt: skip
        for batch_idx in range(2):
            callback.on_validation_batch_end(trainer, module, None, {"i": batch_idx}, batch_idx=batch_idx)
    assert described == [(0, 0, 2), (2, 0, 2), (4, 0, 2)]


def test_panels_spread_over_the_batch_and_carry_their_text_under_the_image():
    from beit3_lightning.callbacks.tensorboard import compose_panel, spread_items

    batch = {"image": torch.arange(10).view(10, 1, 1, 1).float(), "qid": list(range(10)), "flag": True}
    picked = spread_items(batch, 4)
    assert picked["image"].flatten().tolist() == [0, 3, 6, 9] and picked["qid"] == [0, 3, 6, 9] and picked["flag"]
    assert spread_items(batch, 20) is batch and spread_items({"pairs": {}}, 2) == {"pairs": {}}
    image = torch.zeros(3, 48, 64)
    image[0] = 1.0  # red
    panel = compose_panel(image, "**predicted:** a red square  \n**true:** a red square")
    assert panel.shape[0] == 3 and panel.shape[2] == 64 * 4 and panel.shape[1] > 48 * 4
    assert torch.equal(panel[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))  # the image, enlarged, on top
    text_rows = panel[:, 48 * 4 :, :]
    assert (text_rows < 0.5).any() and (text_rows == 1.0).float().mean() > 0.5  # dark letters on white


def test_tensorboard_samples_skips_sharded_weights_with_a_warning(tmp_path):
    called = []
    module = SimpleNamespace(describe_batch=lambda batch, n: called.append(n) or [])
    trainer = SimpleNamespace(
        loggers=[TensorBoardLogger(str(tmp_path))],
        sanity_checking=False,
        current_epoch=0,
        is_global_zero=True,
        strategy=SimpleNamespace(zero_stage_3=True),  # DeepSpeed ZeRO-3
    )
    with pytest.warns(UserWarning, match="no sample panels under FSDP / DeepSpeed ZeRO-3"):
        TensorBoardSamples().on_validation_batch_end(trainer, module, None, {}, batch_idx=0)
    assert called == []


# ------------------------------------------------------- PredictionWriter on one and two processes (gloo, CPU)
def _fake_trainer(rank: int, world_size: int) -> SimpleNamespace:
    return SimpleNamespace(
        predict_loop=SimpleNamespace(return_predictions=True, num_dataloaders=1),
        is_global_zero=rank == 0,
        strategy=SimpleNamespace(barrier=lambda name=None: dist.barrier() if world_size > 1 else None),
        datamodule=SimpleNamespace(task="coco_captioning", test_split="test"),
    )


def test_prediction_writer_keeps_batches_itself(tmp_path):
    """The file comes from the writer's own per-batch copies: the loop's list is empty without
    return_predictions (always the case under ddp_spawn)."""
    writer = PredictionWriter(str(tmp_path), split="val")
    trainer = _fake_trainer(rank=0, world_size=1)
    for batch_idx, batch in enumerate([[{"index": 1, "prediction": True}], [{"index": 0, "prediction": False}]]):
        writer.write_on_batch_end(trainer, None, batch, None, None, batch_idx, 0)
    writer.write_on_epoch_end(trainer, None, predictions=[], batch_indices=[])
    assert writer.written == [tmp_path / "submit_coco_captioning_val.json"]
    assert json.loads(writer.written[0].read_text()) == [
        {"index": 0, "prediction": False},
        {"index": 1, "prediction": True},
    ]


def _write_from_shard(rank: int, world_size: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        # 5 images over 2 ranks: DistributedSampler gives rank 0 items 0, 2, 4 and rank 1 items 1, 3, 0 (padding).
        shard = [[0, 2], [4]] if rank == 0 else [[1, 3], [0]]
        batches = [[{"image_id": 10 + i, "caption": f"caption {i}"} for i in batch] for batch in shard]
        writer, trainer = PredictionWriter(out_dir), _fake_trainer(rank, world_size)
        for batch_idx, batch in enumerate(batches):
            writer.write_on_batch_end(trainer, None, batch, None, None, batch_idx, 0)
        writer.write_on_epoch_end(trainer, None, batches, [])
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_prediction_writer_gathers_all_processes_and_writes_once(tmp_path):
    port = free_port()
    # fork: the children inherit the imported modules (spawn would re-import torch and Lightning: ~10 s).
    mp.start_processes(_write_from_shard, args=(2, port, str(tmp_path)), nprocs=2, join=True, start_method="fork")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["submit_coco_captioning_test.json"]
    records = json.loads((tmp_path / "submit_coco_captioning_test.json").read_text())
    assert records == [{"image_id": 10 + i, "caption": f"caption {i}"} for i in range(5)]


# ------------------------------------------------------------------------------- `beit3 predict` / `fit`
def run_cli(monkeypatch, tmp_path: Path, subcommand: str, sample: str, *extra: str) -> Path:
    """Run ``beit3 <subcommand>`` on a sample config with data and logs under ``tmp_path``; returns the log dir."""
    monkeypatch.setattr(sys, "argv", ["beit3"])  # LightningCLI warns when args and sys.argv are both given
    args = [subcommand, "--config", str(CONFIGS / "sample" / f"{sample}.yaml")]
    args += ["--data.init_args.root", str(tmp_path / "data" / "sample" / sample), "--data.init_args.num_workers", "0"]
    args += ["--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.enable_progress_bar", "false"]
    if sample == "nocaps":
        args += ["--data.init_args.coco_root", str(tmp_path / "data" / "sample" / "coco_captioning")]
    main([*args, *extra])
    return tmp_path / "run" / "lightning_logs" / "version_0"


# Two batches of 3. Not "1": Trainer annotates the limits Union[float, int], so the CLI parses "1" as 1.0 = 100%.
PREDICT_LIMITS = ("--trainer.limit_predict_batches", "2", "--data.init_args.eval_batch_size", "3")


def test_predict_vqav2_writes_the_submission_file(monkeypatch, tmp_path):
    log_dir = run_cli(monkeypatch, tmp_path, "predict", "vqav2", *PREDICT_LIMITS)
    path = log_dir / "predictions" / "submit_vqav2_test.json"  # default: <log dir>/predictions
    records = json.loads(path.read_text())
    assert len(records) == 6
    ids = [r["question_id"] for r in records]
    assert ids == sorted(set(ids))
    answers = set(load_answer2label(str(tmp_path / "data" / "sample" / "vqav2" / "answer2label.txt")))
    for record in records:
        assert set(record) == {"question_id", "answer"} and isinstance(record["question_id"], int)
        assert record["answer"] in answers


def test_predict_captioning_writes_captions_to_output_dir(monkeypatch, tmp_path):
    out = tmp_path / "submissions"
    run_cli(monkeypatch, tmp_path, "predict", "coco_captioning", *PREDICT_LIMITS, "--predictions.output_dir", str(out))
    records = json.loads((out / "submit_coco_captioning_test.json").read_text())
    assert len(records) == 6
    for record in records:
        assert set(record) == {"image_id", "caption"}
        assert isinstance(record["image_id"], int) and isinstance(record["caption"], str)


def test_predict_retrieval_writes_embeddings(monkeypatch, tmp_path):
    log_dir = run_cli(monkeypatch, tmp_path, "predict", "flickr30k", *PREDICT_LIMITS)
    data = torch.load(log_dir / "predictions" / "embeddings_flickr30k_test.pt")
    assert set(data) == {"image_ids", "image_embeddings", "text_index", "text_image_ids", "text_embeddings"}
    assert data["text_index"].tolist() == list(range(6))  # the first 6 caption rows, in order
    assert data["image_ids"].tolist() == sorted(set(data["text_image_ids"].tolist()))
    assert data["image_embeddings"].shape == (len(data["image_ids"]), data["text_embeddings"].shape[1])
    assert data["text_embeddings"].shape[0] == 6
    norms = data["image_embeddings"].norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-4)  # L2-normalised like the model's output


def test_fit_logs_sample_panels_to_tensorboard(monkeypatch, tmp_path):
    """One short epoch of NLVR2: every validation adds image + text panels (the pair side by side)."""
    limits = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2"]
    limits += ["--trainer.num_sanity_val_steps", "0", "--data.init_args.batch_size", "4"]
    log_dir = run_cli(monkeypatch, tmp_path, "fit", "nlvr2", *limits, "--tb_samples.num_samples", "3")
    events = EventAccumulator(str(log_dir), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    assert sorted(tags["images"]) == [f"val_samples/{i:02d}_image" for i in range(3)]
    # add_text stores its panel under "<tag>/text_summary".
    assert {f"val_samples/{i:02d}_text/text_summary" for i in range(3)} <= set(tags["tensors"])
    image = events.Images("val_samples/00_image")[0]
    # Two 48 px images side by side, enlarged x3 to at least 256 px wide, with the text written under them.
    assert image.width == 288 and image.height > 144 + 3 * 15
    text = events.Tensors("val_samples/00_text/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "**statement:**" in text and "**predicted:**" in text and "**true:**" in text
    assert "val/acc" in tags["scalars"]


def panel_texts(log_dir: Path) -> list[str]:
    events = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    events.Reload()
    tags = sorted(t for t in events.Tags()["tensors"] if t.startswith("val_samples/"))
    return [events.Tensors(tag)[0].tensor_proto.string_val[0].decode() for tag in tags]


@pytest.mark.parametrize(
    ("sample", "fields"),
    [
        ("vqav2", ["question", "predicted", "true"]),
        ("imagenet", ["predicted", "true"]),
        ("coco_captioning", ["image id", "predicted", "true"]),
        ("coco_retrieval", ["true", "top 1", "top 2"]),  # top-5 among the 2 shown items
    ],
)
def test_validate_panels_describe_each_task(monkeypatch, tmp_path, sample, fields):
    limits = ["--trainer.limit_val_batches", "2", "--data.init_args.eval_batch_size", "2"]
    log_dir = run_cli(monkeypatch, tmp_path, "validate", sample, *limits)
    texts = panel_texts(log_dir)
    assert len(texts) == 2  # the first batch holds 2 of the default 8 samples
    for text in texts:
        assert [line.split(":**")[0].lstrip("*") for line in text.split("  \n")] == fields
        assert all(line.split(":** ", 1)[1].strip() for line in text.split("  \n"))  # no empty value
