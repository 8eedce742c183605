"""Loading official-layout checkpoints: file formats, fp16, resolution change, strictness and reports."""

from __future__ import annotations

import pickle

import pytest
import torch
from golden import GOLDEN_FILES, golden_config, load_golden
from safetensors.torch import save_file
from torch import nn

from beit3_lightning.modeling import Beit3Backbone
from beit3_lightning.modeling.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_checkpoint,
    read_state_dict,
    resize_vision_pos_embed,
)


class TinyTaskModel(nn.Module):
    """Stands for a task model: the backbone as ``beit3`` plus a ``head`` (official key layout)."""

    def __init__(self, config, num_classes=5):
        super().__init__()
        self.beit3 = Beit3Backbone(config)
        self.head = nn.Linear(config.embed_dim, num_classes)

    def forward(self, images):
        return self.head(self.beit3(visual_tokens=images)["encoder_out"][:, 0])


@pytest.fixture
def golden():
    return load_golden(GOLDEN_FILES[0])


def official_checkpoint(golden, head=None, dtype=torch.float32):
    """An official-layout file content: {"model": {"beit3." + k: v, "head.*": ...}}."""
    model = {k: v.to(dtype) for k, v in golden["checkpoint"]["model"].items()}
    if head is not None:
        model.update({f"head.{k}": v.to(dtype) for k, v in head.state_dict().items()})
    return {"model": model}


def image_output(model, golden):
    with torch.no_grad():
        return model.beit3(**golden["cases"]["image_only"]["inputs"])["encoder_out"]


@pytest.mark.parametrize("entry", ["model", "module", None])
def test_official_pth_loads_into_task_model_and_reproduces_reference(tmp_path, golden, entry):
    head = nn.Linear(64, 5)
    content = official_checkpoint(golden, head)
    if entry is None:
        content = content["model"]  # a raw state dict
    elif entry == "module":
        content = {"module": content["model"], "epoch": 3}  # DeepSpeed mp_rank_00_model_states.pt layout
    path = tmp_path / "beit3.pth"
    torch.save(content, path)
    model = TinyTaskModel(golden_config(golden)).eval()
    report = load_checkpoint(model, path)
    assert report.ok and not report.allowed_missing and not report.resized
    torch.testing.assert_close(model.head.weight, head.weight)
    out = image_output(model, golden)
    torch.testing.assert_close(out, golden["cases"]["image_only"]["outputs"]["encoder_out"], rtol=1e-5, atol=1e-5)


def test_bare_backbone_takes_prefixed_keys(tmp_path, golden):
    path = tmp_path / "b.pth"
    torch.save(official_checkpoint(golden), path)
    backbone = Beit3Backbone(golden_config(golden)).eval()
    load_checkpoint(backbone, path)
    for key, value in golden["state_dict"].items():
        torch.testing.assert_close(backbone.state_dict()[key], value)


def test_fp16_checkpoint_is_cast_and_resized_to_another_resolution(tmp_path, golden):
    """Official files contain fp16 tensors; loading at another image size resizes the vision table in fp32."""
    path = tmp_path / "fp16.pth"
    torch.save(official_checkpoint(golden, dtype=torch.float16), path)
    config = golden_config(golden).replace(img_size=48)  # 4x4 -> 6x6 patches
    model = TinyTaskModel(config)
    report = load_checkpoint(model, path, allow_missing=["head.*"])
    assert report.cast_to_fp32 == len(golden["checkpoint"]["model"])
    assert report.resized == ["beit3.encoder.embed_positions.A.weight: (19, 64) -> (39, 64)"]
    assert sorted(report.allowed_missing) == ["head.bias", "head.weight"]
    table = model.beit3.encoder.embed_positions.A.weight
    assert table.dtype == torch.float32 and table.shape == (39, 64)
    original = golden["state_dict"]["encoder.embed_positions.A.weight"].half().float()
    torch.testing.assert_close(table[:3], original[:3])  # offset rows + CLS kept as they are
    expected = torch.nn.functional.interpolate(
        original[3:].reshape(1, 4, 4, 64).permute(0, 3, 1, 2), size=(6, 6), mode="bicubic", align_corners=False
    )
    torch.testing.assert_close(table[3:], expected.permute(0, 2, 3, 1).reshape(36, 64))
    out = model.beit3(visual_tokens=torch.randn(1, 3, 48, 48))["encoder_out"]
    assert out.shape == (1, 37, 64) and torch.isfinite(out).all()


def test_resize_round_trip_to_same_size_is_identity(golden):
    table = golden["state_dict"]["encoder.embed_positions.A.weight"]
    torch.testing.assert_close(resize_vision_pos_embed(table, 16), table)
    with pytest.raises(CheckpointError, match="3 \\+ a square number"):
        resize_vision_pos_embed(table[:-1], 16)


def test_lightning_ckpt_and_safetensors(tmp_path, golden):
    source = TinyTaskModel(golden_config(golden))
    ckpt = {
        "state_dict": {f"model.{k}": v for k, v in source.state_dict().items()},
        "pytorch-lightning_version": "2.6.0",
        "epoch": 1,
    }
    torch.save(ckpt, tmp_path / "last.ckpt")
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    for name in ("last.ckpt", "w.safetensors"):
        target = TinyTaskModel(golden_config(golden))
        assert load_checkpoint(target, tmp_path / name).ok
        for key, value in source.state_dict().items():
            torch.testing.assert_close(target.state_dict()[key], value)


def test_final_layernorm_is_a_benign_difference(tmp_path, golden):
    """ImageNet/VQAv2 models have no final LayerNorm; the checkpoint's is allowed as unexpected."""
    model = TinyTaskModel(golden_config(golden).replace(normalize_output=False))
    report = load_checkpoint(model, official_checkpoint(golden, nn.Linear(64, 5)))
    assert report.ok
    assert sorted(report.allowed_unexpected) == [
        "beit3.encoder.layer_norm.A.bias",
        "beit3.encoder.layer_norm.A.weight",
        "beit3.encoder.layer_norm.B.bias",
        "beit3.encoder.layer_norm.B.weight",
    ]


def test_missing_and_unexpected_keys_are_named_and_strict_refuses(golden):
    state = official_checkpoint(golden, nn.Linear(64, 5))["model"]
    del state["beit3.encoder.layers.1.ffn.B.fc2.bias"]
    state["mlm_head.weight"] = torch.zeros(3)
    model = TinyTaskModel(golden_config(golden))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(model, state)
    message = str(err.value)
    assert "beit3.encoder.layers.1.ffn.B.fc2.bias" in message and "mlm_head.weight" in message
    for key, value in model.state_dict().items():  # refused before anything was copied
        assert torch.equal(value, before[key])
    report = load_checkpoint(model, state, strict=False)
    assert report.missing == ["beit3.encoder.layers.1.ffn.B.fc2.bias"] and report.unexpected == ["mlm_head.weight"]
    assert load_checkpoint(model, state, allow_missing=["*.fc2.bias"], allow_unexpected=["mlm_head.*"]).ok


def test_head_with_other_shape_is_dropped_other_mismatches_raise(golden):
    state = official_checkpoint(golden, nn.Linear(64, 1000))["model"]  # e.g. ImageNet-1k head into 5 classes
    model = TinyTaskModel(golden_config(golden), num_classes=5)
    report = load_checkpoint(model, state, allow_missing=["head.*"])
    assert report.dropped == [
        "head.weight: checkpoint (1000, 64) vs model (5, 64)",
        "head.bias: checkpoint (1000,) vs model (5,)",
    ]
    state["beit3.text_embed.weight"] = torch.zeros(7, 64)
    with pytest.raises(CheckpointError, match=r"beit3.text_embed.weight: checkpoint \(7, 64\) vs model \(100, 64\)"):
        load_checkpoint(model, state, allow_missing=["head.*"])


class NotAllowed:
    pass


def test_files_needing_arbitrary_pickle_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        torch.save({"model": {"x": torch.zeros(1)}, "args": NotAllowed()}, f, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        read_state_dict(path)


def test_unreadable_and_missing_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read_state_dict(tmp_path / "junk.pth")
    torch.save({"model": {"a": 1}}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="not tensors"):
        read_state_dict(tmp_path / "odd.pth")


def test_backbone_only_initialisation_from_another_tasks_checkpoint(golden):
    """Pretrained or other-task files: backbone strict, heads missing/extra/reshaped are reported, not fatal."""
    state = official_checkpoint(golden, nn.Linear(64, 1000))["model"]
    state["mlm_head.weight"] = torch.zeros(100, 64)
    model = TinyTaskModel(golden_config(golden), num_classes=5)
    report = load_checkpoint(model, state, backbone_only=True)
    assert report.ok and report.allowed_unexpected == ["mlm_head.weight"]
    assert [d.split(":")[0] for d in report.dropped] == ["head.weight", "head.bias"]
    del state["beit3.encoder.layers.0.ffn.A.fc1.weight"]
    with pytest.raises(CheckpointError, match="beit3.encoder.layers.0.ffn.A.fc1.weight"):
        load_checkpoint(model, state, backbone_only=True)


def test_read_checkpoint_of_a_lightning_file_returns_weights_and_both_hyper_parameter_sets(tmp_path) -> None:
    weight = torch.randn(3, 2)
    path = tmp_path / "task.ckpt"
    torch.save(
        {
            "pytorch-lightning_version": "2.5.0",
            "state_dict": {"model.beit3.some.weight": weight, "other.buffer": torch.zeros(1)},
            "hyper_parameters": {"model": "tiny", "num_beams": 2},
            "datamodule_hyper_parameters": {"tokenizer": "sample", "max_text_len": 24},
        },
        path,
    )
    loaded = read_checkpoint(path)
    assert list(loaded.state) == ["beit3.some.weight"] and torch.equal(loaded.state["beit3.some.weight"], weight)
    assert loaded.hparams == {"model": "tiny", "num_beams": 2}
    assert loaded.data_hparams == {"tokenizer": "sample", "max_text_len": 24}
    assert read_state_dict(path).keys() == loaded.state.keys()


def test_a_lightning_file_without_model_weights_is_refused_by_name(tmp_path) -> None:
    path = tmp_path / "foreign.ckpt"
    torch.save({"pytorch-lightning_version": "2.5.0", "state_dict": {"net.weight": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match=r"foreign\.ckpt is a Lightning checkpoint without 'model\.\*' weights"):
        read_checkpoint(path)
