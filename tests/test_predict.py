"""``fracture-edge predict``: the JSON-lines contract, studies, errors and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("ai_edge_litert")

from edge_app.render import legend_width  # noqa: E402
from edge_app.runtime import DEFAULT_BUNDLE, FractureDetector  # noqa: E402
from fracture_edge.cli import main  # noqa: E402

KEYS = {"path", "fracture_probability", "verdict", "region", "peak", "box", "error"}
SAMPLES = DEFAULT_BUNDLE.parents[1] / "models" / "samples"


def _lines(capsys) -> tuple[list[dict], str]:
    captured = capsys.readouterr()
    return [json.loads(line) for line in captured.out.splitlines()], captured.err


def test_json_lines_contract(tiny_bundle, tmp_path, make_radiograph, save_jpeg, capsys):
    first = save_jpeg(tmp_path / "a.jpg", make_radiograph(90, 70, 1, 1))
    second = save_jpeg(tmp_path / "b.jpg", make_radiograph(70, 90, 2, 2))
    code = main(["predict", str(first), str(second), "--model", str(tiny_bundle), "--json"])
    records, _ = _lines(capsys)
    assert code == 0
    assert [r["path"] for r in records] == [str(first), str(second)]
    detector = FractureDetector(tiny_bundle)
    for record in records:
        assert KEYS <= set(record)
        assert record["error"] is None
        assert 0.0 <= record["fracture_probability"] <= 1.0
        assert record["verdict"] in ("fracture", "uncertain", "no_fracture")
        expected = detector.predict_path(record["path"], heatmap=False)
        assert record["fracture_probability"] == pytest.approx(expected.probability, abs=1e-6)
        assert record["verdict"] == expected.verdict
        assert record["peak"] == (list(expected.predictions[0].peak or []) or None)
        assert record["box"] == (list(expected.predictions[0].box or []) or None)


def _check_where_to_look(record: dict) -> None:
    """``peak`` [x, y] and ``box`` [x0, y0, x1, y1] normalised; no box for no_fracture."""
    if record["peak"] is not None:
        assert len(record["peak"]) == 2 and all(0 <= v <= 1 for v in record["peak"])
    if record["verdict"] == "no_fracture" or record["peak"] is None:  # or an all-cold map
        assert record["box"] is None
        return
    x0, y0, x1, y1 = record["box"]
    assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    x, y = record["peak"]
    assert x0 <= x <= x1 and y0 <= y <= y1  # the peak lies in its own top region


def test_the_shipped_bundle_says_where_to_look_on_the_samples(capsys):
    samples = sorted(SAMPLES.glob("*.jpg"))
    if not DEFAULT_BUNDLE.is_dir() or len(samples) != 6:
        pytest.skip("needs the shipped bundle and models/samples/")
    code = main(["predict", *map(str, samples), "--json"])
    records, _ = _lines(capsys)
    assert code == 0 and len(records) == 6
    for record in records:
        _check_where_to_look(record)
        assert (record["box"] is None) == (record["verdict"] == "no_fracture")
    verdicts = {Path(r["path"]).name: r["verdict"] for r in records}
    assert {name for name, verdict in verdicts.items() if verdict == "no_fracture"} == {
        "hip_not_fractured_IMG0001994.jpg",
        "leg_not_fractured_IMG0001531.jpg",
    }  # the four others are flagged: each has a box


def test_bad_inputs_get_error_lines_and_exit_1(tiny_bundle, tmp_path, make_radiograph, save_jpeg,
                                               capsys):  # fmt: skip
    good = save_jpeg(tmp_path / "good.jpg", make_radiograph(64, 64, 3, 3))
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4000))
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.jpg"
    paths = [str(corrupt), str(good), str(empty), str(missing)]
    code = main(["predict", *paths, "--model", str(tiny_bundle), "--json"])
    records, err = _lines(capsys)
    assert code == 1, err
    assert [r["path"] for r in records] == paths  # one line each, in order
    assert records[1]["error"] is None and records[1]["verdict"] is not None
    for index in (0, 2, 3):
        assert records[index]["error"] and KEYS <= set(records[index])
        assert records[index]["fracture_probability"] is None and records[index]["verdict"] is None
    assert "empty" in records[2]["error"] and "does not exist" in records[3]["error"]
    assert "Traceback" not in err
    assert "3 of 4 inputs could not be read" in err


def test_folder_is_one_study(tiny_bundle, tmp_path, make_radiograph, save_jpeg, capsys):
    for index in range(2):
        save_jpeg(tmp_path / "study" / f"view{index}.png", make_radiograph(80, 60, index, 9))
    code = main(["predict", str(tmp_path / "study"), "--model", str(tiny_bundle), "--json"])
    records, _ = _lines(capsys)
    assert code == 0 and len(records) == 1
    study = records[0]
    assert study["images"] == 2 and len(study["per_image"]) == 2
    mean = np.mean([r["fracture_probability"] for r in study["per_image"]])
    assert study["fracture_probability"] == pytest.approx(mean, abs=1e-5)
    assert study["peak"] is None and study["box"] is None
    for image in study["per_image"]:
        _check_where_to_look(image)


def test_heatmap_overlays_are_written(tiny_bundle, tmp_path, make_radiograph, save_jpeg, capsys):
    image = save_jpeg(tmp_path / "knee.jpg", make_radiograph(100, 80, 4, 4))
    out = tmp_path / "heatmaps"
    code = main(["predict", str(image), "--model", str(tiny_bundle), "--heatmaps", str(out)])
    captured = capsys.readouterr()
    assert code == 0
    assert captured.out.startswith(str(image)) and "p=" in captured.out
    with Image.open(out / "knee.png") as overlay:  # the film, then the legend on its right
        assert overlay.size == (80 + legend_width(100, 80), 100) and overlay.mode == "RGB"
    assert "not a diagnostic device" in captured.err  # the disclaimer, for a person reading


def test_missing_model_is_exit_2_without_traceback(tmp_path, make_radiograph, save_jpeg, capsys):
    image = save_jpeg(tmp_path / "x.jpg", make_radiograph(64, 64, 1, 1))
    code = main(["predict", str(image), "--model", str(tmp_path / "no-bundle")])
    captured = capsys.readouterr()
    assert code == 2
    assert "model bundle not found" in captured.err and "Traceback" not in captured.err
