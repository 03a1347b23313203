"""The one model-card schema: written once per artifact, validated whenever it is read."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from edge_app.card import (
    CARD_FILE,
    FORMATS,
    parse_card,
    read_card,
    validate_card,
    write_card,
)
from edge_app.errors import ModelCardError

REPO = Path(__file__).resolve().parents[2]


def bundle_card() -> dict:
    return {
        "name": "hand-built",
        "architecture": "tf_efficientnet_lite0",
        "labels": ["no_fracture", "fracture"],
        "region_labels": [],
        "input": {"shape": [1, 64, 64, 1], "layout": "NHWC", "dtype": "float32", "name": "image"},
        "preprocessing": {"input_size": 64, "mean": 0.5, "std": 0.5, "fill": 0.0},
        "outputs": {"fracture_logit": [1], "cam": [4]},
        "cam_shape": [2, 2],
        "cam_scale": 3.5,
        "calibration_temperature": 1.7,
        "operating_points": {"doubt": 0.1, "fracture": 0.4},
        "model_sha256": "ab" * 32,
        "provenance": {"anything": [1, 2, {"nested": True}]},
    }


def test_a_bundle_card_round_trips(tmp_path):
    written = write_card(tmp_path, bundle_card(), "bundle")
    assert written["format"] == FORMATS["bundle"] and written["format_version"] == 1
    assert read_card(tmp_path, "bundle") == written
    assert json.loads((tmp_path / CARD_FILE).read_text()) == written


def test_a_checkpoint_card_round_trips_and_kinds_do_not_mix(tmp_path):
    card = {
        "name": "run",
        "architecture": "custom_cnn",
        "preprocessing": {"input_size": 32, "mean": 0.5, "std": 0.25, "fill": 0.0},
        "aux_heads": {"region": 5},
        "weights_sha256": "0" * 64,
    }
    write_card(tmp_path, card, "checkpoint")
    assert read_card(tmp_path, "checkpoint")["aux_heads"] == {"region": 5}
    with pytest.raises(ModelCardError, match="not a FractureEdge bundle card"):
        read_card(tmp_path, "bundle")


def _set(card: dict, path: str, value) -> dict:
    card = copy.deepcopy(card)
    *parents, last = path.split(".")
    node = card
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return card


@pytest.mark.parametrize(
    "path,value,message",
    [
        ("operating_points.doubt", float("nan"), "finite number in \\[0, 1\\]"),
        ("operating_points.fracture", 1.5, "finite number in \\[0, 1\\]"),
        ("operating_points.doubt", None, "lacks 'operating_points.doubt'"),
        ("operating_points.doubt", [0.1], "must be a number"),
        ("operating_points", [0.1, 0.4], "'operating_points' must be an object"),
        ("operating_points.doubt", 0.9, "exceeds the fracture point"),
        ("calibration_temperature", float("inf"), "calibration_temperature"),
        ("calibration_temperature", KeyError, "lacks 'calibration_temperature'"),
        ("calibration_temperature", True, "must be a number"),
        ("preprocessing.mean", float("nan"), "preprocessing.mean"),
        ("preprocessing.std", 0.0, "std must be positive"),
        ("preprocessing.input_size", "64", "input_size must be an integer"),
        ("outputs.cam", KeyError, "outputs lack 'cam'"),
        ("outputs.cam", [5], "does not match"),
        ("cam_shape", [2, -2], "cam_shape"),
        ("input.shape", [1, 32, 32, 1], "input.shape"),
        ("model_sha256", "nothex", "64 lower-case hex"),
        ("format_version", 99, "Update fracture-edge"),
        ("format", "fracture-edge-checkpoint", "not a FractureEdge bundle card"),
        ("labels", "fracture", "list of text"),
        ("region_labels", ["hand", "leg"], "region_labels"),
    ],
)
def test_hostile_or_broken_bundle_cards_are_refused_with_the_field(tmp_path, path, value, message):
    card = _set(write_card(tmp_path, bundle_card(), "bundle"), path, value)
    (tmp_path / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelCardError, match=message):
        read_card(tmp_path, "bundle")


def test_cards_that_are_not_cards_are_refused():
    with pytest.raises(ModelCardError, match="nested too deeply"):
        parse_card("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelCardError, match="at most 1 MiB"):
        parse_card(" " * (2 << 20))
    with pytest.raises(ModelCardError, match="JSON object"):
        parse_card("[1, 2]")
    with pytest.raises(ModelCardError, match="not valid JSON"):
        parse_card("{")


def test_writing_refuses_a_card_it_could_not_read_back(tmp_path):
    with pytest.raises(ModelCardError, match="finite number"):
        write_card(tmp_path, _set(bundle_card(), "operating_points.doubt", float("nan")), "bundle")
    assert not (tmp_path / CARD_FILE).exists()


@pytest.mark.parametrize(
    "folder,kind",
    [("models/fracture-lite0-int8", "bundle"), ("models/fracture-lite0-448-frozen-int8", "bundle")]
    + [
        (str(path.parent.relative_to(REPO)), "checkpoint")
        for path in sorted(REPO.glob("models/checkpoints/**/model_card.json"))
    ],
)
def test_every_committed_card_validates(folder, kind):
    card = read_card(REPO / folder, kind)
    assert validate_card(card, kind) == card
