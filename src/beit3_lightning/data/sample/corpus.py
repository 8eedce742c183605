"""Training text for the shipped sample tokenizer (``assets/sample.spm``) and the function that retrains it.

Captions alone give a degenerate sentencepiece vocabulary (too few distinct words), so the sample texts are mixed
with the English documentation bundled with Python (``pydoc_data.topics``). Everything is deterministic: the same
Python ``pydoc_data`` and this code give the same model file.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from ..tokenizer import train_sentencepiece
from .scene import COLORS, SHAPES, random_scene
from .texts import captions, sentence, statement_templates, vqa_questions, yes_no_question

SAMPLE_VOCAB_SIZE = 1000
_CORPUS_SEED = 1234
_CORPUS_SCENES = 1500


def sample_texts(num_scenes: int = _CORPUS_SCENES, seed: int = _CORPUS_SEED) -> list[str]:
    """Questions, answers, captions and statements the sample generators can produce, from random scenes."""
    rng = random.Random(seed)
    texts: list[str] = [sentence(t.text) for t in statement_templates()]
    for _ in range(num_scenes):
        scene = random_scene(rng)
        texts += [qa.question for qa in vqa_questions(scene)]
        texts.append(yes_no_question(scene, rng.choice(list(COLORS)), rng.choice(SHAPES)).question)
        texts += captions(scene, rng)
    return texts


def documentation_texts() -> list[str]:
    """Non-empty lines of Python's bundled documentation topics (general English + symbols)."""
    from pydoc_data.topics import topics  # standard library; imported lazily because it is large

    return [line.strip() for key in sorted(topics) for line in topics[key].splitlines() if line.strip()]


def train_sample_tokenizer(out_path: str | os.PathLike[str], vocab_size: int = SAMPLE_VOCAB_SIZE) -> Path:
    """Rebuild ``assets/sample.spm``: ``python -m beit3_lightning.data.sample.corpus OUT.spm``."""
    return train_sentencepiece(sample_texts() + documentation_texts(), out_path, vocab_size=vocab_size)


if __name__ == "__main__":
    import sys

    print(train_sample_tokenizer(sys.argv[1] if len(sys.argv) > 1 else "sample.spm"))
