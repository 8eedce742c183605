"""What int8 (and ONNX Runtime) costs in accuracy: the sample tasks' fine-tuned tiny models re-scored through each
inference path, and the embedding agreement of a base retrieval model.

    python benchmarks/sample_learning.py      # first: fine-tunes outputs/sample/<task>/checkpoints/best.ckpt
    python benchmarks/int8_accuracy.py        # then: one row per task, one column per path

Metrics are computed from the predictors' outputs on the sample's evaluation split (the same split
``sample_learning.py`` reports): ImageNet val accuracy@1, VQAv2 rest_val VQA score, COCO retrieval test average
recall (R@1/5/10 both ways), COCO captioning test CIDEr-D. Texts in the indexes are token ids; they are decoded to
strings and go through the predictor's own tokenizer, as a user's strings would. ``--base`` adds the cosine
similarity of int8 to fp32 embeddings of a base retrieval model at 384 px (random N(0, 0.02) weights: the official
weights cannot be downloaded here) on the sample's images and captions.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
PATHS = {
    "fp32": {},
    "torch-int8": {"quantize": "int8"},
    "ort-fp32": {"backend": "onnxruntime"},
    "ort-int8": {"backend": "onnxruntime", "quantize": "int8"},
}
TASKS = ("imagenet", "vqav2", "coco_retrieval", "coco_captioning")
KEY = {"imagenet": "val acc@1", "vqav2": "rest_val VQA score", "coco_retrieval": "test avg recall",
       "coco_captioning": "test CIDEr-D"}  # fmt: skip


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def score(task: str, predictor) -> float:
    root = SAMPLE / task
    if task == "imagenet":
        rows = read_jsonl(root / "imagenet.val.index.jsonl")
        logits = predictor.logits([root / r["image_path"] for r in rows])
        labels = torch.tensor([r["label"] for r in rows])
        return 100 * (logits.argmax(-1) == labels).float().mean().item()
    tokenizer = predictor.processor.tokenizer
    if task == "vqav2":
        rows = read_jsonl(root / "vqa.rest_val.jsonl")
        questions = [tokenizer.decode(r["text_segment"]) for r in rows]
        predicted = predictor.logits([root / r["image_path"] for r in rows], questions).argmax(-1).tolist()
        return 100 * sum(dict(zip(r["labels"], r["scores"])).get(p, 0.0) for r, p in zip(rows, predicted)) / len(rows)
    if task == "coco_retrieval":
        rows = read_jsonl(root / "coco_retrieval.test.jsonl")
        image_ids = sorted({r["image_id"] for r in rows})
        first_row = {r["image_id"]: r for r in reversed(rows)}
        images = predictor.encode_image([root / first_row[i]["image_path"] for i in image_ids])
        texts = predictor.encode_text([tokenizer.decode(r["text_segment"]) for r in rows])
        similarity = images @ texts.T  # (images, texts)
        owner = torch.tensor([image_ids.index(r["image_id"]) for r in rows])  # image of each text
        recalls = []
        for k in (1, 5, 10):
            top_texts = similarity.topk(k, dim=1).indices  # (images, k)
            recalls.append((owner[top_texts] == torch.arange(len(image_ids))[:, None]).any(1).float().mean())
            top_images = similarity.T.topk(min(k, len(image_ids)), dim=1).indices  # (texts, k)
            recalls.append((top_images == owner[:, None]).any(1).float().mean())
        return 100 * torch.stack(recalls).mean().item()
    from beit3_lightning.data.references import caption_references
    from beit3_lightning.metrics.caption import cider_d

    rows = read_jsonl(root / "coco_captioning.test.jsonl")
    captions = predictor.caption([root / r["image_path"] for r in rows])
    references = caption_references("coco_captioning", root, "test")
    return cider_d({r["image_id"]: c for r, c in zip(rows, captions)}, references)


def base_embedding_cosine(threads: int) -> dict[str, tuple[float, float]]:
    """(min, mean) cosine of int8 vs fp32 embeddings for a base retrieval model, images and texts."""
    from beit3_lightning.inference import load_model
    from beit3_lightning.modeling.config import Beit3Config
    from beit3_lightning.modeling.registry import HEADS

    torch.manual_seed(0)
    with torch.device("meta"):
        model = HEADS["retrieval"](Beit3Config.from_name("base", img_size=384))
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.02)
    path = Path(os.environ["BEIT3_HOME"]) / "base_retrieval.pth"
    torch.save({"model": model.state_dict()}, path)
    rows = read_jsonl(SAMPLE / "coco_retrieval" / "coco_retrieval.test.jsonl")[:16]
    images = [SAMPLE / "coco_retrieval" / r["image_path"] for r in rows[::2]]
    out = {}
    reference = None
    for name in ("fp32", "torch-int8", "ort-int8"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            predictor = load_model(path, tokenizer="sample", **PATHS[name])
        texts = [predictor.processor.tokenizer.decode(r["text_segment"]) for r in rows]
        embeddings = (predictor.encode_image(images), predictor.encode_text(texts))
        if reference is None:
            reference = embeddings
            continue
        for kind, got, ref in zip(("image", "text"), embeddings, reference):
            cosine = torch.nn.functional.cosine_similarity(got, ref, dim=-1)
            out[f"{name} {kind}"] = (cosine.min().item(), cosine.mean().item())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS))
    parser.add_argument("--checkpoints", type=Path, default=ROOT / "outputs" / "sample",
                        help="directory with <task>/checkpoints/best.ckpt")  # fmt: skip
    parser.add_argument("--base", action="store_true", help="also the base-model embedding cosine")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["BEIT3_HOME"] = tempfile.mkdtemp(prefix="beit3-int8-")  # ONNX exports land here
    from beit3_lightning.inference import load_model

    print(f"{'task':16} {'metric':20} " + " ".join(f"{p:>16}" for p in args.paths), flush=True)
    for task in args.tasks:
        ckpt = args.checkpoints / task / "checkpoints" / "best.ckpt"
        values = {}
        for name in args.paths:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                predictor = load_model(ckpt, **PATHS[name])
            predictor.show_progress = False
            values[name] = score(task, predictor)
        base = values.get("fp32")
        cells = [f"{v:8.2f}" + (f" ({v - base:+.2f})" if base is not None and name != "fp32" else " " * 8)
                 for name, v in values.items()]  # fmt: skip
        print(f"{task:16} {KEY[task]:20} " + " ".join(f"{c:>16}" for c in cells), flush=True)
    if args.base:
        print("\nbase retrieval @384, cosine to fp32 embeddings (min / mean over 8 images, 16 texts):")
        for name, (low, mean) in base_embedding_cosine(args.threads).items():
            print(f"  {name:18} {low:.4f} / {mean:.4f}")


if __name__ == "__main__":
    main()
