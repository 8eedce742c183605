"""Model registry: official names, task → name/head mapping, create_model overrides and errors."""

from __future__ import annotations

import pytest
import torch

from beit3_lightning.modeling.config import Beit3Config
from beit3_lightning.modeling.heads import (
    Beit3ForCaptioning,
    Beit3ForImageClassification,
    Beit3ForPretraining,
    Beit3ForRetrieval,
    Beit3ForSemanticSegmentation,
    Beit3ForVisualQuestionAnswering,
    Beit3ForVisualReasoning,
)
from beit3_lightning.modeling.registry import (
    create_model,
    get_model_spec,
    head_class_for_task,
    list_models,
    model_name_for_task,
)

OFFICIAL_NAMES = [  # the 15 models registered in unilm beit3/modeling_finetune.py
    "beit3_base_patch16_224_captioning",
    "beit3_base_patch16_224_imageclassification",
    "beit3_base_patch16_224_nlvr2",
    "beit3_base_patch16_224_retrieval",
    "beit3_base_patch16_384_retrieval",
    "beit3_base_patch16_384_vqav2",
    "beit3_base_patch16_480_captioning",
    "beit3_base_patch16_480_vqav2",
    "beit3_large_patch16_224_imageclassification",
    "beit3_large_patch16_224_nlvr2",
    "beit3_large_patch16_384_retrieval",
    "beit3_large_patch16_384_vqav2",
    "beit3_large_patch16_480_captioning",
    "beit3_large_patch16_480_vqav2",
    "beit3_large_patch16_768_vqav2",
]
HEAD_BY_SUFFIX = {
    "imageclassification": Beit3ForImageClassification,
    "nlvr2": Beit3ForVisualReasoning,
    "vqav2": Beit3ForVisualQuestionAnswering,
    "captioning": Beit3ForCaptioning,
    "retrieval": Beit3ForRetrieval,
    "pretraining": Beit3ForPretraining,
    "segmentation": Beit3ForSemanticSegmentation,
}


def test_official_names_are_exactly_the_reference_fifteen():
    assert list_models(official_only=True) == OFFICIAL_NAMES
    assert list_models("beit3_tiny_*") == [f"beit3_tiny_patch16_48_{s}" for s in sorted(HEAD_BY_SUFFIX)]
    assert "beit3_large_patch16_224_retrieval" in list_models("*_retrieval")  # our zero-shot ITC extra
    assert "beit3_large_patch16_224_captioning" not in list_models()
    # The pretrained release checkpoints' architecture (masked data modeling heads): not fine-tuned names.
    assert list_models("*_pretraining") == [f"beit3_{s}_patch16_{i}_pretraining" for s, i in
                                            (("base", 224), ("large", 224), ("tiny", 48))]  # fmt: skip


@pytest.mark.parametrize("name", OFFICIAL_NAMES)
def test_every_official_name_builds_its_head_at_its_size(name):
    with torch.device("meta"):
        model = create_model(name)
    size, img, suffix = name.split("_")[1], int(name.split("_")[3]), name.split("_")[4]
    assert type(model) is HEAD_BY_SUFFIX[suffix]
    assert model.beit3.vision_embed.img_size == img == get_model_spec(name).img_size
    assert model.config.embed_dim == {"base": 768, "large": 1024}[size]
    assert (model.beit3.encoder.layer_norm is None) == (suffix in ("imageclassification", "vqav2"))
    classes = {"imageclassification": 1000, "nlvr2": 2, "vqav2": 3129}
    if suffix in classes:
        assert list(model.parameters())[-1].shape == (classes[suffix],)  # last head bias


def test_tiny_models_build_and_run():
    # With a sample-data vocabulary the tiny models stay small (the 64010-row text table alone is 8.2 M).
    model = create_model("beit3_tiny_patch16_48_imageclassification", num_classes=4, vocab_size=2000).eval()
    assert model(torch.randn(2, 3, 48, 48)).shape == (2, 4)
    assert sum(p.numel() for p in model.parameters()) < 3_000_000


@pytest.mark.parametrize(
    ("model", "task", "expected"),
    [
        ("beit3_base_patch16_480", "coco_captioning", "beit3_base_patch16_480_captioning"),
        ("beit3_base_patch16_480", "nocaps", "beit3_base_patch16_480_captioning"),
        ("beit3_base_patch16_384", "flickr30k", "beit3_base_patch16_384_retrieval"),
        ("beit3_large_patch16_384", "coco_retrieval", "beit3_large_patch16_384_retrieval"),
        ("beit3_base_patch16_224", "imagenet", "beit3_base_patch16_224_imageclassification"),
        ("beit3_base_patch16_480", "vqav2", "beit3_base_patch16_480_vqav2"),
        ("beit3_base_patch16_224", "nlvr2", "beit3_base_patch16_224_nlvr2"),
        ("beit3_base_patch16_480_vqav2", "vqav2", "beit3_base_patch16_480_vqav2"),
        # The reference would append "_captioning" a second time here (it tests endswith(task)).
        ("beit3_base_patch16_480_captioning", "coco_captioning", "beit3_base_patch16_480_captioning"),
    ],
)
def test_model_name_for_task(model, task, expected):
    assert model_name_for_task(model, task) == expected


def test_head_class_for_task():
    expected = {
        "imagenet": Beit3ForImageClassification,
        "vqav2": Beit3ForVisualQuestionAnswering,
        "nlvr2": Beit3ForVisualReasoning,
        "coco_captioning": Beit3ForCaptioning,
        "nocaps": Beit3ForCaptioning,
        "coco_retrieval": Beit3ForRetrieval,
        "flickr30k": Beit3ForRetrieval,
    }
    assert {task: head_class_for_task(task) for task in expected} == expected


def test_create_model_overrides_and_official_aliases():
    with torch.device("meta"):
        model = create_model(
            "beit3_base_patch16_480_vqav2", drop_path=0.2, checkpoint_activations=True, vocab_size=64002, num_classes=10
        )
    assert model.config.drop_path_rate == 0.2
    assert model.beit3.grad_checkpointing is True
    assert model.beit3.text_embed.weight.shape == (64002, 768)
    assert model.head[3].out_features == 10


def test_create_model_errors_are_clear():
    with pytest.raises(ValueError, match=r"unknown model 'beit3_base_patch16_999_vqav2'.*beit3_base_patch16_384_vqav2"):
        create_model("beit3_base_patch16_999_vqav2")
    with pytest.raises(ValueError, match="img_size is fixed by the model name"):
        create_model("beit3_tiny_patch16_48_vqav2", img_size=64)
    with pytest.raises(ValueError, match=r"unknown argument 'num_clases'.*num_classes"):
        create_model("beit3_tiny_patch16_48_vqav2", num_clases=3)
    with pytest.raises(ValueError, match="unknown argument 'num_classes'"):  # captioning has no class count
        create_model("beit3_tiny_patch16_48_captioning", num_classes=3)
    with pytest.raises(ValueError, match="unknown task 'coco'.*coco_captioning"):
        model_name_for_task("beit3_base_patch16_224", "coco")


def test_a_size_given_twice_must_agree():
    with pytest.raises(ValueError, match="names image size 480 but img_size=384"):
        Beit3Config.from_name("beit3_base_patch16_480", img_size=384)
    assert Beit3Config.from_name("beit3_base_patch16_480", img_size=480).img_size == 480
    assert Beit3Config.from_name("base", img_size=384).img_size == 384  # the preset alone takes any size
