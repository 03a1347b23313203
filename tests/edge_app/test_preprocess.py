import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_app.errors import ModelCardError
from edge_app.preprocess import (
    PreprocessConfig,
    letterbox,
    letterbox_geometry,
    normalize,
    preprocess,
    resample_matrix,
    resample_weights,
    resize,
)

REPO = Path(__file__).resolve().parents[2]


def dense_reference(in_size: int, out_size: int) -> np.ndarray:
    """The dense triangle-filter matrix as preprocess built it before the banded form."""
    scale = in_size / out_size
    support = max(scale, 1.0)
    centres = (np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5
    positions = np.arange(in_size, dtype=np.float64)
    weights = np.clip(1.0 - np.abs(positions[None, :] - centres[:, None]) / support, 0.0, None)
    weights /= weights.sum(axis=1, keepdims=True)
    return weights.astype(np.float32)


def test_letterbox_keeps_aspect_ratio_and_fills_the_border():
    tall = np.ones((200, 100), dtype=np.float32)
    canvas, geometry = letterbox(tall, 64, fill=0.25)
    assert canvas.shape == (64, 64)
    assert (geometry.height, geometry.width, geometry.top, geometry.left) == (64, 32, 0, 16)
    assert np.allclose(canvas[:, :16], 0.25) and np.allclose(canvas[:, 48:], 0.25)
    assert np.allclose(canvas[:, 16:48], 1.0)


def test_letterbox_geometry_of_a_wide_image_centres_it_vertically():
    geometry = letterbox_geometry(100, 300, 60)
    assert (geometry.height, geometry.width, geometry.top, geometry.left) == (20, 60, 20, 0)
    assert geometry.scale == pytest.approx(0.2)
    heatmap = np.arange(3600).reshape(60, 60)
    assert geometry.crop(heatmap).shape == (20, 60)


def test_resize_matches_pillow_bilinear_within_a_grey_level():
    rng = np.random.default_rng(0)
    smooth = np.cumsum(np.cumsum(rng.random((180, 140)), 0), 1)
    image = (smooth / smooth.max()).astype(np.float32)
    ours = resize(image, 60, 47)
    pil = Image.fromarray(image, mode="F").resize((47, 60), Image.BILINEAR)
    assert np.abs(ours - np.asarray(pil)).max() < 1 / 255


def test_resize_preserves_a_constant_image_exactly_enough():
    assert np.allclose(resize(np.full((97, 53), 0.7, np.float32), 224, 13), 0.7, atol=1e-6)


def test_preprocess_normalises_with_the_card_values():
    config = PreprocessConfig.from_card(
        {"preprocessing": {"input_size": 32, "mean": 0.5, "std": 0.25, "fill": 0.0}}
    )
    model_input, _ = preprocess(np.ones((32, 32), np.float32), config)
    assert model_input.dtype == np.float32 and model_input.shape == (32, 32)
    assert np.allclose(model_input, 2.0)
    assert np.allclose(normalize(np.zeros((2, 2)), config), -2.0)


def test_preprocess_rejects_non_finite_pixels():
    image = np.zeros((10, 10), np.float32)
    image[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        preprocess(image, PreprocessConfig(input_size=16))


@pytest.mark.parametrize(
    "card, message",
    [
        ({"preprocessing": {"mean": 0.5}}, "input_size"),
        ({"preprocessing": {"input_size": 224, "std": 0}}, "std"),
        ({"preprocessing": {"input_size": 224, "colour": "rgb"}}, "Unknown preprocessing keys"),
        ({"preprocessing": {"input_size": 224, "fill": 3}}, "fill"),
    ],
)
def test_bad_model_cards_raise_a_specific_error(card, message):
    with pytest.raises(ModelCardError, match=message):
        PreprocessConfig.from_card(card)


def test_card_round_trip():
    config = PreprocessConfig(input_size=192, mean=0.4, std=0.3, fill=0.1)
    assert PreprocessConfig.from_card({"preprocessing": config.to_card()}) == config


SHAPES = [
    (1, 1000, 1, 160),
    (1000, 1, 160, 1),
    (1, 1, 5, 7),
    (3, 3, 224, 224),
    (512, 384, 160, 120),
    (97, 53, 224, 13),
    (1, 5000, 1, 3),
    (2000, 3, 160, 1),
    (7, 700, 2, 200),
    (300, 300, 300, 300),
    (1, 1, 1, 1),
]


@pytest.mark.parametrize("seed", range(4))
def test_banded_resize_equals_the_dense_matrices(seed):
    rng = np.random.default_rng(seed)
    shapes = SHAPES + [tuple(int(n) for n in rng.integers(1, 400, 4)) for _ in range(15)]
    for height, width, out_height, out_width in shapes:
        image = rng.random((height, width)).astype(np.float32)
        expected = dense_reference(height, out_height) @ image @ dense_reference(width, out_width).T
        got = resize(image, out_height, out_width)
        assert got.shape == (out_height, out_width) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, atol=1e-6, err_msg=str(image.shape))


def test_resample_matrix_keeps_its_dense_values_for_the_training_twin():
    rng = np.random.default_rng(7)
    for in_size, out_size in [(256, 224), (1, 9), (9, 1), (1000, 3)] + [
        tuple(int(n) for n in rng.integers(1, 600, 2)) for _ in range(50)
    ]:
        matrix = resample_matrix(in_size, out_size)
        np.testing.assert_allclose(matrix, dense_reference(in_size, out_size), atol=1e-7)
        np.testing.assert_allclose(resample_weights(in_size, out_size).dense(), matrix, atol=0)


def test_resampling_stores_a_band_and_caches_only_a_few_entries():
    band = resample_weights(1_000_000, 160)
    assert band.weights.nbytes < 10_000_000  # the dense matrix would be 640 MB
    assert resample_weights.cache_info().maxsize == 8
    with pytest.raises(ValueError, match="resize"):
        resample_matrix(1_000_000, 160)


def test_preprocessing_a_1_by_1_000_000_image_fits_in_bounded_memory():
    """The dense matrices needed 1.7 GB for this film; the band needs a few megabytes."""
    code = textwrap.dedent(
        """
        import resource
        cap = 512 * 1024**2
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        import numpy as np
        from edge_app.preprocess import PreprocessConfig, preprocess
        line = np.linspace(0, 1, 1_000_000, dtype=np.float32)[None, :]
        model_input, geometry = preprocess(line, PreprocessConfig(input_size=224))
        print(model_input.shape, geometry.width, geometry.height)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["(224,", "224)", "224", "1"]
