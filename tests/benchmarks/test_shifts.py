"""The acquisition shifts of ``fracture-edge bench --shifts`` on small synthetic films."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.shifts import (
    SHIFT_NAMES,
    SHIFTS,
    apply_shift,
    gaussian_blur,
    half_resolution,
    shift_generator,
)

SEED = 7


@pytest.fixture(scope="module")
def film(make_radiograph) -> np.ndarray:
    """A 120 × 96 float32 film in [0, 1]: taller than wide, so a quarter turn shows."""
    return make_radiograph(120, 96, shape_seed=3, texture_seed=3).astype(np.float32) / 255.0


def test_the_issue_s_ten_shifts_are_registered():
    assert SHIFT_NAMES == (
        "exposure_gamma",
        "contrast",
        "noise",
        "blur",
        "jpeg_q20",
        "half_resolution",
        "collimation_crop",
        "text_markers",
        "rotation_90",
        "inverted",
    )
    assert all(SHIFTS[name].severity for name in SHIFT_NAMES)


@pytest.mark.parametrize("name", SHIFT_NAMES)
def test_shift_keeps_dtype_and_range_and_changes_the_film(film, name):
    before = film.copy()
    shifted = apply_shift(name, film, SEED, "IMG0001.jpg")
    np.testing.assert_array_equal(film, before)  # the input is left alone
    assert shifted.dtype == np.float32 and shifted.ndim == 2
    assert shifted.flags["C_CONTIGUOUS"]
    assert 0.0 <= shifted.min() and shifted.max() <= 1.0
    assert shifted.shape != film.shape or np.abs(shifted - film).mean() > 1e-3


@pytest.mark.parametrize("name", SHIFT_NAMES)
def test_shift_is_deterministic_for_a_seed(film, name):
    first = apply_shift(name, film, SEED, "IMG0001.jpg")
    again = SHIFTS[name].apply(film, shift_generator(SEED, name, "IMG0001.jpg"))
    np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize("name", ["exposure_gamma", "contrast", "noise", "collimation_crop"])
def test_random_shifts_draw_per_film_and_per_seed(film, name):
    base = apply_shift(name, film, SEED, "IMG0001.jpg")
    for other in (
        apply_shift(name, film, SEED, "IMG0002.jpg"),
        apply_shift(name, film, 8, "IMG0001.jpg"),
    ):
        assert other.shape != base.shape or not np.array_equal(other, base)


def test_shape_rules(film):
    height, width = film.shape
    assert apply_shift("rotation_90", film, SEED, "a").shape == (width, height)
    cropped = apply_shift("collimation_crop", film, SEED, "a")
    assert all(
        0.75 * side - 1 <= kept <= 0.85 * side + 1
        for kept, side in zip(cropped.shape, film.shape, strict=True)
    )
    assert apply_shift("half_resolution", film, SEED, "a").shape == (height // 2, width // 2)
    for name in set(SHIFT_NAMES) - {"rotation_90", "collimation_crop", "half_resolution"}:
        assert apply_shift(name, film, SEED, "a").shape == film.shape, name


def test_rotation_turns_and_inversion_flips(film):
    turned = apply_shift("rotation_90", film, SEED, "a")
    assert any(np.array_equal(turned, np.rot90(film, k)) for k in (1, 3))
    np.testing.assert_allclose(apply_shift("inverted", film, SEED, "a"), 1.0 - film, atol=1e-6)


def test_text_markers_burn_in_white_pixels_in_the_corners(film):
    marked = apply_shift("text_markers", film, SEED, "a")
    changed = np.abs(marked - film) > 1e-3
    height = film.shape[0]
    assert changed[: height // 4].any() and changed[-height // 4 :].any()  # marker and text
    assert not changed[height // 3 : -height // 3].any()
    assert (marked[changed] > film[changed]).all()  # white, antialiased at the glyphs' edges
    assert marked[changed].max() > 0.8


def test_half_resolution_averages_2x2_blocks():
    image = np.arange(20, dtype=np.float32).reshape(4, 5) / 20
    halved = half_resolution(image, np.random.default_rng(0))
    np.testing.assert_allclose(halved, [[3, 5], [13, 15]] / np.float32(20), atol=1e-6)


def test_blur_keeps_a_flat_film_flat_and_smooths_an_edge():
    flat = np.full((30, 40), 0.4, np.float32)
    np.testing.assert_allclose(gaussian_blur(flat, 2.0), flat, atol=1e-6)
    step = np.zeros((30, 40), np.float32)
    step[:, 20:] = 1.0
    blurred = gaussian_blur(step, 2.0)
    assert 0.3 < blurred[15, 20] < 0.7 and blurred[15, 0] < 0.01


def test_unknown_shift_and_colour_input_are_refused(film):
    with pytest.raises(ValueError, match="valid: exposure_gamma"):
        apply_shift("fog", film, SEED, "a")
    with pytest.raises(ValueError, match="load_radiograph"):
        apply_shift("noise", np.zeros((4, 4, 3), np.float32), SEED, "a")
