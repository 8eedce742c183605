"""PretrainingTask: the masked data modeling objective, its targets, loss weights, gradients and checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from beit3_lightning.data.masking import IGNORE_INDEX
from beit3_lightning.data.pretraining_datamodule import PretrainDataModule
from beit3_lightning.modeling.checkpoint import load_checkpoint
from beit3_lightning.tasks import NLVR2Task, PretrainingTask, RetrievalTask, VQATask


@pytest.fixture(scope="module")
def datamodule(sample_dataset) -> PretrainDataModule:
    dm = PretrainDataModule(str(sample_dataset("pretrain")), img_size=48, batch_size=12, num_workers=0, max_text_len=24)
    dm.setup("fit")
    return dm


def _task(dm: PretrainDataModule, **kwargs) -> PretrainingTask:
    torch.manual_seed(0)
    task = PretrainingTask(img_size=48, vocab_size=dm.tokenizer.vocab_size, codebook_size=dm.codebook_size,
                           drop_path=0.0, **kwargs)  # fmt: skip
    task.attach_data(dm)
    return task


def _batch(dm: PretrainDataModule) -> dict:
    batch = next(iter(dm.train_dataloader()))
    return batch[0] if isinstance(batch, tuple) else batch


def test_targets_are_the_tokenizer_codes_of_the_masked_patches(datamodule):
    task, batch = _task(datamodule), _batch(datamodule)
    images = batch["images"]
    codes = datamodule.visual_tokenizer.get_codebook_indices(images["image"] * 0.5 + 0.5)
    assert torch.equal(task.visual_targets(images), codes)
    out = task.kind_outputs("images", images)
    assert torch.equal(out["targets"]["mim"], codes[images["image_mask"]])
    # Pre-computed tokens in the batch win over the tokenizer.
    fake = torch.randint(0, 32, codes.shape)
    assert torch.equal(task.visual_targets({**images, "visual_tokens": fake}), fake)


def test_losses_are_cross_entropies_at_masked_positions_weighted_per_kind(datamodule):
    task, batch = _task(datamodule, loss_weights={"images": 2.0, "texts": 1.0, "pairs": 0.5}), _batch(datamodule)
    model = task.model
    pairs = batch["pairs"]
    text_mask = pairs["mlm_labels"] != IGNORE_INDEX
    logits = model(pairs["image"], pairs["image_mask"], pairs["language_tokens"], pairs["padding_mask"], text_mask)
    codes = datamodule.visual_tokenizer.get_codebook_indices(pairs["image"] * 0.5 + 0.5)
    expected_pair = F.cross_entropy(logits["mlm"], pairs["mlm_labels"][text_mask]) + F.cross_entropy(
        logits["mim"], codes[pairs["image_mask"]]
    )
    outputs = {kind: task.kind_outputs(kind, b) for kind, b in batch.items()}
    torch.testing.assert_close(outputs["pairs"]["loss"], expected_pair)
    task.trainer = None  # training_step logs through self.log; a bare module only needs the loss
    total = (2.0 * outputs["images"]["loss"] + outputs["texts"]["loss"] + 0.5 * outputs["pairs"]["loss"]) / 3.5
    torch.testing.assert_close(task.weighted_loss({k: o["loss"] for k, o in outputs.items()}), total)


def test_a_mixed_step_reaches_every_parameter_and_the_loss_falls(datamodule):
    task, batch = _task(datamodule), _batch(datamodule)
    optimizer = torch.optim.AdamW(task.parameters(), lr=2e-3)
    losses = []
    for step in range(25):
        loss = task.weighted_loss({kind: task.kind_outputs(kind, b)["loss"] for kind, b in batch.items()})
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            no_grad = [n for n, p in task.named_parameters() if p.requires_grad and (p.grad is None or
                                                                                      not p.grad.any())]  # fmt: skip
            assert no_grad == []  # the vision mask token included
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


def test_codebook_and_grid_must_match_the_tokenizer(datamodule):
    with pytest.raises(ValueError, match="visual tokenizer has 32 codes but the model's MIM head predicts 128"):
        PretrainingTask(img_size=48, vocab_size=datamodule.tokenizer.vocab_size, codebook_size=128).attach_data(
            datamodule
        )
    with pytest.raises(ValueError, match="patch grid"):
        PretrainingTask(img_size=64, vocab_size=datamodule.tokenizer.vocab_size, codebook_size=32).attach_data(
            datamodule
        )


@pytest.mark.parametrize("task_class", [VQATask, RetrievalTask, NLVR2Task])
def test_pretrained_backbone_loads_into_fine_tuning_tasks_unchanged(datamodule, task_class, tmp_path: Path):
    pretrained = _task(datamodule)
    path = tmp_path / "pretrained.pt"
    torch.save({"model": pretrained.model.state_dict()}, path)  # the official release layout
    kwargs = {"num_classes": 5} if task_class is VQATask else {}
    task = task_class(img_size=48, vocab_size=datamodule.tokenizer.vocab_size, init_from=str(path), **kwargs)
    backbone = {k: v for k, v in pretrained.model.state_dict().items() if k.startswith("beit3.")}
    loaded = task.model.state_dict()
    for key, value in backbone.items():
        if key in loaded:  # VQA has no final encoder LayerNorm
            assert torch.equal(loaded[key], value), key
    assert {k for k in backbone if k not in loaded} <= {k for k in backbone if "encoder.layer_norm" in k}


def test_continue_pretraining_from_an_official_layout_checkpoint(datamodule, tmp_path: Path):
    source = _task(datamodule)
    # An official pretrained file: {"model": {"beit3.*": ...}} without our heads.
    official = {k: v for k, v in source.model.state_dict().items() if k.startswith("beit3.")}
    torch.save({"model": official}, tmp_path / "beit3_tiny_patch16_48.pth")
    report = load_checkpoint(_task(datamodule).model, tmp_path / "beit3_tiny_patch16_48.pth", backbone_only=True)
    assert report.missing == [] and report.unexpected == []
    assert sorted(report.allowed_missing) == ["mim_head.bias", "mim_head.weight", "mlm_head.bias", "mlm_head.weight"]
    continued = PretrainingTask(img_size=48, vocab_size=datamodule.tokenizer.vocab_size, codebook_size=32,
                                init_from=str(tmp_path / "beit3_tiny_patch16_48.pth"))  # fmt: skip
    for key, value in official.items():
        assert torch.equal(continued.model.state_dict()[key], value), key


def test_heads_read_the_encoder_at_the_masked_positions(datamodule):
    task, batch = _task(datamodule), _batch(datamodule)
    pairs = batch["pairs"]
    text_mask = pairs["mlm_labels"] != IGNORE_INDEX
    task.model.eval()
    logits = task.model(pairs["image"], pairs["image_mask"], pairs["language_tokens"], pairs["padding_mask"], text_mask)
    encoded = task.model.beit3(
        textual_tokens=pairs["language_tokens"], visual_tokens=pairs["image"],
        text_padding_position=pairs["padding_mask"], vision_masked_position=pairs["image_mask"],
    )["encoder_out"]  # fmt: skip
    patches, text = encoded[:, 1:10], encoded[:, 10:]  # 48 px / 16 = 9 patches after the CLS token
    torch.testing.assert_close(logits["mim"], task.model.mim_head(patches[pairs["image_mask"]]))
    torch.testing.assert_close(logits["mlm"], task.model.mlm_head(text[text_mask]))
    # Masked patches enter as the mask token: the unmasked input gives other encodings.
    plain = task.model.beit3(visual_tokens=pairs["image"])["encoder_out"][:, 1:10]
    assert not torch.allclose(plain[pairs["image_mask"]], task.model.beit3(
        visual_tokens=pairs["image"], vision_masked_position=pairs["image_mask"])["encoder_out"][:, 1:10][
        pairs["image_mask"]])  # fmt: skip


def test_panels_colour_each_masked_patch_by_its_own_prediction():
    from beit3_lightning.tasks.pretraining_panels import CORRECT, WRONG, image_panel, text_panel

    mask = torch.tensor([[True, False, False, True], [False, True, True, False]])  # 2x2 grids of 16-px patches
    batch = {"image": torch.zeros(2, 3, 32, 32), "image_mask": mask}
    out = {"predictions": {"mim": torch.tensor([1, 2, 3, 9])}, "targets": {"mim": torch.tensor([1, 2, 3, 4])}}
    first, second = image_panel(batch, out, items=2)
    assert first.shape == (3, 32, 64)
    right_half = lambda picture, row, col: picture[:, row * 16 + 8, 32 + col * 16 + 8]  # noqa: E731
    assert torch.allclose(right_half(first, 0, 0), CORRECT) and torch.allclose(right_half(first, 1, 1), CORRECT)
    assert torch.allclose(right_half(second, 0, 1), CORRECT) and torch.allclose(right_half(second, 1, 0), WRONG)
    assert torch.allclose(right_half(second, 0, 0), torch.full((3,), 0.25))  # unmasked: the image, dimmed
    assert torch.allclose(first[:, 8, 8], torch.full((3,), 0.5 * 0.35))  # masked patch shaded on the left

    labels = torch.tensor([[-100, 5, -100, 6], [-100, -100, 7, -100]])
    text_batch = {"mlm_labels": labels, "language_tokens": torch.tensor([[0, 4, 9, 4], [0, 8, 4, 2]])}
    text_out = {"predictions": {"mlm": torch.tensor([5, 1, 3])}}
    decode = lambda ids: " ".join(f"w{i}" for i in ids.tolist())  # noqa: E731
    lines = text_panel(text_batch, text_out, decode, items=2)
    assert lines[0].endswith("true -> predicted: w5 -> w5, w6 -> w1")
    assert lines[1].endswith("true -> predicted: w7 -> w3")
