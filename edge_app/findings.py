"""Where to look: the heatmap's peak and its top region, as a point and a box.

The heatmap is the in-graph class-activation map upsampled onto the original image. Its *peak*
is where the evidence is strongest; its *top region* is the connected area around the peak
where the map stays within ``fraction`` of the peak value. The box a front end draws is the top
region's bounding box. Training and the benchmarks score the same region against the fracture
outlines (pointing game, IoU), so what is measured is what the clinician is shown.
"""

from __future__ import annotations

import numpy as np

#: Share of the peak value that bounds the top region.
TOP_REGION_FRACTION = 0.5
#: Samples along the longer side on which :func:`locate` looks: the box's edges to within 1/64
#: of the image, finer than a 5 × 5 class-activation map resolves, at a cost that does not grow
#: with the film's size.
LOCATE_CELLS = 64

Point = tuple[float, float]
Box = tuple[float, float, float, float]


def peak(heatmap: np.ndarray) -> tuple[int, int] | None:
    """(row, column) of the maximum, or None for an empty (all-zero or non-finite) map.

    Ties resolve to the centroid-nearest maximum, so a plateau gives its middle, not its corner.
    """
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.size == 0 or not np.isfinite(heatmap).all() or not heatmap.max() > 0:
        return None
    rows, columns = np.nonzero(heatmap == heatmap.max())
    centre_row, centre_column = rows.mean(), columns.mean()
    nearest = np.argmin((rows - centre_row) ** 2 + (columns - centre_column) ** 2)
    return int(rows[nearest]), int(columns[nearest])


def top_region(heatmap: np.ndarray, fraction: float = TOP_REGION_FRACTION) -> np.ndarray:
    """Boolean mask: the 4-connected component around the peak where the map ≥ fraction·peak."""
    heatmap = np.asarray(heatmap, dtype=np.float32)
    region = np.zeros(heatmap.shape, dtype=bool)
    start = peak(heatmap)
    if start is None:
        return region
    above = heatmap >= fraction * heatmap[start]
    above_by_column = np.ascontiguousarray(above.T)
    region[start] = True
    # Whole runs at a time, alternately along rows and columns, until nothing grows: a smooth
    # map's region is reached in two or three rounds, where a pixel-by-pixel flood fill would
    # take a Python step per pixel (milliseconds on the runtime's path).
    while True:
        grown = _grow_along_rows(region, above)
        grown = _grow_along_rows(np.ascontiguousarray(grown.T), above_by_column).T
        if np.array_equal(grown, region):
            return np.ascontiguousarray(grown)
        region = grown


def _grow_along_rows(region: np.ndarray, above: np.ndarray) -> np.ndarray:
    """Every horizontal run of ``above`` that holds a pixel of ``region``, as a mask."""
    height, width = above.shape
    padded = np.zeros((height, width + 1), dtype=bool)  # a False column ends each row's runs
    padded[:, :width] = above
    flat = padded.ravel()
    starts = flat.copy()
    starts[1:] &= ~flat[:-1]
    run = np.cumsum(starts).reshape(height, width + 1)[:, :width]  # run number, 0 before any
    touched = np.zeros(int(run[-1, -1]) + 2, dtype=bool)
    touched[run[region & above]] = True
    return touched[run] & above


def region_box(region: np.ndarray) -> Box | None:
    """Normalised (x0, y0, x1, y1) bounding box of a mask, or None when it is empty."""
    rows, columns = np.nonzero(region)
    if rows.size == 0:
        return None
    height, width = region.shape
    return (
        round(float(columns.min()) / width, 4),
        round(float(rows.min()) / height, 4),
        round(float(columns.max() + 1) / width, 4),
        round(float(rows.max() + 1) / height, 4),
    )


def normalised_peak(heatmap: np.ndarray) -> Point | None:
    """The peak as normalised (x, y) at the pixel's centre, or None."""
    point = peak(heatmap)
    if point is None:
        return None
    height, width = np.asarray(heatmap).shape
    return round((point[1] + 0.5) / width, 4), round((point[0] + 0.5) / height, 4)


def locate(
    heatmap: np.ndarray, cells: int = LOCATE_CELLS, with_box: bool = True
) -> tuple[Point | None, Box | None]:
    """The map's peak (x, y) and its top region's box (x0, y0, x1, y1), normalised to the map.

    Found on every ``step``-th pixel (``step`` = the longer side / ``cells``, rounded up; each
    sample stands for its ``step`` × ``step`` block), so the cost stays that of a ``cells``-wide
    map whatever the image's size; with ``step`` = 1 it is :func:`normalised_peak` and
    :func:`region_box` of :func:`top_region`. ``with_box=False`` skips the region (no box).
    """
    heatmap = np.asarray(heatmap, dtype=np.float32)
    height, width = heatmap.shape
    step = max(1, -(-max(height, width) // cells))
    offset = step // 2  # each block's middle pixel
    grid = np.ascontiguousarray(heatmap[offset::step, offset::step])
    start = peak(grid)
    if start is None:
        return None, None
    point = (
        round((offset + start[1] * step + 0.5) / width, 4),
        round((offset + start[0] * step + 0.5) / height, 4),
    )
    if not with_box:
        return point, None
    rows, columns = np.nonzero(top_region(grid))
    box = (
        round(float(columns.min() * step) / width, 4),
        round(float(rows.min() * step) / height, 4),
        round(float(min((columns.max() + 1) * step, width)) / width, 4),
        round(float(min((rows.max() + 1) * step, height)) / height, 4),
    )
    return point, box


def mask_iou(first: np.ndarray, second: np.ndarray) -> float:
    """Intersection over union of two boolean masks (NaN when both are empty)."""
    union = np.logical_or(first, second).sum()
    if union == 0:
        return float("nan")
    return float(np.logical_and(first, second).sum() / union)
