"""Tests for train.duplicates on synthetic radiograph-like images (blobs plus fine texture)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from edge_app.preprocess import resize
from edge_app.radiograph import load_radiograph
from train import duplicates
from train.duplicates import (
    THUMBNAIL_SIZE,
    candidate_pairs,
    connected_groups,
    decoded_rows,
    near_duplicate_pairs,
    perceptual_hashes,
    pixel_similarity,
)

ORIGINAL, REENCODED, HALF_SIZE, SHIFTED, OTHER_TEXTURE, OTHER_SHAPES = range(6)


def thumbnail(path) -> np.ndarray:
    """The audit's thumbnail: loaded with the shared loader, squashed to 256² (as _scan_one)."""
    radiograph = load_radiograph(path, draft_size=2 * THUMBNAIL_SIZE)
    return resize(radiograph.pixels, THUMBNAIL_SIZE, THUMBNAIL_SIZE)


@pytest.fixture(scope="module")
def thumbnails(tmp_path_factory, make_radiograph, encode_jpeg) -> np.ndarray:
    folder = tmp_path_factory.mktemp("duplicates")
    base = make_radiograph(shape_seed=1, texture_seed=1)
    original = encode_jpeg(base, quality=95)
    with Image.open(io.BytesIO(original)) as decoded:
        reencoded = encode_jpeg(np.asarray(decoded), quality=60)
        half = np.asarray(decoded.resize((150, 120), Image.BILINEAR))
    # Shifted by (3, -4) pixels: crop one side, pad the other with the edge.
    shifted = np.pad(base[:-3, 4:], ((3, 0), (0, 4)), mode="edge")
    files = [
        original,
        reencoded,
        encode_jpeg(half, 90),
        encode_jpeg(shifted, 90),
        encode_jpeg(make_radiograph(shape_seed=1, texture_seed=2), 95),
        encode_jpeg(make_radiograph(shape_seed=3, texture_seed=3), 95),
    ]
    stack = []
    for index, data in enumerate(files):
        path = folder / f"{index}.jpg"
        path.write_bytes(data)
        stack.append(thumbnail(path))
    return np.stack(stack)


def test_thumbnails_are_square_floats(thumbnails):
    assert thumbnails.shape == (6, 256, 256)
    assert thumbnails.dtype == np.float32
    assert 0.0 <= thumbnails.min() and thumbnails.max() <= 1.0


def test_copies_are_confirmed_and_a_different_texture_is_not(thumbnails):
    pairs = near_duplicate_pairs(thumbnails)
    confirmed = {(first, second) for first, second, _ in pairs}
    copies = (ORIGINAL, REENCODED, HALF_SIZE, SHIFTED)
    expected = {(a, b) for a in copies for b in copies if a < b}
    assert confirmed == expected
    assert all(similarity >= duplicates.DEFAULT_PIXEL_THRESHOLD for _, _, similarity in pairs)


def test_same_shapes_other_texture_is_a_candidate_but_fails_the_pixel_check(thumbnails):
    # The cheap stage must let it through (low frequencies agree), so the pixel check is what
    # rejects it: this is the case the two stages exist for.
    assert (ORIGINAL, OTHER_TEXTURE) in candidate_pairs(thumbnails)
    similarity = pixel_similarity(thumbnails[ORIGINAL], thumbnails[OTHER_TEXTURE])
    assert similarity < 0.3


@pytest.mark.parametrize("copy", [REENCODED, HALF_SIZE, SHIFTED])
def test_pixel_similarity_of_copies_is_high(thumbnails, copy):
    assert pixel_similarity(thumbnails[ORIGINAL], thumbnails[copy]) >= 0.85


def test_pixel_similarity_with_itself_is_one(thumbnails):
    similarity = pixel_similarity(thumbnails[ORIGINAL], thumbnails[ORIGINAL])
    assert similarity == pytest.approx(1.0, abs=1e-4)


def test_threshold_above_every_score_confirms_nothing(thumbnails):
    assert near_duplicate_pairs(thumbnails, pixel_threshold=0.999) == []


def test_truncated_copy_is_found_only_through_its_decoded_rows(
    tmp_path, make_radiograph, encode_jpeg
):
    data = encode_jpeg(make_radiograph(shape_seed=1, texture_seed=1), 95)
    (tmp_path / "whole.jpg").write_bytes(data)
    (tmp_path / "cut.jpg").write_bytes(data[: int(0.6 * len(data))])
    assert load_radiograph(tmp_path / "cut.jpg").truncated
    stack = np.stack([thumbnail(tmp_path / "whole.jpg"), thumbnail(tmp_path / "cut.jpg")])
    assert candidate_pairs(stack) == set()  # the grey band hides it from the global measures
    assert candidate_pairs(stack, truncated=[False, True]) == {(0, 1)}
    [(first, second, similarity)] = near_duplicate_pairs(stack, truncated=[False, True])
    assert (first, second) == (0, 1)
    assert similarity >= 0.95


def test_perceptual_hashes_identical_for_identical_input(thumbnails):
    stack = np.stack([thumbnails[ORIGINAL], thumbnails[ORIGINAL].copy(), thumbnails[OTHER_SHAPES]])
    hashes = perceptual_hashes(stack)
    assert hashes.shape == (3, 63)
    assert hashes.dtype == bool
    assert np.array_equal(hashes[0], hashes[1])
    assert not np.array_equal(hashes[0], hashes[2])
    # Bits above the median: roughly half are set.
    assert 25 <= int(hashes[0].sum()) <= 38


def test_connected_groups_from_hand_made_edges():
    edges = [(5, 1), (1, 3), (6, 7), (8, 8), (2, 2)]
    assert connected_groups(9, edges) == [[1, 3, 5], [6, 7]]
    assert connected_groups(3, []) == []
    assert connected_groups(4, [(0, 1), (2, 3), (1, 2)]) == [[0, 1, 2, 3]]


def test_decoded_rows_stops_at_the_flat_band(make_radiograph):
    image = make_radiograph(height=64, width=64).astype(np.float32) / 255
    image[32:] = 0.5
    assert decoded_rows(image) == 32
    assert decoded_rows(np.full((16, 16), 0.5, np.float32)) == 16  # nothing varies: all rows


def test_downsample_averages_blocks():
    stack = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    assert duplicates.downsample(stack, 2).tolist() == [[[2.5, 4.5], [10.5, 12.5]]]


def test_tiled_correlation_of_flat_images_is_zero():
    flat = np.zeros((64, 64), np.float32)
    assert duplicates.tiled_correlation(flat, flat) == 0.0
