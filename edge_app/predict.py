"""``fracture-edge predict``: score images, DICOM files, volumes and study folders in a batch.

Interface contract (other tools parse it): with ``--json`` every input gets exactly one line
holding one JSON object with at least ``path``, ``fracture_probability`` (0–1, or null on
error), ``verdict`` (``fracture`` | ``uncertain`` | ``no_fracture``, or null), ``region``
(string or null), ``peak`` (``[x, y]``, the heatmap's maximum, or null), ``box`` (``[x0, y0, x1,
y1]`` around the heatmap's top region for a *fracture* or *uncertain* verdict, else null; both
in coordinates normalised to the image, x right and y down) and ``error`` (null, or the message
saying why that input could not be read; a blank film's starts with ``blank film, no
verdict:``). A scored input also has ``warnings``: what the loader noticed (``blank:``,
``frames:``, ``pages:``, ``folder: skipped``, ``truncated``…). A folder, a multi-frame DICOM or
a NIfTI volume is one study: one line, plus ``images`` and ``per_image`` (each image's own
record, with its own ``peak``, ``box`` and ``warnings``; the study's are null). Inputs that fail
do not stop the batch; the exit code is 1 when any input failed, 2 when the model itself cannot
be loaded or a flag cannot be used, 0 otherwise.

``--heatmaps DIR`` writes one overlay PNG per image, named after its input and a short hash of
the input's full path (``<name>-<hash>.png``; ``<name>-<hash>-<index>.png`` for a study's
images), so two inputs never share a name. DIR may not be or lie inside an input, nor hold one;
an existing file is never replaced, nor a non-empty DIR written into, without ``--overwrite``
(:func:`edge_app.files.check_output`). Each overlay is drawn and written as its image is
reached, so a study of hundreds of slices holds one full-size heatmap at a time.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from PIL import Image

from edge_app.errors import EmptyImageError, FractureEdgeError
from edge_app.files import check_output
from edge_app.render import render
from edge_app.runtime import FractureDetector, StudyResult
from edge_app.text import DISCLAIMER
from edge_app.tflite import check_threads

#: How a blank film's error line starts: it is not a damaged file, and it gets no verdict.
BLANK_FILM = "blank film, no verdict"


def _safe_stem(path: Path) -> str:
    name = path.resolve().name if path.name in ("", ".", "..") else path.name
    for suffix in (".nii.gz", ".nii", ".dcm", ".jpeg", ".jpg", ".png"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def overlay_stem(source: Path) -> str:
    """``<name>-<hash>``: the input's name and the first 8 hex digits of the sha256 of its
    resolved path, so inputs of one name in different folders get different overlays."""
    digest = hashlib.sha256(str(Path(source).resolve()).encode("utf-8", "surrogateescape"))
    return f"{_safe_stem(Path(source))}-{digest.hexdigest()[:8]}"


def write_heatmaps(
    detector: FractureDetector,
    result: StudyResult,
    folder: Path,
    source: Path,
    protected: Sequence[str | Path] = (),
    overwrite: bool = False,
) -> list[Path]:
    """Overlay PNGs (the film, its heatmap and box, the legend on the right; see
    :mod:`edge_app.render`), one image at a time: each heatmap is made again from its
    prediction's class-activation map, drawn, written and let go. Names: :func:`overlay_stem`,
    plus ``-<index>`` (the slice's index in its volume, else the image's in the study) for a
    study. Each is checked by :func:`edge_app.files.check_output` against ``protected`` (the
    inputs) and, without ``overwrite``, refused if it exists."""
    stem = overlay_stem(source)
    written = []
    for index, (prediction, image) in enumerate(
        zip(result.predictions, result.radiographs, strict=True)
    ):
        name = f"{stem}.png"
        if result.is_study:
            name = f"{stem}-{int(image.metadata.get('slice_index', index)):03d}.png"
        target = check_output(folder / name, protected, overwrite, what="heatmap overlay")
        shown_as = folder / name  # as the user named the folder
        heatmap = detector.heatmap(prediction, *image.pixels.shape)
        picture = render(image.pixels, heatmap, prediction.verdict, prediction.box)
        del heatmap
        with open(target, "wb" if overwrite else "xb") as stream:  # "x": never over a file
            Image.fromarray(picture).save(stream, format="PNG")
        written.append(shown_as)
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


def _error_record(path: Path, message: str) -> dict:
    return {
        "path": str(path),
        "fracture_probability": None,
        "verdict": None,
        "region": None,
        "peak": None,
        "box": None,
        "error": message,
    }


def predict_paths(
    paths: Sequence[str | Path],
    model: str | Path,
    as_json: bool = False,
    heatmaps: str | Path | None = None,
    threads: int = 2,
    out: TextIO | None = None,
    err: TextIO | None = None,
    tta: bool = False,
    overwrite: bool = False,
) -> int:
    """Score every path and print one line each; returns the exit code. The flags are checked
    before the model loads: ``threads`` (1 … ``MAX_THREADS``) and the ``heatmaps`` folder (see
    the module docstring); a refusal raises :class:`~edge_app.errors.UsageError`."""
    out, err = out or sys.stdout, err or sys.stderr
    check_threads(threads, "--threads")
    folder = None
    if heatmaps is not None:
        check_output(heatmaps, paths, overwrite, folder=True, what="heatmap overlays")
        folder = Path(heatmaps)
    detector = FractureDetector(model, num_threads=threads, tta=tta)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    failures = 0
    for raw in paths:
        path = Path(raw)
        try:
            # Without the full-size maps: write_heatmaps makes each again as it draws it.
            result = detector.predict_path(path, heatmap=False)
            record = result.to_json()
            if folder is not None:
                written = write_heatmaps(detector, result, folder, path, paths, overwrite)
                record["heatmaps"] = [str(p) for p in written]
        except EmptyImageError as error:
            failures += 1
            record = _error_record(path, f"{BLANK_FILM}: {error}")
            print(f"fracture-edge: {BLANK_FILM}: {path}: {error}", file=err)
        except (FractureEdgeError, OSError, ValueError) as error:
            failures += 1
            record = _error_record(path, str(error))
            print(f"fracture-edge: error: {path}: {error}", file=err)
        print(json.dumps(record) if as_json else _text_line(record), file=out, flush=True)
    if failures:
        print(f"fracture-edge: {failures} of {len(paths)} inputs could not be read", file=err)
    if not as_json:  # read by a person: the same caveat as the app and the page
        print(DISCLAIMER, file=err)
    return 1 if failures else 0
