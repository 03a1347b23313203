"""Site calibration: the pure fit on hand-built logits, the written bundle, ``fracture-edge
calibrate`` on the tiny bundle, and ``bench --external … --calibrate K``."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from edge_app.errors import SiteCalibrationError
from edge_app.metrics import bootstrap_proportion_ci, fit_temperature, sigmoid
from edge_app.site_calibration import (
    CARD_KEY,
    LabelCounts,
    calibrated_card,
    check_counts,
    count_labels,
    fit_site_calibration,
    sensitivity_target,
    write_calibrated_bundle,
)

# Four fractured and four unfractured films, logits chosen so every threshold is hand-computed.
# Thresholds from the top, (TP of 4, FP of 4) -> Youden J:
#   3: (1, 0) .25 | 2: (2, 0) .50 | 1.5: (2, 1) .25 | 1: (3, 1) .50 | 0: (3, 2) .25
#  -1: (4, 2) .50 | -2: (4, 3) .25 | -3: (4, 4) 0
# J ties at .50 for 2, 1 and -1: the highest threshold, 2, wins. Sensitivity 0.75 needs
# ceil(0.75 · 4) = 3 fractured films: the third highest fractured logit, 1.
FRACTURED = [3.0, 2.0, 1.0, -1.0]
UNFRACTURED = [-3.0, -2.0, 0.0, 1.5]
LABELS = [1, 1, 1, 1, 0, 0, 0, 0]
LOGITS = FRACTURED + UNFRACTURED
SMALL = {"min_fractured": 4, "min_unfractured": 4, "resamples": 200}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- counts and target


def test_counts_ignore_unknown_labels_and_refusals_name_the_counts():
    counts = count_labels([1, 0, None, 1, None, 0, 0])
    assert counts == LabelCounts(fractured=2, unfractured=3, unknown=2)
    check_counts(counts, 2, 3)  # exactly enough
    with pytest.raises(SiteCalibrationError) as raised:
        check_counts(counts, 30, 3)
    message = str(raised.value)
    assert "2 fractured (need at least 30)" in message and "unfractured (need" not in message
    assert "2 of unknown label are ignored" in message and "--min-fractured" in message
    with pytest.raises(SiteCalibrationError, match=r"3 unfractured \(need at least 31\)"):
        check_counts(counts, 1, 31)
    with pytest.raises(SiteCalibrationError, match=r"2 fractured .* and 3 unfractured"):
        check_counts(counts, 5, 5)


def test_sensitivity_target_comes_from_the_card():
    assert sensitivity_target({}) == 0.95
    rules = {"doubt": {"rule": "validation sensitivity >= 0.9"}}
    assert sensitivity_target({"operating_point_rules": rules}) == 0.9
    assert sensitivity_target({CARD_KEY: {"target_sensitivity": 0.97}}) == 0.97
    with pytest.raises(SiteCalibrationError, match="must lie in"):
        sensitivity_target({"operating_point_rules": {"doubt": {"rule": "sensitivity >= 1.5"}}})


def test_bootstrap_proportion_ci():
    assert bootstrap_proportion_ci(np.ones(20, bool), 100) == (1.0, 1.0)
    low, high = bootstrap_proportion_ci(np.arange(200) % 2 == 0, 500, seed=1)
    assert low < 0.5 < high and high - low < 0.2
    assert all(math.isnan(v) for v in bootstrap_proportion_ci(np.zeros(0, bool)))
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_proportion_ci(np.ones(3, bool), 0)


# --------------------------------------------------------------------------- the fit


def test_fit_on_hand_built_logits():
    fit = fit_site_calibration(LABELS, LOGITS, target=0.75, max_ci_width=1.0, **SMALL)
    temperature = fit_temperature(np.array(LABELS), np.array(LOGITS))
    assert fit.temperature == pytest.approx(temperature)
    # the temperature minimises the NLL: a grid of others never beats it
    grid = np.linspace(0.2, 10, 500)
    nll = [
        np.mean(np.logaddexp(0, np.array(LOGITS) / t) - np.array(LABELS) * LOGITS / t) for t in grid
    ]
    best = np.mean(
        np.logaddexp(0, np.array(LOGITS) / temperature) - np.array(LABELS) * LOGITS / temperature
    )
    assert best <= min(nll) + 1e-12
    assert fit.operating_points["doubt"] == pytest.approx(sigmoid(1.0 / temperature))
    assert fit.operating_points["fracture"] == pytest.approx(sigmoid(2.0 / temperature))
    assert fit.operating_logits == {"doubt": 1.0, "fracture": 2.0}
    doubt, fracture = fit.achieved["doubt"], fit.achieved["fracture"]
    assert (doubt["sensitivity"], doubt["specificity"]) == (0.75, 0.75)  # 1.5 is above logit 1
    assert (fracture["sensitivity"], fracture["specificity"]) == (0.5, 1.0)
    low, high = doubt["sensitivity_ci95"]
    assert 0 <= low <= 0.75 <= high <= 1
    assert fit.counts == LabelCounts(4, 4, 0) and fit.target_sensitivity == 0.75
    assert fit.auroc == pytest.approx(13 / 16)  # 13 of the 16 pairs ranked right
    assert fit.warnings == []


def test_unknown_labels_are_ignored():
    fit = fit_site_calibration(LABELS, LOGITS, target=0.75, max_ci_width=1.0, **SMALL)
    with_unknown = fit_site_calibration(
        [*LABELS, None, None], [*LOGITS, 40.0, -40.0], target=0.75, max_ci_width=1.0, **SMALL
    )
    assert with_unknown.temperature == fit.temperature
    assert with_unknown.operating_points == fit.operating_points
    assert with_unknown.counts == LabelCounts(4, 4, 2)


def test_fit_refuses_too_few_films_naming_the_counts():
    with pytest.raises(SiteCalibrationError, match=r"4 fractured \(need at least 30\)"):
        fit_site_calibration(LABELS, LOGITS)
    with pytest.raises(SiteCalibrationError, match="non-finite"):
        fit_site_calibration(LABELS, [*LOGITS[:-1], math.nan], **SMALL)


def test_a_wide_sensitivity_ci_warns():
    fit = fit_site_calibration(LABELS, LOGITS, target=0.75, max_ci_width=0.15, **SMALL)
    assert any("doubt point's sensitivity" in w and "width" in w for w in fit.warnings)
    assert any("4 fractured films" in w for w in fit.warnings)


def test_youden_below_the_doubt_point_closes_the_uncertain_band():
    # target 0.5 -> the 2nd highest fractured logit (4); J peaks (.75) at 3 and 0.5 -> 3 < 4
    labels = [1, 1, 1, 1, 0, 0, 0, 0]
    logits = [5.0, 4.0, 3.0, 0.5, -3.0, -2.0, -1.0, 1.0]
    fit = fit_site_calibration(labels, logits, target=0.5, max_ci_width=1.0, **SMALL)
    assert fit.operating_points["fracture"] == fit.operating_points["doubt"]
    assert any("Youden" in w and "no 'uncertain" in w for w in fit.warnings)


# --------------------------------------------------------------------------- the card and bundle


def _card(model: bytes, **extra) -> dict:
    return {
        "name": "source",
        "format": "fracture-edge-bundle",
        "format_version": 1,
        "model_sha256": hashlib.sha256(model).hexdigest(),
        "calibration_temperature": 2.0,
        "operating_points": {"doubt": 0.1, "fracture": 0.4},
        "operating_point_rules": {"doubt": {"rule": "validation sensitivity >= 0.75"}},
        **extra,
    }


def test_card_records_the_calibration_and_the_previous_points():
    model = b"not really a model"
    card = _card(model, operating_logits={"doubt": -4.0, "fracture": -0.8})
    fit = fit_site_calibration(LABELS, LOGITS, target=sensitivity_target(card), **SMALL)
    new = calibrated_card(
        card, fit, site="hospital-x", name="model-x", source="models/a", created=0
    )
    record = new[CARD_KEY]
    assert record["site"] == "hospital-x" and record["date"] == "1970-01-01"
    assert record["counts"] == {"fractured": 4, "unfractured": 4, "unknown": 0}
    assert record["target_sensitivity"] == 0.75 and record["source_bundle"] == "models/a"
    assert record["previous"]["operating_points"] == {"doubt": 0.1, "fracture": 0.4}
    assert record["previous"]["calibration_temperature"] == 2.0
    assert record["previous"]["operating_logits"] == {"doubt": -4.0, "fracture": -0.8}
    assert set(record["achieved"]) == {"doubt", "fracture"}
    assert record["warnings"] == fit.warnings
    assert new["operating_points"] == fit.operating_points
    assert new["operating_logits"] == fit.operating_logits
    assert new["calibration_temperature"] == fit.temperature
    assert new["model_sha256"] == card["model_sha256"] and new["name"] == "model-x"
    assert card["operating_points"] == {"doubt": 0.1, "fracture": 0.4}  # the input is untouched
    json.dumps(new, allow_nan=False)
    assert "operating_logits" not in calibrated_card(_card(model), fit, "x", "y", "z", created=0)


def test_bundle_keeps_the_model_bytes_and_refuses_to_overwrite(tmp_path):
    model = bytes(range(256)) * 64
    source = tmp_path / "source"
    source.mkdir()
    (source / "model.tflite").write_bytes(model)
    card = _card(model)
    (source / "model_card.json").write_text(json.dumps(card))
    fit = fit_site_calibration(LABELS, LOGITS, target=0.75, **SMALL)
    new = calibrated_card(card, fit, "site", "out", "source")
    out = write_calibrated_bundle(source, tmp_path / "out", new)
    assert _sha256(out / "model.tflite") == _sha256(source / "model.tflite") == card["model_sha256"]
    written = json.loads((out / "model_card.json").read_text())
    assert written[CARD_KEY]["previous"]["operating_points"] == card["operating_points"]
    with pytest.raises(SiteCalibrationError, match="already exists.*--overwrite"):
        write_calibrated_bundle(source, out, new)
    write_calibrated_bundle(source, out, new, overwrite=True)
    with pytest.raises(SiteCalibrationError, match="is the source bundle"):
        write_calibrated_bundle(source, source, new, overwrite=True)
    assert json.loads((source / "model_card.json").read_text()) == card
    broken = dict(new, operating_points={"doubt": math.nan, "fracture": 0.5})
    with pytest.raises(SiteCalibrationError, match="not in"):
        write_calibrated_bundle(source, tmp_path / "broken", broken)
    (source / "model.tflite").write_bytes(model + b"changed")
    with pytest.raises(SiteCalibrationError, match="sha256"):
        write_calibrated_bundle(source, tmp_path / "changed", new)


# --------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def site(tmp_path_factory, make_radiograph, save_jpeg) -> tuple[Path, Path]:
    """Twenty films: eight fractured (bright), ten not, two of unknown label."""
    folder = tmp_path_factory.mktemp("site") / "hospital-x"
    labels = ["1"] * 8 + ["0"] * 10 + ["", ""]
    with open(folder.parent / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "fracture"])
        for index, label in enumerate(labels):
            pixels = make_radiograph(64, 60 + 2 * index, index, index)
            if label == "1":
                pixels = np.clip(pixels.astype(int) + 60, 0, 255).astype(np.uint8)
            save_jpeg(folder / f"films/f{index:02d}.jpg", pixels)
            writer.writerow([f"films/f{index:02d}.jpg", label])
    return folder, folder.parent / "labels.csv"


def test_calibrate_cli_writes_a_site_calibrated_bundle(site, tiny_bundle, tmp_path, capsys):
    from edge_app.runtime import Bundle, FractureDetector
    from fracture_edge.cli import main

    folder, labels = site
    out = tmp_path / "tiny-hospital-x"
    argv = ["calibrate", str(folder), "--labels", str(labels), "--model", str(tiny_bundle)]
    argv += ["--out", str(out), "--min-fractured", "8", "--min-unfractured", "10"]
    argv += ["--resamples", "100", "--threads", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "site hospital-x" in printed and "8 fractured, 10 unfractured" in printed
    assert f"bundle: {out}" in printed
    assert _sha256(out / "model.tflite") == _sha256(tiny_bundle / "model.tflite")
    source = json.loads((tiny_bundle / "model_card.json").read_text())
    card = Bundle.load(out).card
    record = card[CARD_KEY]
    assert record["site"] == "hospital-x" and record["counts"]["unknown"] == 2
    assert record["previous"]["operating_points"] == source["operating_points"]
    assert record["source_bundle"] == str(tiny_bundle) and card["name"] == out.name
    detector = FractureDetector(out, num_threads=1)
    assert detector.thresholds == card["operating_points"]
    assert detector.temperature == card["calibration_temperature"]

    # the same command again: the folder exists now
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    # the default minimums refuse, naming what was found, before reading an image
    refused = ["calibrate", str(folder), "--labels", str(labels), "--model", str(tiny_bundle)]
    assert main([*refused, "--out", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert "8 fractured (need at least 30)" in err and "10 unfractured (need at least 30)" in err
    assert "2 of unknown label are ignored" in err and "Traceback" not in err
    assert not (tmp_path / "other").exists()
    # never over the source bundle, even with --overwrite
    onto_source = [*refused, "--out", str(tiny_bundle), "--overwrite"]
    assert main([*onto_source, "--min-fractured", "8", "--min-unfractured", "10"]) == 2
    assert "is the source bundle" in capsys.readouterr().err


# --------------------------------------------------------------------------- bench --calibrate


def test_calibration_folds_are_stratified_and_seeded():
    from benchmarks.site_calibration import calibration_folds

    labels = [1] * 4 + [0] * 6
    draws = calibration_folds(labels, 5, 3, seed=2)
    assert len(draws) == 3
    for draw in draws:
        assert len(draw) == 5 and sum(labels[i] for i in draw) == 2  # 5 · 4/10
    again = calibration_folds(labels, 5, 3, 2)
    assert all((a == b).all() for a, b in zip(draws, again, strict=True))
    with pytest.raises(SiteCalibrationError, match="has 10 labelled films"):
        calibration_folds(labels, 10, 1)


def test_site_calibration_table_before_and_after():
    from benchmarks.site_calibration import site_calibration_table

    rng = np.random.default_rng(0)
    labels = [1] * 40 + [0] * 80 + [None] * 5
    logits = np.r_[rng.normal(1.5, 1, 40), rng.normal(-1, 1, 80), rng.normal(0, 1, 5)]
    card = _card(b"m")
    table = site_calibration_table(labels, logits, card, 60, 4, 10, 10, resamples=50)
    assert table["counts"] == {"fractured": 40, "unfractured": 80, "unknown": 5}
    assert table["target_sensitivity"] == 0.75 and len(table["per_fold"]) == 4
    fold = table["per_fold"][0]
    assert fold["calibration_counts"]["fractured"] == 20
    assert fold["held_out_counts"] == {"fractured": 20, "unfractured": 40}
    # "before" is the card's own temperature and points on the held-out films
    from benchmarks.site_calibration import calibration_folds

    truth = np.array(labels[:120])
    held = np.setdiff1d(np.arange(120), calibration_folds(truth, 60, 4)[0])
    probability = sigmoid(logits[:120][held] / 2.0)
    expected = np.mean(probability[truth[held] == 1] >= 0.1)
    assert fold["before"]["doubt"]["sensitivity"] == pytest.approx(expected, abs=1e-4)
    gap = table["doubt_gap"]["after"]
    assert gap == pytest.approx(table["summary"]["doubt"]["after"]["sensitivity"]["mean"] - 0.75)


def test_bench_calibrate_reports_before_and_after(site, tiny_bundle, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from benchmarks.bench import BenchConfig, run_bench
    from benchmarks.specs import BenchError

    folder, labels = site
    config = BenchConfig(
        models=[f"tflite:{tiny_bundle}"],
        out=str(tmp_path / "report"),
        external=str(folder),
        labels=str(labels),
        threads=[1],
        resamples=20,
        heatmap_images=0,
        latency=False,
        cuda=False,
        calibrate=12,
        calibration_folds=3,
        min_fractured=4,
        min_unfractured=4,
    )
    report = run_bench(config)
    [table] = report["site_calibration"].values()
    assert table["calibration_films"] == 12 and table["folds"] == 3
    assert table["counts"] == {"fractured": 8, "unfractured": 10, "unknown": 2}
    for fold in table["per_fold"]:
        assert (
            fold["calibration_counts"]["fractured"] + fold["calibration_counts"]["unfractured"]
            == 12
        )
        assert fold["held_out_counts"] == {"fractured": 3, "unfractured": 3}
    assert set(table["summary"]["doubt"]) == {"before", "after"}
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved["site_calibration"] == report["site_calibration"]
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "## Site calibration" in markdown and "target sensitivity 0.95" in markdown

    with pytest.raises(SiteCalibrationError, match=r"\d+ fractured \(need at least 30\)"):
        run_bench(BenchConfig(**{**config.__dict__, "min_fractured": 30}))
    with pytest.raises(SiteCalibrationError, match="has 18 labelled films"):
        run_bench(BenchConfig(**{**config.__dict__, "calibrate": 18}))
    with pytest.raises(BenchError, match="add --external"):
        BenchConfig(calibrate=5)
