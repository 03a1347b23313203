"""``fracture-edge predict``: the JSON-lines contract, studies, errors and exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("ai_edge_litert")

from edge_app.predict import overlay_stem  # noqa: E402
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
    (written,) = out.iterdir()
    assert written.name == overlay_stem(image) + ".png" and written.name.startswith("knee-")
    with Image.open(written) as overlay:  # the film, then the legend on its right
        assert overlay.size == (80 + legend_width(100, 80), 100) and overlay.mode == "RGB"
    assert "not a diagnostic device" in captured.err  # the disclaimer, for a person reading


def test_missing_model_is_exit_2_without_traceback(tmp_path, make_radiograph, save_jpeg, capsys):
    image = save_jpeg(tmp_path / "x.jpg", make_radiograph(64, 64, 1, 1))
    code = main(["predict", str(image), "--model", str(tmp_path / "no-bundle")])
    captured = capsys.readouterr()
    assert code == 2
    assert "model bundle not found" in captured.err and "Traceback" not in captured.err


# --------------------------------------------------------------------------- outputs never hurt


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}  # fmt: skip


def test_heatmaps_into_the_input_folder_are_refused_even_with_overwrite(
    tiny_bundle, tmp_path, make_radiograph, save_jpeg, capsys
):
    """The overlays used to be named like their inputs, so DIR = the input folder replaced the
    originals."""
    films = tmp_path / "films"
    image = save_jpeg(films / "knee.png", make_radiograph(100, 80, 4, 4))
    before = _tree(films)
    for extra in ([], ["--overwrite"]):
        code = main(["predict", str(image), "--model", str(tiny_bundle), "--heatmaps", str(films)]
                    + extra)  # fmt: skip
        captured = capsys.readouterr()
        assert code == 2 and captured.out == ""
        assert "refusing to write the heatmap overlays into" in captured.err
        assert "holds the input" in captured.err and "Traceback" not in captured.err
        assert _tree(films) == before  # the original is untouched, nothing was added
    inside = films / "overlays"  # a folder inside a study folder: its overlays would join it
    code = main(["predict", str(films), "--model", str(tiny_bundle), "--heatmaps", str(inside),
                 "--overwrite"])  # fmt: skip
    assert code == 2 and "inside the input" in capsys.readouterr().err
    assert _tree(films) == before and not inside.exists()


def test_inputs_of_one_name_get_their_own_overlays(
    tiny_bundle, tmp_path, make_radiograph, save_jpeg, capsys
):
    first = save_jpeg(tmp_path / "left" / "hand.jpg", make_radiograph(90, 70, 1, 1))
    second = save_jpeg(tmp_path / "right" / "hand.jpg", make_radiograph(70, 90, 2, 2))
    out = tmp_path / "overlays"
    code = main(["predict", str(first), str(second), "--model", str(tiny_bundle), "--json",
                 "--heatmaps", str(out)])  # fmt: skip
    records, _ = _lines(capsys)
    assert code == 0
    names = [Path(record["heatmaps"][0]).name for record in records]
    assert len(set(names)) == 2 and all(name.startswith("hand-") for name in names)
    assert sorted(path.name for path in out.iterdir()) == sorted(names)
    with Image.open(out / names[0]) as one, Image.open(out / names[1]) as other:
        assert one.size[1] == 90 and other.size[1] == 70  # each its own film


def test_a_second_run_neither_overwrites_nor_feeds_overlays_into_the_study(
    tiny_bundle, tmp_path, make_radiograph, save_jpeg, capsys
):
    study = tmp_path / "study"
    for index in range(2):
        save_jpeg(study / f"view{index}.jpg", make_radiograph(80, 60, index, 9))
    before = _tree(study)
    out = tmp_path / "overlays"
    command = ["predict", str(study), "--model", str(tiny_bundle), "--json", "--heatmaps", str(out)]
    assert main(command) == 0
    first, _ = _lines(capsys)
    stem = overlay_stem(study)
    assert sorted(p.name for p in out.iterdir()) == [f"{stem}-000.png", f"{stem}-001.png"]
    written = _tree(out)
    assert main(command) == 2  # a non-empty DIR: nothing is replaced without --overwrite
    assert "pass --overwrite" in capsys.readouterr().err
    assert _tree(out) == written
    assert main([*command, "--overwrite"]) == 0
    again, _ = _lines(capsys)
    assert again[0]["images"] == first[0]["images"] == 2  # no overlay joined the study
    assert _tree(study) == before and _tree(out) == written  # the same overlays, replaced


@pytest.mark.parametrize("threads", ["0", "-1", "100000"])
def test_threads_are_checked_before_the_model_loads(tmp_path, threads, capsys):
    """--threads 0 used to blame the model file, and 100000 crashed LiteRT after printing."""
    code = main(["predict", str(tmp_path / "x.jpg"), "--model", str(tmp_path / "no-bundle"),
                 "--threads", threads])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert f"--threads must be a whole number of LiteRT threads from 1 to 64, got {threads}" in (
        captured.err
    )
    assert "model" not in captured.err.split("got")[0]  # the flag is blamed, not the bundle


def test_a_blank_film_gets_no_verdict_and_says_so(
    tiny_bundle, tmp_path, make_radiograph, save_jpeg, capsys
):
    blank = tmp_path / "blank.png"
    Image.new("L", (64, 48), 0).save(blank)
    study = tmp_path / "study"
    save_jpeg(study / "a.jpg", make_radiograph(80, 60, 1, 1))
    Image.new("L", (64, 48), 255).save(study / "b.png")
    code = main(["predict", str(blank), str(study), "--model", str(tiny_bundle), "--json"])
    records, err = _lines(capsys)
    assert code == 1
    assert records[0]["error"].startswith("blank film, no verdict: ")
    assert records[0]["verdict"] is None and "no image content" in records[0]["error"]
    assert f"fracture-edge: blank film, no verdict: {blank}" in err
    assert records[1]["images"] == 1 and records[1]["verdict"] is not None
    warning = "blank: left out b.png, which holds no image content, so it gets no verdict"
    assert records[1]["warnings"] == [warning] == records[1]["per_image"][0]["warnings"]
    assert main(["predict", str(study), "--model", str(tiny_bundle)]) == 0
    assert f"warnings: {warning}" in capsys.readouterr().out  # the text line says it too


def _hostile(card: dict, change: str) -> dict | str:
    """``card`` with one hostile change, as the issue lists them (or the text to write)."""
    card = json.loads(json.dumps(card))
    points = card["operating_points"]
    if change == "nan thresholds":
        points.update(doubt=float("nan"), fracture=float("nan"))
    elif change == "threshold above 1":
        points["fracture"] = 1.5
    elif change == "infinite temperature":
        card["calibration_temperature"] = float("inf")
    elif change == "no temperature":
        del card["calibration_temperature"]
    elif change in ("nan mean", "nan std"):
        card["preprocessing"][change.split()[1]] = float("nan")
    elif change == "doubt null":
        points["doubt"] = None
    elif change == "a list":
        return json.dumps([card])
    elif change == "deep nesting":
        return '{"name": ' + "[" * 100_000 + "]" * 100_000 + "}"
    elif change == "operating points a list":
        card["operating_points"] = [0.1, 0.4]
    elif change == "outputs without cam":
        del card["outputs"]["cam"]
    elif change == "input size not the model's":
        card["preprocessing"]["input_size"] = 96
        card["input"]["shape"] = [1, 96, 96, 1]
    elif change == "cam not the model's":
        card["outputs"]["cam"], card["cam_shape"] = [25], [5, 5]
    return card


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ("nan thresholds", "operating_points.doubt"),
        ("threshold above 1", "operating_points.fracture"),
        ("infinite temperature", "calibration_temperature"),
        ("no temperature", "calibration_temperature"),
        ("nan mean", "preprocessing.mean"),
        ("nan std", "preprocessing.std"),
        ("doubt null", "operating_points.doubt"),
        ("a list", "must hold a JSON object"),
        ("operating points a list", "'operating_points' must be an object"),
        ("deep nesting", "nested too deeply"),
        ("outputs without cam", "outputs lack 'cam'"),
        ("input size not the model's", "(1, 64, 64, 1) but its card says (1, 96, 96, 1)"),
        ("cam not the model's", "'cam'"),
    ],
)
def test_a_hostile_card_is_refused_at_load_with_exit_2_and_the_field(
    tiny_bundle, tmp_path, make_radiograph, save_jpeg, capsys, change, field
):
    """Not half-trusted (NaN thresholds made every film read no fracture), no traceback, and
    not one failure per input: the bundle is refused before any input is read."""
    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    hostile = _hostile(json.loads((bundle / "model_card.json").read_text()), change)
    text = hostile if isinstance(hostile, str) else json.dumps(hostile)
    (bundle / "model_card.json").write_text(text)
    image = save_jpeg(tmp_path / "x.jpg", make_radiograph(64, 64, 1, 1))
    code = main(["predict", str(image), str(image), "--model", str(bundle), "--json"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert field in captured.err and "Traceback" not in captured.err
    assert (bundle / "model_card.json").read_text() == text and image.is_file()
