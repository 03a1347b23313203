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
    resize,
)


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
