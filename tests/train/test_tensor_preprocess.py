"""The torch twin of the app's preprocessing gives the app's numbers, and nothing else
normalises model inputs."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge_app.preprocess import PreprocessConfig, preprocess  # noqa: E402
from train.tensor_preprocess import letterbox_batch, preprocess_batch  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "height,width,size",
    [(37, 53, 32), (240, 300, 160), (64, 64, 64), (300, 120, 96), (20, 30, 224)],
)
def test_twin_matches_the_numpy_preprocessing(height, width, size):
    rng = np.random.default_rng(height * width)
    images = rng.uniform(-0.1, 1.1, (3, height, width)).astype(np.float32)  # clipping too
    config = PreprocessConfig(input_size=size, mean=0.5, std=0.25, fill=0.1)
    expected = np.stack([preprocess(image, config)[0] for image in images])
    got = preprocess_batch(torch.from_numpy(images).unsqueeze(1), config).squeeze(1).numpy()
    assert got.shape == expected.shape == (3, size, size)
    assert np.abs(got - expected).max() < 2e-5


def test_letterbox_of_a_square_canvas_at_its_size_is_the_identity():
    canvas = torch.rand(2, 1, 48, 48)
    assert torch.equal(letterbox_batch(canvas, 48), canvas)


def _normalisations(tree: ast.AST) -> list[int]:
    """Line numbers of ``(<x> - <..mean..>) / <..std..>`` expressions."""

    def names(node: ast.AST) -> str:
        return " ".join(
            getattr(child, "id", getattr(child, "attr", "")) for child in ast.walk(node)
        ).lower()

    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Div)
        and isinstance(node.left, ast.BinOp)
        and isinstance(node.left.op, ast.Sub)
        and "mean" in names(node.left.right)
        and "std" in names(node.right)
    ]


def test_normalisation_is_written_in_exactly_two_places():
    """``(x - mean) / std``: the numpy function and its torch twin, nowhere else."""
    hits = []
    for path in sorted(REPO.glob("*/**/*.py")):
        relative = path.relative_to(REPO)
        if relative.parts[0] in {"tests", "build", "runs", "cache"} or ".venv" in relative.parts:
            continue
        hits += [f"{relative}:{line}" for line in _normalisations(ast.parse(path.read_text()))]
    assert [hit.split(":")[0] for hit in hits] == [
        "edge_app/preprocess.py",
        "train/tensor_preprocess.py",
    ], hits
