"""Display windows for volumes (CT/MRI): presets in Hounsfield units, percentiles, explicit.

A volume is windowed as a whole, so its slices share one scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from edge_app.errors import EmptyImageError
from edge_app.film import (
    EXPLORATORY_WARNING,
    MONOCHROME1_WARNING,
    Radiograph,
    has_content,
)


class Window(NamedTuple):
    """A display window: intensities from ``center - width/2`` (black) to ``center + width/2``."""

    center: float
    width: float


# Hounsfield units, for CT.
WINDOW_PRESETS: dict[str, Window] = {
    "bone": Window(center=400.0, width=1800.0),
    "soft_tissue": Window(center=40.0, width=400.0),
    "lung": Window(center=-600.0, width=1500.0),
    "brain": Window(center=40.0, width=80.0),
}
_AUTO_WINDOW = "auto"


def validate_window(window: str | tuple[float, float]) -> str | Window:
    if isinstance(window, str):
        if window == _AUTO_WINDOW or window in WINDOW_PRESETS:
            return window
        raise ValueError(
            f"Unknown window '{window}'; expected one of "
            f"{sorted([*WINDOW_PRESETS, _AUTO_WINDOW])} or a (center, width) pair."
        )
    try:
        center, width = (float(value) for value in window)
    except (TypeError, ValueError) as error:
        message = f"window must be a name or a (center, width) pair, got {window!r}"
        raise ValueError(message) from error
    if not (np.isfinite(center) and np.isfinite(width) and width > 0):
        raise ValueError(f"window needs a finite center and a positive width, got {window!r}")
    return Window(center, width)


def display_volume(
    volume: np.ndarray,
    window: str | Window,
    *,
    is_ct: bool,
    monochrome1: bool,
    in_place: bool = False,
) -> tuple[np.ndarray, dict[str, Any], tuple[str, ...]]:
    """Window the whole volume into [0, 1] and describe how; slices then share one scale.

    With ``in_place`` the (writable float32) ``volume`` itself becomes the result, so a volume
    near the size limit is never held twice.
    """
    chosen, how, warnings = _resolve_window(window, volume, is_ct)
    pixels = _apply_window(volume, chosen, in_place=in_place)
    if monochrome1:
        np.subtract(np.float32(1.0), pixels, out=pixels)
        warnings += (MONOCHROME1_WARNING,)
    metadata = {"window": (chosen.center, chosen.width), "window_source": how, "hounsfield": is_ct}
    return pixels, metadata, (EXPLORATORY_WARNING, *warnings)


def _resolve_window(
    window: str | Window, volume: np.ndarray, is_ct: bool
) -> tuple[Window, str, tuple[str, ...]]:
    if isinstance(window, Window):
        return window, "explicit", ()
    if window == _AUTO_WINDOW or (window == "bone" and not is_ct):
        return _percentile_window(volume), "percentile 1-99", ()
    warnings: tuple[str, ...] = ()
    if not is_ct:
        warnings = (
            f"window: preset '{window}' is in Hounsfield units but this volume is not CT; "
            "try window='auto'",
        )
    return WINDOW_PRESETS[window], f"preset {window}", warnings


# np.percentile sorts a copy of its input; above this many voxels, it gets every k-th slice.
_PERCENTILE_SAMPLE = 16 * 1024 * 1024


def _percentile_window(volume: np.ndarray) -> Window:
    step = -(-volume.size // _PERCENTILE_SAMPLE)
    sample = volume[::step] if step > 1 else volume
    low, high = (float(value) for value in np.percentile(sample, [1.0, 99.0]))
    if high <= low:
        low, high = float(volume.min()), float(volume.max())
    return Window(center=(low + high) / 2.0, width=high - low)


def _apply_window(values: np.ndarray, window: Window, *, in_place: bool = False) -> np.ndarray:
    """Linear window into [0, 1]; a zero width (constant data) becomes a step, not a 0/0."""
    out = values if in_place else np.array(values, dtype=np.float32)
    if window.width <= 0:
        np.copyto(out, values > window.center)
        return out
    low = window.center - window.width / 2.0
    out -= np.float32(low)
    out /= np.float32(window.width)
    return np.clip(out, 0.0, 1.0, out=out)


def looks_like_hounsfield(volume: np.ndarray) -> bool:
    """CT in Hounsfield units has air near -1000 (padding down to about -3024)."""
    return volume.size > 0 and -3100.0 <= float(volume.min()) <= -500.0


def slices_to_radiographs(
    pixels: np.ndarray,
    sources: Sequence[str],
    kind: str,
    metadata: dict[str, Any],
    warnings: tuple[str, ...],
) -> list[Radiograph]:
    """One radiograph per windowed slice, leaving out (with a warning) slices without content.

    A blank slice (all air, padding, an all-zero volume) would otherwise get a verdict of its
    own and move the study's mean; :class:`EmptyImageError` when every slice is blank.
    """
    count = pixels.shape[0]
    kept = [index for index in range(count) if has_content(pixels[index])]
    if not kept:
        value = float(pixels.min()) if pixels.size else 0.0
        raise EmptyImageError(
            f"{sources[0] if sources else 'the volume'} holds no image content: all {count} "
            f"slices are blank after windowing (the whole volume reads {value:.3g} or nearly), "
            "so no slice gets a verdict. Check the file, or try window='auto'."
        )
    if len(kept) < count:
        left_out = _ranges(sorted(set(range(count)) - set(kept)))
        warnings += (
            f"blank: left out {count - len(kept)} of {count} slices that hold no image content "
            f"after windowing (slices {left_out})",
        )
    return [
        Radiograph(
            pixels=pixels[index],
            source=sources[index],
            kind=kind,
            warnings=warnings,
            metadata={**metadata, "slice_index": index, "slice_count": count},
        )
        for index in kept
    ]


def _ranges(indices: list[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` → ``"0-2, 5, 7-8"``."""
    runs: list[list[int]] = []
    for index in indices:
        if runs and index == runs[-1][1] + 1:
            runs[-1][1] = index
        else:
            runs.append([index, index])
    return ", ".join(str(low) if low == high else f"{low}-{high}" for low, high in runs)
