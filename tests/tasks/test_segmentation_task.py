"""Segmentation scoring, loss and schedule against hand-computed values; the task's training and evaluation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from beit3_lightning.metrics import SegmentationMetric
from beit3_lightning.optim import WarmupPolySchedule, build_scheduler
from beit3_lightning.tasks import SegmentationTask
from beit3_lightning.tasks.segmentation import segmentation_loss


def test_miou_macc_aacc_from_a_hand_computed_confusion_matrix():
    truth = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 0]])
    predicted = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])
    metric = SegmentationMetric(num_classes=4)
    metric.update(predicted[:1], truth[:1])  # two updates: the matrix is summed
    metric.update(predicted[1:], truth[1:])
    # Counted pixels (255 left out): truth 0 -> [0, 1, 0]; 1 -> [1, 1]; 2 -> [2, 0]; 0 -> [0].
    # Class 0: TP 2, truth 3, predicted 3 -> IoU 2/4, acc 2/3. Class 1: TP 2, truth 2, predicted 3 -> IoU 2/3, acc 1.
    # Class 2: TP 1, truth 2, predicted 1 -> IoU 1/2, acc 1/2. Class 3: absent everywhere -> left out of the means.
    scores = metric.compute()
    assert scores["mIoU"].item() == pytest.approx(100 * (1 / 2 + 2 / 3 + 1 / 2) / 3)
    assert scores["mAcc"].item() == pytest.approx(100 * (2 / 3 + 1 + 1 / 2) / 3)
    assert scores["aAcc"].item() == pytest.approx(100 * 5 / 7)
    assert math.isnan(metric.per_class()["IoU"][3].item())
    with pytest.raises(ValueError, match="label value 7"):
        metric.update(torch.zeros(1, 2, dtype=torch.long), torch.tensor([[7, 0]]))


def test_loss_ignores_255_and_upsamples_quarter_resolution_logits():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    label = torch.randint(0, 3, (2, 16, 16))
    label[:, :8] = 255
    up = F.interpolate(logits, size=(16, 16), mode="bilinear", align_corners=False)
    keep = label != 255
    expected = F.cross_entropy(up.permute(0, 2, 3, 1)[keep], label[keep])
    torch.testing.assert_close(segmentation_loss(logits, label), expected)
    all_ignored = segmentation_loss(logits, torch.full((2, 16, 16), 255))
    assert all_ignored.item() == 0 and all_ignored.requires_grad


def test_poly_schedule_matches_mmseg_linear_warmup_then_poly():
    schedule = WarmupPolySchedule(total_steps=110, warmup_steps=10, base_lr=1.0, min_lr=0.0, power=1.0)
    assert schedule(0) == pytest.approx(1e-6)
    assert schedule(5) == pytest.approx(1e-6 + (1 - 1e-6) * 0.5)
    assert schedule(10) == pytest.approx(1.0) and schedule(60) == pytest.approx(0.5) and schedule(110) == 0.0
    squared = WarmupPolySchedule(total_steps=110, warmup_steps=10, base_lr=1.0, min_lr=0.1, power=2.0)
    assert squared(60) == pytest.approx(0.1 + 0.9 * 0.25)
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.AdamW(
        [{"params": params[:1], "lr_scale": 1.0}, {"params": params[1:], "lr_scale": 0.5}], lr=2.0
    )
    scheduler = build_scheduler(optimizer, total_steps=110, warmup_steps=10, min_lr=0.0, schedule="poly")
    for _ in range(60):
        optimizer.step()
        scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1.0, 0.5])


def test_task_uses_the_poly_schedule_and_logs_both_losses():
    task = SegmentationTask(num_classes=4, model="tiny", img_size=64, drop_path=0.0, lr=1.0, warmup_steps=2,
                            min_lr=0.0, layer_decay=1.0)  # fmt: skip
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = task.build_lr_scheduler(optimizer, total_steps=12, warmup_steps=2)
    assert isinstance(scheduler.lr_lambdas[0], WarmupPolySchedule)
    logged = {}
    task.log = lambda name, value, **kwargs: logged.__setitem__(name, float(value))
    batch = {"image": torch.randn(2, 3, 64, 64), "label": torch.randint(0, 4, (2, 64, 64)), "index": torch.arange(2)}
    loss = task.training_step(batch, 0)
    assert loss.item() == pytest.approx(logged["train/loss_decode"] + 0.4 * logged["train/loss_aux"], rel=1e-5)


def test_evaluation_scores_each_image_at_its_label_size():
    torch.manual_seed(0)
    task = SegmentationTask(num_classes=3, model="tiny", img_size=64, drop_path=0.0).eval()
    batch = {
        "image": torch.randn(2, 3, 64, 96),
        "label": torch.full((2, 80, 120), 255),
        "image_hw": torch.tensor([[64, 96], [64, 80]]),
        "label_hw": torch.tensor([[80, 120], [80, 100]]),
    }
    batch["label"][0, :80, :120] = 1
    batch["label"][1, :80, :100] = 2
    with torch.no_grad():
        maps = task.predict_label_maps(batch)
        task.eval_step(batch, task.val_metric, "val")
    assert [tuple(m.shape) for m in maps] == [(80, 120), (80, 100)]
    # Every counted pixel was labelled: the matrix holds exactly the valid label pixels (padding left out).
    assert task.val_metric.confmat.sum().item() == 80 * 120 + 80 * 100
