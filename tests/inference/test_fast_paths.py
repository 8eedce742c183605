"""Fast inference paths against eager float32: ONNX export + ONNX Runtime, int8 (torch and ONNX Runtime), compile.

Tiny random models in the official key layout (the fixtures of ``test_inference``); the tolerances are the documented
ones: fp32 ONNX ≤ 1e-4 max abs, int8 cosine ≥ 0.99, compile ≤ 1e-5.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_inference import ANSWERS, checkpoints, noise_image, tokenizer  # noqa: F401  (fixtures)

from beit3_lightning.inference import load_model
from beit3_lightning.inference.onnx_export import INT8_MIN_COSINE, MANIFEST, PARITY_ATOL, ExportError, export_onnx

pytest.importorskip("onnxruntime", reason='the ONNX extra is not installed: pip install "beit3-lightning[onnx]"')

TEXT_HEADS = {"retrieval", "vqav2", "nlvr2", "captioning"}
EXPORTED = ["retrieval", "vqav2", "nlvr2", "imageclassification", "captioning"]
EXTRA = {"vqav2": {"answers": ANSWERS}}
IMAGES = [noise_image(seed, size=(40 + 4 * seed, 30)) for seed in range(3)]
QUESTIONS = ["what colour is it?", "how many?", "is there a red square on the left of the blue circle?"]


TEXT_LEN = 20  # not the default 64: the export must keep the checkpoint's processor settings


def load_kwargs(head: str) -> dict:
    text = {"tokenizer": "sample", "max_text_len": TEXT_LEN} if head in TEXT_HEADS else {"tokenizer": None}
    return {**text, **EXTRA.get(head, {})}


@pytest.fixture(scope="module")
def exports(tmp_path_factory, checkpoints):  # noqa: F811
    """fp32 exports of every exported head, written once for the module."""
    root = tmp_path_factory.mktemp("onnx")
    return {head: export_onnx(checkpoints[head][0], root / head, **load_kwargs(head)) for head in EXPORTED}


def outputs(predictor, head: str) -> torch.Tensor:
    """The head's raw scores on fixed inputs, at two batch sizes (1 and 3: the batch axis is dynamic)."""
    if head == "retrieval":
        return torch.cat([predictor.encode_image(IMAGES), predictor.encode_image(IMAGES[:1]),
                          predictor.encode_text(QUESTIONS)])  # fmt: skip
    if head == "vqav2":
        return torch.cat([predictor.logits(IMAGES, QUESTIONS), predictor.logits(IMAGES[0], QUESTIONS[2])])
    if head == "nlvr2":
        return torch.tensor([score for _, score in predictor.verify(IMAGES, IMAGES[::-1], QUESTIONS)])
    if head == "captioning":  # the whole beam search on top of the graphs: the same words, beams 1 and 3
        ids = [predictor.caption_ids(IMAGES, num_beams=beams, max_len=12) for beams in (1, 3)]
        return torch.tensor([word for per_beams in ids for caption in per_beams for word in caption], dtype=torch.float)
    return torch.cat([predictor.logits(IMAGES), predictor.logits(IMAGES[1])])


@pytest.mark.parametrize("head", EXPORTED)
def test_onnx_runtime_predictor_equals_eager(head, exports, checkpoints, tmp_path):  # noqa: F811
    eager = load_model(checkpoints[head][0], **load_kwargs(head))
    # The directory is self-contained: moved elsewhere, it still loads (tokenizer and vocabularies inside).
    moved = shutil.copytree(exports[head], tmp_path / "moved")
    onnx = load_model(moved)
    assert type(onnx) is type(eager) and type(onnx.model).__name__ == "OnnxTaskModel"
    expected, got = outputs(eager, head), outputs(onnx, head)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= PARITY_ATOL
    manifest = json.loads((moved / MANIFEST).read_text())
    assert all(check["max_abs_diff_fp32"] <= PARITY_ATOL for check in manifest["checks"].values())
    if head == "vqav2":
        assert onnx.answer(IMAGES, QUESTIONS) == eager.answer(IMAGES, QUESTIONS)  # answers travel in the export
    if head == "retrieval":
        assert torch.equal(onnx.rank(IMAGES, QUESTIONS).image_to_text, eager.rank(IMAGES, QUESTIONS).image_to_text)
    if head == "captioning":
        assert len(got) > 2 * len(IMAGES) and onnx.caption(IMAGES) == eager.caption(IMAGES)
    # A caption's cache grows at every step: its sessions skip the CPU arena (which grew by gigabytes); others keep it.
    arenas = {s.get_session_options().enable_cpu_mem_arena for s in onnx.model.sessions.values()}
    assert arenas == {head != "captioning"}


def test_onnx_text_length_axis_is_dynamic(exports, checkpoints):  # noqa: F811
    eager = load_model(checkpoints["retrieval"][0], tokenizer="sample", max_text_len=9)
    onnx = load_model(exports["retrieval"])
    assert onnx.processor.max_text_len == TEXT_LEN
    tokens = eager.processor(text=QUESTIONS)
    assert tokens["language_tokens"].shape[1] == 9
    got = onnx.model.encode_text(tokens["language_tokens"], tokens["padding_mask"])
    assert (got - eager.model.encode_text(tokens["language_tokens"], tokens["padding_mask"])).abs().max() <= 1e-4


def test_int8_onnx_and_torch_stay_close_to_fp32(checkpoints, tmp_path):  # noqa: F811
    path = checkpoints["retrieval"][0]
    eager = load_model(path, tokenizer="sample")
    reference = outputs(eager, "retrieval")
    onnx_int8 = load_model(export_onnx(path, tmp_path / "int8", tokenizer="sample", quantize="int8"))
    torch_int8 = load_model(path, tokenizer="sample", quantize="int8")
    assert onnx_int8.model.precision == "int8"
    quantized = [m for m in torch_int8.model.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert len(quantized) == sum(isinstance(m, torch.nn.Linear) for m in eager.model.modules())
    for predictor in (onnx_int8, torch_int8):
        got = outputs(predictor, "retrieval")
        cosine = F.cosine_similarity(got, reference, dim=-1)
        assert cosine.min() >= INT8_MIN_COSINE
        assert (got - reference).abs().max() > 1e-6  # really quantised, not the fp32 graph again


def test_backend_onnxruntime_exports_a_checkpoint_once_into_the_cache(checkpoints, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("BEIT3_HOME", str(tmp_path / "home"))
    path = checkpoints["imageclassification"][0]
    first = load_model(path, backend="onnxruntime")
    cached = list((tmp_path / "home" / "onnx").iterdir())
    assert len(cached) == 1 and (cached[0] / MANIFEST).is_file()
    stamp = (cached[0] / MANIFEST).stat().st_mtime_ns
    second = load_model(path, backend="onnxruntime")
    assert (cached[0] / MANIFEST).stat().st_mtime_ns == stamp  # reused, not exported again
    assert torch.equal(first.logits(IMAGES), second.logits(IMAGES))
    assert (first.logits(IMAGES) - load_model(path).logits(IMAGES)).abs().max() <= PARITY_ATOL
    int8 = load_model(path, backend="onnxruntime", quantize="int8")  # a second cache entry, not the fp32 one
    assert int8.model.precision == "int8" and len(list((tmp_path / "home" / "onnx").iterdir())) == 2


def test_wrong_onnx_requests_raise_clear_errors(exports, checkpoints, tmp_path):  # noqa: F811
    with pytest.raises(ValueError, match=r"compile, dtype: torch-backend option"):
        load_model(exports["retrieval"], dtype=torch.bfloat16, compile=True)
    with pytest.raises(ValueError, match="holds a fp32 export; export again with --quantize int8"):
        load_model(exports["retrieval"], quantize="int8")
    with pytest.raises(ValueError, match="compile=True does not speed up captioning"):
        load_model(checkpoints["captioning"][0], tokenizer="sample", compile=True)
    with pytest.raises(ValueError, match="backend must be one of"):
        load_model(checkpoints["retrieval"][0], backend="tensorrt")
    with pytest.raises(ExportError, match=r"ade20k \(segmentation\) is not exported yet"):
        export_onnx(checkpoints["segmentation"][0], tmp_path / "seg")
    with pytest.raises(FileExistsError, match="already exists"):
        export_onnx(checkpoints["imageclassification"][0], exports["imageclassification"])
    with pytest.raises(ValueError, match="ONNX Runtime backend takes and returns CPU tensors"):
        load_model(exports["imageclassification"], device="cuda")


def test_export_refuses_a_graph_that_disagrees_with_eager(checkpoints, tmp_path, monkeypatch):  # noqa: F811
    import beit3_lightning.inference.onnx_export as onnx_export

    real = onnx_export.run_session_all
    monkeypatch.setattr(onnx_export, "run_session_all", lambda sess, inputs: [t + 1e-3 for t in real(sess, inputs)])
    with pytest.raises(ExportError, match=r"the exported classifier graph differs from the eager model by 1\.00e-03"):
        export_onnx(checkpoints["imageclassification"][0], tmp_path / "bad")
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left behind


def test_compiled_model_equals_eager(checkpoints):  # noqa: F811
    path = checkpoints["retrieval"][0]
    eager = load_model(path, tokenizer="sample")
    compiled = load_model(path, tokenizer="sample", compile=True)
    expected = eager.encode_image(IMAGES)
    got = compiled.encode_image(IMAGES)
    assert (got - expected).abs().max() <= 1e-5
    assert compiled.model.state_dict().keys() == eager.model.state_dict().keys()


def test_beit3_export_command(checkpoints, tmp_path):  # noqa: F811
    out = tmp_path / "vqa_onnx"
    answers = tmp_path / "answer2label.txt"
    answers.write_text("".join(json.dumps({"answer": a, "label": i}) + "\n" for i, a in enumerate(ANSWERS)))
    cmd = [sys.executable, "-m", "beit3_lightning.cli", "export", str(checkpoints["vqav2"][0]), "--out", str(out),
           "--tokenizer", "sample", "--answers", str(answers)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"wrote {out} (vqav2, fp32)" in done.stdout and "vqa.onnx: max_abs_diff_fp32" in done.stdout
    assert load_model(out).answer(IMAGES[0], QUESTIONS[0]) == load_model(
        checkpoints["vqav2"][0], tokenizer="sample", answers=ANSWERS
    ).answer(IMAGES[0], QUESTIONS[0])
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert again.returncode == 2
    assert again.stderr.strip() == (
        f"beit3 export: error: {out} already exists: choose another directory or pass overwrite=True (--overwrite)"
    )
    assert Path(out / "tokenizer.spm").is_file()
