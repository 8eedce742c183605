"""The task table: everything the package knows per BEiT-3 task, in one place.

Three words, three meanings, used the same way everywhere (code, CLI, docs):

* **dataset** — what the data is and how it is scored: ``imagenet``, ``vqav2``, ``nlvr2``, ``coco_captioning``,
  ``nocaps``, ``coco_retrieval``, ``flickr30k``, ``ade20k`` and ``segmentation`` (a user's own image/mask folders),
  and ``pretrain`` (masked data modeling on any images and
  texts). ``load_model(task=...)``, ``Beit3Processor(task=...)`` and the DataModules' ``task=`` argument take a
  dataset name (or one of its aliases, e.g. ``vqa``).
* **head** — the network on top of the backbone, and the suffix of registered model names:
  ``imageclassification``, ``vqav2``, ``nlvr2``, ``captioning``, ``retrieval``, ``segmentation``,
  ``pretraining``. Several datasets
  share a head (``nocaps`` and ``coco_captioning`` both train ``captioning``).
* **task** — the LightningModule that trains a head (``CaptioningTask``).

A :class:`HeadSpec` per head and a :class:`TaskSpec` per dataset; every other per-task table of the package
(model registry suffixes, checkpoint head keys, predictors, DataModule choices, index builders, sample generators,
benchmarks) is derived from these two. Classes and functions are named by import path (``module:attribute``) and
imported only when asked for, so this module imports nothing beyond the standard library: ``modeling`` (plain
torch) can read the table without pulling in Lightning.

Adding a task = one ``HeadSpec`` (if its head is new) + one ``TaskSpec`` + the files they name.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "DATASETS",
    "HEADS",
    "HeadSpec",
    "TaskSpec",
    "datasets_of_head",
    "get_head",
    "get_task",
    "resolve",
    "resolve_dataset",
]


def resolve(target: str) -> Any:
    """The object a ``"package.module:attribute"`` path names (imported on first use)."""
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class HeadSpec:
    """One task head: its network, the LightningModule that trains it and the predictor that serves it."""

    name: str  # registry suffix: beit3_base_patch16_480_<name>
    model_class: str  # plain-torch head model (modeling/heads)
    task_class: str  # LightningModule (tasks/)
    predictor_class: str | None  # inference predictor (inference/); None: the head is trained, not served
    description: str  # how messages name a checkpoint of this head
    calls: str  # the predictor calls that serve it, for wrong-call messages ("" without a predictor)
    # The last linear layer of a classifier head: its rows are the classes (None: the head has no classes).
    classifier_weight: str | None = None


@dataclass(frozen=True)
class TaskSpec:
    """One dataset: its head, DataModule, key metric, index builder, sample generator and official checkpoints."""

    dataset: str
    head: str
    datamodule_class: str
    key_metric: str  # logged as val/<key_metric>; best.ckpt is chosen by it
    raw_layout: str  # what `beit3 prepare <dataset>` expects under --data-root
    index_builder: str  # data/index/*: raw files -> official *.jsonl indexes
    sample_generator: str  # data/sample/*: the embedded sample in the raw layout
    needs_tokenizer: bool = True  # its index stores token ids
    key_metric_mode: Literal["max", "min"] = "max"
    # Short names users type for this dataset (load_model(task="vqa")).
    aliases: tuple[str, ...] = ()
    # Fine-tuned release files (github.com/addf400/files/releases/download/beit3/<name>).
    official_checkpoints: tuple[str, ...] = ()


HEADS: dict[str, HeadSpec] = {
    spec.name: spec
    for spec in (
        HeadSpec(
            "imageclassification",
            model_class="beit3_lightning.modeling.heads.classification:Beit3ForImageClassification",
            task_class="beit3_lightning.tasks.classification:ImageClassificationTask",
            predictor_class="beit3_lightning.inference.classification:ImageClassificationPredictor",
            description="an image-classification (ImageNet) model",
            calls="classify()",
            classifier_weight="head.weight",
        ),
        HeadSpec(
            "vqav2",
            model_class="beit3_lightning.modeling.heads.vqa:Beit3ForVisualQuestionAnswering",
            task_class="beit3_lightning.tasks.vqa:VQATask",
            predictor_class="beit3_lightning.inference.vqa:VQAPredictor",
            description="a VQA model",
            calls="answer()",
            classifier_weight="head.3.weight",
        ),
        HeadSpec(
            "nlvr2",
            model_class="beit3_lightning.modeling.heads.reasoning:Beit3ForVisualReasoning",
            task_class="beit3_lightning.tasks.nlvr2:NLVR2Task",
            predictor_class="beit3_lightning.inference.reasoning:NLVR2Predictor",
            description="an NLVR2 (visual reasoning) model",
            calls="verify()",
        ),
        HeadSpec(
            "captioning",
            model_class="beit3_lightning.modeling.heads.captioning:Beit3ForCaptioning",
            task_class="beit3_lightning.tasks.captioning:CaptioningTask",
            predictor_class="beit3_lightning.inference.captioning:CaptioningPredictor",
            description="a captioning model",
            calls="caption()",
        ),
        HeadSpec(
            "retrieval",
            model_class="beit3_lightning.modeling.heads.retrieval:Beit3ForRetrieval",
            task_class="beit3_lightning.tasks.retrieval:RetrievalTask",
            predictor_class="beit3_lightning.inference.retrieval:RetrievalPredictor",
            description="a retrieval (image-text embedding) model",
            calls="encode_image(), encode_text() or rank()",
        ),
        HeadSpec(
            "segmentation",
            model_class="beit3_lightning.modeling.heads.segmentation:Beit3ForSemanticSegmentation",
            task_class="beit3_lightning.tasks.segmentation:SegmentationTask",
            predictor_class="beit3_lightning.inference.segmentation:SegmentationPredictor",
            description="a semantic-segmentation (UperNet) model",
            calls="segment()",
            classifier_weight="decode_head.conv_seg.weight",
        ),
        HeadSpec(
            "pretraining",
            model_class="beit3_lightning.modeling.heads.pretraining:Beit3ForPretraining",
            task_class="beit3_lightning.tasks.pretraining:PretrainingTask",
            predictor_class=None,
            description="a pretraining (masked data modeling) model",
            calls="",
        ),
    )
}

_INDEX = "beit3_lightning.data.index"
_SAMPLE = "beit3_lightning.data.sample"
_DM = "beit3_lightning.data.datamodules"
_KARPATHY_COCO = "train2014/, val2014/ COCO images and the Karpathy dataset_coco.json"

DATASETS: dict[str, TaskSpec] = {
    spec.dataset: spec
    for spec in (
        TaskSpec(
            "imagenet",
            head="imageclassification",
            datamodule_class=f"{_DM}:ImageNetDataModule",
            key_metric="acc1",
            raw_layout="train/<class>/*.JPEG and val/<class>/*.JPEG (ImageFolder)",
            index_builder=f"{_INDEX}.imagenet:build_imagenet_index",
            sample_generator=f"{_SAMPLE}.imagenet:generate_imagenet",
            needs_tokenizer=False,
            aliases=("classification", "imageclassification"),
            official_checkpoints=("beit3_base_patch16_224_in1k.pth", "beit3_large_patch16_224_in1k.pth"),
        ),
        TaskSpec(
            "nlvr2",
            head="nlvr2",
            datamodule_class=f"{_DM}:NLVR2DataModule",
            key_metric="acc",
            raw_layout="images/train/<dir>/*.png, dev/*.png, test1/*.png and the lil-lab nlvr repo (nlvr2/data/*.json)",
            index_builder=f"{_INDEX}.nlvr2:build_nlvr2_index",
            sample_generator=f"{_SAMPLE}.nlvr2:generate_nlvr2",
            official_checkpoints=("beit3_base_patch16_224_nlvr2.pth", "beit3_large_patch16_224_nlvr2.pth"),
        ),
        TaskSpec(
            "vqav2",
            head="vqav2",
            datamodule_class=f"{_DM}:VQAv2DataModule",
            key_metric="score",
            raw_layout="train2014/, val2014/, test2015/ COCO images and vqa/ with the 6 official VQA v2 JSON files",
            index_builder=f"{_INDEX}.vqav2:build_vqav2_index",
            sample_generator=f"{_SAMPLE}.vqav2:generate_vqav2",
            aliases=("vqa",),
            official_checkpoints=(
                "beit3_base_patch16_480_vqa.pth",
                "beit3_large_patch16_480_vqa.pth",
                "beit3_large_indomain_patch16_768_vgqaaug_vqa.pth",
            ),
        ),
        TaskSpec(
            "coco_captioning",
            head="captioning",
            datamodule_class=f"{_DM}:CaptioningDataModule",
            key_metric="CIDEr",
            raw_layout=_KARPATHY_COCO,
            index_builder=f"{_INDEX}.captioning:build_coco_captioning_index",
            sample_generator=f"{_SAMPLE}.captions:generate_coco",
            aliases=("captioning",),
            official_checkpoints=(
                "beit3_base_patch16_480_coco_captioning.pth",
                "beit3_large_patch16_480_coco_captioning.pth",
            ),
        ),
        TaskSpec(
            "nocaps",
            head="captioning",
            datamodule_class=f"{_DM}:CaptioningDataModule",
            key_metric="CIDEr",
            raw_layout="val/, test/ images, nocaps_val_4500_captions.json and nocaps_test_image_info.json",
            index_builder=f"{_INDEX}.captioning:build_nocaps_index",
            sample_generator=f"{_SAMPLE}.captions:generate_nocaps",
            needs_tokenizer=False,  # NoCaps has no training captions of its own (it trains on COCO's)
            official_checkpoints=("beit3_base_patch16_480_nocaps.pth", "beit3_large_patch16_480_nocaps.pth"),
        ),
        TaskSpec(
            "coco_retrieval",
            head="retrieval",
            datamodule_class=f"{_DM}:RetrievalDataModule",
            key_metric="average_score",
            raw_layout=_KARPATHY_COCO,
            index_builder=f"{_INDEX}.retrieval:build_coco_retrieval_index",
            sample_generator=f"{_SAMPLE}.captions:generate_coco",
            aliases=("retrieval",),
            official_checkpoints=(
                "beit3_base_patch16_384_coco_retrieval.pth",
                "beit3_large_patch16_384_coco_retrieval.pth",
            ),
        ),
        TaskSpec(
            "flickr30k",
            head="retrieval",
            datamodule_class=f"{_DM}:RetrievalDataModule",
            key_metric="average_score",
            raw_layout="flickr30k-images/ and the Karpathy dataset_flickr30k.json",
            index_builder=f"{_INDEX}.retrieval:build_flickr30k_index",
            sample_generator=f"{_SAMPLE}.captions:generate_flickr30k",
            official_checkpoints=(
                "beit3_base_patch16_384_f30k_retrieval.pth",
                "beit3_large_patch16_384_f30k_retrieval.pth",
            ),
        ),
        TaskSpec(
            "ade20k",
            head="segmentation",
            datamodule_class=f"{_DM}:SegmentationDataModule",
            key_metric="mIoU",
            raw_layout="ADEChallengeData2016/ (or its contents): images/{training,validation}/*.jpg and "
            "annotations/{training,validation}/*.png (single-channel, 0 = unlabeled, 1..150), objectInfo150.txt",
            index_builder=f"{_INDEX}.segmentation:build_ade20k_index",
            sample_generator=f"{_SAMPLE}.segmentation:generate_ade20k",
            needs_tokenizer=False,
            aliases=("ade",),
        ),
        TaskSpec(
            "segmentation",
            head="segmentation",
            datamodule_class=f"{_DM}:SegmentationDataModule",
            key_metric="mIoU",
            raw_layout="images/{train,val}/<name>.<jpg|png>, masks/{train,val}/<name>.png (class ids, 255 = ignore; "
            "or palette PNGs) and classes.txt (one class name per line, in id order)",
            index_builder=f"{_INDEX}.segmentation:build_segmentation_index",
            sample_generator=f"{_SAMPLE}.segmentation:generate_segmentation",
            needs_tokenizer=False,
            aliases=("semantic_segmentation",),
        ),
        TaskSpec(
            "pretrain",
            head="pretraining",
            datamodule_class="beit3_lightning.data.pretraining_datamodule:PretrainDataModule",
            key_metric="loss",
            key_metric_mode="min",
            raw_layout="images/ (unlabeled images), texts/*.txt or *.jsonl (documents), pairs.jsonl (image-text pairs)",
            index_builder=f"{_INDEX}.pretrain:build_pretrain_index",
            sample_generator=f"{_SAMPLE}.pretrain:generate_pretrain",
            aliases=("pretraining",),
            # Pretrained release files (same release folder): continue pretraining from them with init_from.
            official_checkpoints=("beit3_base_patch16_224.pth", "beit3_large_patch16_224.pth"),
        ),
    )
}

# Alias -> dataset name (derived; aliases must not collide with dataset names, the table test checks it).
ALIASES: dict[str, str] = {alias: spec.dataset for spec in DATASETS.values() for alias in spec.aliases}


def resolve_dataset(name: str) -> str:
    """The dataset name of ``name`` (``"vqa"`` → ``"vqav2"``); ValueError listing the choices."""
    if name in DATASETS:
        return name
    if name in ALIASES:
        return ALIASES[name]
    raise ValueError(
        f"unknown task {name!r}; use one of {', '.join(DATASETS)} (aliases: "
        + ", ".join(f"{alias} = {dataset}" for alias, dataset in ALIASES.items())
        + ")"
    )


def get_task(name: str) -> TaskSpec:
    """The :class:`TaskSpec` of a dataset name or alias."""
    return DATASETS[resolve_dataset(name)]


def get_head(name: str) -> HeadSpec:
    """The :class:`HeadSpec` of a head name; ValueError listing the heads."""
    try:
        return HEADS[name]
    except KeyError:
        raise ValueError(f"unknown head {name!r}; expected one of {', '.join(HEADS)}") from None


def datasets_of_head(head: str) -> tuple[str, ...]:
    """Dataset names trained with ``head``, in table order (``"captioning"`` → coco_captioning, nocaps)."""
    return tuple(name for name, spec in DATASETS.items() if spec.head == head)


def key_metric_of_head(head: str) -> str:
    """The key metric of the datasets of ``head`` (they agree: one LightningModule logs it for all of them)."""
    metrics = {DATASETS[name].key_metric for name in datasets_of_head(head)}
    if len(metrics) != 1:
        raise ValueError(f"the datasets of head {head!r} disagree on the key metric: {sorted(metrics)}")
    return metrics.pop()
