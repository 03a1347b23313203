"""Where to look: peak, top region, box, and their scores against outlines (hand-built maps)."""

from __future__ import annotations

import math

import numpy as np

from edge_app.findings import locate, mask_iou, normalised_peak, peak, region_box, top_region


def _map():
    heatmap = np.zeros((10, 20), np.float32)
    heatmap[2:5, 3:7] = 0.6  # a plateau around the peak
    heatmap[3, 4] = 1.0
    heatmap[8, 15] = 0.55  # above half the peak, but not connected to it
    return heatmap


def test_peak_and_top_region_and_its_box():
    heatmap = _map()
    assert peak(heatmap) == (3, 4)
    region = top_region(heatmap)
    assert region.sum() == 12 and not region[8, 15]
    assert region_box(region) == (3 / 20, 2 / 10, 7 / 20, 5 / 10)
    assert normalised_peak(heatmap) == (round(4.5 / 20, 4), round(3.5 / 10, 4))


def test_empty_maps_have_no_peak_region_or_box():
    for heatmap in (np.zeros((4, 4)), np.full((4, 4), np.nan), np.full((4, 4), -1.0)):
        assert peak(heatmap) is None
        assert not top_region(heatmap).any()
        assert region_box(top_region(heatmap)) is None


def test_a_plateau_peak_is_its_middle():
    heatmap = np.zeros((5, 5))
    heatmap[1:4, 1:4] = 1.0
    assert peak(heatmap) == (2, 2)


def test_mask_iou_hand_computed():
    first = np.zeros((4, 4), bool)
    second = np.zeros((4, 4), bool)
    first[:2, :2] = True  # 4 pixels
    second[1:3, 1:3] = True  # 4 pixels, 1 shared
    assert mask_iou(first, second) == 1 / 7
    assert math.isnan(mask_iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)))


def _flood_fill(heatmap, fraction=0.5):
    """The definition, pixel by pixel: what the run-wise top_region must reproduce."""
    start = peak(heatmap)
    region = np.zeros(heatmap.shape, bool)
    above = heatmap >= fraction * heatmap[start]
    stack = [start]
    region[start] = True
    while stack:
        row, column = stack.pop()
        for r, c in ((row - 1, column), (row + 1, column), (row, column - 1), (row, column + 1)):
            if 0 <= r < heatmap.shape[0] and 0 <= c < heatmap.shape[1]:
                if above[r, c] and not region[r, c]:
                    region[r, c] = True
                    stack.append((r, c))
    return region


def test_top_region_equals_a_flood_fill_on_winding_and_noisy_maps():
    rng = np.random.default_rng(0)
    spiral = np.zeros((15, 15), np.float32)  # a corridor that turns four times
    spiral[1, 1:14] = spiral[1:14, 13] = spiral[13, 1:14] = spiral[3:14, 1] = 1.0
    spiral[3, 1:11] = spiral[3:11, 11] = spiral[11, 3:12] = spiral[5:12, 3] = 1.5
    spiral[1, 1] = 2.0
    maps = [spiral] + [rng.random((int(h), int(w))).astype(np.float32) for h, w in
                       rng.integers(1, 40, (20, 2))]  # fmt: skip
    for heatmap in maps:
        assert np.array_equal(top_region(heatmap), _flood_fill(heatmap))
    assert top_region(spiral).sum() == _flood_fill(spiral).sum() > 60


def test_locate_on_every_pixel_is_peak_and_box_of_the_top_region():
    heatmap = _map()
    assert locate(heatmap) == (normalised_peak(heatmap), region_box(top_region(heatmap)))
    assert locate(heatmap, with_box=False) == (normalised_peak(heatmap), None)
    assert locate(np.zeros((4, 4))) == (None, None)


def test_locate_samples_a_large_map_to_within_a_cell():
    rows, columns = np.mgrid[0:1000, 0:700]
    heatmap = np.exp(-(((rows - 300) / 90.0) ** 2 + ((columns - 420) / 60.0) ** 2))
    heatmap[800:, 100:200] = 0.9  # a second, separate warm area: not in the top region
    exact = (normalised_peak(heatmap), region_box(top_region(heatmap)))
    sampled = locate(heatmap, cells=64)  # every 16th pixel
    np.testing.assert_allclose(sampled[0] + sampled[1], exact[0] + exact[1], atol=16 / 700)
    assert sampled[1][1] < 0.5  # the box stays around the peak's own region
