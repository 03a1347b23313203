"""Fracture outlines (polygons in normalised image coordinates) as masks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw


def rasterise_outlines(
    outlines: Sequence[Sequence[tuple[float, float]]], height: int, width: int
) -> np.ndarray:
    """A (height, width) uint8 mask, 1 inside any polygon (vertices in [0, 1] × [0, 1])."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for outline in outlines:
        points = [(x * width, y * height) for x, y in outline]
        if len(points) >= 3:
            draw.polygon(points, fill=1, outline=1)
    return np.asarray(canvas, dtype=np.uint8)
