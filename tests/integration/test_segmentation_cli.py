"""Segmentation through the real ``beit3`` CLI on the ADE20k-layout sample: a short fit learns, ``predict`` writes
label and colour PNGs at each image's size, TensorBoard gets image | truth | prediction panels, and the checkpoint
moved to an empty directory still segments with its class names."""

from __future__ import annotations

import glob
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from beit3_lightning.cli import main, make_cli
from beit3_lightning.data.sample import ensure_sample_dataset
from beit3_lightning.data.segmentation import load_mask, read_class_info

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "sample" / "ade20k.yaml"


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["beit3"])


@pytest.fixture(scope="module")
def ade_root(tmp_path_factory) -> Path:
    return ensure_sample_dataset("ade20k", tmp_path_factory.mktemp("data") / "ade20k")


def args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["--config", str(CONFIG), f"--data.init_args.root={root}", f"--trainer.default_root_dir={out}",
            "--data.init_args.num_workers=0", "--trainer.enable_progress_bar=false",
            "--data.init_args.img_size=64", *extra]  # fmt: skip  # 64 px: 4x faster than the config's 128


def test_fit_learns_predict_writes_pngs_and_the_checkpoint_travels(ade_root: Path, tmp_path: Path, monkeypatch):
    out = tmp_path / "run"
    cli = make_cli(["fit", *args(ade_root, out, "--trainer.max_epochs=4", "--trainer.limit_train_batches=10",
                                  "--tb_samples.num_samples=2")])  # fmt: skip
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    info = read_class_info(ade_root, "ade20k")
    # Better than predicting the background everywhere (mIoU = background IoU / 5 classes, below 20).
    assert metrics["val/mIoU"] > 25, metrics
    assert metrics["train/loss_decode"] < 1.0, metrics
    assert metrics["hp_metric"] == metrics["val/mIoU"]  # TensorBoard's HPARAMS view shows the key metric
    best = out / "checkpoints" / "best.ckpt"
    saved = torch.load(best, map_location="cpu", weights_only=False)
    assert saved["hyper_parameters"]["class_names"] == info["classes"]
    events = glob.glob(str(out / "lightning_logs" / "*" / "events.*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(events[0], size_guidance={"images": 0})
    accumulator.Reload()
    panels = [tag for tag in accumulator.Tags()["images"] if tag.startswith("val_samples")]
    assert len(panels) == 2
    first = accumulator.Images(panels[0])[-1]
    # image | truth | prediction side by side (three equal widths), enlarged, the text written under them.
    assert first.width % 3 == 0 and first.width >= 256 and first.height > first.width // 3

    # predict: one label PNG (ids + 1, the ADE20k submission format) and one colour PNG per val image.
    predictions = tmp_path / "pred"
    main(["predict", *args(ade_root, tmp_path / "p", f"--ckpt_path={best}", f"--predictions.output_dir={predictions}")])
    listing = json.loads((predictions / "submit_ade20k_test.json").read_text())
    val = [json.loads(line) for line in (ade_root / "ade20k.val.index.jsonl").read_text().splitlines()]
    assert [r["index"] for r in listing] == list(range(len(val)))
    for record, item in list(zip(val, listing))[:5]:
        raw = np.asarray(Image.open(item["label_png"]))
        image = Image.open(ade_root / record["image_path"])
        assert raw.shape == (image.height, image.width) and raw.min() >= 1 and raw.max() <= len(info["classes"])
        colour = Image.open(item["color_png"])
        assert colour.mode == "P" and np.array_equal(np.asarray(colour), raw - 1)
        assert Path(item["label_png"]).stem == Path(record["image_path"]).stem

    # The checkpoint alone, in an empty directory, with the data gone: segment() and the class names still work.
    moved = tmp_path / "elsewhere" / "model.ckpt"
    moved.parent.mkdir()
    shutil.copy(best, moved)
    monkeypatch.chdir(moved.parent)
    from beit3_lightning import load_model

    predictor = load_model(moved)
    image_path = ade_root / val[0]["image_path"]
    label_map = predictor.segment(Image.open(image_path))[0]
    truth = load_mask(ade_root / val[0]["mask_path"], reduce_zero_label=True)
    assert label_map.shape == truth.shape
    assert set(predictor.names(label_map)) <= set(info["classes"]) and predictor.class_names == info["classes"]
    # The predictor agrees with what `beit3 predict` wrote for the same image.
    assert np.array_equal(label_map + 1, np.asarray(Image.open(listing[0]["label_png"])))
