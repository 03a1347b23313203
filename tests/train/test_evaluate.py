import csv
import json

import numpy as np
import pytest
from PIL import Image

from edge_app.errors import LogitsFileError
from fracture_edge.cli import main
from train.evaluate import (
    evaluate_scores,
    load_logits_csv,
    logits_of_split,
    select_models,
    subgroups_from_fracatlas,
)
from train.metrics import auroc, sigmoid

# Hand example. Validation positives 3, 2.5, 2, 1.5, -0.5; negatives -2, -1.5, 1.2, -3, -1.
# doubt (sensitivity 0.95 of 5 positives -> all 5): the lowest positive, -0.5.
# fracture (Youden J): 1.5 gives sens .8 / spec 1 (J .8), -0.5 gives 1 / .8 (J .8): the tie goes
# to the higher threshold, 1.5.
VAL_LABELS = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
VAL_LOGITS = np.array([3, 2.5, 2, 1.5, -0.5, -2, -1.5, 1.2, -3, -1])
# Test positives 2, 0, 1.6, -1; negatives -2, 1.0, 1.7, -0.6.
# logit >= -0.5: TP 3 (2, 0, 1.6), FN 1, FP 2 (1.0, 1.7), TN 2.
# logit >= 1.5:  TP 2 (2, 1.6),    FN 2, FP 1 (1.7),      TN 3.
TEST_LABELS = np.array([1, 1, 1, 1, 0, 0, 0, 0])
TEST_LOGITS = np.array([2, 0, 1.6, -1, -2, 1.0, 1.7, -0.6])


def synthetic_logits(rng, count, scale=1.0):
    """Calibrated logits times ``scale`` (so the fitted temperature should be ``scale``)."""
    logits = rng.normal(-1.0, 2.0, count)
    labels = (rng.random(count) < sigmoid(logits)).astype(int)
    return labels, logits * scale


def write_logits_csv(path, files, splits, labels, columns):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["file", "split", "label", *columns])
        for index, file in enumerate(files):
            writer.writerow(
                [
                    file,
                    splits[index],
                    labels[index],
                    *[f"{columns[name][index]:.5f}" for name in columns],
                ]
            )
    return path


@pytest.fixture
def logits_csv(tmp_path):
    rng = np.random.default_rng(0)
    labels, logits = synthetic_logits(rng, 360, scale=2.0)
    splits = np.array(["train"] * 60 + ["val"] * 150 + ["test"] * 150)
    files = [f"IMG{index:07d}.jpg" for index in range(labels.size)]
    weak = logits + rng.normal(0, 4, labels.size)
    columns = {"good": logits, "weak": weak}
    return write_logits_csv(tmp_path / "logits.csv", files, splits, labels, columns)


# --------------------------------------------------------------------------- evaluate_scores


def test_evaluate_scores_hand_computed_operating_points():
    report = evaluate_scores(VAL_LABELS, VAL_LOGITS, TEST_LABELS, TEST_LOGITS, resamples=50)
    temperature = report["calibration"]["temperature"]
    doubt, fracture = report["operating_points"]["doubt"], report["operating_points"]["fracture"]
    assert doubt["raw_logit"] == pytest.approx(-0.5)
    assert fracture["raw_logit"] == pytest.approx(1.5)
    assert doubt["probability"] == pytest.approx(sigmoid(-0.5 / temperature), abs=1e-4)
    assert fracture["probability"] == pytest.approx(sigmoid(1.5 / temperature), abs=1e-4)
    assert doubt["val"] == {"sensitivity": 1.0, "specificity": 0.8}
    assert fracture["val"] == {"sensitivity": 0.8, "specificity": 1.0}
    assert doubt["test"]["confusion_matrix"] == [[2, 2], [1, 3]]
    assert fracture["test"]["confusion_matrix"] == [[3, 1], [2, 2]]
    assert (fracture["test"]["sensitivity"], fracture["test"]["specificity"]) == (0.5, 0.75)
    # p_o 5/8; p_e (4*5 + 4*3)/64 = 1/2 -> kappa 1/4; balanced (1/2 + 3/4) / 2.
    assert fracture["test"]["cohen_kappa"] == pytest.approx(0.25)
    assert fracture["test"]["balanced_accuracy"] == pytest.approx(0.625)
    assert report["test"]["auroc"] == pytest.approx(round(auroc(TEST_LABELS, TEST_LOGITS), 4))
    assert report["counts"]["test"] == {"images": 8, "fractured": 4}


def test_evaluate_scores_is_json_able_and_fits_the_temperature():
    rng = np.random.default_rng(1)
    labels_val, logits_val = synthetic_logits(rng, 3000, scale=2.0)
    labels_test, logits_test = synthetic_logits(rng, 600, scale=2.0)
    report = evaluate_scores(labels_val, logits_val, labels_test, logits_test, resamples=50)
    json.dumps(report, allow_nan=False)
    calibration = report["calibration"]
    assert calibration["temperature"] == pytest.approx(2.0, rel=0.1)
    assert calibration["test_ece_after"] < calibration["test_ece_before"]
    assert calibration["val_nll_after"] <= calibration["val_nll_before"]
    points = report["operating_points"]
    assert points["doubt"]["val"]["sensitivity"] >= 0.95
    assert 0 <= points["doubt"]["probability"] <= points["fracture"]["probability"] <= 1
    low, high = report["test"]["auroc_ci95"]
    assert low < report["test"]["auroc"] < high
    assert 0 < report["test"]["auprc"] <= 1


def test_evaluate_scores_subgroups_skip_single_class_groups():
    groups = np.array(["hand", "hand", "leg", "leg", "hand", "hand", "hip", "hip"])
    # hip holds two negatives only, leg two positives only.
    report = evaluate_scores(
        VAL_LABELS, VAL_LOGITS, TEST_LABELS, TEST_LOGITS, {"region": groups}, resamples=50
    )
    json.dumps(report, allow_nan=False)
    region = report["subgroups"]["region"]
    assert list(region) == ["hand", "hip", "leg"]
    assert region["hip"]["n"] == 2 and region["hip"]["fractured"] == 0
    assert region["hip"]["auroc"] is None and region["hip"]["auroc_ci95"] == [None, None]
    assert region["hip"]["sensitivity_at_doubt"] is None
    assert region["hip"]["specificity_at_fracture"] == 0.5  # 1.7 >= 1.5 is a false positive
    assert region["leg"]["auroc"] is None and region["leg"]["specificity_at_doubt"] is None
    assert region["leg"]["sensitivity_at_doubt"] == 0.5  # 1.6 >= -0.5, -1 < -0.5
    # hand: positives 2, 0 and negatives -2, 1.0 -> pairs 2>-2, 2>1, 0>-2, 0<1 -> 3/4.
    assert region["hand"]["auroc"] == pytest.approx(0.75)
    assert (region["hand"]["n"], region["hand"]["fractured"]) == (4, 2)


def test_evaluate_scores_rejects_nan_and_one_class_validation():
    with pytest.raises(ValueError, match="NaN"):
        evaluate_scores(VAL_LABELS, VAL_LOGITS, TEST_LABELS, np.r_[TEST_LOGITS[:-1], np.nan])
    with pytest.raises(ValueError, match="both classes"):
        evaluate_scores(np.ones(3), np.arange(3.0), TEST_LABELS, TEST_LOGITS)
    with pytest.raises(ValueError, match="does not match"):
        evaluate_scores(
            VAL_LABELS,
            VAL_LOGITS,
            TEST_LABELS,
            TEST_LOGITS,
            {"region": np.array(["hand"])},
            resamples=10,
        )


# --------------------------------------------------------------------------- inputs


def test_load_logits_csv_round_trip(logits_csv):
    rows, logits = load_logits_csv(logits_csv)
    assert list(logits) == ["good", "weak"]
    assert len(rows) == 360 and rows[60].split == "val" and rows[0].file == "IMG0000000.jpg"
    files, labels, values = logits_of_split(rows, logits["good"], "test")
    assert files.size == labels.size == values.size == 150


def test_load_logits_csv_reports_malformed_files(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("name,split,label,model\n")
    with pytest.raises(LogitsFileError, match="file,split,label"):
        load_logits_csv(path)
    path.write_text("file,split,label,model\na.jpg,test,2,0.5\n")
    with pytest.raises(LogitsFileError, match=":2: label '2'"):
        load_logits_csv(path)
    path.write_text("file,split,label,model\na.jpg,test,1,0.5\nb.jpg,test,0,oops\n")
    with pytest.raises(LogitsFileError, match=":3: logit 'oops'"):
        load_logits_csv(path)
    with pytest.raises(FileNotFoundError):
        load_logits_csv(tmp_path / "missing.csv")


def test_empty_logit_cells_are_rejected_on_the_evaluated_split(tmp_path):
    path = tmp_path / "partial.csv"
    path.write_text("file,split,label,model\na.jpg,train,1,\nb.jpg,test,0,\n")
    rows, logits = load_logits_csv(path)
    assert np.isnan(logits["model"]).all()
    with pytest.raises(LogitsFileError, match="NaN logits on its 'test' rows"):
        logits_of_split(rows, logits["model"], "test", "model")
    with pytest.raises(LogitsFileError, match="splits found"):
        logits_of_split(rows, logits["model"], "val", "model")


def test_subgroups_from_fracatlas(tmp_path, fracatlas_tree, atlas_image):
    root = fracatlas_tree(
        tmp_path / "atlas",
        [
            atlas_image("a.jpg", True, data=b"x", regions=("hand",), flags={"hardware": 1}),
            atlas_image("b.jpg", False, data=b"x", regions=("leg",), flags={"multiscan": 1}),
            atlas_image("c.jpg", True, data=b"x", regions=("hand", "leg")),
            atlas_image("d.jpg", False, data=b"x", in_csv=False),
        ],
    )
    groups = subgroups_from_fracatlas(["a.jpg", "b.jpg", "c.jpg", "d.jpg", "zz.jpg"], root)
    assert groups["region"].tolist() == ["hand", "leg", "mixed", "unknown", "unknown"]
    assert groups["hardware"].tolist() == ["yes", "no", "no", "unknown", "unknown"]
    assert groups["multiscan"].tolist() == ["no", "yes", "no", "unknown", "unknown"]


# --------------------------------------------------------------------------- CLI


def test_select_models():
    assert select_models(["a", "b", "c"], None) == ["a", "b", "c"]
    assert select_models(["a", "b", "c"], ["c", "a", "c"]) == ["c", "a"]
    with pytest.raises(LogitsFileError, match=r"\['x'\] are not columns .* valid: \['a', 'b'\]"):
        select_models(["b", "a"], ["a", "x"])


def test_cli_evaluate_writes_json_markdown_and_plots(tmp_path, fracatlas_tree, atlas_image, capsys):
    rng = np.random.default_rng(3)
    labels, logits = synthetic_logits(rng, 200, scale=2.0)
    labels[:4], labels[100:104] = 1, 0  # both classes in val and test
    files = [f"IMG{index:03d}.jpg" for index in range(200)]
    splits = ["val"] * 100 + ["test"] * 100
    weak = logits + rng.normal(0, 4, 200)
    path = write_logits_csv(
        tmp_path / "logits.csv",
        files,
        splits,
        labels,
        {"good": logits, "skipped": -logits, "weak": weak},
    )
    root = fracatlas_tree(
        tmp_path / "atlas",
        [
            atlas_image(name, bool(label), data=b"x", regions=("hand",) if index % 2 else ("leg",))
            for index, (name, label) in enumerate(zip(files, labels, strict=True))
        ],
    )
    out = tmp_path / "eval"
    code = main(
        [
            "evaluate",
            "--logits",
            str(path),
            "--model",
            "good",
            "--model",
            "weak",
            "--data",
            str(root),
            "--out",
            str(out),
            "--resamples",
            "30",
        ]
    )
    assert code == 0
    document = json.loads((out / "evaluation.json").read_text())
    assert list(document["models"]) == ["good", "weak"] and not (out / "skipped").exists()
    good, weak = document["models"]["good"], document["models"]["weak"]
    assert good["test"]["auroc"] > weak["test"]["auroc"]
    assert good["calibration"]["temperature"] == pytest.approx(2.0, rel=0.35)
    assert set(good["subgroups"]) == {"region", "hardware", "multiscan"}
    assert good["subgroups"]["region"]["hand"]["n"] == 50
    markdown = (out / "evaluation.md").read_text()
    assert "| good |" in markdown and "| weak |" in markdown and "95 % CI" in markdown
    assert "Test AUROC by region" in markdown
    for model in ("good", "weak"):
        plots = sorted(path.name for path in (out / model).iterdir())
        assert plots == ["confusion_matrices.png", "pr.png", "reliability.png", "roc.png"]
        for name in plots:
            with Image.open(out / model / name) as image:
                assert image.size[0] > 300 and image.size[1] > 300
    assert "evaluation.md" in capsys.readouterr().out


def test_cli_evaluate_errors_without_traceback(logits_csv, tmp_path, capsys):
    code = main(
        [
            "evaluate",
            "--logits",
            str(logits_csv),
            "--model",
            "nope",
            "--out",
            str(tmp_path / "eval"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "['good', 'weak']" in err and "Traceback" not in err
    code = main(
        ["evaluate", "--logits", str(tmp_path / "none.csv"), "--out", str(tmp_path / "missing")]
    )
    assert code == 2 and "does not exist" in capsys.readouterr().err
    code = main(
        [
            "evaluate",
            "--logits",
            str(logits_csv),
            "--data",
            str(tmp_path),
            "--out",
            str(tmp_path / "eval"),
        ]
    )
    assert code == 2 and "not a FracAtlas root" in capsys.readouterr().err


def test_evaluate_is_listed_in_the_help(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0 and "evaluate" in capsys.readouterr().out
