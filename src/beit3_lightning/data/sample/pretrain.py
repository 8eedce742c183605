"""Sample pretraining data: unlabeled scene images, caption texts and image-caption pairs, plus a visual tokenizer.

Written in the raw layout ``beit3 prepare pretrain`` reads (:mod:`beit3_lightning.data.index.pretrain`):
``images/``, ``texts/captions.txt`` (one document of a few captions of one scene per line) and ``pairs.jsonl``
with ``pair_images/``. Its scenes come from other seeds than the fine-tuning samples, so pretraining never sees a
fine-tuning image or caption. The k-means visual tokenizer (``visual_tokenizer.safetensors``, fitted on
``images/`` for 48-px images with 16-px patches) stands in for BEiT v2's VQ-KD, which needs a download.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from .files import save_image
from .scene import CELL, IMAGE_SIZE, random_scene
from .texts import captions

NUM_IMAGES = 600
NUM_DOCUMENTS = 1200
NUM_PAIR_IMAGES = 600
CAPTIONS_PER_PAIR_IMAGE = 5  # like COCO: one pair per caption
CAPTIONS_PER_DOCUMENT = 3
_IMAGES_SEED, _TEXTS_SEED, _PAIRS_SEED = 707, 808, 909
# Sample tokenizer: 48-px images, 16-px patches (the tiny model's grid), a codebook of 32 codes.
SAMPLE_CODEBOOK_SIZE = 32
VISUAL_TOKENIZER_FILE = "visual_tokenizer.safetensors"


def generate_pretrain(root: Path) -> None:
    """Write the three kinds of sample pretraining data and fit the sample visual tokenizer on the images."""
    rng = random.Random(_IMAGES_SEED)
    for index in range(NUM_IMAGES):
        save_image(random_scene(rng).render(), root / "images" / f"{index:05d}.jpg")

    rng = random.Random(_TEXTS_SEED)
    documents = [" ".join(captions(random_scene(rng), rng, CAPTIONS_PER_DOCUMENT)) for _ in range(NUM_DOCUMENTS)]
    (root / "texts").mkdir(parents=True, exist_ok=True)
    (root / "texts" / "captions.txt").write_text("\n".join(documents) + "\n", encoding="utf-8")

    rng = random.Random(_PAIRS_SEED)
    pairs = []
    for index in range(NUM_PAIR_IMAGES):
        scene = random_scene(rng)
        path = f"pair_images/{index:05d}.jpg"
        save_image(scene.render(), root / path)
        pairs += [{"image_path": path, "text": text} for text in captions(scene, rng, CAPTIONS_PER_PAIR_IMAGE)]
    (root / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")

    from ..visual_tokenizer import fit_kmeans_tokenizer  # torch: only when the sample is generated

    tokenizer = fit_kmeans_tokenizer(
        root / "images",
        codebook_size=SAMPLE_CODEBOOK_SIZE,
        image_size=IMAGE_SIZE,
        patch_size=CELL,
        center_images=True,  # the background shade varies per scene: one code for "empty cell", not eleven
        progress=False,
    )
    tokenizer.save(root / VISUAL_TOKENIZER_FILE)
