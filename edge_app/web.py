"""The Gradio page: upload radiographs, see the verdict, the calibrated probability and the heatmap.

It is a thin front end on :class:`edge_app.runtime.FractureDetector`, the runtime the app and
``fracture-edge predict`` use: no preprocessing or inference lives here, only display.

Private by default: the server binds to 127.0.0.1, never opens a share link, sends no usage
statistics, keeps no run history in the browser, and the page loads nothing from outside (the
theme uses the system's fonts, Gradio serves its own scripts). docs/web.md says how to expose it
on purpose, and why not on an untrusted network.
"""

from __future__ import annotations

import html
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from edge_app._optional import require
from edge_app.errors import FractureEdgeError
from edge_app.radiograph import Radiograph, load_study
from edge_app.runtime import (
    DEFAULT_BUNDLE,
    FractureDetector,
    Prediction,
    StudyPrediction,
    overlay,
)
from edge_app.web_cli import DEFAULT_HOST, DEFAULT_PORT

# Read when Gradio and huggingface_hub are imported: no telemetry, no version check against
# Gradio's servers, no call to the Hugging Face Hub (the page never needs it). Set before the
# import, which reads them once; they govern only this process, the one serving the page.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
gr: Any = require("gradio", "serve the web page")

LOGGER = logging.getLogger(__name__)

DEFAULT_OPACITY = 0.45
#: Longest side of the overlay sent to the browser; the model always sees the full image.
DISPLAY_MAX_SIDE = 1024
#: Uploads and rendered overlays are radiographs: Gradio deletes its copies after this long.
CACHE_SECONDS = 900
MAX_UPLOAD = "512mb"

DISCLAIMER = (
    "Research tool, not a diagnostic device. FractureEdge has no regulatory clearance. Its "
    "output must not be used to diagnose, treat or rule out a fracture; a qualified clinician "
    "reviews every image."
)
HEATMAP_NOTE = (
    "The heatmap is a class-activation map: where the model's evidence for a fracture lies, not "
    "an outline of the fracture. A cold map does not mean the bone is intact."
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
    """One image as the browser shows it: grey and heatmap as uint8, at most display size."""

    label: str
    grey: np.ndarray
    heatmap: np.ndarray | None


class PageModel:
    """The detector behind the page. Gradio calls handlers from a thread pool and the detector
    is not thread-safe, so scoring takes a lock."""

    def __init__(self, detector: FractureDetector):
        self.detector = detector
        self._lock = threading.Lock()

    def score(self, paths: Sequence[str | Path]) -> tuple[Prediction | StudyPrediction, list]:
        """Score the uploaded files as ``predict_path`` would: one image gives a Prediction;
        several files, a multi-frame DICOM or a volume give one StudyPrediction."""
        images: list[Radiograph] = [image for path in paths for image in load_study(path)]
        with self._lock:
            if len(paths) == 1 and len(images) == 1:
                return self.detector.predict_radiograph(images[0]), images
            source = Path(paths[0]).name if len(paths) == 1 else f"{len(paths)} files"
            return self.detector.predict_study(images, source), images


def image_predictions(result: Prediction | StudyPrediction) -> list[Prediction]:
    return result.images if isinstance(result, StudyPrediction) else [result]


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.round(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8)


def _fit_display(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    image = Image.fromarray(values)
    if image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image)


def display_size(height: int, width: int, max_side: int = DISPLAY_MAX_SIDE) -> tuple[int, int]:
    """(width, height) with the longest side at most ``max_side``, as Pillow's resize takes."""
    scale = min(1.0, max_side / max(height, width))
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


def shown_images(
    result: Prediction | StudyPrediction, images: Sequence[Radiograph]
) -> list[ShownImage]:
    shown = []
    for index, (prediction, image) in enumerate(
        zip(image_predictions(result), images, strict=True), 1
    ):
        size = display_size(*image.pixels.shape)
        heatmap = None
        if prediction.heatmap is not None:
            heatmap = _fit_display(_to_uint8(prediction.heatmap), size)
        label = (
            f"{index}. {image_name(prediction)} — {prediction.probability:.1%} "
            f"({prediction.verdict_text})"
        )
        shown.append(ShownImage(label, _fit_display(_to_uint8(image.pixels), size), heatmap))
    return shown


def render(shown: ShownImage, show_heatmap: bool, opacity: float) -> np.ndarray:
    """The overlay for the browser, through the runtime's own :func:`overlay`."""
    heatmap = (
        shown.heatmap.astype(np.float32) / 255
        if show_heatmap and shown.heatmap is not None
        else None
    )
    return overlay(shown.grey.astype(np.float32) / 255, heatmap, float(opacity))


def most_suspicious(result: Prediction | StudyPrediction) -> int:
    probabilities = [prediction.probability for prediction in image_predictions(result)]
    return int(np.argmax(probabilities))


# --------------------------------------------------------------------------- text


def public_json(result: Prediction | StudyPrediction) -> dict[str, Any]:
    """``to_json()`` with file names instead of the server's temporary upload paths."""
    details = result.to_json()
    details["path"] = _file_name(details["path"])
    for image in details.get("per_image", []):
        image["path"] = _file_name(image["path"])
    return details


def _percent(value: float) -> str:
    return f"{value:.1%}"


def verdict_card(result: Prediction | StudyPrediction, thresholds: dict[str, float]) -> str:
    text, fill, border = _VERDICT_STYLE[result.verdict]
    lines = [
        f"Calibrated fracture probability: <b>{_percent(result.probability)}</b>",
        f"Region: {html.escape(result.region) if result.region else 'not predicted by this model'}",
    ]
    if isinstance(result, StudyPrediction):
        lines.append(f"Study of {len(result.images)} images: {html.escape(result.aggregation)}")
    lines.append(
        f"<span class='fe-muted'>Operating points: review from "
        f"{_percent(thresholds['doubt'])}, fracture from {_percent(thresholds['fracture'])}</span>"
    )
    warnings = sorted(
        {warning for image in image_predictions(result) for warning in image.warnings}
    )
    return _card(result.verdict_text.capitalize(), lines, warnings, text, fill, border)


def error_card(message: str) -> str:
    text, fill, border = _VERDICT_STYLE["error"]
    return _card("Could not score this upload", [html.escape(message)], [], text, fill, border)


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


def image_table(result: Prediction | StudyPrediction) -> list[list[Any]]:
    return [
        [
            index,
            image_name(prediction),
            _percent(prediction.probability),
            prediction.verdict_text,
            prediction.region or "—",
            "; ".join(prediction.warnings),
        ]
        for index, prediction in enumerate(image_predictions(result), 1)
    ]


def _format_ci(interval: Sequence[float] | None) -> str:
    return f" (95 % CI {interval[0]:.3f}–{interval[1]:.3f})" if interval else ""


def model_info(detector: FractureDetector) -> str:
    """Markdown for the model panel, from the bundle's card."""
    info = detector.describe()
    metrics = detector.card.get("metrics") or {}
    lines = [
        f"**Model** `{info['name']}` ({info['architecture'] or 'unknown architecture'}, "
        f"{info['quantization'] or 'float32'}, {info['input_size']} px input)"
    ]
    if info["val_auroc"] is not None:
        interval = _format_ci(metrics.get("val_auroc_ci95"))
        lines.append(f"**Validation AUROC** {info['val_auroc']:.3f}{interval}")
    if info["test_auroc"] is not None:
        counts = (metrics.get("test_counts") or {}).get("images")
        on = f", {counts} test images" if counts else ""
        lines.append(
            f"**Test AUROC** {info['test_auroc']:.3f}{_format_ci(info['test_auroc_ci95'])}{on}"
        )
    thresholds = info["thresholds"]
    lines.append(
        f"**Operating points** uncertain — review from {_percent(thresholds['doubt'])}, "
        f"fracture from {_percent(thresholds['fracture'])} (calibrated probability)"
    )
    if info["sha256"]:
        lines.append(f"<span class='fe-muted'>sha256 {info['sha256'][:16]}…</span>")
    return "  \n".join(lines)


# --------------------------------------------------------------------------- page


def _hidden_outputs(card: str, details: dict[str, Any]) -> tuple:
    return (
        card,
        None,
        gr.Dropdown(choices=[], value=None, visible=False),
        gr.Dataframe(value=None, visible=False),
        details,
        [],
    )


def _analyse(model: PageModel, files: Any, show_heatmap: bool, opacity: float) -> tuple:
    paths = [files] if isinstance(files, str) else list(files or [])
    if not paths:
        return _hidden_outputs(PLACEHOLDER, {})
    try:
        result, images = model.score(paths)
    except FractureEdgeError as error:
        LOGGER.info("upload rejected: %s", error)
        message = _without_upload_folders(str(error), paths)
        return _hidden_outputs(error_card(message), {"error": message})
    shown = shown_images(result, images)
    selected = most_suspicious(result)
    study = isinstance(result, StudyPrediction)
    choices = [(item.label, index) for index, item in enumerate(shown)]
    return (
        verdict_card(result, model.detector.thresholds),
        render(shown[selected], show_heatmap, opacity),
        gr.Dropdown(choices=choices, value=selected, visible=study),
        gr.Dataframe(value=image_table(result), visible=study),
        public_json(result),
        shown,
    )


def _without_upload_folders(message: str, paths: Sequence[str]) -> str:
    """The user knows their files by name; Gradio's temporary folders mean nothing to them."""
    for path in paths:
        message = message.replace(str(path), Path(path).name)
    return message


def _redraw(shown: list[ShownImage], selected: Any, show_heatmap: bool, opacity: float):
    if not shown:
        return None
    index = selected if isinstance(selected, int) and 0 <= selected < len(shown) else 0
    return render(shown[index], show_heatmap, opacity)


def _theme() -> Any:
    return gr.themes.Default(
        primary_hue="blue", neutral_hue="slate", font=_SYSTEM_FONTS, font_mono=_SYSTEM_MONO_FONTS
    )


def build_interface(model: Path | None = None) -> Any:
    """The page as a ``gr.Blocks``, scoring with the bundle ``model`` (default: the shipped one)."""
    page = PageModel(FractureDetector(model or DEFAULT_BUNDLE))
    with gr.Blocks(
        title="FractureEdge", analytics_enabled=False, delete_cache=(CACHE_SECONDS, CACHE_SECONDS)
    ) as demo:
        gr.Markdown("# FractureEdge\nFracture detection on radiographs, scored on this computer.")
        gr.HTML(f"<div class='fe-banner' role='note'><b>{DISCLAIMER}</b></div>")
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=300):
                files = gr.File(label="Radiograph(s)", file_count="multiple", elem_id="fe-upload")
                gr.Markdown(f"<span class='fe-muted'>{FILE_HELP}</span>")
                show_heatmap = gr.Checkbox(value=True, label="Show heatmap", elem_id="fe-heatmap")
                opacity = gr.Slider(0.0, 1.0, value=DEFAULT_OPACITY, step=0.05, label="Opacity")
                choice = gr.Dropdown(label="Image shown", choices=[], visible=False)
                with gr.Accordion("Model", open=True):
                    gr.Markdown(model_info(page.detector))
            with gr.Column(scale=3, min_width=360):
                verdict = gr.HTML(PLACEHOLDER, elem_id="fe-verdict")
                picture = gr.Image(
                    label="Heatmap overlay",
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

        files.change(
            lambda uploaded, heat, alpha: _analyse(page, uploaded, heat, alpha),
            inputs=[files, show_heatmap, opacity],
            outputs=[verdict, picture, choice, table, details, shown],
            api_name="predict",
        )
        redraw = {
            "fn": _redraw,
            "inputs": [shown, choice, show_heatmap, opacity],
            "outputs": picture,
            "api_visibility": "private",
            "show_progress": "hidden",
            "trigger_mode": "always_last",  # a dragged slider: draw only the latest position
        }
        choice.input(**redraw)
        show_heatmap.input(**redraw)
        opacity.change(**redraw)
    return demo


def launch(
    model: Path | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    share: bool = False,
    block: bool = True,
) -> Any:
    """Serve the page. ``host`` and ``share`` are passed explicitly so Gradio's environment
    variables (GRADIO_SERVER_NAME, GRADIO_SHARE) cannot widen them behind the user's back.

    With ``block=False`` the server runs in a background thread and the running ``gr.Blocks``
    is returned (its ``local_url`` is the address; ``.close()`` stops it).
    """
    if host != DEFAULT_HOST:
        LOGGER.warning("serving on %s: anyone who can reach this address can upload images", host)
    demo = build_interface(model)
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
    LOGGER.info("FractureEdge page on %s", demo.local_url)
    if block:
        demo.block_thread()
    return demo
