"""Every YAML under configs/ goes through the real ``beit3`` parser; the official recipes carry the hyper-parameters
of unilm ``beit3/get_started/*.md`` (docs/reference.md#fine-tuning-recipes); the sample configs also instantiate;
the trainer presets combine with a recipe."""

from __future__ import annotations

import io
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import yaml

from beit3_lightning.callbacks import PredictionWriter, TensorBoardSamples
from beit3_lightning.cli import main, make_cli
from beit3_lightning.data.datamodules import (
    CaptioningDataModule,
    ImageNetDataModule,
    NLVR2DataModule,
    RetrievalDataModule,
    VQAv2DataModule,
)
from beit3_lightning.modeling import Beit3Config
from beit3_lightning.modeling.layers import EncoderLayer
from beit3_lightning.tasks import CaptioningTask, ImageClassificationTask, NLVR2Task, RetrievalTask, VQATask

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# unilm beit3/get_started/*.md (docs/reference.md#fine-tuning-recipes), typed in by hand: global batch, lr,
# layer_decay, epochs, warmup epochs, drop_path, weight decay, gradient checkpointing (--checkpoint_activations).
OFFICIAL = {
    "imagenet/base_224": (1024, 7e-4, 0.65, 50, 5, 0.15, 0.05, False),
    "imagenet/large_224": (1024, 2e-4, 0.8, 50, 5, 0.25, 0.05, True),
    "vqav2/base_480": (128, 3e-5, 1.0, 10, 1, 0.1, 0.01, False),
    "vqav2/large_480": (128, 2e-5, 1.0, 10, 1, 0.15, 0.01, True),
    "vqav2/large_768": (128, 2e-5, 1.0, 10, 1, 0.15, 0.01, True),
    "nlvr2/base_224": (256, 7e-4, 0.65, 20, 5, 0.2, 0.2, False),
    "nlvr2/large_224": (256, 3e-4, 0.85, 20, 5, 0.2, 0.2, True),
    "coco_captioning/base_480": (256, 4e-5, 1.0, 10, 1, 0.1, 0.05, True),
    "coco_captioning/large_480": (256, 8e-6, 1.0, 10, 1, 0.1, 0.05, True),
    "nocaps/base_480": (256, 1e-5, 1.0, 10, 1, 0.1, 0.05, True),
    "nocaps/large_480": (256, 8e-6, 1.0, 10, 1, 0.1, 0.05, True),
    "coco_retrieval/base_384": (3072, 2e-4, 0.65, 15, 3, 0.2, 0.05, True),
    "coco_retrieval/large_384": (3072, 5e-5, 0.85, 15, 3, 0.2, 0.05, True),
    "flickr30k/base_384": (3072, 1e-4, 0.65, 20, 5, 0.2, 0.05, True),
    "flickr30k/large_384": (3072, 5e-5, 0.85, 20, 5, 0.2, 0.05, True),
}
# Released pretrained files a recipe may start from (docs/reference.md#released-checkpoints), plus the released
# 768 px VQA model.
RELEASED = {
    f"beit3_{size}_{kind}patch16_224.pth" for size in ("base", "large") for kind in ("", "itc_", "indomain_")
} | {"beit3_large_indomain_patch16_768_vgqaaug_vqa.pth"}
SAMPLES = {
    "vqav2": (VQATask, VQAv2DataModule),
    "nlvr2": (NLVR2Task, NLVR2DataModule),
    "imagenet": (ImageClassificationTask, ImageNetDataModule),
    "coco_captioning": (CaptioningTask, CaptioningDataModule),
    "nocaps": (CaptioningTask, CaptioningDataModule),
    "coco_retrieval": (RetrievalTask, RetrievalDataModule),
    "flickr30k": (RetrievalTask, RetrievalDataModule),
}
# mmseg configs/beit (BEiT v2 base recipe; the large BEiT recipe): global batch, lr, layer decay, warmup iterations,
# drop path, crop, stride, layers feeding the neck.
SEGMENTATION_RECIPES = {
    "base_512": (16, 4e-4, 0.65, 1500, 0.1, 512, 341, (3, 5, 7, 11)),
    "large_640": (16, 2e-5, 0.95, 3000, 0.2, 640, 426, (7, 11, 15, 23)),
}
SEGMENTATION_DIRS = ("ade20k", "segmentation")
PRESETS = ["cpu", "gpu_bf16", "ddp", "fsdp", "deepspeed", "ddp_multinode", "fsdp_multinode"]


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory) -> Path:
    """Sample datasets are generated here instead of the repository's data/ (seconds)."""
    return tmp_path_factory.mktemp("samples")


def sample_args(name: str, root: Path) -> list[str]:
    args = ["--config", str(CONFIGS / "sample" / f"{name}.yaml"), "--trainer.logger", "false"]
    args += [
        "--data.init_args.root",
        str(root / "sample" / name),
        "--trainer.default_root_dir",
        str(root / "runs" / name),
    ]
    if name == "nocaps":
        args += ["--data.init_args.coco_root", str(root / "sample" / "coco_captioning")]
    return args


@pytest.fixture(scope="module")
def parser(sample_root):
    """The parser of a real ``beit3`` CLI (built once: building it costs seconds, parsing milliseconds)."""
    parser = make_cli(sample_args("vqav2", sample_root), run=False).parser
    parser.exit_on_error = False  # raise instead of printing usage and exiting
    return parser


def test_every_official_recipe_has_a_config():
    skip = ("sample", "trainer", "pretrain", *SEGMENTATION_DIRS)  # recipes with their own tests
    recipes = [p for p in CONFIGS.glob("*/*.yaml") if p.parent.name not in skip]
    found = {f"{p.parent.name}/{p.stem}" for p in recipes}
    assert found == set(OFFICIAL)


@pytest.mark.parametrize("recipe", sorted(OFFICIAL))
def test_recipe_parses_with_the_official_hyper_parameters(parser, recipe):
    cfg = parser.parse_args(["--config", str(CONFIGS / f"{recipe}.yaml")])
    task_dir = recipe.split("/")[0]
    trainer, model, data = cfg.trainer, cfg.model.init_args, cfg.data.init_args
    global_batch, lr, layer_decay, epochs, warmup, drop_path, weight_decay, grad_ckpt = OFFICIAL[recipe]

    assert data.batch_size * trainer.devices * trainer.num_nodes * trainer.accumulate_grad_batches == global_batch
    assert (model.lr, model.layer_decay, model.drop_path) == (lr, layer_decay, drop_path)
    assert model.weight_decay == weight_decay
    assert (trainer.max_epochs, model.warmup_epochs, model.grad_checkpointing) == (epochs, warmup, grad_ckpt)
    assert (cfg.seed_everything, trainer.precision, trainer.accelerator) == (42, "bf16-mixed", "gpu")
    assert (model.min_lr, model.eps) == (1e-6, 1e-8)
    assert (data.root, data.tokenizer) == (f"data/{task_dir}", "beit3.spm")
    assert model.init_from in RELEASED
    # The size is given once, on the data side; the model names the preset only (the CLI links the size over).
    size, resolution = recipe.split("/")[1].split("_")
    assert (model.model, data.img_size) == (size, int(resolution))
    assert Beit3Config.from_name(model.model, img_size=data.img_size).img_size == int(resolution)
    assert Beit3Config.from_name(model.model).embed_dim == {"base": 768, "large": 1024}[size]


@pytest.mark.parametrize("recipe", sorted(OFFICIAL))
def test_recipe_task_specific_settings(parser, recipe):
    cfg = parser.parse_args(["--config", str(CONFIGS / f"{recipe}.yaml")])
    task_dir, model, data = recipe.split("/")[0], cfg.model.init_args, cfg.data.init_args
    betas = tuple(model.betas)
    if task_dir == "vqav2":
        assert (model.head_lr_scale, betas, data.randaug, data.max_text_len) == (20.0, (0.9, 0.98), True, 64)
    else:
        assert (model.head_lr_scale, betas) == (1.0, (0.9, 0.999))
    if task_dir == "imagenet":
        assert (model.mixup, model.cutmix, model.label_smoothing) == (0.8, 1.0, 0.1)
    if task_dir in ("coco_captioning", "nocaps"):
        assert (data.task, data.mask_prob, data.max_text_len, data.randaug) == (task_dir, 0.7, 32, True)
        assert (model.max_len, model.num_beams, model.length_penalty, model.drop_worst_after) == (32, 3, 0.6, 12000)
    if task_dir == "nocaps":
        assert data.coco_root == "data/coco_captioning"
    if task_dir in ("coco_retrieval", "flickr30k"):
        assert data.task == task_dir and not data.randaug
        assert "_itc_" in model.init_from  # retrieval starts from the image-text contrastive checkpoint
        # No accumulation: the contrastive negatives come from one step's gathered batch.
        assert cfg.trainer.accumulate_grad_batches == 1
    if task_dir == "nlvr2":
        assert not data.randaug


@pytest.mark.parametrize("recipe", [f"{d}/{r}" for d in SEGMENTATION_DIRS for r in SEGMENTATION_RECIPES])
def test_segmentation_recipes_carry_the_beit_upernet_settings(parser, recipe):
    from beit3_lightning.data.datamodules import SegmentationDataModule
    from beit3_lightning.modeling.heads.segmentation import default_out_indices
    from beit3_lightning.tasks import SegmentationTask

    cfg = parser.parse_args(["--config", str(CONFIGS / f"{recipe}.yaml")])
    task_dir, name = recipe.split("/")
    trainer, model, data = cfg.trainer, cfg.model.init_args, cfg.data.init_args
    global_batch, lr, layer_decay, warmup, drop_path, crop, stride, layers = SEGMENTATION_RECIPES[name]
    assert cfg.model.class_path.endswith(SegmentationTask.__name__)
    assert cfg.data.class_path.endswith(SegmentationDataModule.__name__) and data.task == task_dir
    assert data.batch_size * trainer.devices * trainer.accumulate_grad_batches == global_batch
    assert (model.lr, model.layer_decay, model.warmup_steps, model.drop_path) == (lr, layer_decay, warmup, drop_path)
    assert (model.weight_decay, tuple(model.betas), model.min_lr, model.poly_power) == (0.05, (0.9, 0.999), 0.0, 1.0)
    assert (data.img_size, model.stride, model.inference, model.aux_loss_weight) == (crop, stride, "slide", 0.4)
    assert (trainer.max_steps, trainer.sync_batchnorm, trainer.precision) == (160000, True, "bf16-mixed")
    size = name.split("_")[0]
    assert model.model == size and default_out_indices(Beit3Config.from_name(size).num_layers) == layers
    assert model.init_from == f"beit3_{size}_patch16_224"  # the pretrained release file, by name


@pytest.mark.parametrize("name", ["ade20k", "segmentation"])
def test_segmentation_sample_configs_instantiate(parser, sample_root, name):
    from beit3_lightning.data.datamodules import SegmentationDataModule
    from beit3_lightning.tasks import SegmentationTask

    init = parser.instantiate_classes(parser.parse_args(sample_args(name, sample_root)))
    assert type(init.model) is SegmentationTask and type(init.data) is SegmentationDataModule
    assert init.model.config.img_size == init.data.img_size == 128
    assert init.model.model.num_classes == init.data.num_classes == len(init.data.class_names) > 2


@pytest.mark.parametrize("preset", PRESETS)
def test_trainer_preset_overrides_a_recipe(parser, preset):
    recipe = ["--config", str(CONFIGS / "vqav2" / "base_480.yaml")]
    cfg = parser.parse_args([*recipe, "--config", str(CONFIGS / "trainer" / f"{preset}.yaml")])
    trainer = cfg.trainer
    # The recipe's model and data survive the preset.
    assert (cfg.model.init_args.lr, cfg.data.init_args.batch_size) == (3e-5, 16)
    if preset == "cpu":
        assert (trainer.accelerator, trainer.devices, trainer.precision) == ("cpu", 1, "32-true")
        assert trainer.strategy == "auto"
    elif preset == "gpu_bf16":
        assert (trainer.accelerator, trainer.devices, trainer.precision) == ("gpu", 1, "bf16-mixed")
    elif preset == "ddp":
        assert trainer.strategy.class_path == "lightning.pytorch.strategies.DDPStrategy"
        assert trainer.strategy.init_args.find_unused_parameters is False
        assert trainer.devices == -1
    elif preset == "fsdp":
        assert trainer.strategy.class_path == "lightning.pytorch.strategies.FSDPStrategy"
        assert trainer.strategy.init_args.auto_wrap_policy == {EncoderLayer}
        assert trainer.strategy.init_args.state_dict_type == "full"
        assert trainer.devices == 8  # kept from the recipe
    elif preset == "ddp_multinode":
        assert trainer.strategy.class_path == "lightning.pytorch.strategies.DDPStrategy"
        assert trainer.strategy.init_args.process_group_backend == "nccl"
        assert (trainer.devices, trainer.num_nodes) == (8, 2)
    elif preset == "fsdp_multinode":
        init = trainer.strategy.init_args
        assert str(init.sharding_strategy).endswith("HYBRID_SHARD")  # jsonargparse gives the enum
        assert tuple(init.device_mesh) == (trainer.num_nodes, trainer.devices)
        assert init.auto_wrap_policy == {EncoderLayer}
    else:
        assert (trainer.strategy, trainer.precision) == ("deepspeed_stage_1", "bf16-mixed")


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_config_instantiates(parser, sample_root, name):
    cfg = parser.parse_args(sample_args(name, sample_root))
    init = parser.instantiate_classes(cfg)
    task_class, datamodule_class = SAMPLES[name]
    assert type(init.model) is task_class and type(init.data) is datamodule_class
    # Links: the data's resolution and tokenizer size reach the model.
    assert init.model.config.img_size == init.data.img_size == 48
    assert init.model.config.vocab_size == init.data.vocab_size
    # The default callbacks of the CLI are built from their --predictions.* / --tb_samples.* arguments.
    assert isinstance(init.predictions, PredictionWriter) and init.predictions.output_dir is None
    assert isinstance(init.tb_samples, TensorBoardSamples) and init.tb_samples.num_samples == 8


def test_print_config_through_main_keeps_the_recipe(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["beit3"])  # LightningCLI warns when args and sys.argv are both given
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(CONFIGS / "nlvr2" / "large_224.yaml"), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(out.getvalue())
    assert printed["model"]["init_args"]["layer_decay"] == 0.85
    assert printed["data"]["init_args"]["batch_size"] * printed["trainer"]["devices"] == 256
    assert printed["predictions"] == {"output_dir": None, "split": None}
    assert printed["tb_samples"]["num_samples"] == 8


def test_unknown_key_in_a_config_is_rejected(parser, tmp_path):
    bad = tmp_path / "bad.yaml"
    text = (CONFIGS / "vqav2" / "base_480.yaml").read_text().replace("layer_decay:", "layer_decya:")
    bad.write_text(text)
    with pytest.raises(Exception, match="layer_decya"):
        parser.parse_args(["--config", str(bad)])


@pytest.mark.parametrize("size", ["base", "large"])
def test_pretraining_recipe_has_the_papers_settings(parser, size):
    from beit3_lightning.data.pretraining_datamodule import split_batch_size

    cfg = parser.parse_args(["--config", str(CONFIGS / "pretrain" / f"{size}_224.yaml")])
    trainer, model, data = cfg.trainer, cfg.model.init_args, cfg.data.init_args
    assert cfg.model.class_path.endswith("PretrainingTask")
    assert cfg.data.class_path.endswith("PretrainDataModule")
    # 6144 a step = 2048 images + 2048 texts + 2048 pairs, over devices x nodes x per-device batch x accumulation.
    assert data.batch_size * trainer.devices * trainer.num_nodes * trainer.accumulate_grad_batches == 6144
    assert split_batch_size(data.batch_size, data.mix) == {"images": 32, "texts": 32, "pairs": 32}
    assert (trainer.max_steps, trainer.precision, cfg.seed_everything) == (1_000_000, "bf16-mixed", 42)
    assert (model.lr, model.warmup_steps, model.weight_decay, model.drop_path) == (1e-3, 10_000, 0.05, 0.1)
    assert (tuple(model.betas), model.eps, model.layer_decay) == ((0.9, 0.98), 1e-6, 1.0)
    assert (data.text_mask_prob, data.pair_text_mask_prob, data.image_mask_ratio) == (0.15, 0.5, 0.4)
    assert (data.min_mask_block, data.img_size, model.model) == (16, 224, size)
    assert data.visual_tokenizer == "vqkd_encoder_base_decoder_3x768x12_clip-d5036aa7.pth"


@pytest.mark.parametrize(("recipe", "monitor", "mode"), [("nlvr2/base_224", "val/acc", "max"),
                                                          ("ade20k/base_512", "val/mIoU", "max")])  # fmt: skip
def test_print_config_shows_the_checkpoint_monitor_and_mode_the_run_uses(monkeypatch, recipe, monitor, mode):
    monkeypatch.setattr(sys, "argv", ["beit3"])
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit):
        main(["fit", "--config", str(CONFIGS / f"{recipe}.yaml"), "--print_config"])
    checkpoint = yaml.safe_load(out.getvalue())["checkpoint"]
    assert (checkpoint["monitor"], checkpoint["mode"], checkpoint["filename"]) == (monitor, mode, "best")
