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

from edge_app.errors import InvalidVolumeError

_LUMINANCE_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float64)

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
    """ITU-R BT.601 luminance of the last axis (RGB), in float64, without 8-bit rounding."""
    return np.asarray(rgb, dtype=np.float64)[..., :3] @ _LUMINANCE_WEIGHTS


def scale_to_unit(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``low``..``high`` onto 0..1 (clipped, float32); an empty range gives zeros."""
    if high <= low:
        return np.zeros(np.shape(values), dtype=np.float32)
    # float32 halves the memory of a large volume and is exact for 16-bit data.
    scaled = (np.asarray(values, dtype=np.float32) - np.float32(low)) / np.float32(high - low)
    return np.clip(scaled, 0.0, 1.0, out=scaled)


def min_max_scale(values: np.ndarray) -> np.ndarray:
    return scale_to_unit(values, float(np.min(values)), float(np.max(values)))
