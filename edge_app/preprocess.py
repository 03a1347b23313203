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


# A dense matrix is built only for small sizes (the training twin's 256 → 224 is 57,344 entries);
# images of any size are resized through the banded weights below.
_MAX_DENSE_ENTRIES = 16 * 1024 * 1024


@dataclass(frozen=True, eq=False)
class ResampleWeights:
    """The triangle-filter resampling from ``in_size`` to ``out_size`` samples, as a band.

    Output sample ``i`` is ``weights[i] @ input[starts[i] : starts[i] + taps]``: each one
    touches at most ``ceil(2 * support) + 1`` inputs, so the storage grows with the sizes, not
    with their product (a 1 × 1,000,000 image needs 8 MB here, 640 MB as a dense matrix).
    """

    in_size: int
    out_size: int
    starts: np.ndarray  # (out_size,) int64, read-only
    weights: np.ndarray  # (out_size, taps) float32, read-only; rows sum to 1

    @property
    def taps(self) -> int:
        return self.weights.shape[1]

    def dense(self) -> np.ndarray:
        """The same weights as an ``(out_size, in_size)`` matrix (new, writable)."""
        matrix = np.zeros((self.out_size, self.in_size), dtype=np.float32)
        columns = self.starts[:, None] + np.arange(self.taps)
        np.put_along_axis(matrix, columns, self.weights, axis=1)
        return matrix


def _band(in_size: int, out_size: int) -> ResampleWeights:
    if in_size < 1 or out_size < 1:
        raise ValueError(f"resampling needs sizes of at least 1, got {in_size} → {out_size}")
    scale = in_size / out_size
    support = max(scale, 1.0)
    centres = (np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5
    # Inputs with a non-zero weight lie strictly inside (centre - support, centre + support):
    # at most ceil(2 * support) of them, starting at floor(centre - support) + 1.
    taps = min(int(np.ceil(2.0 * support)) + 1, in_size)
    starts = np.clip(np.floor(centres - support).astype(np.int64) + 1, 0, in_size - taps)
    positions = starts[:, None] + np.arange(taps, dtype=np.float64)
    weights = np.clip(1.0 - np.abs(positions - centres[:, None]) / support, 0.0, None)
    totals = weights.sum(axis=1, keepdims=True)
    # A target pixel whose window misses every source pixel cannot happen for out_size >= 1,
    # but guard the division anyway.
    weights /= np.where(totals > 0, totals, 1.0)
    weights = weights.astype(np.float32)
    starts.flags.writeable = False
    weights.flags.writeable = False
    return ResampleWeights(in_size, out_size, starts, weights)


@lru_cache(maxsize=8)
def resample_weights(in_size: int, out_size: int) -> ResampleWeights:
    """The banded triangle-filter weights from ``in_size`` to ``out_size`` samples.

    Cached, but only a handful of entries: sizes repeat (the card's input size, a site's
    detector) and each entry holds about ``2 × (in_size + out_size)`` numbers, so the cache
    cannot grow with uploads the way a cache of dense matrices did.
    """
    return _band(in_size, out_size)


def resample_matrix(in_size: int, out_size: int) -> np.ndarray:
    """Row-stochastic matrix mapping ``in_size`` samples to ``out_size`` (triangle filter).

    The torch twin (:mod:`train.tensor_preprocess`) resamples with these same matrices; the
    numpy :func:`resize` uses the same weights in banded form (:func:`resample_weights`).
    When shrinking, the filter is widened by the scale factor so that every input pixel
    contributes (antialiasing, as PIL's BILINEAR does); pixel centres are aligned. Not cached:
    the caller keeps what it reuses. Refuses sizes whose matrix would exceed 16 Mi entries
    (64 MB), which no training size comes near.
    """
    if in_size * out_size > _MAX_DENSE_ENTRIES:
        raise ValueError(
            f"a dense {out_size}×{in_size} resampling matrix would hold {in_size * out_size:,} "
            f"entries (limit {_MAX_DENSE_ENTRIES:,}); use resize() or resample_weights(), "
            "which store only the band"
        )
    return _band(in_size, out_size).dense()


def _resample_rows(image: np.ndarray, band: ResampleWeights) -> np.ndarray:
    """Resample axis 0: ``(in_size, w)`` → ``(out_size, w)``."""
    resampled = np.empty((band.out_size, image.shape[1]), dtype=np.float32)
    for index, start in enumerate(band.starts.tolist()):
        np.matmul(band.weights[index], image[start : start + band.taps], out=resampled[index])
    return resampled


def _resample_columns(image: np.ndarray, band: ResampleWeights) -> np.ndarray:
    """Resample axis 1: ``(h, in_size)`` → ``(h, out_size)``."""
    resampled = np.empty((band.out_size, image.shape[0]), dtype=np.float32)
    for index, start in enumerate(band.starts.tolist()):
        np.matmul(image[:, start : start + band.taps], band.weights[index], out=resampled[index])
    return resampled.T


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a 2-D float image with an antialiased separable triangle filter.

    The result equals ``resample_matrix(h, height) @ image @ resample_matrix(w, width).T`` (up
    to float32 rounding) while storing only the bands of those matrices.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D single-channel image, got shape {image.shape}")
    rows = resample_weights(image.shape[0], height)
    columns = resample_weights(image.shape[1], width)
    # Shrink the larger dimension first: fewer multiply-adds.
    if image.shape[0] * width <= image.shape[1] * height:
        return np.ascontiguousarray(_resample_columns(_resample_rows(image, rows), columns))
    return _resample_rows(_resample_columns(image, columns), rows)


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
