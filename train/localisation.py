"""Where a heatmap points, scored against fracture boxes, and how alike two heatmaps are.

Pure numpy (no torch): the benchmarks score the TFLite bundle's maps with these on a machine
that has only the app extra.
"""

from __future__ import annotations

import numpy as np

TOP_PERCENT = 10  # cam_agreement compares the hottest 10 % of each map


def _as_heatmap(heatmap, name: str = "heatmap") -> np.ndarray:
    heatmap = np.asarray(heatmap, dtype=np.float64)
    if heatmap.ndim != 2 or heatmap.size == 0:
        raise ValueError(f"{name} must be a non-empty (H, W) array, got shape {heatmap.shape}")
    if not np.isfinite(heatmap).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return heatmap


def _as_boxes(boxes) -> np.ndarray:
    boxes = np.asarray(boxes if len(boxes) else np.zeros((0, 4)), dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be a list of (x0, y0, x1, y1), got shape {boxes.shape}")
    if not np.isfinite(boxes).all() or (boxes < 0).any() or (boxes > 1).any():
        raise ValueError(
            "box coordinates must be normalised to [0, 1]; divide pixel coordinates "
            "by the image width (x) and height (y)"
        )
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        raise ValueError(
            "boxes must be (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1; "
            "convert YOLO (cx, cy, w, h) boxes to corners first"
        )
    return boxes


def pointing_game(heatmap: np.ndarray, boxes, tolerance_pixels: float = 0) -> bool | None:
    """Does the heatmap's maximum fall inside one of ``boxes``? None when there are no boxes.

    Boxes are normalised ``(x0, y0, x1, y1)`` and closed. A pixel (row r, column c) is the point
    (c + 0.5, r + 0.5) in pixel units; it hits when it lies within ``tolerance_pixels`` (Euclidean)
    of a box. When several pixels share the maximum, every one of them must hit, so a flat map
    cannot score by luck.
    """
    heatmap = _as_heatmap(heatmap)
    boxes = _as_boxes(boxes)
    if tolerance_pixels < 0:
        raise ValueError(f"tolerance_pixels must be >= 0, got {tolerance_pixels}")
    if len(boxes) == 0:
        return None
    height, width = heatmap.shape
    rows, columns = np.nonzero(heatmap == heatmap.max())
    point_x, point_y = (columns + 0.5)[:, None], (rows + 0.5)[:, None]
    x0, y0, x1, y1 = (boxes * [width, height, width, height]).T[:, None, :]
    distance_x = np.maximum(np.maximum(x0 - point_x, point_x - x1), 0)
    distance_y = np.maximum(np.maximum(y0 - point_y, point_y - y1), 0)
    hits = np.hypot(distance_x, distance_y) <= tolerance_pixels  # (maxima, boxes)
    return bool(hits.any(axis=1).all())


def pad_boxes(boxes, padding: float) -> np.ndarray:
    """Boxes grown by ``padding`` (a share of the image's width for x, of its height for y) on
    every side, clipped to the image: annotators draw tight boxes around a fracture line that a
    coarse heatmap can only approximately point at."""
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    boxes = _as_boxes(boxes)
    return np.clip(boxes + np.array([-padding, -padding, padding, padding]), 0.0, 1.0)


def boxes_mask(boxes, height: int, width: int) -> np.ndarray:
    """Boolean (height, width) mask of the pixels whose centre lies in one of ``boxes``
    (normalised, closed; the pixel convention of :func:`pointing_game`)."""
    boxes = _as_boxes(boxes) * [width, height, width, height]
    columns, rows = np.arange(width) + 0.5, np.arange(height) + 0.5
    mask = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        inside_rows = (rows >= y0) & (rows <= y1)
        inside_columns = (columns >= x0) & (columns <= x1)
        mask |= inside_rows[:, None] & inside_columns[None, :]
    return mask


def pointing_game_score(heatmaps, boxes_per_image, tolerance_pixels: float = 0) -> dict:
    """Pointing game over images: ``hits``, ``evaluated`` (images with boxes) and ``rate``.

    ``rate`` is NaN when no image has a box.
    """
    if len(heatmaps) != len(boxes_per_image):
        raise ValueError(
            f"{len(heatmaps)} heatmaps but {len(boxes_per_image)} box lists; "
            "give one box list (possibly empty) per heatmap"
        )
    results = [
        pointing_game(heatmap, boxes, tolerance_pixels)
        for heatmap, boxes in zip(heatmaps, boxes_per_image, strict=True)
    ]
    evaluated = sum(result is not None for result in results)
    hits = sum(result is True for result in results)
    return {
        "hits": hits,
        "evaluated": evaluated,
        "rate": hits / evaluated if evaluated else float("nan"),
    }


def _linear_weights(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neighbour indices and weights of bilinear resampling with half-pixel centres (the
    ``align_corners=False`` convention), source positions clamped at the first pixel."""
    position = np.maximum((np.arange(size_out) + 0.5) * size_in / size_out - 0.5, 0.0)
    low = np.minimum(np.floor(position).astype(int), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    return low, high, position - low


def _resized(heatmap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize (no antialiasing), as torch's ``interpolate(mode="bilinear")`` does."""
    if heatmap.shape == shape:
        return heatmap
    low, high, weight = _linear_weights(heatmap.shape[0], shape[0])
    rows = heatmap[low] * (1 - weight)[:, None] + heatmap[high] * weight[:, None]
    low, high, weight = _linear_weights(heatmap.shape[1], shape[1])
    return rows[:, low] * (1 - weight) + rows[:, high] * weight


def _top_region(heatmap: np.ndarray) -> np.ndarray:
    """The hottest TOP_PERCENT of pixels; ties at the threshold all join, so order never decides."""
    values = heatmap.ravel()
    count = max(1, -(-values.size * TOP_PERCENT // 100))
    threshold = np.partition(values, values.size - count)[values.size - count]
    return heatmap >= threshold


def _pearson(first: np.ndarray, second: np.ndarray) -> float:
    first, second = first.ravel() - first.mean(), second.ravel() - second.mean()
    norm = np.sqrt((first**2).sum() * (second**2).sum())
    return float((first * second).sum() / norm) if norm > 0 else float("nan")


def cam_agreement(first, second) -> dict:
    """Pearson correlation and IoU of the top-10 % regions of two heatmaps.

    The smaller map is resized bilinearly to the larger shape first (e.g. a student's 7×7 CAM to
    the teacher's input-sized Grad-CAM). ``pearson`` is NaN when either map is constant.
    """
    first, second = _as_heatmap(first, "first"), _as_heatmap(second, "second")
    shape = (max(first.shape[0], second.shape[0]), max(first.shape[1], second.shape[1]))
    first, second = _resized(first, shape), _resized(second, shape)
    first_top, second_top = _top_region(first), _top_region(second)
    intersection = np.logical_and(first_top, second_top).sum()
    union = np.logical_or(first_top, second_top).sum()
    return {"pearson": _pearson(first, second), "top10_iou": float(intersection / union)}
