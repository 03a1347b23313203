"""Make a bundle's card quote the benchmark report, so the app shows what the report measured.

The export measures a bundle on the training cache (256 px JPEG canvases); ``fracture-edge
bench`` measures it on the original files, the way the app reads them. This copies the report's
row for the bundle into its ``model_card.json``: test AUROC with CI, AUPRC, sensitivity and
specificity at both operating points, the temperature and both thresholds (chosen on the same
validation originals), latency and peak RSS. The export-time numbers stay under
``metrics_at_export``. The model file and its sha256 are untouched::

    python -m benchmarks.update_card benchmarks/reports/2026-11-27/report.json \\
        models/fracture-lite0-int8
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edge_app.runtime import Bundle


def report_row(report: dict[str, Any], bundle: Path) -> dict[str, Any]:
    wanted = {f"tflite:{bundle}", f"tflite:{bundle.resolve()}"}
    for row in report["rows"]:
        if row["id"] in wanted or (
            row["kind"] == "tflite" and Path(row["source"]).resolve() == bundle.resolve()
        ):
            return row
    raise SystemExit(f"the report has no row for {bundle}")


def update_card(report_path: Path, bundle_path: Path) -> dict[str, Any]:
    report = json.loads(report_path.read_text())
    bundle = Bundle.load(bundle_path)  # sha256 verified: the report timed this very file
    row = report_row(report, bundle_path)
    accuracy = row["accuracy"]
    if accuracy.get("measured_on") and "external" in str(accuracy.get("measured_on")):
        raise SystemExit("an external-set report has no validation split to take thresholds from")
    card = dict(bundle.card)
    if "metrics_at_export" not in card:
        card["metrics_at_export"] = {
            "metrics": card.get("metrics"),
            "operating_points": card.get("operating_points"),
            "calibration_temperature": card.get("calibration_temperature"),
            "note": "measured by fracture-edge export on the training cache (256 px canvases)",
        }
    points = accuracy["operating_points"]
    card["calibration_temperature"] = accuracy["temperature"]
    card["operating_points"] = {name: point["probability"] for name, point in points.items()}
    card.pop("operating_logits", None)  # belonged to the export-time thresholds
    card["metrics"] = {
        "val_auroc": (accuracy.get("evaluation") or {}).get("val", {}).get("auroc"),
        "test_auroc": accuracy["auroc"],
        "test_auroc_ci95": accuracy["auroc_ci95"],
        "test_auprc": accuracy.get("auprc"),
        "test_counts": accuracy.get("counts"),
        **{f"test_at_{name}": point for name, point in points.items()},
        "latency_p50_ms": {threads: value["p50_ms"] for threads, value in row["latency"].items()},
        "peak_rss_mb": row.get("peak_rss_mb"),
        "measured_on": "original FracAtlas files through the app's loader and preprocessing, "
        "LiteRT CPU (fracture-edge bench)",
        "report": str(report_path),
        "report_created": report.get("created"),
    }
    (bundle_path / "model_card.json").write_text(json.dumps(card, indent=1) + "\n")
    return card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("bundle", type=Path)
    args = parser.parse_args()
    card = update_card(args.report, args.bundle)
    print(json.dumps({k: card["metrics"][k] for k in ("test_auroc", "test_auroc_ci95")}))


if __name__ == "__main__":
    main()
