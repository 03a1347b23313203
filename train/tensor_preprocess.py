"""The torch twin of :mod:`edge_app.preprocess`: the same letterbox and normalisation on batches.

``edge_app.preprocess.preprocess`` is what the phone runs on one radiograph; training feeds
batches of tensors, on the CPU or a GPU. This module does the same three steps with the same
arithmetic (the same triangle-filter resampling matrices, the same letterbox geometry, the same
``(x - mean) / std``), so that a model never sees pixels the app would not give it. Nothing else
in the project normalises model inputs: ``tests/train/test_tensor_preprocess.py`` holds the two
to each other on synthetic images, and ``benchmarks/preprocess_parity.py`` measures the training
inputs read from the cache against the app's inputs read from the original files.
"""

from __future__ import annotations

from functools import lru_cache

from edge_app._optional import require
from edge_app.preprocess import PreprocessConfig, letterbox_geometry, resample_matrix

torch = require("torch", "preprocess training batches")


@lru_cache(maxsize=32)
def _matrix(in_size: int, out_size: int, device_name: str):
    return torch.from_numpy(resample_matrix(in_size, out_size)).to(device_name)


def resize_batch(images, height: int, width: int):
    """(n, c, h, w) float images → (n, c, height, width) with the app's antialiased filter."""
    source_height, source_width = images.shape[-2:]
    if (source_height, source_width) == (height, width):
        return images
    device = str(images.device)
    rows = _matrix(source_height, height, device).to(images.dtype)
    columns = _matrix(source_width, width, device).to(images.dtype)
    # Shrink the larger dimension first, as the numpy function does (fewer multiply-adds).
    if source_height * width <= source_width * height:
        return torch.matmul(torch.matmul(rows, images), columns.T)
    return torch.matmul(rows, torch.matmul(images, columns.T))


def letterbox_batch(images, size: int, fill: float = 0.0):
    """Images of one shape (n, c, h, w) in [0, 1] → their letterboxed ``size``² canvases."""
    height, width = images.shape[-2:]
    geometry = letterbox_geometry(height, width, size)
    resized = resize_batch(images, geometry.height, geometry.width)
    if (geometry.height, geometry.width) == (size, size):
        return resized
    canvas = torch.full(
        (*images.shape[:-2], size, size), float(fill), dtype=images.dtype, device=images.device
    )
    canvas[
        ...,
        geometry.top : geometry.top + geometry.height,
        geometry.left : geometry.left + geometry.width,
    ] = resized
    return canvas


def normalize(canvases, config: PreprocessConfig):
    """Intensities in [0, 1] → the model's input range (the twin of the numpy ``normalize``)."""
    return (canvases - config.mean) / config.std


def preprocess_batch(images, config: PreprocessConfig):
    """Letterbox to ``config.input_size`` and normalise: the batch twin of ``preprocess``."""
    return normalize(
        letterbox_batch(images.clamp(0.0, 1.0), config.input_size, config.fill), config
    )
