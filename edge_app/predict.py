"""``fracture-edge predict``: score images, DICOM files, volumes and study folders in a batch.

Interface contract (other tools parse it): with ``--json`` every input gets exactly one line
holding one JSON object with at least ``path``, ``fracture_probability`` (0–1, or null on
error), ``verdict`` (``fracture`` | ``uncertain`` | ``no_fracture``, or null), ``region``
(string or null) and ``error`` (null, or the message saying why that input could not be read).
A folder, a multi-frame DICOM or a NIfTI volume is one study: one line, plus ``images`` and
``per_image``. Inputs that fail do not stop the batch; the exit code is 1 when any input
failed, 2 when the model itself cannot be loaded, 0 otherwise.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from PIL import Image

from edge_app.errors import FractureEdgeError
from edge_app.radiograph import Radiograph, load_study
from edge_app.runtime import FractureDetector, Prediction, StudyPrediction, overlay


def _safe_stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".dcm", ".jpeg", ".jpg", ".png"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def write_heatmaps(
    result: Prediction | StudyPrediction, images: Sequence[Radiograph], folder: Path, source: Path
) -> list[Path]:
    """Overlay PNGs: ``<name>.png`` for an image, ``<name>_<index>.png`` per study image."""
    folder.mkdir(parents=True, exist_ok=True)
    predictions = result.images if isinstance(result, StudyPrediction) else [result]
    written = []
    for index, (prediction, image) in enumerate(zip(predictions, images, strict=True)):
        stem = _safe_stem(source)
        name = f"{stem}.png" if len(predictions) == 1 else f"{stem}_{index:03d}.png"
        Image.fromarray(overlay(image.pixels, prediction.heatmap)).save(folder / name)
        written.append(folder / name)
    return written


def score(detector: FractureDetector, path: Path, heatmap: bool):
    """(result, the loaded images): one Prediction for an image, a StudyPrediction otherwise."""
    images = load_study(path)
    if len(images) == 1 and not path.is_dir():
        return detector.predict_radiograph(images[0], heatmap=heatmap), images
    return detector.predict_study(images, str(path), heatmap=heatmap), images


def _text_line(record: dict) -> str:
    if record["error"]:
        return f"{record['path']}\terror: {record['error']}"
    parts = [
        record["path"],
        record["verdict"],
        f"p={record['fracture_probability']:.3f}",
    ]
    if record.get("region"):
        parts.append(f"region={record['region']}")
    if "images" in record:
        parts.append(f"images={record['images']} (mean)")
    if record.get("warnings"):
        parts.append("warnings: " + "; ".join(record["warnings"]))
    return "\t".join(parts)


def predict_paths(
    paths: Sequence[str | Path],
    model: str | Path,
    as_json: bool = False,
    heatmaps: str | Path | None = None,
    threads: int = 2,
    out: TextIO | None = None,
    err: TextIO | None = None,
    tta: bool = False,
) -> int:
    """Score every path and print one line each; returns the exit code."""
    out, err = out or sys.stdout, err or sys.stderr
    detector = FractureDetector(model, num_threads=threads, tta=tta)
    failures = 0
    for raw in paths:
        path = Path(raw)
        try:
            result, images = score(detector, path, heatmap=heatmaps is not None)
            record = result.to_json()
            if heatmaps is not None:
                written = write_heatmaps(result, images, Path(heatmaps), path)
                record["heatmaps"] = [str(p) for p in written]
        except (FractureEdgeError, OSError, ValueError) as error:
            failures += 1
            record = {
                "path": str(path),
                "fracture_probability": None,
                "verdict": None,
                "region": None,
                "error": str(error),
            }
            print(f"fracture-edge: error: {path}: {error}", file=err)
        print(json.dumps(record) if as_json else _text_line(record), file=out, flush=True)
    if failures:
        print(f"fracture-edge: {failures} of {len(paths)} inputs could not be read", file=err)
    return 1 if failures else 0
