"""The segmentation model: shapes of neck and heads, feature layers, unused parameters, checkpoint loading."""

from __future__ import annotations

import pytest
import torch

from beit3_lightning.modeling import Beit3Config
from beit3_lightning.modeling.checkpoint import load_checkpoint
from beit3_lightning.modeling.heads import Beit3ForPretraining, Beit3ForSemanticSegmentation
from beit3_lightning.modeling.heads.segmentation import Feature2Pyramid, default_out_indices


def tiny(img_size: int = 64, **kwargs) -> Beit3ForSemanticSegmentation:
    torch.manual_seed(0)
    return Beit3ForSemanticSegmentation(Beit3Config.from_name("tiny", img_size=img_size), num_classes=5, **kwargs)


def test_neck_rescales_each_level_by_4_2_1_half():
    neck = Feature2Pyramid(8).eval()
    levels = neck([torch.randn(2, 8, 6, 6) for _ in range(4)])
    assert [tuple(x.shape) for x in levels] == [(2, 8, 24, 24), (2, 8, 12, 12), (2, 8, 6, 6), (2, 8, 3, 3)]


def test_logits_are_at_a_quarter_of_the_crop_and_aux_only_in_training():
    model = tiny(96)
    out = model(torch.randn(2, 3, 96, 96))  # training mode
    assert out["logits"].shape == (2, 5, 24, 24) and out["aux_logits"].shape == (2, 5, 6, 6)
    model.eval()
    assert set(model(torch.randn(1, 3, 96, 96))) == {"logits"}
    assert "aux_logits" not in tiny(aux_channels=0)(torch.randn(2, 3, 64, 64))


def test_default_feature_layers_are_the_official_ones():
    assert default_out_indices(12) == (3, 5, 7, 11) and default_out_indices(24) == (7, 11, 15, 23)
    assert default_out_indices(4) == (0, 1, 2, 3) and default_out_indices(8) == (1, 3, 5, 7)
    with pytest.raises(ValueError, match="4 layer indices"):
        tiny(out_indices=(0, 1, 2, 9))


def test_features_are_the_chosen_layers_outputs_without_cls():
    model = tiny().eval()
    image = torch.randn(1, 3, 64, 64)
    hidden = model.beit3(visual_tokens=image, return_hidden_states=True)["hidden_states"]
    features = model.features(image)
    for level, layer in zip(features, model.out_indices):
        tokens = hidden[layer + 1][:, 1:]  # after layer `layer`, patches only
        assert torch.equal(level, tokens.transpose(1, 2).reshape(1, -1, 4, 4))
    # Patch (row 1, column 2) of the 4x4 grid is token 1 + 1*4 + 2 of the sequence (CLS first).
    assert torch.equal(features[0][0, :, 1, 2], hidden[model.out_indices[0] + 1][0, 1 + 4 + 2])


def test_every_parameter_but_the_unused_ones_gets_a_gradient():
    model = tiny(out_indices=(0, 1, 1, 2)).train()  # layer 3 feeds nothing: unused
    out = model(torch.randn(2, 3, 64, 64))
    (out["logits"].square().mean() + out["aux_logits"].square().mean()).backward()
    no_grad = {name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0}
    assert no_grad == model.unused_parameter_names()
    assert any(name.startswith("beit3.encoder.layers.3.") for name in no_grad)


def test_a_pretrained_checkpoint_fills_the_whole_backbone_with_a_resized_position_table():
    torch.manual_seed(1)
    pretrained = Beit3ForPretraining(Beit3Config.from_name("tiny", img_size=48), codebook_size=16)
    model = tiny(64)
    report = load_checkpoint(model, {"model": pretrained.state_dict()}, backbone_only=True)
    assert not report.missing and not report.unexpected
    assert all(not key.startswith("beit3.") for key in report.allowed_missing)  # only the heads are new
    assert report.resized and "embed_positions.A.weight" in report.resized[0]
    assert torch.equal(
        model.beit3.encoder.layers[2].ffn.A.fc1.weight, pretrained.beit3.encoder.layers[2].ffn.A.fc1.weight
    )
