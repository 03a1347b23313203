"""Held-out acquisitions: which films form a test set that stands in for "another hospital".

FracAtlas holds two kinds of film: small-format films (373 × 454 and similar) and large-format
films whose original long side was above 1,000 px (351 of them; in the prepared copy they were
downscaled to 1,024 px on the long side, so the size on disk still tells them apart). A model
trained and validated on small-format films only, and tested on every large-format film, is
scored on an acquisition it never saw: a proxy for another hospital's machine
(notes/transfer-probe.md: the proxy ranked frozen-feature models the way a sequestered external
set did, where in-distribution validation did not).

Use :func:`held_out_indices` with a name from :data:`HOLD_OUTS` and hand the indices to
:func:`train.splits.make_split`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from edge_app.errors import UsageError
from train.datasets import Sample

logger = logging.getLogger(__name__)

#: A film whose long side on disk is at least this many pixels is large-format.
LARGE_FORMAT_MIN_LONG_SIDE = 1000
HOLD_OUTS = ("large-format",)


def image_long_side(path: str | Path) -> int | None:
    """The stored image's long side in pixels, read from its header; None when unreadable."""
    from PIL import Image, UnidentifiedImageError  # here: the CLI imports HOLD_OUTS for --help

    try:
        with Image.open(path) as image:
            return max(image.size)
    except (OSError, UnidentifiedImageError) as error:
        logger.warning("cannot read the size of %s (%s); it is not held out", path, error)
        return None


def large_format_indices(
    samples: Sequence[Sample], min_long_side: int = LARGE_FORMAT_MIN_LONG_SIDE
) -> list[int]:
    """Indices of the samples whose image has a long side of at least ``min_long_side`` px."""
    return [
        index
        for index, sample in enumerate(samples)
        if (image_long_side(sample.path) or 0) >= min_long_side
    ]


def held_out_indices(name: str, samples: Sequence[Sample]) -> list[int]:
    """The sample indices the hold-out ``name`` puts in test; errors list the valid names."""
    if name == "large-format":
        return large_format_indices(samples)
    raise UsageError(f"unknown hold-out {name!r}; valid: {', '.join(HOLD_OUTS)}")
