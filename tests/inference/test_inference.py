"""Python inference API: Beit3Processor and load_model → predictors, on tiny random official-layout checkpoints."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from beit3_lightning.data.tokenizer import Beit3Tokenizer
from beit3_lightning.hub import file_sha256
from beit3_lightning.inference import (
    CaptioningPredictor,
    ImageClassificationPredictor,
    NLVR2Predictor,
    RetrievalPredictor,
    VQAPredictor,
    WrongTaskError,
    heatmap,
    image_grid,
    inspect_state_dict,
    load_model,
)
from beit3_lightning.modeling.checkpoint import CheckpointError
from beit3_lightning.modeling.config import Beit3Config
from beit3_lightning.modeling.generation import beam_search
from beit3_lightning.modeling.heads import Beit3TaskModel
from beit3_lightning.modeling.registry import HEADS, head_keys
from beit3_lightning.processor import Beit3Processor, resolve_task
from beit3_lightning.task_table import HEADS as HEAD_SPECS

REPO = Path(__file__).resolve().parents[2]
IMG = 32  # 2 × 2 patches: the smallest grid that still exercises resizing and pooling
NUM_CLASSES = {"imageclassification": 5, "vqav2": 4, "segmentation": 3}
ANSWERS = ["yes", "no", "red", "2"]


@pytest.fixture(scope="module")
def tokenizer() -> Beit3Tokenizer:
    return Beit3Tokenizer.sample()


def tiny_model(head: str, vocab_size: int, seed: int = 0) -> Beit3TaskModel:
    torch.manual_seed(seed)
    config = Beit3Config.from_name("tiny", img_size=IMG, vocab_size=vocab_size)
    kwargs = {"num_classes": NUM_CLASSES[head]} if head in NUM_CLASSES else {}
    model = HEADS[head](config, **kwargs).eval()
    if head == "captioning":
        # A random mlm_head is nearly flat; sharpen it so beam search has real choices.
        with torch.no_grad():
            model.mlm_head.weight.mul_(50)
    return model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tokenizer) -> dict[str, tuple[Path, Beit3TaskModel]]:
    """One official-layout ``{"model": state_dict}`` .pth per head, next to the model that wrote it."""
    root = tmp_path_factory.mktemp("pth")
    out = {}
    for head in HEAD_SPECS:
        model = tiny_model(head, tokenizer.vocab_size)
        path = root / f"tiny_{head}.pth"
        torch.save({"model": model.state_dict()}, path)
        out[head] = (path, model)
    return out


def rgb(color: tuple[int, int, int], size: tuple[int, int] = (40, 24)) -> Image.Image:
    return Image.new("RGB", size, color)


def noise_image(seed: int, size: tuple[int, int] = (44, 36)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


# ----- processor ----------------------------------------------------------------------------------------------------
def test_vl_normalisation_of_a_constant_image(tokenizer):
    processor = Beit3Processor(tokenizer, img_size=IMG, task="vqav2")
    image = processor(images=rgb((255, 0, 51)))["image"]
    assert image.shape == (1, 3, IMG, IMG) and image.dtype == torch.float32
    # (c / 255 - 0.5) / 0.5: 255 → 1, 0 → -1, 51 → -0.6
    for channel, expected in enumerate((1.0, -1.0, -0.6)):
        assert torch.allclose(image[0, channel], torch.full((IMG, IMG), expected), atol=1e-6)


def test_imagenet_normalisation_and_centre_crop(tokenizer):
    processor = Beit3Processor(None, img_size=IMG, task="classification")
    image = processor(images=rgb((255, 0, 51)))["image"][0]
    for channel, (c, mean, std) in enumerate(zip((255, 0, 51), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))):
        assert torch.allclose(image[channel], torch.full((IMG, IMG), (c / 255 - mean) / std), atol=1e-5)
    # Three 32-px stripes red | green | blue: ImageNet keeps the centre (all green), VL squashes all three in.
    stripes = np.zeros((IMG, 3 * IMG, 3), dtype=np.uint8)
    for i in range(3):
        stripes[:, i * IMG : (i + 1) * IMG, i] = 255
    cropped = processor(images=stripes)["image"][0]
    green = (1 - 0.456) / 0.224
    assert torch.allclose(cropped[1], torch.full((IMG, IMG), green), atol=1e-5)
    squashed = Beit3Processor(tokenizer, img_size=IMG, task="vqav2")(images=stripes)["image"][0]
    assert squashed[0, IMG // 2, 2] == pytest.approx(1.0, abs=0.02)  # left: red
    assert squashed[2, IMG // 2, IMG - 3] == pytest.approx(1.0, abs=0.02)  # right: blue


def test_every_image_input_type_gives_the_same_tensor(tmp_path, tokenizer):
    processor = Beit3Processor(tokenizer, img_size=IMG, task="coco_retrieval")
    image = noise_image(1)
    path = tmp_path / "noise.png"
    image.save(path)
    expected = processor(images=image)["image"]
    for variant in (np.asarray(image), str(path), path, [image], (path,)):
        assert torch.equal(processor(images=variant)["image"], expected)
    assert processor(images=[image, str(path)])["image"].shape == (2, 3, IMG, IMG)


@pytest.mark.parametrize("bad", [5, torch.zeros(IMG, IMG), [rgb((0, 0, 0)), 3.0], {"a": 1}])
def test_wrong_image_types_raise_type_error(tokenizer, bad):
    processor = Beit3Processor(tokenizer, img_size=IMG)
    with pytest.raises(TypeError, match="PIL image, an HxWx3 uint8 numpy array, a 3xHxW torch tensor"):
        processor(images=bad)


def test_bad_image_values_and_paths(tmp_path, tokenizer):
    processor = Beit3Processor(tokenizer, img_size=IMG)
    with pytest.raises(ValueError, match="image 1: .*uint8"):
        processor(images=[rgb((1, 2, 3)), np.zeros((8, 8, 3), dtype=np.float32)])
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        processor(images=str(tmp_path / "missing.jpg"))
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.jpg"):
        processor(images=tmp_path / "broken.jpg")
    with pytest.raises(ValueError, match="empty list of images"):
        processor(images=[])


def test_text_matches_the_dataset_framing(tokenizer):
    processor = Beit3Processor(tokenizer, img_size=IMG, max_text_len=16)
    texts = ["a red circle", "is there a blue square left of the triangle?"]
    batch = processor(text=texts)
    assert set(batch) == {"language_tokens", "padding_mask"}
    for row, text in enumerate(texts):
        ids, mask, _ = tokenizer.encode(text, 16)
        assert batch["language_tokens"][row].tolist() == ids
        assert batch["padding_mask"][row].tolist() == mask
    with pytest.raises(TypeError, match="text 1 is a int"):
        processor(text=["ok", 1])
    with pytest.raises(TypeError, match="a string or a list of strings"):
        processor(text=b"bytes")
    with pytest.raises(ValueError, match="text 0 .* has no tokens"):
        processor(text=[""])


def test_long_text_is_truncated_with_a_warning(tokenizer):
    processor = Beit3Processor(tokenizer, img_size=IMG, max_text_len=8)
    text = "a red circle and a blue square and a green triangle above the yellow star"
    with pytest.warns(UserWarning, match="truncated to 6 tokens"):
        ids = processor(text=text)["language_tokens"][0].tolist()
    assert ids == [0, *tokenizer.encode_ids(text)[:6], 2]


def test_task_names_and_aliases():
    assert resolve_task("captioning") == "coco_captioning"
    assert resolve_task("retrieval") == "coco_retrieval"
    assert resolve_task("classification") == "imagenet"
    assert resolve_task("flickr30k") == "flickr30k"
    with pytest.raises(ValueError, match="unknown task .ocr.; use one of imagenet, nlvr2, vqav2"):
        resolve_task("ocr")


# ----- checkpoint inspection ------------------------------------------------------------------------------------
def test_head_keys_match_the_models(checkpoints, tokenizer):
    for head in HEAD_SPECS:
        state = checkpoints[head][1].state_dict()
        assert {k for k in state if not k.startswith("beit3.")} == head_keys(head)
        info = inspect_state_dict(state)
        assert (info.head, info.size, info.img_size, info.vocab_size) == (head, "tiny", IMG, tokenizer.vocab_size)
        assert info.num_classes == NUM_CLASSES.get(head)


# ----- load_model + task calls equal the model on the processed batch ------------------------------------------
def test_classify(checkpoints):
    path, model = checkpoints["imageclassification"]
    predictor = load_model(path, task="imagenet")  # no tokenizer needed for images only
    assert isinstance(predictor, ImageClassificationPredictor) and not predictor.model.training
    assert predictor.model.config.img_size == IMG and predictor.num_classes == 5
    images = [noise_image(2), noise_image(3)]
    result = predictor.classify(images, top_k=3)
    probs = model(predictor.processor(images=images)["image"]).softmax(-1)
    top = probs.topk(3, dim=-1)
    assert [[i for i, _ in row] for row in result] == top.indices.tolist()
    assert np.allclose([[p for _, p in row] for row in result], top.values.detach().numpy(), atol=1e-6)
    names = ["cat", "dog", "car", "sky", "tree"]
    named = predictor.classify(images[0], top_k=10, labels=names)
    assert len(named) == 1 and len(named[0]) == 5  # top_k clamped to the classes
    assert [n for n, _ in named[0][:3]] == [names[i] for i in top.indices[0].tolist()]
    with pytest.raises(ValueError, match="2 labels for a model with 5 classes"):
        predictor.classify(images, labels=["a", "b"])


def test_answer(checkpoints, tokenizer, tmp_path):
    path, model = checkpoints["vqav2"]
    predictor = load_model(path, task="vqa", tokenizer="sample", answers=ANSWERS)
    assert isinstance(predictor, VQAPredictor) and predictor.task == "vqav2"
    images, questions = [noise_image(4), noise_image(5)], ["what color is it?", "how many circles are there?"]
    answers = predictor.answer(images, questions)
    batch = predictor.processor(images=images, text=questions)
    logits = model(batch["image"], batch["language_tokens"], batch["padding_mask"])
    assert answers == [ANSWERS[i] for i in logits.argmax(-1).tolist()]
    ranked = predictor.answer(images, questions, top_k=3)
    assert [[a for a, _ in row] for row in ranked] == [[ANSWERS[i] for i in r] for r in logits.topk(3).indices.tolist()]
    assert np.allclose([[p for _, p in row] for row in ranked], logits.sigmoid().topk(3).values.detach(), atol=1e-6)
    assert [row[0][0] for row in ranked] == answers
    # One image, several questions: the image is paired with each.
    assert predictor.answer(images[0], questions) == [answers[0], predictor.answer(images[0], questions[1])[0]]
    with pytest.raises(ValueError, match="2 images and 3 questions"):
        predictor.answer(images, questions + ["why?"])
    bare = load_model(path, tokenizer="sample")
    with pytest.raises(ValueError, match="answer2label.txt"):
        bare.answer(images, questions)
    vocab_file = tmp_path / "answer2label.txt"
    vocab_file.write_text("".join(f'{{"answer": "{a}", "label": {i}}}\n' for i, a in enumerate(ANSWERS)))
    bare.set_answers(vocab_file)
    assert bare.answer(images, questions) == answers
    with pytest.raises(ValueError, match="3 answers but the model has 4 classes"):
        bare.set_answers(ANSWERS[:3])


def test_verify(checkpoints):
    path, model = checkpoints["nlvr2"]
    predictor = load_model(path, tokenizer="sample")
    assert isinstance(predictor, NLVR2Predictor) and predictor.task == "nlvr2"
    left, right = [noise_image(6), noise_image(7)], [noise_image(8), noise_image(9)]
    statements = ["the left image has two circles", "both images are red"]
    result = predictor.verify(left, right, statements)
    batch = predictor.processor(images=left, images2=right, text=statements)
    probs = model(batch["image"], batch["image2"], batch["language_tokens"], batch["padding_mask"]).softmax(-1)
    assert [type(v) for pair in result for v in pair] == [bool, float, bool, float]
    assert np.allclose([p for _, p in result], probs[:, 1].detach().numpy(), atol=1e-6)
    assert [t for t, _ in result] == (probs[:, 1] > 0.5).tolist()
    with pytest.raises(ValueError, match="pair up one to one: got 2 and 1"):
        predictor.verify(left, right[:1], statements)


def test_caption(checkpoints, tokenizer):
    path, model = checkpoints["captioning"]
    predictor = load_model(path, task="nocaps", tokenizer=tokenizer, max_len=10)
    assert isinstance(predictor, CaptioningPredictor) and predictor.task == "nocaps"
    images = [noise_image(10), noise_image(11)]
    captions = predictor.caption(images, num_beams=2)
    expected_ids = beam_search(
        model, predictor.processor(images=images)["image"], num_beams=2, max_len=10, mask_id=tokenizer.mask_token_id
    )
    assert captions == tokenizer.batch_decode(expected_ids)
    assert all(isinstance(c, str) for c in captions) and any(captions)


def test_retrieval_embeddings_and_ranking(checkpoints):
    path, model = checkpoints["retrieval"]
    predictor = load_model(path, task="flickr30k", tokenizer="sample")
    assert isinstance(predictor, RetrievalPredictor) and predictor.task == "flickr30k"
    images = [noise_image(12), noise_image(13), noise_image(14)]
    texts = ["a red circle", "two blue squares"]
    image_emb, text_emb = predictor.encode_image(images), predictor.encode_text(texts)
    assert image_emb.shape == (3, 128) and text_emb.shape == (2, 128)
    assert torch.allclose(image_emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    batch = predictor.processor(images=images, text=texts)
    assert torch.allclose(image_emb, model.encode_image(batch["image"]), atol=1e-6)
    assert torch.allclose(text_emb, model.encode_text(batch["language_tokens"], batch["padding_mask"]), atol=1e-6)
    ranking = predictor.rank(images, texts, top_k=5)
    assert torch.allclose(ranking.similarity, image_emb @ text_emb.T, atol=1e-6)
    assert ranking.image_to_text.shape == (3, 2) and ranking.text_to_image.shape == (2, 3)  # k clamped
    assert ranking.image_to_text[:, 0].tolist() == ranking.similarity.argmax(1).tolist()
    assert ranking.text_to_image[:, 0].tolist() == ranking.similarity.argmax(0).tolist()


def test_batch_of_two_equals_two_singles(checkpoints):
    path, _ = checkpoints["vqav2"]
    batched = load_model(path, tokenizer="sample", answers=ANSWERS)
    single = load_model(path, tokenizer="sample", answers=ANSWERS, batch_size=1)
    single.show_progress = False
    images, questions = [noise_image(15), noise_image(16)], ["short?", "a much longer question about the shapes?"]
    together = batched.logits(images, questions)
    apart = torch.cat([batched.logits(images[i], questions[i]) for i in range(2)])
    assert torch.allclose(together, apart, atol=1e-5)
    assert torch.allclose(single.logits(images, questions), together, atol=1e-5)


# ----- architecture inference and errors ----------------------------------------------------------------------
def test_half_precision_file_and_other_image_size(checkpoints, tmp_path):
    path, model = checkpoints["retrieval"]
    half = tmp_path / "half.pth"
    torch.save({"model": {k: v.half() for k, v in model.state_dict().items()}}, half)
    predictor = load_model(half, tokenizer="sample")
    assert predictor.model.beit3.text_embed.weight.dtype == torch.float32
    assert torch.allclose(
        predictor.encode_text("a red circle"),
        load_model(path, tokenizer="sample").encode_text("a red circle"),
        atol=2e-3,
    )
    bigger = load_model(path, tokenizer="sample", img_size=48)  # position table resized 2×2 → 3×3
    assert bigger.model.config.img_size == 48 and bigger.processor.img_size == 48
    assert bigger.encode_image(noise_image(17)).shape == (1, 128)


def test_wrong_checkpoint_for_the_task(checkpoints):
    vqa_path, _ = checkpoints["vqav2"]
    with pytest.raises(CheckpointError, match=r"looks like a VQA model \(tiny, 32 px, 4 classes\).*task='vqav2'"):
        load_model(vqa_path, task="retrieval", tokenizer="sample")
    caption_path, _ = checkpoints["captioning"]
    with pytest.raises(CheckpointError, match="captioning model.*tasks that fit: coco_captioning, nocaps"):
        load_model(caption_path, task="imagenet")


def test_backbone_only_and_foreign_files(checkpoints, tmp_path):
    _, model = checkpoints["retrieval"]
    backbone = tmp_path / "pretrained.pth"
    torch.save({"model": {k: v for k, v in model.state_dict().items() if k.startswith("beit3.")}}, backbone)
    with pytest.raises(CheckpointError, match="without a task head"):
        load_model(backbone, tokenizer="sample")
    odd = tmp_path / "odd.pth"
    torch.save({"model": {**model.state_dict(), "mim_head.weight": torch.zeros(2)}}, odd)
    with pytest.raises(
        CheckpointError, match=r"\['language_head.weight'.*'mim_head.weight'.*match no BEiT-3 task head"
    ):
        load_model(odd, tokenizer="sample")
    foreign = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, foreign)
    with pytest.raises(CheckpointError, match="not a BEiT-3 state dict"):
        load_model(foreign)
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nowhere.pth")


def test_wrong_calls_model_tokenizer_and_arguments(checkpoints, tmp_path):
    vqa_path, _ = checkpoints["vqav2"]
    predictor = load_model(vqa_path, tokenizer="sample")
    with pytest.raises(WrongTaskError, match=r"holds a VQA model \(task 'vqav2'\); use answer\(\)"):
        predictor.caption(noise_image(0))
    with pytest.raises(WrongTaskError, match=r"use encode_image\(\), encode_text\(\) or rank\(\)"):
        load_model(checkpoints["retrieval"][0], tokenizer="sample").classify(noise_image(0))
    with pytest.raises(CheckpointError, match="model='base' has 12 layers × 768 dims .* 4 × 128 \\(a 'tiny' model\\)"):
        load_model(vqa_path, tokenizer="sample", model="base")
    with pytest.raises(ValueError, match="needs its tokenizer: pass tokenizer='path/to/beit3.spm'"):
        load_model(vqa_path)
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['num_beams'\]; this task accepts: answers"):
        load_model(vqa_path, tokenizer="sample", num_beams=3)
    small = tmp_path / "small_vocab.pth"
    torch.save({"model": tiny_model("vqav2", 50).state_dict()}, small)
    with pytest.raises(ValueError, match="has 1002 ids but the model .* embeds only 50"):
        load_model(small, tokenizer="sample")


# ----- Lightning checkpoints from the CLI -------------------------------------------------------------------------
def test_lightning_checkpoint_from_the_cli(tmp_path, monkeypatch):
    from beit3_lightning.cli import main

    monkeypatch.chdir(tmp_path)
    root = tmp_path / "sample" / "vqav2"
    main(
        [
            "fit",
            "--config",
            str(REPO / "configs/sample/vqav2.yaml"),
            f"--data.init_args.root={root}",
            "--data.init_args.num_workers=0",
            "--data.init_args.batch_size=8",
            "--trainer.max_steps=2",
            f"--trainer.default_root_dir={tmp_path / 'run'}",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
        ]
    )
    ckpt = tmp_path / "run/checkpoints/last.ckpt"
    predictor = load_model(ckpt)  # task, tokenizer, text length and answers all come from the checkpoint
    assert isinstance(predictor, VQAPredictor) and predictor.task == "vqav2"
    assert predictor.processor.max_text_len == 24 and predictor.processor.img_size == 48
    saved = torch.load(ckpt, weights_only=True)["state_dict"]
    assert torch.equal(predictor.model.head[3].weight, saved["model.head.3.weight"])
    label2ans = [line.split('"')[3] for line in (root / "answer2label.txt").read_text().splitlines()]
    assert predictor.label2ans == label2ans
    image = next((root / "val2014").glob("*.jpg"))
    answers = predictor.answer([image, image], ["what shape is red?", "how many shapes are there?"])
    batch = predictor.processor(images=[image, image], text=["what shape is red?", "how many shapes are there?"])
    logits = predictor.model(batch["image"], batch["language_tokens"], batch["padding_mask"])
    assert answers == [label2ans[i] for i in logits.argmax(-1).tolist()]

    # The checkpoint carries its answers and names its tokenizer: moved elsewhere with the data gone, it answers.
    saved_ckpt = torch.load(ckpt, weights_only=True)
    assert saved_ckpt["hyper_parameters"]["answers"] == label2ans
    assert saved_ckpt["beit3_tokenizer"]["sha256"] == file_sha256(Beit3Tokenizer.sample().path)
    pixels = Image.open(image).convert("RGB")
    moved = tmp_path / "elsewhere" / "vqa.ckpt"
    moved.parent.mkdir()
    shutil.copy(ckpt, moved)
    shutil.rmtree(root)
    monkeypatch.chdir(moved.parent)
    assert load_model(moved).answer([pixels, pixels], ["what shape is red?", "how many shapes are there?"]) == answers
    saved_ckpt["beit3_tokenizer"]["sha256"] = "0" * 64  # as if trained with another tokenizer of the same name
    torch.save(saved_ckpt, moved)
    with pytest.warns(UserWarning, match="is a different file: its token ids will not mean what the model learned"):
        load_model(moved)


# ----- pictures for the notebooks ---------------------------------------------------------------------------------
def test_image_grid_and_heatmap():
    red, blue = rgb((255, 0, 0), (48, 48)), np.full((48, 48, 3), (0, 0, 255), dtype=np.uint8)
    grid = image_grid([red, blue, red], ["a red square", "a blue one", "red again"], size=96, columns=2)
    assert grid.height > 2 * 104 and grid.width == 2 * 104  # 2 rows of (96 + 8) px cells plus caption lines
    assert grid.getpixel((4 + 48, 4 + 48)) == (255, 0, 0) and grid.getpixel((104 + 4 + 48, 4 + 48)) == (0, 0, 255)
    with pytest.raises(ValueError, match="3 images but 1 captions"):
        image_grid([red, blue, red], ["one"])
    picture = heatmap(torch.tensor([[0.0, 1.0], [0.5, 0.0]]), cell=10)
    assert picture.size == (20, 20)
    assert picture.getpixel((5, 5)) == (255, 255, 255) and picture.getpixel((15, 5)) == (8, 48, 107)
    assert picture.getpixel((5, 15)) == (132, 152, 181)  # halfway between white and dark blue
    with pytest.raises(ValueError, match="2-D matrix"):
        heatmap(torch.zeros(3))


def test_segment_returns_label_maps_at_each_images_own_size(checkpoints, tmp_path):
    from beit3_lightning.data.segmentation_transforms import SegmentationEvalTransform
    from beit3_lightning.inference import SegmentationPredictor
    from beit3_lightning.modeling.segmentation_inference import segment_probabilities

    path, model = checkpoints["segmentation"]
    predictor = load_model(path)  # no tokenizer: images only
    assert isinstance(predictor, SegmentationPredictor) and predictor.task == "ade20k"
    images = [noise_image(2, (44, 36)), noise_image(3, (70, 30))]
    maps = predictor.segment(images)
    assert [m.shape for m in maps] == [(36, 44), (30, 70)]
    # The same as running the model by hand: eval transform (short side = crop), slide, resize back, argmax.
    tensor, _ = SegmentationEvalTransform(IMG)(images[1])
    assert tensor.shape[-2:] == (32, 75)  # short side 30 -> 32, aspect kept
    with torch.no_grad():
        probs = segment_probabilities(lambda x: model(x)["logits"], tensor[None], crop=IMG, out_size=(30, 70))
    assert np.array_equal(maps[1], probs[0].argmax(0).numpy())
    shown = predictor.overlay(images[1], maps[1])
    assert shown.size == (70, 30)
    named = load_model(path, class_names=["sky", "road", "car"])
    assert set(named.names(maps[0])) <= {"sky", "road", "car"}
    with pytest.raises(ValueError, match="2 class names for a model with 3 classes"):
        load_model(path, class_names=["sky", "road"])
    with pytest.raises(WrongTaskError, match="segment"):
        load_model(checkpoints["imageclassification"][0]).segment(images)


def test_segmentation_checkpoint_without_auxiliary_head_loads(tmp_path):
    torch.manual_seed(0)
    config = Beit3Config.from_name("tiny", img_size=IMG)
    model = HEADS["segmentation"](config, num_classes=3, aux_channels=0).eval()
    path = tmp_path / "no_aux.pth"
    torch.save({"model": model.state_dict()}, path)
    predictor = load_model(path)
    assert predictor.model.auxiliary_head is None and predictor.num_classes == 3


@pytest.mark.parametrize("head", ["imageclassification", "retrieval", "vqav2"])
def test_bfloat16_inference_agrees_with_float32(checkpoints, tokenizer, head):
    path, _ = checkpoints[head]
    fp32 = load_model(path, tokenizer="sample")
    bf16 = load_model(path, tokenizer="sample", dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16 and next(bf16.model.parameters()).dtype == torch.bfloat16
    images = [noise_image(4), noise_image(5)]
    if head == "retrieval":
        a, b = fp32.encode_image(images), bf16.encode_image(images)
        assert b.dtype == torch.float32 and torch.nn.functional.cosine_similarity(a, b).min() > 0.99
    elif head == "vqav2":
        a, b = fp32.logits(images, "what color?"), bf16.logits(images, "what color?")
        assert b.dtype == torch.float32 and torch.allclose(a, b, atol=0.1, rtol=0.05)
    else:
        a, b = fp32.logits(images), bf16.logits(images)
        assert b.dtype == torch.float32 and torch.allclose(a, b, atol=0.05, rtol=0.05)
    assert not torch.equal(a, b)  # really computed in bf16
    with pytest.raises(ValueError, match="floating-point torch dtype"):
        load_model(path, tokenizer="sample", dtype="int8")


def test_processor_needs_an_explicit_tokenizer():
    with pytest.raises(TypeError, match="tokenizer"):
        Beit3Processor(img_size=IMG, task="vqav2")  # no silent default to the sample tokenizer
    assert Beit3Processor(None, img_size=IMG, task="imagenet").tokenizer is None


def test_thousand_class_models_answer_with_imagenet_names(tmp_path):
    from beit3_lightning.inference.classification import imagenet1k_class_names

    names = imagenet1k_class_names()
    assert len(names) == 1000 and (names[0], names[1], names[279], names[999]) == (
        "tench", "goldfish", "Arctic fox", "toilet tissue")  # fmt: skip
    torch.manual_seed(0)
    model = HEADS["imageclassification"](Beit3Config.from_name("tiny", img_size=IMG), num_classes=1000).eval()
    path = tmp_path / "in1k.pth"
    torch.save({"model": model.state_dict()}, path)
    top = load_model(path).classify(noise_image(1), top_k=3)[0]
    expected = model(load_model(path).processor(images=[noise_image(1)])["image"]).topk(3).indices[0].tolist()
    assert [name for name, _ in top] == [names[i] for i in expected]


def test_images_may_be_torch_tensors(checkpoints):
    predictor = load_model(checkpoints["imageclassification"][0])
    images = [noise_image(6), noise_image(7)]
    expected = predictor.logits(images)
    as_uint8 = [torch.from_numpy(np.asarray(image)).permute(2, 0, 1) for image in images]  # CHW uint8
    assert torch.equal(predictor.logits(as_uint8), expected)
    assert torch.equal(predictor.logits(torch.stack(as_uint8)), expected)  # a (B, 3, H, W) batch
    assert torch.allclose(predictor.logits([t.float() / 255 for t in as_uint8]), expected)  # float in [0, 1]
    with pytest.raises(ValueError, match=r"must hold values in \[0, 1\], got \[-1"):
        predictor.logits(as_uint8[0].float() / 127.5 - 1)  # an already normalised tensor
