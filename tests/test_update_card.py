"""benchmarks.update_card: the shipped card quotes the benchmark report, the model is untouched."""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("ai_edge_litert")

from benchmarks.update_card import update_card  # noqa: E402
from edge_app.runtime import FractureDetector  # noqa: E402


def test_card_takes_the_report_row(tiny_bundle, tmp_path):
    bundle = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    before = json.loads((bundle / "model_card.json").read_text())
    point = {"probability": 0.2, "sensitivity": 0.95, "specificity": 0.4}
    report = {
        "created": "2026-11-27T00:00:00Z",
        "rows": [
            {"id": "arch:vgg16_bn@224", "kind": "arch", "source": "vgg16_bn"},
            {
                "id": f"tflite:{bundle}",
                "kind": "tflite",
                "source": str(bundle),
                "accuracy": {
                    "auroc": 0.81,
                    "auroc_ci95": [0.75, 0.86],
                    "auprc": 0.5,
                    "temperature": 1.7,
                    "operating_points": {"doubt": point, "fracture": {**point, "probability": 0.6}},
                    "evaluation": {"val": {"auroc": 0.79}},
                },
                "latency": {"1": {"p50_ms": 3.0}, "2": {"p50_ms": 2.0}},
                "peak_rss_mb": 70.0,
            },
        ],
    }
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    card = update_card(path, bundle)
    assert card["metrics"]["test_auroc"] == 0.81 and card["metrics"]["val_auroc"] == 0.79
    assert card["operating_points"] == {"doubt": 0.2, "fracture": 0.6}
    assert card["calibration_temperature"] == 1.7
    assert card["metrics_at_export"]["operating_points"] == before["operating_points"]
    assert card["model_sha256"] == before["model_sha256"]
    detector = FractureDetector(bundle)  # still loads, sha256 still matches
    assert detector.thresholds == {"doubt": 0.2, "fracture": 0.6}
    assert detector.describe()["test_auroc"] == 0.81


def test_a_report_without_the_bundle_is_refused(tiny_bundle, tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"rows": []}))
    with pytest.raises(SystemExit, match="no row"):
        update_card(path, tiny_bundle)
