"""The Gradio page: upload radiographs, see the verdict, the calibrated probability and the heatmap.

It is a thin front end on :class:`edge_app.runtime.FractureDetector`, the runtime the app and
``fracture-edge predict`` use: no preprocessing or inference lives here, only display, and the
picture (overlay, box, legend) is drawn by :mod:`edge_app.render`, as in the app. A selector
picks the model bundle, per browser session: the bundles next to the one the page started with,
or (when the page is served to this computer only) any bundle folder typed in.

Private by default: the command line binds it to 127.0.0.1; it never opens a share link, sends
no usage statistics, keeps no run history in the browser, and the page loads nothing from
outside (the theme uses the system's fonts, Gradio serves its own scripts). Uploads and the
overlays drawn for them live in a folder private to the run
(:class:`edge_app.private_run.PrivateRun`), removed when the server stops, however it stops.
docs/web.md says how to expose the page on purpose, and why not on an untrusted network;
docs/security.md states what it defends against.

Importing this module changes nothing in the process and imports no Gradio: :func:`launch` sets
what Gradio reads from the environment, then imports it.
"""

from __future__ import annotations

import html
import ipaddress
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from edge_app._optional import require
from edge_app.errors import CorruptImageError, EmptyImageError, FractureEdgeError, ModelCardError
from edge_app.private_run import PrivateRun
from edge_app.render import DEFAULT_OPACITY, render
from edge_app.runtime import DEFAULT_BUNDLE, Bundle, FractureDetector, Prediction, StudyResult
from edge_app.text import DISCLAIMER, percent, site_calibration_text
from edge_app.tflite import ModelFileError

LOGGER = logging.getLogger(__name__)

#: Longest side of the overlay sent to the browser; the model always sees the full image.
DISPLAY_MAX_SIDE = 1024
#: ... and at least this: a small film is enlarged, so the legend drawn beside it stays legible
#: once the browser fits the picture into its frame.
DISPLAY_MIN_SIDE = 720
#: Uploads and rendered overlays are radiographs: Gradio deletes its copies after this long (and
#: the run's private folder goes with the server).
CACHE_SECONDS = 900
MAX_UPLOAD = "512mb"

#: Detectors the page keeps loaded at once (each holds its model, a few MB to tens of MB).
MAX_LOADED_BUNDLES = 4

HEATMAP_NOTE = (
    "The heatmap is a class-activation map: where the model's evidence for a fracture lies, not "
    "an outline of the fracture. For a fracture or uncertain verdict it is scaled to its own "
    "peak, and the box (solid: fracture, dashed: uncertain) bounds its top region, the area above "
    "half the peak: where to look first, not a detection. A cold map does not mean the bone is "
    "intact."
)
FILE_HELP = (
    "JPEG, PNG, DICOM (.dcm or no extension), NIfTI (.nii, .nii.gz). Several files are scored as "
    "one study; a multi-frame DICOM or a volume is one study of its slices."
)

PLACEHOLDER = "<div class='fe-muted'>Upload a radiograph to see the model's verdict.</div>"

# (text, background, border) per verdict: red, amber, green with WCAG-AA contrast on their fill.
_VERDICT_STYLE = {
    "fracture": ("#912018", "#fef3f2", "#f04438"),
    "uncertain": ("#93370d", "#fffaeb", "#f79009"),
    "no_fracture": ("#05603a", "#ecfdf3", "#12b76a"),
    "error": ("#344054", "#f2f4f7", "#98a2b3"),
}
_SYSTEM_FONTS = [
    "ui-sans-serif",
    "system-ui",
    "-apple-system",
    "Segoe UI",
    "Roboto",
    "Helvetica Neue",
    "Arial",
    "sans-serif",
]
_SYSTEM_MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]
_TABLE_HEADERS = ["#", "image", "probability", "verdict", "region", "warnings"]
_CSS = """
.fe-banner {border-left: 4px solid #f79009; background: #fffaeb; color: #7a2e0e;
            padding: 10px 14px; border-radius: 6px; font-size: 0.95em;}
.fe-card {border-left: 6px solid; border-radius: 8px; padding: 14px 18px;}
.fe-card .fe-verdict {font-size: 1.6em; font-weight: 700; letter-spacing: 0.01em;}
.fe-card .fe-line {margin-top: 6px;}
.fe-card ul {margin: 8px 0 0 18px; padding: 0;}
.fe-muted {color: #667085; font-size: 0.9em;}
"""


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class ShownImage:
    """One image as the browser shows it: grey and heatmap as uint8, at most display size, with
    what :func:`edge_app.render.render` needs besides (the image's verdict and box)."""

    label: str
    grey: np.ndarray
    heatmap: np.ndarray | None
    verdict: str = "no_fracture"
    box: tuple[float, float, float, float] | None = None


def find_bundles(*folders: Path) -> list[Path]:
    """Each folder that is a bundle, and the bundles directly inside each folder, in order."""
    found: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        candidates = [folder] + (sorted(folder.iterdir()) if folder.is_dir() else [])
        for candidate in candidates:
            if (candidate / "model_card.json").is_file() and candidate.resolve() not in {
                known.resolve() for known in found
            }:
                found.append(candidate)
    return found


def bundle_label(folder: Path) -> str:
    """How the selector names a bundle: its card's name, its folder, its site calibration."""
    try:
        bundle = Bundle.load(folder, verify=False)  # the sha256 is checked when it is used
        name = folder.name if bundle.name == folder.name else f"{bundle.name} ({folder.name})"
        return f"{name} — {site_calibration_text(bundle.site_calibration)}"
    except FractureEdgeError as error:
        return f"{folder.name} (unusable: {error})"


class PageModel:
    """The detectors behind the page, one per bundle folder, loaded on first use. Gradio calls
    handlers from a thread pool and a detector is not thread-safe, so loading and scoring take
    one lock."""

    def __init__(self, default: Path):
        self.default = Path(default)
        self._detectors: dict[Path, FractureDetector] = {}
        self._lock = threading.Lock()
        self.detector = self.load(self.default)  # a broken default bundle fails at start

    def load(self, folder: Path | str | None) -> FractureDetector:
        """The detector for ``folder`` (default: the page's own bundle), loaded if need be."""
        folder = Path(folder) if folder else self.default
        with self._lock:
            return self._load(folder)

    def _load(self, folder: Path) -> FractureDetector:
        key = folder.resolve()
        if key not in self._detectors:
            if len(self._detectors) >= MAX_LOADED_BUNDLES:  # forget the oldest but the default
                oldest = next(k for k in self._detectors if k != self.default.resolve())
                del self._detectors[oldest]
            self._detectors[key] = FractureDetector(folder)
        return self._detectors[key]

    def score(self, paths: Sequence[str | Path], bundle: Path | str | None = None) -> StudyResult:
        """Score the uploaded files as one input (``FractureDetector.predict_files``): one image
        is a single image; several files, a multi-frame DICOM or a volume are one study."""
        source = Path(paths[0]).name if len(paths) == 1 else f"{len(paths)} files"
        with self._lock:
            detector = self._load(Path(bundle) if bundle else self.default)
            return detector.predict_files(paths, source)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.round(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8)


def _fit_display(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    image = Image.fromarray(values)
    if image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image)


def display_size(
    height: int,
    width: int,
    max_side: int = DISPLAY_MAX_SIDE,
    min_side: int = DISPLAY_MIN_SIDE,
) -> tuple[int, int]:
    """(width, height) with the longest side between ``min_side`` and ``max_side``, as Pillow's
    resize takes."""
    longest = max(height, width)
    scale = min(max_side / longest, max(1.0, min_side / longest))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _file_name(source: str) -> str:
    return Path(source).name or source


def image_name(prediction: Prediction) -> str:
    """The file's name, and the slice for an image cut from a volume or a multi-frame DICOM."""
    name = _file_name(prediction.source)
    if "slice_index" in prediction.metadata:
        slice_number = int(prediction.metadata["slice_index"]) + 1
        name += f" [slice {slice_number}/{prediction.metadata.get('slice_count', '?')}]"
    return name


def shown_images(result: StudyResult) -> list[ShownImage]:
    shown = []
    for index, (prediction, image) in enumerate(
        zip(result.predictions, result.radiographs, strict=True), 1
    ):
        size = display_size(*image.pixels.shape, min_side=0)  # kept per image: never enlarged
        heatmap = None
        if prediction.heatmap is not None:
            heatmap = _fit_display(_to_uint8(prediction.heatmap), size)
        label = (
            f"{index}. {image_name(prediction)} — {percent(prediction.probability)} "
            f"({prediction.verdict_text})"
        )
        grey = _fit_display(_to_uint8(image.pixels), size)
        shown.append(ShownImage(label, grey, heatmap, prediction.verdict, prediction.box))
    return shown


def picture(shown: ShownImage, show_heatmap: bool, opacity: float) -> np.ndarray:
    """The picture for the browser: :func:`edge_app.render.render`, as the app draws it, on a
    film enlarged to :data:`DISPLAY_MIN_SIDE` if it is smaller."""
    size = display_size(*shown.grey.shape)
    grey = _fit_display(shown.grey, size).astype(np.float32) / 255
    heatmap = None
    if shown.heatmap is not None:
        heatmap = _fit_display(shown.heatmap, size).astype(np.float32) / 255
    return render(grey, heatmap, shown.verdict, shown.box, float(opacity), bool(show_heatmap))


# --------------------------------------------------------------------------- text


def public_json(result: Prediction | StudyResult) -> dict[str, Any]:
    """``to_json()`` with file names instead of the server's temporary upload paths."""
    details = result.to_json()
    details["path"] = _file_name(details["path"])
    for image in details.get("per_image", []):
        image["path"] = _file_name(image["path"])
    return details


def _percent(value: float) -> str:
    """:func:`edge_app.text.percent`, kept on one line in the browser."""
    return f"<span style='white-space:nowrap'>{percent(value)}</span>"


def verdict_card(
    result: Prediction | StudyResult, thresholds: dict[str, float], bundle: str | None = None
) -> str:
    """The coloured verdict card; ``bundle`` names the model that gave it."""
    text, fill, border = _VERDICT_STYLE[result.verdict]
    lines = [
        f"Calibrated fracture probability: <b>{_percent(result.probability)}</b>",
        f"Region: {html.escape(result.region) if result.region else 'not predicted by this model'}",
    ]
    if isinstance(result, StudyResult) and result.is_study:
        lines.append(
            f"Study of {len(result.predictions)} images: {html.escape(result.aggregation)}"
        )
    lines.append(
        f"<span class='fe-muted'>Operating points: review from "
        f"{_percent(thresholds['doubt'])}, fracture from {_percent(thresholds['fracture'])}"
        + (f" · model {html.escape(bundle)}" if bundle else "")
        + "</span>"
    )
    warnings = result.warnings if isinstance(result, StudyResult) else list(result.warnings)
    return _card(result.verdict_text.capitalize(), lines, warnings, text, fill, border)


def error_card(message: str, headline: str | None = None) -> str:
    """The grey card that replaces a result: ``headline`` says what kind of problem (in bold),
    ``message`` the loader's or the runtime's words."""
    text, fill, border = _VERDICT_STYLE["error"]
    lines = [f"<b>{html.escape(headline)}</b>"] if headline else []
    lines.append(html.escape(message))
    return _card("Could not score this upload", lines, [], text, fill, border)


def upload_problem(error: Exception) -> tuple[str, str]:
    """The one place the page turns an exception into what it shows instead of a result: a
    headline and the message. A blank film and a damaged file are told apart, because the
    first needs a different film and the second another copy of the same one. Anything that is
    not a :class:`FractureEdgeError` is a bug: its traceback goes to the log."""
    if isinstance(error, EmptyImageError):
        return "Blank film: no image content, no verdict", str(error)
    if isinstance(error, CorruptImageError):
        return "Damaged file: it cannot be decoded; export or copy it again", str(error)
    if isinstance(error, ModelCardError | ModelFileError):
        return "The model bundle cannot be used", str(error)
    if isinstance(error, FractureEdgeError):
        return "The file cannot be scored", str(error)
    LOGGER.error("unexpected error on the page", exc_info=error)
    return "Unexpected error", f"{type(error).__name__}: {error}. Please report it."


def _card(
    title: str, lines: list[str], warnings: list[str], text: str, fill: str, border: str
) -> str:
    body = "".join(f"<div class='fe-line'>{line}</div>" for line in lines)
    if warnings:
        items = "".join(f"<li>{html.escape(warning)}</li>" for warning in warnings)
        body += f"<div class='fe-line'><b>Warnings</b><ul>{items}</ul></div>"
    return (
        f"<div class='fe-card' role='status' style='color:{text};background:{fill};"
        f"border-color:{border}'><div class='fe-verdict'>{html.escape(title)}</div>{body}</div>"
    )


def image_table(result: StudyResult) -> list[list[Any]]:
    return [
        [
            index,
            image_name(prediction),
            percent(prediction.probability),
            prediction.verdict_text,
            prediction.region or "—",
            "; ".join(prediction.warnings),
        ]
        for index, prediction in enumerate(result.predictions, 1)
    ]


def _format_ci(interval: Sequence[float] | None) -> str:
    return f" (95 % CI {interval[0]:.3f}–{interval[1]:.3f})" if interval else ""


def model_info(detector: FractureDetector) -> str:
    """Markdown for the model panel, from the bundle's card."""
    info = detector.describe()
    metrics = detector.card.get("metrics") or {}
    lines = [
        f"**Model** `{info['name']}` ({info['architecture'] or 'unknown architecture'}, "
        f"{info['quantization'] or 'float32'}, {info['input_size']} px input)",
        f"**Bundle** `{Path(info['folder']).name}`, "
        f"**{site_calibration_text(info['site_calibration'])}**",
    ]
    missing = "not recorded in this bundle's card"
    if info["val_auroc"] is not None:
        interval = _format_ci(metrics.get("val_auroc_ci95"))
        lines.append(f"**Validation AUROC** {info['val_auroc']:.3f}{interval}")
    else:
        lines.append(f"**Validation AUROC** {missing}")
    if info["test_auroc"] is not None:
        counts = (metrics.get("test_counts") or {}).get("images")
        on = f", {counts} test images" if counts else ""
        lines.append(
            f"**Test AUROC** {info['test_auroc']:.3f}{_format_ci(info['test_auroc_ci95'])}{on}"
        )
    else:
        lines.append(f"**Test AUROC** {missing}")
    thresholds = info["thresholds"]
    lines.append(
        f"**Operating points** uncertain — review from {percent(thresholds['doubt'])}, "
        f"fracture from {percent(thresholds['fracture'])} (calibrated probability)"
    )
    if info["sha256"]:
        lines.append(f"<span class='fe-muted'>sha256 {info['sha256'][:16]}…</span>")
    return "  \n".join(lines)


# --------------------------------------------------------------------------- page


def _gradio() -> Any:
    """Gradio, imported on first use (:func:`launch` sets its environment first)."""
    return require("gradio", "serve the web page")


def _hidden_outputs(card: str, details: dict[str, Any]) -> tuple:
    gr = _gradio()
    return (
        card,
        None,
        gr.Dropdown(choices=[], value=None, visible=False),
        gr.Dataframe(value=None, visible=False),
        details,
        [],
    )


def _analyse(
    model: PageModel, files: Any, show_heatmap: bool, opacity: float, bundle: str | None = None
) -> tuple:
    paths = [files] if isinstance(files, str) else list(files or [])
    if not paths:
        return _hidden_outputs(PLACEHOLDER, {})
    try:
        result = model.score(paths, bundle)
        detector = model.load(bundle)
    except Exception as error:  # every failure becomes a card; a bug's traceback is logged
        LOGGER.info("upload rejected: %s", error)
        headline, message = upload_problem(error)
        message = _without_upload_folders(message, paths)
        return _hidden_outputs(error_card(message, headline), {"error": message})
    gr = _gradio()
    shown = shown_images(result)
    selected = result.most_suspicious()
    choices = [(item.label, index) for index, item in enumerate(shown)]
    return (
        verdict_card(result, detector.thresholds, detector.bundle.name),
        picture(shown[selected], show_heatmap, opacity),
        gr.Dropdown(choices=choices, value=selected, visible=result.is_study),
        gr.Dataframe(value=image_table(result), visible=result.is_study),
        public_json(result),
        shown,
    )


def _switch_bundle(
    model: PageModel, choice: str | None, files: Any, show_heatmap: bool, opacity: float
) -> tuple:
    """Use the chosen bundle for this browser session and score the upload again with it, so
    no verdict stays on the page next to a model that did not make it."""
    folder = str(choice or model.default)
    try:
        detector = model.load(folder)
    except Exception as error:  # a refused card or model file, or a bug (logged)
        LOGGER.info("bundle %s refused: %s", folder, error)
        _headline, reason = upload_problem(error)
        message = f"The model bundle could not be loaded: {reason}"
        info = f"**No model loaded.** {html.escape(reason)}"
        card = error_card(message, "The model bundle cannot be used")
        return (folder, info, *_hidden_outputs(card, {"error": message}))
    return (folder, model_info(detector), *_analyse(model, files, show_heatmap, opacity, folder))


def _without_upload_folders(message: str, paths: Sequence[str]) -> str:
    """The user knows their files by name; Gradio's temporary folders mean nothing to them."""
    for path in paths:
        message = message.replace(str(path), Path(path).name)
    return message


def _redraw(shown: list[ShownImage], selected: Any, show_heatmap: bool, opacity: float):
    if not shown:
        return None
    index = selected if isinstance(selected, int) and 0 <= selected < len(shown) else 0
    return picture(shown[index], show_heatmap, opacity)


def _theme() -> Any:
    return _gradio().themes.Default(
        primary_hue="blue", neutral_hue="slate", font=_SYSTEM_FONTS, font_mono=_SYSTEM_MONO_FONTS
    )


def build_interface(model: Path | None = None, typed_bundles: bool = True) -> Any:
    """The page as a ``gr.Blocks``, scoring with the bundle ``model`` (default: the shipped one).

    The bundle selector lists ``model`` and the bundles beside it; with ``typed_bundles`` any
    other bundle folder on this machine can be typed in (:func:`launch` allows it only when the
    page is served to this computer alone)."""
    gr = _gradio()
    page = PageModel(model or DEFAULT_BUNDLE)
    bundles = find_bundles(page.default, page.default.parent)
    with gr.Blocks(
        title="FractureEdge", analytics_enabled=False, delete_cache=(CACHE_SECONDS, CACHE_SECONDS)
    ) as demo:
        gr.Markdown("# FractureEdge\nFracture detection on radiographs, scored on this computer.")
        gr.HTML(f"<div class='fe-banner' role='note'><b>{DISCLAIMER}</b></div>")
        bundle = gr.State(str(page.default), time_to_live=CACHE_SECONDS)
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=300):
                files = gr.File(label="Radiograph(s)", file_count="multiple", elem_id="fe-upload")
                gr.Markdown(f"<span class='fe-muted'>{FILE_HELP}</span>")
                show_heatmap = gr.Checkbox(
                    value=True, label="Show heatmap and box", elem_id="fe-heatmap"
                )
                opacity = gr.Slider(0.0, 1.0, value=DEFAULT_OPACITY, step=0.05, label="Opacity")
                choice = gr.Dropdown(label="Image shown", choices=[], visible=False)
                with gr.Accordion("Model", open=True):
                    selector = gr.Dropdown(
                        choices=[(bundle_label(folder), str(folder)) for folder in bundles],
                        value=str(page.default),
                        label="Model bundle",
                        info="a bundle folder (model.tflite and model_card.json)"
                        + ("; type a path to use another" if typed_bundles else ""),
                        allow_custom_value=typed_bundles,
                        elem_id="fe-bundle",
                    )
                    about = gr.Markdown(model_info(page.detector), elem_id="fe-model")
            with gr.Column(scale=3, min_width=360):
                verdict = gr.HTML(PLACEHOLDER, elem_id="fe-verdict")
                shown_picture = gr.Image(
                    label="Heatmap overlay",
                    show_label=False,  # the legend beside the film names it; a badge would cover it
                    elem_id="fe-overlay",
                    type="numpy",
                    format="png",
                    interactive=False,
                    buttons=["download", "fullscreen"],
                    height=560,
                )
                gr.Markdown(f"<span class='fe-muted'>{HEATMAP_NOTE}</span>")
        table = gr.Dataframe(
            headers=_TABLE_HEADERS, label="Images of the study", interactive=False, visible=False
        )
        with gr.Accordion("Result as JSON", open=False):
            details = gr.JSON(label="Result")
        gr.Markdown(f"<span class='fe-muted'>{DISCLAIMER}</span>")
        shown = gr.State([], time_to_live=CACHE_SECONDS)
        results = [verdict, shown_picture, choice, table, details, shown]

        files.change(
            lambda uploaded, heat, alpha, folder: _analyse(page, uploaded, heat, alpha, folder),
            inputs=[files, show_heatmap, opacity, bundle],
            outputs=results,
            api_name="predict",
        )
        selector.input(
            lambda folder, uploaded, heat, alpha: _switch_bundle(
                page, folder, uploaded, heat, alpha
            ),
            inputs=[selector, files, show_heatmap, opacity],
            outputs=[bundle, about, *results],
            api_visibility="private",
        )
        redraw = {
            "fn": _redraw,
            "inputs": [shown, choice, show_heatmap, opacity],
            "outputs": shown_picture,
            "api_visibility": "private",
            "show_progress": "hidden",
            "trigger_mode": "always_last",  # a dragged slider: draw only the latest position
        }
        choice.input(**redraw)
        show_heatmap.input(**redraw)
        opacity.change(**redraw)
    return demo


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` serves this computer only (127.0.0.1, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def launch(
    model: Path | None,
    host: str,
    port: int,
    share: bool = False,
    block: bool = True,
) -> Any:
    """Serve the page on ``host``:``port``. ``host`` and ``share`` are passed explicitly so
    Gradio's environment variables (GRADIO_SERVER_NAME, GRADIO_SHARE) cannot widen them behind
    the user's back. Uploads and overlays live in a :class:`PrivateRun`'s folder, removed when
    the server stops.

    With ``block=False`` the server runs in a background thread and the running ``gr.Blocks``
    is returned (its ``local_url`` is the address; ``.close()`` stops it and removes the
    folder, whose path is in its ``private_run.folder``).
    """
    local = is_loopback(host)
    if not local:
        LOGGER.warning("serving on %s: anyone who can reach this address can upload images", host)
    run = PrivateRun()  # before Gradio is imported: it reads the environment once
    try:
        demo = build_interface(model, typed_bundles=local)
        demo.queue(default_concurrency_limit=1)
        demo.launch(
            server_name=host,
            server_port=port,
            share=share,
            prevent_thread_lock=True,
            quiet=True,  # Gradio's banner suggests share=True; the caller reports the address
            theme=_theme(),
            css=_CSS,
            footer_links=["api", "settings"],
            run_history=False,
            enable_monitoring=False,
            ssr_mode=False,
            pwa=False,
            mcp_server=False,
            max_file_size=MAX_UPLOAD,
            show_error=False,
        )
    except BaseException:
        run.end()
        raise
    close = demo.close

    def close_and_clean(verbose: bool = True) -> None:
        try:
            close(verbose)
        finally:
            run.end()

    demo.close = close_and_clean
    demo.private_run = run
    LOGGER.info("FractureEdge page on %s (temporary files in %s)", demo.local_url, run.folder)
    if block:
        try:
            demo.block_thread()
        finally:
            demo.close()
    return demo
