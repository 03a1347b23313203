"""Words and numbers that every front end (``predict``, the app, the web page, the reports) shows
the same way: the disclaimer, percentages, and which bundle is in use."""

from __future__ import annotations

from typing import Any

DISCLAIMER = (
    "Research tool, not a diagnostic device. FractureEdge has no regulatory clearance. Its "
    "output must not be used to diagnose, treat or rule out a fracture; a qualified clinician "
    "reviews every image."
)


def percent(fraction: float, decimals: int = 1) -> str:
    """``0.4673`` → ``"46.7 %"`` (the number, a space, the sign, as the documentation writes)."""
    return f"{100 * fraction:.{decimals}f} %"


def site_calibration_text(record: dict[str, Any] | None) -> str:
    """``Bundle.site_calibration`` in words: ``site-calibrated: <site>, <date>`` or
    ``not site-calibrated``."""
    if not record:
        return "not site-calibrated"
    return f"site-calibrated: {record['site']}, {record['date']}"
