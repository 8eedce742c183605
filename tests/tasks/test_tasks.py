"""The task LightningModules on tiny models and synthetic batches: gradients (DDP without find_unused_parameters),
overfitting, the optimiser recipe on the real model (unilm ``optim_factory``), init_from, EMA and the non-finite check.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DataLoader

from beit3_lightning.callbacks import EMA
from beit3_lightning.ema import ModelEma
from beit3_lightning.modeling.checkpoint import CheckpointError
from beit3_lightning.tasks import (
    Beit3Task,
    CaptioningTask,
    ImageClassificationTask,
    NLVR2Task,
    RetrievalTask,
    VQATask,
)

VOCAB = 1002  # the shipped sample tokenizer's size
MASK_ID = VOCAB - 1  # <mask> = len(sp) + 1 = vocab - 1
IMG, TEXT, BATCH, CLASSES = 32, 8, 4, 10
TINY = {"model": "tiny", "img_size": IMG, "vocab_size": VOCAB, "drop_path": 0.0}
TASKS = ["imagenet", "vqav2", "nlvr2", "captioning", "retrieval"]


# ----- synthetic batches (the collate output of each task's dataset) --------------------------------------------
def _text(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """[<s>, 5 random pieces, </s>, <pad>] per row and its padding mask (1 = pad)."""
    tokens = torch.randint(3, MASK_ID, (BATCH, TEXT), generator=generator)
    tokens[:, 0], tokens[:, TEXT - 2], tokens[:, TEXT - 1] = 0, 2, 1
    padding = torch.zeros(BATCH, TEXT, dtype=torch.long)
    padding[:, TEXT - 1] = 1
    return tokens, padding


def make_batch(task: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A fixed random batch of ``BATCH`` samples in the format the task's DataModule yields."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(BATCH, 3, IMG, IMG, generator=gen)
    index = torch.arange(40, 40 + BATCH)
    tokens, padding = _text(gen)
    if task == "imagenet":
        return {"image": image, "label": torch.arange(BATCH) % CLASSES, "index": index}
    if task == "vqav2":
        labels = torch.zeros(BATCH, CLASSES)
        labels[torch.arange(BATCH), torch.arange(BATCH)] = 1.0  # one confident answer each
        labels[torch.arange(BATCH), torch.arange(BATCH) + 4] = 0.3  # and one weak one
        return {"image": image, "language_tokens": tokens, "padding_mask": padding, "labels": labels,
                "qid": index + 1000, "index": index}  # fmt: skip
    if task == "nlvr2":
        image2 = torch.randn(BATCH, 3, IMG, IMG, generator=gen)
        return {"image": image, "image2": image2, "language_tokens": tokens, "padding_mask": padding,
                "label": torch.tensor([0, 1, 1, 0]), "index": index}  # fmt: skip
    if task == "captioning":
        masked_pos = torch.zeros(BATCH, TEXT, dtype=torch.long)
        masked_pos[:, 1:6:2] = 1  # three of the five caption pieces
        masked_tokens = tokens.masked_fill(masked_pos.bool(), MASK_ID)
        return {"image": image, "language_tokens": tokens, "masked_tokens": masked_tokens, "padding_mask": padding,
                "language_masked_pos": masked_pos, "image_id": index + 7, "index": index}  # fmt: skip
    if task == "retrieval":
        return {"image": image, "language_tokens": tokens, "padding_mask": padding, "image_id": index + 7,
                "index": index}  # fmt: skip
    raise ValueError(task)


def make_task(task: str, **kwargs: Any) -> Beit3Task:
    """A tiny task module (4 layers, dim 128, 32 px) with the synthetic batches' class counts."""
    kwargs = {**TINY, "warmup_steps": 0, "layer_decay": 1.0, "weight_decay": 0.0, **kwargs}
    if task == "imagenet":
        return ImageClassificationTask(num_classes=CLASSES, **kwargs)
    if task == "vqav2":
        return VQATask(num_classes=CLASSES, **kwargs)
    if task == "nlvr2":
        return NLVR2Task(**kwargs)
    if task == "captioning":
        return CaptioningTask(**kwargs)
    if task == "retrieval":
        return RetrievalTask(**kwargs)
    raise ValueError(task)


def repeated(batch: dict[str, torch.Tensor], times: int) -> DataLoader:
    """A loader yielding the same batch ``times`` times (batch_size=None: items are whole batches)."""
    return DataLoader([batch] * times, batch_size=None)


def quiet_trainer(**kwargs: Any) -> L.Trainer:
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, limit_val_batches=0)  # fmt: skip
    return L.Trainer(**{**defaults, **kwargs})


class RecordGradients(L.Callback):
    """After each backward: trainable parameters left without a gradient; losses of each batch."""

    def __init__(self) -> None:
        self.without_grad: list[set[str]] = []
        self.losses: list[float] = []

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        params = pl_module.named_parameters()
        self.without_grad.append({n for n, p in params if p.requires_grad and p.grad is None})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


@pytest.fixture
def no_process_group():
    """Tear down the process group a single-process DDP run leaves behind (Lightning keeps it initialised)."""
    yield
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


# ----- gradients and DDP ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("task_name", TASKS)
def test_every_trainable_parameter_gets_a_gradient_under_ddp_without_unused_search(
    task_name: str, no_process_group: None
) -> None:
    torch.manual_seed(0)
    task = make_task(task_name)
    frozen = {n for n, p in task.model.named_parameters() if not p.requires_grad}
    assert frozen == task.model.unused_parameter_names()
    assert "beit3.vision_embed.mask_token" in frozen  # every task: only masked-image pre-training uses it
    if task_name == "imagenet":  # image-only: the language expert and the text embedding are unreached
        assert "beit3.text_embed.weight" in frozen and "beit3.encoder.layers.0.ffn.B.fc1.weight" in frozen

    recorder = RecordGradients()
    # DDP's reducer (world size 1 is enough) fails on the 2nd step if any trainable parameter got no gradient.
    trainer = quiet_trainer(strategy=DDPStrategy(find_unused_parameters=False), max_steps=2, callbacks=[recorder])
    trainer.fit(task, repeated(make_batch(task_name), 2))

    assert trainer.global_step == 2
    assert recorder.without_grad == [set(), set()]


# ----- overfitting ---------------------------------------------------------------------------------------------
OVERFIT_STEPS = 30
# A contrastive loss on 4 pairs collapses every embedding onto one point (loss stuck at ln 4) with lr >= 3e-4 from
# scratch, measured; the reference fine-tunes retrieval at 1e-4 to 2e-4.
OVERFIT_LR = {"retrieval": 1e-4}


@pytest.mark.parametrize("task_name", TASKS)
def test_overfits_a_fixed_batch(task_name: str) -> None:
    torch.manual_seed(0)
    lr = OVERFIT_LR.get(task_name, 2e-3)
    task = make_task(task_name, lr=lr, min_lr=lr / 10)
    recorder = RecordGradients()
    quiet_trainer(max_steps=OVERFIT_STEPS, callbacks=[recorder]).fit(task, repeated(make_batch(task_name), 60))

    losses = recorder.losses
    assert len(losses) == OVERFIT_STEPS and all(math.isfinite(x) for x in losses)
    last = sum(losses[-3:]) / 3
    assert last < 0.5 * losses[0], f"{task_name}: loss {losses[0]:.3f} -> {last:.3f} ({losses})"


# ----- optimiser groups and schedule on the real model -----------------------------------------------------------
def attach_fake_trainer(task: Beit3Task, steps: int = 100, epochs: int = 10) -> None:
    """What ``configure_optimizers`` reads from the trainer: total optimiser steps and the number of epochs."""
    task.trainer = SimpleNamespace(estimated_stepping_batches=steps, max_epochs=epochs)


def group_of(optimizer: torch.optim.Optimizer, task: Beit3Task) -> dict[str, dict]:
    """Parameter name → the optimizer group holding it (each parameter must be in exactly one)."""
    names = {id(p): n for n, p in task.model.named_parameters()}
    found: dict[str, dict] = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            assert names[id(param)] not in found, f"{names[id(param)]} in two groups"
            found[names[id(param)]] = group
    return found


def test_vqa_groups_boost_the_head_20x_but_not_the_pooler() -> None:
    task = make_task("vqav2", layer_decay=1.0, head_lr_scale=20.0, weight_decay=0.05, lr=1e-3)
    attach_fake_trainer(task)
    optimizer = task.configure_optimizers()["optimizer"]
    groups = group_of(optimizer, task)

    trainable = {n for n, p in task.model.named_parameters() if p.requires_grad}
    assert set(groups) == trainable  # the frozen mask_token is in no group
    for name, group in groups.items():
        assert group["lr_scale"] == (20.0 if name.startswith("head.") else 1.0), name
    # (name, weight decay): the official rules: 1-D, ".bias", and the no_weight_decay() names are not decayed.
    expected = {
        "head.0.weight": 0.05,
        "head.1.weight": 0.0,  # LayerNorm weight, 1-D
        "head.3.bias": 0.0,
        "pooler.dense.weight": 0.05,
        "pooler.norm.weight": 0.0,
        "beit3.text_embed.weight": 0.05,
        "beit3.vision_embed.cls_token": 0.0,  # listed in no_weight_decay()
        "beit3.encoder.embed_positions.A.weight": 0.0,  # listed (vision positions)
        "beit3.encoder.embed_positions.B.weight": 0.05,  # not listed: the text positions decay
        "beit3.encoder.layers.2.self_attn.q_proj.B.weight": 0.05,
        "beit3.encoder.layers.2.self_attn.q_proj.B.bias": 0.0,
    }
    assert {n: groups[n]["weight_decay"] for n in expected} == expected
    assert sorted({g["group_name"] for g in optimizer.param_groups}) == [
        "layer_0_decay", "layer_0_no_decay", "layer_1_decay", "layer_1_no_decay"]  # fmt: skip


def test_layer_decay_scales_follow_the_layer_ids() -> None:
    task = make_task("retrieval", layer_decay=0.65, weight_decay=0.05)
    attach_fake_trainer(task)
    optimizer = task.configure_optimizers()["optimizer"]
    groups = group_of(optimizer, task)
    # 4 layers: embeddings id 0 → 0.65^5, layer i → 0.65^(4-i), everything after the layers (id 5) → 1.0.
    expected_scale = {
        "beit3.text_embed.weight": 0.1160290625,
        "beit3.vision_embed.cls_token": 0.1160290625,
        "beit3.vision_embed.proj.weight": 0.1160290625,
        "beit3.encoder.embed_positions.B.weight": 0.1160290625,
        "beit3.encoder.layers.0.ffn.A.fc1.weight": 0.17850625,
        "beit3.encoder.layers.1.self_attn.k_proj.B.bias": 0.274625,
        "beit3.encoder.layers.2.final_layer_norm.A.weight": 0.4225,
        "beit3.encoder.layers.3.self_attn.out_proj.A.weight": 0.65,
        "beit3.encoder.layer_norm.B.weight": 1.0,
        "vision_head.weight": 1.0,
        "logit_scale": 1.0,
    }
    got = {n: groups[n]["lr_scale"] for n in expected_scale}
    assert got == pytest.approx(expected_scale, rel=1e-12)
    assert groups["logit_scale"]["weight_decay"] == 0.0  # 0-d but listed in no_weight_decay()
    assert groups["language_head.weight"]["weight_decay"] == 0.05
    assert len(optimizer.param_groups) == 12  # 6 layer ids x (decay, no decay)


def lrs_at(scheduler: torch.optim.lr_scheduler.LRScheduler, steps: list[int]) -> dict[int, list[float]]:
    """Each group's lr at the given optimiser steps (the scheduler stepped once per optimiser step)."""
    optimizer, out, current = scheduler.optimizer, {}, 0
    for step in steps:
        while current < step:
            optimizer.step()  # no gradients: a no-op that keeps the scheduler's order check quiet
            scheduler.step()
            current += 1
        out[step] = [g["lr"] for g in optimizer.param_groups]
    return out


def test_warmup_then_cosine_per_step_with_group_scales() -> None:
    task = make_task("vqav2", lr=1e-3, min_lr=1e-6, warmup_epochs=2, warmup_steps=-1, head_lr_scale=20.0)
    attach_fake_trainer(task, steps=100, epochs=10)  # 10 steps per epoch → 20 warmup steps
    config = task.configure_optimizers()
    assert config["lr_scheduler"]["interval"] == "step"
    scales = [g["lr_scale"] for g in config["optimizer"].param_groups]
    # Hand-computed: warmup base·s/19 (linspace(0, base, 20)); then min + ½(base − min)(1 + cos(π·i/80)).
    expected = {
        0: 0.0,
        10: 1e-3 * 10 / 19,  # 5.263157894736842e-4
        19: 1e-3,
        20: 1e-3,
        60: 5.005e-4,  # i = 40: cos(π/2) = 0 → 1e-6 + ½·0.999e-3
        99: 1.3850964e-6,  # i = 79: 1 + cos(79π/80) = 7.70964e-4 → 1e-6 + ½·0.999e-3·7.70964e-4
    }
    for step, lrs in lrs_at(config["lr_scheduler"]["scheduler"], list(expected)).items():
        assert lrs == pytest.approx([expected[step] * s for s in scales], rel=1e-6, abs=1e-15), step


def test_warmup_steps_override_warmup_epochs() -> None:
    task = make_task("imagenet", lr=1e-3, min_lr=0.0, warmup_epochs=50, warmup_steps=5)
    attach_fake_trainer(task, steps=100, epochs=10)
    scheduler = task.configure_optimizers()["lr_scheduler"]["scheduler"]
    got = {step: lrs[0] for step, lrs in lrs_at(scheduler, [2, 4, 5, 6]).items()}
    # linspace(0, 1e-3, 5) over steps 0..4, then the cosine over the 95 remaining steps from its top.
    assert got == pytest.approx({2: 5e-4, 4: 1e-3, 5: 1e-3, 6: 1e-3 * 0.5 * (1 + math.cos(math.pi / 95))})


# ----- init_from -----------------------------------------------------------------------------------------------
def _state(task: Beit3Task, prefix: str = "") -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in task.model.state_dict().items() if k.startswith(prefix)}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_init_from_an_official_finetuned_pth_loads_everything(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = make_task("vqav2")
    path = tmp_path / "beit3_tiny_vqa.pth"
    torch.save({"model": {k: v.half() for k, v in source.model.state_dict().items()}}, path)  # official: fp16

    torch.manual_seed(2)
    task = make_task("vqav2", init_from=str(path))
    expected = {k: v.half().float() for k, v in _state(source).items()}
    _assert_same(_state(task), expected)  # backbone and head
    assert not task.model.beit3.vision_embed.mask_token.requires_grad  # still frozen after loading


def test_init_from_a_pretrained_file_without_head_keeps_the_fresh_head(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = make_task("retrieval")
    state = {k: v for k, v in source.model.state_dict().items() if k.startswith("beit3.")}
    state["mlm_head.weight"] = torch.zeros(VOCAB, 128)  # a pre-training head the task model does not have
    path = tmp_path / "beit3_tiny_pretrained.pth"
    torch.save({"model": state}, path)

    torch.manual_seed(2)
    fresh = make_task("vqav2")
    torch.manual_seed(2)
    task = make_task("vqav2", init_from=str(path))
    loaded = _state(task, "beit3.")  # VQA has no final encoder LayerNorm: the file's one is ignored
    _assert_same(loaded, {k: state[k] for k in loaded})
    _assert_same(_state(task, "head."), _state(fresh, "head."))  # same seed, no checkpoint: identical head
    _assert_same(_state(task, "pooler."), _state(fresh, "pooler."))


def test_init_from_a_checkpoint_of_another_backbone_shape_raises(tmp_path: Path) -> None:
    source = make_task("imagenet", vocab_size=2000)
    path = tmp_path / "other_vocab.pth"
    torch.save({"model": source.model.state_dict()}, path)
    with pytest.raises(CheckpointError, match=r"(?s)other_vocab\.pth.*beit3\.text_embed\.weight"):
        make_task("imagenet", init_from=str(path))


# ----- EMA ---------------------------------------------------------------------------------------------------
def _ema_callback(trainer: L.Trainer) -> EMA:
    (callback,) = [c for c in trainer.callbacks if isinstance(c, EMA)]
    return callback


def test_ema_updates_once_per_optimizer_step_under_gradient_accumulation(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    decay = 0.5
    task = make_task("imagenet", ema_decay=decay, lr=1e-2)
    snapshots = [_state(task)]  # w0: the EMA starts as a copy of the model
    original_update = ModelEma.update

    def recording_update(self: ModelEma, model: torch.nn.Module) -> None:
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        original_update(self, model)

    monkeypatch.setattr(ModelEma, "update", recording_update)
    batches = [make_batch("imagenet", seed) for seed in range(4)]
    trainer = quiet_trainer(max_steps=2, accumulate_grad_batches=2)
    trainer.fit(task, DataLoader(batches, batch_size=None))

    assert trainer.global_step == 2 and len(snapshots) == 3  # 4 micro-batches, 2 optimiser steps, 2 updates
    w0, w1, w2 = snapshots
    for key, ema_value in _ema_callback(trainer).ema.state_dict().items():
        if not ema_value.is_floating_point():
            continue
        expected = decay**2 * w0[key] + decay * (1 - decay) * w1[key] + (1 - decay) * w2[key]
        torch.testing.assert_close(ema_value, expected, msg=key)
    assert not torch.equal(w1["head.weight"], w2["head.weight"])  # the weights really moved between updates


def test_ema_weights_are_saved_in_the_checkpoint_and_restored_on_resume(tmp_path: Path) -> None:
    torch.manual_seed(0)
    batches = [make_batch("imagenet", seed) for seed in range(4)]
    task = make_task("imagenet", ema_decay=0.5, lr=1e-2)
    trainer = quiet_trainer(max_steps=2, enable_checkpointing=False)
    trainer.fit(task, DataLoader(batches, batch_size=None))
    path = tmp_path / "ema.ckpt"
    trainer.save_checkpoint(path)
    saved_ema = _ema_callback(trainer).ema.state_dict()
    checkpoint = torch.load(path, weights_only=True)
    assert set(checkpoint["model_ema"]) == set(task.model.state_dict())  # the reference's key and names
    for key, value in saved_ema.items():
        torch.testing.assert_close(checkpoint["model_ema"][key], value, msg=key)
    # The average differs from the weights after 2 steps at decay 0.5, so restoring the model alone would not do.
    assert not torch.equal(checkpoint["model_ema"]["head.weight"], task.model.state_dict()["head.weight"])

    resumed_task = make_task("imagenet", ema_decay=0.5, lr=1e-2)
    resumed = quiet_trainer(max_steps=2, enable_checkpointing=False)  # already done: restores and stops
    resumed.fit(resumed_task, DataLoader(batches, batch_size=None), ckpt_path=path)
    for key, value in _ema_callback(resumed).ema.state_dict().items():
        torch.testing.assert_close(value, saved_ema[key], msg=key)


# ----- non-finite loss ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("task_name", ["vqav2", "imagenet"])
def test_non_finite_loss_stops_with_the_step_and_batch_ids(task_name: str) -> None:
    good = make_batch(task_name)
    bad = {**make_batch(task_name), "index": torch.tensor([90, 91, 92, 93])}
    bad["image"] = bad["image"].clone()
    bad["image"][2, 0, 5, 5] = float("nan")
    task = make_task(task_name)
    trainer = quiet_trainer(max_steps=5)
    with pytest.raises(FloatingPointError, match=r"global step 2 .*\[90, 91, 92, 93\]"):
        trainer.fit(task, DataLoader([good, good, bad, good], batch_size=None))
    assert trainer.global_step == 2  # the bad batch took no optimiser step


def test_check_finite_names_the_ids_for_inf_and_passes_finite_losses() -> None:
    task = make_task("vqav2")
    task.check_finite(torch.tensor(3.0), {"qid": torch.tensor([5, 6])})  # finite: no error
    with pytest.raises(FloatingPointError, match=r"non-finite loss inf at global step 0 .*\[5, 6\]"):
        task.check_finite(torch.tensor(float("inf")), {"qid": torch.tensor([5, 6])})


# ----- task wiring: loss arguments, logged metric scales, evaluation de-duplication -------------------------------
def test_captioning_task_hands_smoothing_and_drop_worst_to_its_loss() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5], [0.1, 0.2, 0.3, 0.4], [-2.0, 3.0, 0.0, 0.0], [1.0, 1.0, 1.0, -3.0]])
    target = torch.tensor([0, 3, 2, 1])
    # Hand computation: log p = logit - log Σ exp(logits) per row.
    log_probs = logits - logits.exp().sum(dim=-1, keepdim=True).log()
    nll = -log_probs[torch.arange(4), target]  # cross-entropy per token

    # No smoothing, the worst half dropped from step 1 on: the mean of the two smallest cross-entropies.
    dropping = make_task("captioning", label_smoothing=0.0, drop_worst_ratio=0.5, drop_worst_after=0)
    assert dropping.loss_fn(logits, target, 0).item() == pytest.approx(nll.mean().item(), rel=1e-6)
    assert dropping.loss_fn(logits, target, 1).item() == pytest.approx(nll.sort().values[:2].mean().item(), rel=1e-6)

    # Smoothing 0.3 and no dropping: KL(q ‖ p) with q = 0.7 on the gold token and 0.1 on each of the 3 others.
    smoothing = make_task("captioning", label_smoothing=0.3, drop_worst_ratio=0.0, drop_worst_after=0)
    q = torch.full((4, 4), 0.1)
    q[torch.arange(4), target] = 0.7
    expected = (q * (q.log() - log_probs)).sum(dim=-1).mean()
    assert smoothing.loss_fn(logits, target, 100).item() == pytest.approx(expected.item(), rel=1e-6)


def _validate(task: Beit3Task, batches: list[dict[str, torch.Tensor]], stage: str = "val") -> dict[str, float]:
    """Run ``trainer.validate`` (or ``test``) over the batches; the logged epoch metrics as floats."""
    trainer = quiet_trainer(limit_val_batches=1.0, limit_test_batches=1.0)
    loader = DataLoader(batches, batch_size=None)
    if stage == "val":
        trainer.validate(task, loader, verbose=False)
    else:
        trainer.test(task, loader, verbose=False)
    return {name: float(value) for name, value in trainer.callback_metrics.items()}


@pytest.mark.parametrize("stage", ["val", "test"])
def test_nlvr2_accuracy_is_logged_in_percent(stage: str, monkeypatch: pytest.MonkeyPatch) -> None:
    task = make_task("nlvr2")
    batch = make_batch("nlvr2")  # labels 0, 1, 1, 0
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [1.0, -1.0]])  # right, right, wrong, right
    monkeypatch.setattr(task.model, "forward", lambda *args, **kwargs: logits)
    metrics = _validate(task, [batch], stage)
    assert metrics[f"{stage}/acc"] == pytest.approx(75.0)


# Retrieval with controlled embeddings: image id → image feature, caption → (text feature, its image id).
RETRIEVAL_IMAGES = {10: [1.0, 0.0, 0.0], 20: [0.0, 1.0, 0.0], 30: [0.0, 0.0, 1.0]}
RETRIEVAL_TEXTS = [([0.9, 0.1, 0.0], 10), ([0.0, 0.8, 0.2], 10), ([0.5, 0.4, 0.0], 20), ([0.0, 0.0, 1.0], 30)]


def retrieval_rows(captions: list[int]) -> dict[str, torch.Tensor]:
    """An eval batch of the given captions: the image feature sits in every pixel, the caption number at token 1."""
    image_ids = torch.tensor([RETRIEVAL_TEXTS[c][1] for c in captions])
    features = torch.tensor([RETRIEVAL_IMAGES[i] for i in image_ids.tolist()])
    tokens = torch.full((len(captions), TEXT), 1)
    tokens[:, 0], tokens[:, 1], tokens[:, 2] = 0, torch.tensor(captions), 2
    return {"image": features[:, :, None, None].expand(-1, 3, IMG, IMG).clone(), "language_tokens": tokens,
            "padding_mask": (tokens == 1).long(), "image_id": image_ids, "index": torch.tensor(captions)}  # fmt: skip


def controlled_retrieval_forward(image=None, text_description=None, padding_mask=None):
    image_emb = torch.nn.functional.normalize(image[:, :, 0, 0], dim=-1)
    text_table = torch.tensor([feature for feature, _ in RETRIEVAL_TEXTS])
    text_emb = torch.nn.functional.normalize(text_table[text_description[:, 1]], dim=-1)
    return image_emb, text_emb


def test_retrieval_evaluation_counts_a_repeated_caption_once(monkeypatch: pytest.MonkeyPatch) -> None:
    task = make_task("retrieval")
    monkeypatch.setattr(task.model, "forward", controlled_retrieval_forward)
    # The second batch repeats caption 1 (as DistributedSampler pads the last batch): same dataset index.
    metrics = _validate(task, [retrieval_rows([0, 1, 2]), retrieval_rows([3, 1])])
    # IR@1 by hand: caption 0 → image 10 (hit), 1 → 20 (miss), 2 → 10 (miss), 3 → 30 (hit): 2 of 4 = 50 %
    # (counting the repeat would give 2 of 5). TR@1: image 10 → caption 0 (hit), 20 → caption 1 (miss),
    # 30 → caption 3 (hit): 2 of 3. At 5 and 10 everything is found.
    expected = {"ir_r1": 50.0, "tr_r1": 200 / 3, "ir_r5": 100.0, "tr_r5": 100.0, "ir_r10": 100.0, "tr_r10": 100.0}
    assert {k: metrics[f"val/{k}"] for k in expected} == pytest.approx(expected)
    assert metrics["val/average_score"] == pytest.approx(sum(expected.values()) / 6)
