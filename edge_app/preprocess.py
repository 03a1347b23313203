"""The one preprocessing function every stage calls: training, calibration, benchmarks, the app.

A radiograph (a 2-D float array in [0, 1], as returned by :mod:`edge_app.radiograph`) becomes the
model input in three steps:

1. resize so that the long side equals ``input_size``, keeping the aspect ratio
   (antialiased, separable triangle filter, numpy only);
2. letterbox: centre it on a square canvas filled with the constant ``fill``;
3. normalise: ``(pixel - mean) / std``.

Squashing to a square instead would hand the model the aspect ratio, which correlates with the
label in FracAtlas. The letterbox geometry is returned too, so heatmaps can be mapped back onto
the original image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from edge_app.errors import ModelCardError


@dataclass(frozen=True)
class PreprocessConfig:
    """Preprocessing parameters; they travel in every model card under ``"preprocessing"``."""

    input_size: int = 224
    mean: float = 0.5
    std: float = 0.25
    fill: float = 0.0

    def __post_init__(self) -> None:
        if not 16 <= int(self.input_size) <= 4096:
            raise ModelCardError(f"input_size must be between 16 and 4096, got {self.input_size}")
        if not float(self.std) > 0:
            raise ModelCardError(f"std must be positive, got {self.std}")
        if not 0.0 <= float(self.fill) <= 1.0:
            raise ModelCardError(f"fill is an intensity in [0, 1], got {self.fill}")

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> PreprocessConfig:
        """Build the config from a model card (the whole card or its ``preprocessing`` part)."""
        section = card.get("preprocessing", card)
        known = {"input_size", "mean", "std", "fill"}
        unknown = set(section) - known - {"letterbox", "channels"}
        if unknown:
            raise ModelCardError(
                f"Unknown preprocessing keys {sorted(unknown)} in the model card; "
                f"expected {sorted(known)}. Was the card written by a newer FractureEdge?"
            )
        try:
            return cls(
                input_size=int(section["input_size"]),
                mean=float(section.get("mean", cls.mean)),
                std=float(section.get("std", cls.std)),
                fill=float(section.get("fill", cls.fill)),
            )
        except KeyError as error:
            raise ModelCardError("The model card's preprocessing has no 'input_size'.") from error

    def to_card(self) -> dict[str, Any]:
        return {**asdict(self), "letterbox": True, "channels": 1}


@dataclass(frozen=True)
class LetterboxGeometry:
    """Where the resized image sits on the square canvas (all in canvas pixels)."""

    canvas_size: int
    scale: float
    top: int
    left: int
    height: int
    width: int

    def crop(self, canvas: np.ndarray) -> np.ndarray:
        """Cut the image region out of a canvas-sized array (e.g. a heatmap)."""
        return canvas[self.top : self.top + self.height, self.left : self.left + self.width]


def letterbox_geometry(height: int, width: int, size: int) -> LetterboxGeometry:
    """Geometry of the letterbox that fits a ``height`` × ``width`` image into ``size``²."""
    if height < 1 or width < 1:
        raise ValueError(f"image must be at least 1×1 pixels, got {height}×{width}")
    scale = size / max(height, width)
    new_height = max(1, min(size, round(height * scale)))
    new_width = max(1, min(size, round(width * scale)))
    return LetterboxGeometry(
        canvas_size=size,
        scale=scale,
        top=(size - new_height) // 2,
        left=(size - new_width) // 2,
        height=new_height,
        width=new_width,
    )


@lru_cache(maxsize=64)
def resample_matrix(in_size: int, out_size: int) -> np.ndarray:
    """Row-stochastic matrix mapping ``in_size`` samples to ``out_size`` (triangle filter).

    The torch twin (:mod:`train.tensor_preprocess`) resamples with these same matrices. When
    shrinking, the filter is widened by the scale factor so that every input pixel
    contributes (antialiasing, as PIL's BILINEAR does); pixel centres are aligned.
    """
    scale = in_size / out_size
    support = max(scale, 1.0)
    centres = (np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5
    positions = np.arange(in_size, dtype=np.float64)
    weights = np.clip(1.0 - np.abs(positions[None, :] - centres[:, None]) / support, 0.0, None)
    totals = weights.sum(axis=1, keepdims=True)
    # A target pixel whose window misses every source pixel cannot happen for out_size >= 1,
    # but guard the division anyway.
    weights /= np.where(totals > 0, totals, 1.0)
    return weights.astype(np.float32)


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a 2-D float image with an antialiased separable triangle filter."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D single-channel image, got shape {image.shape}")
    rows = resample_matrix(image.shape[0], height)
    cols = resample_matrix(image.shape[1], width)
    # Shrink the larger dimension first: fewer multiply-adds.
    if image.shape[0] * width <= image.shape[1] * height:
        return (rows @ image) @ cols.T
    return rows @ (image @ cols.T)


def letterbox(
    image: np.ndarray, size: int, fill: float = 0.0
) -> tuple[np.ndarray, LetterboxGeometry]:
    """Resize (keeping the aspect ratio) and centre on a ``size``² canvas of constant ``fill``."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D single-channel image, got shape {image.shape}")
    geometry = letterbox_geometry(image.shape[0], image.shape[1], size)
    canvas = np.full((size, size), fill, dtype=np.float32)
    resized = resize(image, geometry.height, geometry.width)
    canvas[
        geometry.top : geometry.top + geometry.height,
        geometry.left : geometry.left + geometry.width,
    ] = resized
    return canvas, geometry


def normalize(canvas: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Map intensities in [0, 1] to the model's input range."""
    return ((np.asarray(canvas, dtype=np.float32) - config.mean) / config.std).astype(np.float32)


def preprocess(image: np.ndarray, config: PreprocessConfig) -> tuple[np.ndarray, LetterboxGeometry]:
    """Turn a radiograph in [0, 1] into the model input (``input_size``², float32).

    This is the one function training, calibration, benchmarks and the app share.
    """
    image = np.asarray(image, dtype=np.float32)
    if not np.isfinite(image).all():
        raise ValueError("the image holds NaN or infinite values; load it with edge_app.radiograph")
    canvas, geometry = letterbox(np.clip(image, 0.0, 1.0), config.input_size, config.fill)
    return normalize(canvas, config), geometry
