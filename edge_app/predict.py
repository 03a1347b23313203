"""``fracture-edge predict``: score images, DICOM files, volumes and study folders in a batch.

Interface contract (other tools parse it): with ``--json`` every input gets exactly one line
holding one JSON object with at least ``path``, ``fracture_probability`` (0–1, or null on
error), ``verdict`` (``fracture`` | ``uncertain`` | ``no_fracture``, or null), ``region``
(string or null), ``peak`` (``[x, y]``, the heatmap's maximum, or null), ``box`` (``[x0, y0, x1,
y1]`` around the heatmap's top region for a *fracture* or *uncertain* verdict, else null; both
in coordinates normalised to the image, x right and y down) and ``error`` (null, or the message
saying why that input could not be read). A folder, a multi-frame DICOM or a NIfTI volume is one
study: one line, plus ``images`` and ``per_image`` (each image's own record, with its own
``peak`` and ``box``; the study's are null). Inputs that fail do not stop the batch; the exit
code is 1 when any input failed, 2 when the model itself cannot be loaded, 0 otherwise.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from PIL import Image

from edge_app.errors import FractureEdgeError
from edge_app.render import render_prediction
from edge_app.runtime import FractureDetector, StudyResult
from edge_app.text import DISCLAIMER


def _safe_stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".dcm", ".jpeg", ".jpg", ".png"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def write_heatmaps(result: StudyResult, folder: Path, source: Path) -> list[Path]:
    """Overlay PNGs (the film, its heatmap and box, the legend on the right; see
    :mod:`edge_app.render`): ``<name>.png`` for an image, ``<name>_<index>.png`` per study
    image."""
    folder.mkdir(parents=True, exist_ok=True)
    single = len(result.predictions) == 1
    written = []
    for index, (prediction, image) in enumerate(
        zip(result.predictions, result.radiographs, strict=True)
    ):
        stem = _safe_stem(source)
        name = f"{stem}.png" if single else f"{stem}_{index:03d}.png"
        Image.fromarray(render_prediction(image.pixels, prediction)).save(folder / name)
        written.append(folder / name)
    return written


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
            result = detector.predict_path(path, heatmap=heatmaps is not None)
            record = result.to_json()
            if heatmaps is not None:
                written = write_heatmaps(result, Path(heatmaps), path)
                record["heatmaps"] = [str(p) for p in written]
        except (FractureEdgeError, OSError, ValueError) as error:
            failures += 1
            record = {
                "path": str(path),
                "fracture_probability": None,
                "verdict": None,
                "region": None,
                "peak": None,
                "box": None,
                "error": str(error),
            }
            print(f"fracture-edge: error: {path}: {error}", file=err)
        print(json.dumps(record) if as_json else _text_line(record), file=out, flush=True)
    if failures:
        print(f"fracture-edge: {failures} of {len(paths)} inputs could not be read", file=err)
    if not as_json:  # read by a person: the same caveat as the app and the page
        print(DISCLAIMER, file=err)
    return 1 if failures else 0
