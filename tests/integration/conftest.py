"""Fixtures shared by the integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def pretrain_root(sample_dataset) -> Path:
    """The sample's pretraining data (images, caption texts, pairs and the k-means visual tokenizer)."""
    return sample_dataset("pretrain")
