"""The :class:`Radiograph` every reader returns, and the pixel arithmetic the readers share.

:mod:`edge_app.radiograph` is the public entry point; this module sits below every format reader
(:mod:`edge_app.image_io`, :mod:`edge_app.dicom_io`, :mod:`edge_app.volume_io`) so that they can
build radiographs without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_app.errors import EmptyImageError, InvalidVolumeError
from edge_app.limits import MIN_CONTENT_STD

_LUMINANCE_WEIGHTS = (0.299, 0.587, 0.114)

EXPLORATORY_WARNING = (
    "exploratory: this is a slice of a volume (CT/MRI) or a frame of a multi-frame file, not a "
    "radiograph; the model was trained on radiographs, so its output here is exploratory"
)
MONOCHROME1_WARNING = "MONOCHROME1 inverted so that bone is bright"


@dataclass(frozen=True, eq=False)
class Radiograph:
    """One 2-D image ready for :func:`edge_app.preprocess.preprocess`.

    ``eq=False`` keeps identity comparison: comparing numpy arrays with ``==`` is element-wise.
    """

    pixels: np.ndarray
    source: str
    kind: str
    warnings: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.pixels.ndim != 2 or self.pixels.dtype != np.float32:
            raise ValueError(
                f"Radiograph.pixels must be a 2-D float32 array, got {self.pixels.ndim}-D "
                f"{self.pixels.dtype}"
            )

    @property
    def truncated(self) -> bool:
        """True when the file was truncated and decoded tolerantly."""
        return any(warning.startswith("truncated") for warning in self.warnings)


def with_warnings(radiographs: list[Radiograph], extra: tuple[str, ...]) -> list[Radiograph]:
    """The radiographs with ``extra`` appended to each one's warnings."""
    if not extra:
        return radiographs
    return [replace(radiograph, warnings=radiograph.warnings + extra) for radiograph in radiographs]


def check_finite(values: np.ndarray, source: Path) -> None:
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        count = int(values.size - np.isfinite(values).sum())
        raise InvalidVolumeError(
            f"{source} holds {count:,} NaN or infinite values, which FractureEdge does not "
            "replace silently. Fix the file (e.g. set them to the background value) and retry."
        )


def luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luminance of the last axis (RGB) as float32, without 8-bit rounding.

    Accumulated one channel at a time, so the peak is two float32 planes, not a float64 copy
    of all three channels (384 MB for a 16-megapixel image).
    """
    rgb = np.asarray(rgb)
    result = np.zeros(rgb.shape[:-1], dtype=np.float32)
    for channel, weight in enumerate(_LUMINANCE_WEIGHTS):
        plane = rgb[..., channel].astype(np.float32)
        plane *= np.float32(weight)
        result += plane
    return result


def scale_to_unit(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``low``..``high`` onto 0..1 (clipped, float32, a new array); an empty range gives
    zeros."""
    if high <= low:
        return np.zeros(np.shape(values), dtype=np.float32)
    # float32 halves the memory of a large volume and is exact for 16-bit data; one copy, then
    # in place.
    scaled = np.array(values, dtype=np.float32)
    scaled -= np.float32(low)
    scaled /= np.float32(high - low)
    return np.clip(scaled, 0.0, 1.0, out=scaled)


def min_max_scale(values: np.ndarray) -> np.ndarray:
    return scale_to_unit(values, float(np.min(values)), float(np.max(values)))


def block_mean(values: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor`` × ``factor`` blocks over the first two axes, as float32; blocks at the
    right and bottom edges average the pixels they have (as Pillow's ``Image.reduce``)."""
    row_starts = np.arange(0, values.shape[0], factor)
    column_starts = np.arange(0, values.shape[1], factor)
    summed = np.add.reduceat(values, row_starts, axis=0, dtype=np.float32)
    summed = np.add.reduceat(summed, column_starts, axis=1)
    row_counts = np.diff(np.append(row_starts, values.shape[0]))
    column_counts = np.diff(np.append(column_starts, values.shape[1]))
    counts = np.multiply.outer(row_counts, column_counts).astype(np.float32)
    summed /= counts.reshape(counts.shape + (1,) * (values.ndim - 2))
    return summed


def content_spread(pixels: np.ndarray, rows_per_chunk: int = 256) -> float:
    """The standard deviation of a 2-D image, accumulated in float64 a band of rows at a time
    (no full-size temporary)."""
    count = pixels.size
    if count == 0:
        return 0.0
    total = squares = 0.0
    for top in range(0, pixels.shape[0], rows_per_chunk):
        band = pixels[top : top + rows_per_chunk].astype(np.float64)
        total += float(band.sum())
        squares += float(np.square(band, out=band).sum())
    mean = total / count
    return float(np.sqrt(max(squares / count - mean * mean, 0.0)))


def has_content(pixels: np.ndarray) -> bool:
    """False for a blank film: pixels that vary by less than :data:`MIN_CONTENT_STD`."""
    return content_spread(pixels) >= MIN_CONTENT_STD


def require_content(radiograph: Radiograph) -> Radiograph:
    """The radiograph itself, or :class:`EmptyImageError` when it holds no image content."""
    pixels = radiograph.pixels
    spread = content_spread(pixels)
    if spread >= MIN_CONTENT_STD:
        return radiograph
    low, high = float(pixels.min()), float(pixels.max())
    found = (
        f"every pixel is {low:.3g}"
        if low == high
        else f"its pixels span only {low:.3g} to {high:.3g} (standard deviation {spread:.2g})"
    )
    cut = " It was truncated, and the part that decoded is blank." if radiograph.truncated else ""
    raise EmptyImageError(
        f"{radiograph.source} holds no image content: {found}, below the "
        f"{MIN_CONTENT_STD:.2g} standard deviation (one 8-bit grey level) any exposed film "
        f"shows.{cut} A blank film gets no verdict; check the file or export it again."
    )
