"""The FractureEdge app for laptops and Android phones (Kivy): open a radiograph, read the
verdict, look at where the model looked, export a report.

This module holds everything that needs no Kivy: the one inference thread, the report writer
and the texts the panels show. The entry point, :func:`edge_app.app_cli.run_app`, configures
Kivy and opens the window; the widgets are in :mod:`edge_app.app_ui` (their layout in
``edge_app/app.kv``), and Android's gallery and camera in :mod:`edge_app.app_android`.

Nothing leaves the device: no network call, and a report is written only when the user presses
"Export report".

Lines on stdout, one per event, for scripts and the headless tests (the app is a front end, so
it prints):

- ``VERDICT {json}``: a result is on screen (``StudyResult.to_json()``, as ``fracture-edge
  predict --json`` prints it);
- ``MODEL {json}``: a bundle was loaded (``FractureDetector.describe()``);
- ``ERROR message``: the message the app shows for a file or bundle it could not use;
- ``REPORT {json}``: the PNG and JSON an export wrote;
- ``SCREENSHOT path``: the window was saved (``screenshot=``).

Environment variables:

- ``FRACTURE_EDGE_REPORTS``: the export folder offered by default (else
  ``~/FractureEdge-reports``);
- ``FRACTURE_EDGE_APP_AUTO_EXPORT=1``: press "Export report", then the dialog's "Export",
  once after the first verdict. A test hook that goes through the real buttons; with
  ``--screenshot``/``--exit-after`` it also makes a one-shot report from the command line.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from edge_app.errors import FractureEdgeError
from edge_app.files import check_output
from edge_app.render import render, render_prediction
from edge_app.runtime import FractureDetector, Prediction, StudyResult
from edge_app.text import DISCLAIMER, percent, site_calibration_text

LOGGER = logging.getLogger(__name__)

REPORTS_ENV = "FRACTURE_EDGE_REPORTS"
AUTO_EXPORT_ENV = "FRACTURE_EDGE_APP_AUTO_EXPORT"
#: Longest side of the copy drawn on screen: the slider redraws it at every move.
DISPLAY_MAX_SIDE = 1024
#: Background colour of each verdict band (RGBA in [0, 1]).
VERDICT_COLOURS = {
    "fracture": (0.80, 0.20, 0.22, 1.0),
    "uncertain": (0.86, 0.55, 0.08, 1.0),
    "no_fracture": (0.16, 0.55, 0.36, 1.0),
}


class NoModelError(FractureEdgeError):
    """An image was opened while no model bundle is loaded."""


def emit(tag: str, payload: Any) -> None:
    """One status line on stdout (see the module docstring)."""
    text = payload if isinstance(payload, str) else json.dumps(payload, default=str)
    print(f"{tag} {text}", flush=True)


# --------------------------------------------------------------------------- errors


def user_message(error: BaseException) -> str:
    """The one place the app turns an exception into the message it shows."""
    if isinstance(error, FractureEdgeError):
        return str(error)
    if isinstance(error, OSError):  # permissions, a file removed while reading, a full disk
        return f"{error.strerror or error}: {error.filename or ''}".rstrip(": ")
    if isinstance(error, ValueError):  # malformed input the loaders did not classify
        return str(error)
    LOGGER.error("unexpected error in the app", exc_info=error)  # a bug: keep its traceback
    return f"Unexpected error ({type(error).__name__}: {error}). Please report it."


# --------------------------------------------------------------------------- analysis


@dataclass
class Outcome:
    """A finished job: its value, or the message to show instead."""

    value: Any = None
    message: str | None = None


class InferenceWorker:
    """One thread runs every job, in order, and owns the detector.

    :class:`FractureDetector` is not thread-safe, so it is created and used on this thread
    only. ``deliver(callback, outcome)`` hands each outcome back to the UI thread (the app
    passes a ``Clock.schedule_once`` wrapper).
    """

    def __init__(self, deliver: Callable[[Callable[[Outcome], None], Outcome], None]):
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fracture-edge")
        self._deliver = deliver
        self._detector: FractureDetector | None = None
        self._load_failure = "no model bundle was loaded"

    def submit(
        self, on_done: Callable[[Outcome], None], function: Callable[..., Any], *args: Any
    ) -> None:
        def job() -> None:
            try:
                outcome = Outcome(value=function(*args))
            except Exception as error:  # every failure becomes a message, never a crash
                outcome = Outcome(message=user_message(error))
            self._deliver(on_done, outcome)

        self._executor.submit(job)

    def load_model(self, bundle: Path, on_done: Callable[[Outcome], None]) -> None:
        """Load ``bundle``; the outcome's value is ``FractureDetector.describe()``."""
        self.submit(on_done, self._load, bundle)

    def analyse(self, path: Path, on_done: Callable[[Outcome], None]) -> None:
        """Analyse ``path``; the outcome's value is the runtime's
        :class:`~edge_app.runtime.StudyResult` (radiographs and predictions)."""
        self.submit(on_done, self._analyse, path)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _load(self, bundle: Path) -> dict[str, Any]:
        self._detector = None
        try:
            self._detector = FractureDetector(bundle)
        except Exception as error:
            self._load_failure = user_message(error)
            raise
        return self._detector.describe()

    def _analyse(self, path: Path) -> StudyResult:
        if self._detector is None:
            raise NoModelError(
                f"no model is loaded, so {path.name} cannot be analysed: {self._load_failure}"
            )
        return self._detector.predict_path(path)


# --------------------------------------------------------------------------- drawing


def display_copy(
    pixels: np.ndarray, heatmap: np.ndarray | None, max_side: int = DISPLAY_MAX_SIDE
) -> tuple[np.ndarray, np.ndarray | None]:
    """The image and heatmap shrunk to at most ``max_side`` pixels, for redrawing on screen."""
    height, width = pixels.shape
    scale = max_side / max(height, width)
    if scale >= 1:
        return pixels, heatmap
    size = (max(1, round(width * scale)), max(1, round(height * scale)))

    def shrink(values: np.ndarray) -> np.ndarray:
        image = Image.fromarray(np.ascontiguousarray(values, dtype=np.float32))
        return np.asarray(image.resize(size, Image.Resampling.BOX), dtype=np.float32)

    return shrink(pixels), (shrink(heatmap) if heatmap is not None else None)


def picture_rgba(
    pixels: np.ndarray,
    prediction: Prediction,
    heatmap: np.ndarray | None,
    opacity: float,
    shown: bool = True,
) -> np.ndarray:
    """What the viewer shows: :func:`edge_app.render.render` (film, overlay, box, legend) with
    an opaque alpha channel (rows stay 4-byte aligned whatever the width, as GL textures
    need). ``heatmap`` is the display-size copy of the prediction's."""
    rgb = render(pixels, heatmap, prediction.verdict, prediction.box, opacity, shown)
    alpha = np.full(rgb.shape[:2] + (1,), 255, dtype=np.uint8)
    return np.concatenate([rgb, alpha], axis=2)


# --------------------------------------------------------------------------- texts


def band_text(thresholds: dict[str, float]) -> str:
    """How probabilities map to verdicts, from the card's two operating points."""
    return (
        f"fracture ≥ {percent(thresholds['fracture'])} · "
        f"review ≥ {percent(thresholds['doubt'])} · "
        "below: no fracture seen"
    )


def _metric(value: Any) -> str:
    return f"{float(value):.3f}" if isinstance(value, int | float) else "—"


def _short_path(folder: str | None) -> str:
    """A bundle's folder as its last two parts: the panel is narrow, and the name is the
    part that tells bundles apart."""
    if not folder:
        return "—"
    path = Path(folder)
    return str(path) if len(path.parts) <= 3 else f"…/{path.parent.name}/{path.name}"


def model_rows(info: dict[str, Any]) -> list[tuple[str, str]]:
    """The info panel: (label, value) rows from ``FractureDetector.describe()``."""
    test = _metric(info.get("test_auroc"))
    interval = info.get("test_auroc_ci95")
    if test != "—" and isinstance(interval, list | tuple) and len(interval) == 2:
        test += f"  (95 % CI {_metric(interval[0])}–{_metric(interval[1])})"
    created = info.get("created")
    return [
        ("Model", str(info.get("name") or "—")),
        ("Calibration", site_calibration_text(info.get("site_calibration"))),
        ("Folder", _short_path(info.get("folder"))),
        ("Architecture", str(info.get("architecture") or "—")),
        ("Quantization", str(info.get("quantization") or "—")),
        ("Input", f"{info['input_size']} px" if info.get("input_size") else "—"),
        ("Created", str(created)[:19].replace("T", " ") if created else "—"),
        ("Validation AUROC", _metric(info.get("val_auroc"))),
        ("Test AUROC", test),
    ]


# --------------------------------------------------------------------------- reports


def reports_folder(platform_default: Path | None = None) -> Path:
    """Where "Export report" writes unless the user picks another folder: the environment's
    choice, else ``platform_default`` (the app's own folder on Android), else
    ``~/FractureEdge-reports``."""
    configured = os.environ.get(REPORTS_ENV)
    if configured:
        return Path(configured).expanduser()
    return platform_default or Path.home() / "FractureEdge-reports"


@dataclass(frozen=True)
class ReportFiles:
    image: Path
    json: Path


def _app_version() -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("fracture-edge")
    except (ImportError, PackageNotFoundError):  # e.g. inside an Android APK
        return None


def export_report(
    result: StudyResult,
    index: int,
    model_info: dict[str, Any],
    folder: Path,
    opacity: float,
    heatmap_shown: bool,
) -> ReportFiles:
    """Write the shown image as on screen (film, overlay, box and legend; full resolution) as
    PNG and the result as JSON, under new names (never over a file). Not into the opened input,
    nor a folder that holds it: a report written into a study folder would join the study."""
    folder = Path(folder).expanduser()
    check_output(folder, [result.source], overwrite=True, folder=True, what="report")
    folder.mkdir(parents=True, exist_ok=True)
    radiograph, prediction = result.radiographs[index], result.predictions[index]
    stem = Path(result.source).name.split(".")[0] or "radiograph"
    if result.is_study:
        stem += f"-{'slice' if result.is_volume else 'image'}{index + 1}"
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = folder / f"{stem}-{stamp}"
    counter = 1
    while base.with_suffix(".png").exists() or base.with_suffix(".json").exists():
        counter += 1
        base = folder / f"{stem}-{stamp}-{counter}"
    image_path, json_path = base.with_suffix(".png"), base.with_suffix(".json")
    picture = render_prediction(radiograph.pixels, prediction, opacity, shown=heatmap_shown)
    with open(image_path, "xb") as stream:  # "x": never over a file, even one made meanwhile
        Image.fromarray(picture).save(stream, format="PNG")
    report = {
        "created": datetime.now().astimezone().isoformat(timespec="seconds"),
        "prediction": result.to_json(),
        "shown_image": {
            "index": index,
            **prediction.to_json(),
            "overlay": image_path.name,
            "heatmap_shown": heatmap_shown,
            "opacity": round(opacity, 3),
        },
        "model": model_info,
        "app": {"name": "FractureEdge", "version": _app_version()},
        "disclaimer": DISCLAIMER,
    }
    with open(json_path, "x", encoding="utf-8") as stream:
        stream.write(json.dumps(report, indent=1, default=str) + "\n")
    return ReportFiles(image_path, json_path)
