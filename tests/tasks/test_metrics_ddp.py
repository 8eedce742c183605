"""Metrics under DDP: two CPU (gloo) processes holding half the data each give the one-process values."""

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from beit3_lightning.metrics import CaptionMetric, ImageTextRetrievalRecall, SegmentationMetric, TopKAccuracy, VQAScore

WORLD_SIZE = 2
NUM_CAPTION_ROWS = 41  # odd on purpose: the sampler pads rank 1 with a repeat of row 0


def make_data() -> dict:
    """Deterministic evaluation data shared by the one-process and two-process runs."""
    gen = torch.Generator().manual_seed(0)
    image_ids = torch.arange(NUM_CAPTION_ROWS) // 3 * 7 + 100  # 14 images, up to 3 captions each, sparse ids
    image_table = torch.randn(int(image_ids.max()) + 1, 16, generator=gen)
    return {
        "image_ids": image_ids,
        "image_feats": image_table[image_ids],
        "text_feats": image_table[image_ids] + 4.0 * torch.randn(NUM_CAPTION_ROWS, 16, generator=gen),
        "text_ids": torch.arange(NUM_CAPTION_ROWS),
        "vqa_logits": torch.randn(12, 6, generator=gen),
        "vqa_targets": torch.rand(12, 6, generator=gen).round(decimals=1),
        "cls_logits": torch.randn(12, 8, generator=gen),
        "cls_targets": torch.randint(0, 8, (12,), generator=gen),
        "seg_pred": torch.randint(0, 4, (12, 8, 8), generator=gen),
        "seg_target": torch.where(
            torch.rand(12, 8, 8, generator=gen) < 0.1, 255, torch.randint(0, 4, (12, 8, 8), generator=gen)
        ),
        "caption_ids": [1, 2, 3, 4, 5],
        "captions": ["a red bus", "two dogs in snow", "a man riding a horse", "a cat on a mat", "a plate of food"],
    }


GROUND_TRUTH_CAPTIONS = {
    1: ["a red bus on the street", "a big red bus"],
    2: ["two dogs playing in the snow"],
    3: ["a man riding a horse", "a person on a horse"],
    4: ["a cat sitting on a mat"],
    5: ["a plate with food on it", "food on a white plate"],
}


def run_metrics(data: dict, shard: list[int] | None, vqa_rows: list[int], cls_rows: list[int], cap_rows: list[int]):
    """Update every metric with this process's rows (in two uneven batches) and compute."""
    rows = list(range(NUM_CAPTION_ROWS)) if shard is None else shard
    retrieval = ImageTextRetrievalRecall()
    for batch in (rows[:4], rows[4:]):
        retrieval.update(
            data["image_ids"][batch],
            image_feats=data["image_feats"][batch],
            text_feats=data["text_feats"][batch],
            text_ids=data["text_ids"][batch],
        )
    vqa, accuracy = VQAScore(), TopKAccuracy()
    vqa.update(data["vqa_logits"][vqa_rows], data["vqa_targets"][vqa_rows])
    accuracy.update(data["cls_logits"][cls_rows], data["cls_targets"][cls_rows])
    segmentation = SegmentationMetric(num_classes=4)
    segmentation.update(data["seg_pred"][cls_rows], data["seg_target"][cls_rows])
    caption = CaptionMetric(GROUND_TRUTH_CAPTIONS)
    caption.update([data["caption_ids"][i] for i in cap_rows], [data["captions"][i] for i in cap_rows])
    results = {f"retrieval/{k}": v for k, v in retrieval.compute().items()}
    results["vqa/score"] = vqa.compute()
    results |= {f"cls/{k}": v for k, v in accuracy.compute().items()}
    results |= {f"caption/{k}": v for k, v in caption.compute().items()}
    results |= {f"segmentation/{k}": v for k, v in segmentation.compute().items()}
    return {k: float(v) for k, v in results.items()}


def worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        torch.set_num_threads(1)
        padded = list(range(NUM_CAPTION_ROWS)) + [0]  # DistributedSampler pads to a multiple of the world size
        caption_padded = [0, 1, 2, 3, 4, 0]
        results = run_metrics(
            make_data(),
            shard=padded[rank::WORLD_SIZE],
            vqa_rows=list(range(rank, 12, WORLD_SIZE)),
            cls_rows=list(range(6 * rank, 6 * rank + 6)),
            cap_rows=caption_padded[rank::WORLD_SIZE],
        )
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_process_metrics_equal_one_process_metrics(tmp_path):
    single = run_metrics(make_data(), None, list(range(12)), list(range(12)), list(range(5)))
    assert 0 < single["retrieval/ir_r1"] < 100 and 0 < single["vqa/score"] < 100  # a non-degenerate case
    mp.spawn(worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    for rank in range(WORLD_SIZE):
        distributed = torch.load(tmp_path / f"rank{rank}.pt")
        assert distributed.keys() == single.keys()
        for name, value in single.items():
            assert abs(distributed[name] - value) < 1e-4, (rank, name, distributed[name], value)
