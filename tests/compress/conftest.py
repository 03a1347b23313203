"""Fixtures of the compression tests (torch is imported only by the tests that use them)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory, tiny_training_cache):
    """A seeded custom_cnn checkpoint and a 64-px cache for the search to run over."""
    torch = pytest.importorskip("torch")
    from train.checkpoints import write_checkpoint
    from train.models import create_model

    root = tmp_path_factory.mktemp("tiny-student")
    cache = tiny_training_cache(root / "cache", size=64)
    torch.manual_seed(0)
    model = create_model("custom_cnn")
    card = {
        "name": "tiny",
        "architecture": "custom_cnn",
        "labels": ["no_fracture", "fracture"],
        "aux_heads": {},
        "preprocessing": {"input_size": 64, "mean": 0.5, "std": 0.25, "fill": 0.0},
    }
    return cache, write_checkpoint(root / "tiny", model.state_dict(), card)
