"""``beit3 export``: a fine-tuned checkpoint → an ONNX directory that ``load_model(directory)`` serves.

beit3 export outputs/sample/vqav2/checkpoints/best.ckpt --out vqa_onnx
beit3 export beit3_base_patch16_384_coco_retrieval --tokenizer beit3.spm --out retrieval_int8 --quantize int8
"""

from __future__ import annotations

import argparse
import sys
import time

from beit3_lightning.inference.onnx_export import GRAPHS, QUANTIZATIONS, ExportError, MissingExtraError, export_onnx

FORMATS = ("onnx",)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="beit3 export",
        description="Export a fine-tuned BEiT-3 model for ONNX Runtime: one .onnx graph per entry point (dynamic "
        "batch and text-length axes), the tokenizer and beit3_export.json, checked against the eager model. Serve "
        "it with `load_model(OUT)`. Exports " + ", ".join(GRAPHS) + " models (captioning as a first step and a "
        "cached decoding step under the usual beam search); segmentation is not exported (use load_model(..., "
        "dtype=torch.bfloat16, compile=True or quantize='int8')). Needs "
        'pip install "beit3-lightning[onnx]".',
    )
    parser.add_argument("checkpoint", help="a Lightning .ckpt, an official .pth / .safetensors or an official name")
    parser.add_argument("--out", required=True, help="directory to write (must not exist, see --overwrite)")
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="export format (default onnx)")
    parser.add_argument("--task", default=None, help="task of the checkpoint (default: read from it)")
    parser.add_argument("--tokenizer", default=None, help="sentencepiece model (default: the checkpoint's)")
    parser.add_argument("--answers", default=None, help="VQA answer2label.txt (default: saved in the checkpoint)")
    parser.add_argument("--labels", default=None, help="class names, one per line (ImageNet: default the 1000)")
    parser.add_argument("--quantize", choices=QUANTIZATIONS, default=None,
                        help="dynamic int8 quantisation of the graphs' matrix multiplications")  # fmt: skip
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out directory")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    extra = {key: value for key in ("answers", "labels") if (value := getattr(args, key)) is not None}
    start = time.perf_counter()
    try:
        out = export_onnx(args.checkpoint, args.out, task=args.task, tokenizer=args.tokenizer,
                          quantize=args.quantize, opset=args.opset, overwrite=args.overwrite, **extra)  # fmt: skip
    except (ExportError, MissingExtraError, FileExistsError) as err:
        print(f"beit3 export: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    from beit3_lightning.inference.onnx_export import read_manifest

    manifest = read_manifest(out)
    for name, check in manifest["checks"].items():
        detail = ", ".join(f"{key} {value:.3g}" for key, value in check.items())
        print(f"  {manifest['graphs'][name]}: {detail}")
    print(f"wrote {out} ({manifest['task']}, {manifest['precision']}) in {time.perf_counter() - start:.0f} s; "
          f"serve it with load_model({str(out)!r})")  # fmt: skip
    return 0
