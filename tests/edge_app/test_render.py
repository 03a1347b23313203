"""What the front ends draw: overlay, box and legend, read back from the rendered pixels."""

from __future__ import annotations

import numpy as np
import pytest

from edge_app.findings import region_box, top_region
from edge_app.render import (
    BOX_COLOUR,
    DEFAULT_OPACITY,
    HALO_COLOUR,
    box_pixels,
    legend_width,
    line_width,
    overlay,
    render,
    shown_map,
)

HEIGHT, WIDTH = 120, 160
BOX = (0.25, 0.25, 0.625, 0.75)  # x0, y0, x1, y1: pixels 40..99 across, 30..89 down


def _film() -> np.ndarray:
    """A grey film with some structure, so the overlay's change is measured against texture."""
    rows, columns = np.mgrid[0:HEIGHT, 0:WIDTH]
    return (0.35 + 0.25 * np.sin(rows / 9.0) * np.cos(columns / 13.0)).astype(np.float32)


def _weak_map() -> np.ndarray:
    """A map the card's absolute scale keeps faint (peak 0.2), peaking inside BOX."""
    rows, columns = np.mgrid[0:HEIGHT, 0:WIDTH]
    blob = np.exp(-(((rows - 60) / 22.0) ** 2 + ((columns - 70) / 22.0) ** 2))
    return (0.2 * blob).astype(np.float32)


def _colour_change(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    return np.abs(first.astype(int) - second.astype(int)).sum(axis=2)


def _is(pixels: np.ndarray, colour) -> np.ndarray:
    return (pixels == np.array(colour, dtype=np.uint8)).all(axis=-1)


@pytest.mark.parametrize("verdict", ["fracture", "uncertain"])
def test_a_weak_map_is_clearly_visible_inside_the_box(verdict):
    film, heatmap = _film(), _weak_map()
    region = top_region(heatmap)
    box = region_box(region)  # as the runtime finds it
    plain = render(film, heatmap, verdict, box, shown=False, with_legend=False)
    drawn = render(film, heatmap, verdict, box, with_legend=False)
    change = _colour_change(drawn, plain)
    # at the default opacity the whole top region is coloured, strongly at its heart
    assert change[region].min() > 40 and change[region].mean() > 100, change[region].mean()
    left, top, right, bottom = box_pixels(box, HEIGHT, WIDTH)
    assert change[top:bottom, left:right].mean() > 80
    peak = drawn[60, 70].astype(int)
    assert peak[0] > peak[2] + 100  # red over blue: warm
    # away from the map the film is untouched
    assert np.array_equal(drawn[:8, -8:], plain[:8, -8:])


def test_no_fracture_stays_calm_on_the_absolute_scale_and_has_no_box():
    film, heatmap = _film(), _weak_map()
    plain = render(film, heatmap, "no_fracture", BOX, shown=False, with_legend=False)
    drawn = render(film, heatmap, "no_fracture", BOX, with_legend=False)
    # peak 0.2 < the fade's start: nothing coloured, and no box even when one is passed
    assert np.array_equal(drawn, plain)
    assert not _is(drawn, BOX_COLOUR).any()
    assert shown_map(heatmap, "no_fracture").max() == pytest.approx(0.2)
    assert shown_map(heatmap, "fracture").max() == pytest.approx(1.0)


def test_solid_box_outline_has_the_box_colour_all_round():
    drawn = render(_film(), _weak_map(), "fracture", BOX, with_legend=False)
    left, top, right, bottom = box_pixels(BOX, HEIGHT, WIDTH)
    halo = max(1, line_width(HEIGHT, WIDTH) // 2)
    edges = {
        "top": drawn[top + halo, left + halo : right - halo + 1],
        "bottom": drawn[bottom - halo, left + halo : right - halo + 1],
        "left": drawn[top + halo : bottom - halo + 1, left + halo],
        "right": drawn[top + halo : bottom - halo + 1, right - halo],
    }
    for name, pixels in edges.items():
        assert _is(pixels, BOX_COLOUR).all(), name
    # edged in dark on both sides of the line, and nothing drawn outside the box's bounds
    assert _is(drawn[top, left:right], HALO_COLOUR).all()
    assert (
        not _is(drawn[top - 1], BOX_COLOUR).any() and not _is(drawn[:, right + 1], BOX_COLOUR).any()
    )


def test_dashed_box_has_gaps_and_starts_at_each_corner():
    drawn = render(_film(), _weak_map(), "uncertain", BOX, with_legend=False)
    left, top, right, bottom = box_pixels(BOX, HEIGHT, WIDTH)
    halo = max(1, line_width(HEIGHT, WIDTH) // 2)
    top_edge = _is(drawn[top + halo, left + halo : right - halo + 1], BOX_COLOUR)
    left_edge = _is(drawn[top + halo : bottom - halo + 1, left + halo], BOX_COLOUR)
    for edge in (top_edge, left_edge):
        assert 0.35 < edge.mean() < 0.8  # dashes and gaps
        assert edge[0] and edge[-1]  # each corner starts with a dash
        assert np.count_nonzero(np.diff(edge.astype(int)) == 1) >= 2  # several dashes


def test_a_box_at_the_films_edge_is_drawn_inside_it():
    edge_box = (0.0, 0.0, 0.5, 0.4)
    drawn = render(_film(), _weak_map(), "fracture", edge_box, with_legend=False)
    left, top, right, bottom = box_pixels(edge_box, HEIGHT, WIDTH)
    assert (left, top) == (0, 0)
    halo = max(1, line_width(HEIGHT, WIDTH) // 2)
    assert _is(drawn[halo, halo : right - halo], BOX_COLOUR).all()  # the top line is not cut off
    assert _is(drawn[halo : bottom - halo, halo], BOX_COLOUR).all()


def test_legend_strip_sits_beside_the_film():
    film, heatmap = _film(), _weak_map()
    drawn = render(film, heatmap, "fracture", BOX)
    strip = legend_width(HEIGHT, WIDTH)
    assert drawn.shape == (HEIGHT, WIDTH + strip, 3)
    legend = drawn[:, WIDTH:]
    assert np.array_equal(
        drawn[:, :WIDTH], render(film, heatmap, "fracture", BOX, with_legend=False)
    )
    warm = (legend[..., 0].astype(int) - legend[..., 2]) > 100
    assert warm.sum() > 30  # the colour bar
    assert _is(legend, BOX_COLOUR).sum() > 10  # the box's key
    no_box = render(film, heatmap, "no_fracture", None)[:, WIDTH:]
    assert not _is(no_box, BOX_COLOUR).any()  # no box, so no key for one


def test_opacity_scales_the_overlay_and_is_checked():
    film, heatmap = _film(), _weak_map()
    plain = overlay(film, None, "fracture")
    faint = _colour_change(overlay(film, heatmap, "fracture", 0.2), plain).sum()
    default = _colour_change(overlay(film, heatmap, "fracture", DEFAULT_OPACITY), plain).sum()
    assert default > faint > 0
    with pytest.raises(ValueError, match="opacity must lie in"):
        overlay(film, heatmap, "fracture", 1.5)
    with pytest.raises(ValueError, match="differ in shape"):
        overlay(film, heatmap[:5], "fracture")
    with pytest.raises(ValueError, match="box style"):
        from edge_app.render import draw_box

        draw_box(plain, BOX, "dotted")
