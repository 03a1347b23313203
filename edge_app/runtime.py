"""The on-device runtime: bundle → verdict, probability, region and heatmap.

numpy and Pillow only (pydicom and nibabel are imported lazily by :mod:`edge_app.radiograph`);
no network call anywhere. The app, the Gradio page, ``fracture-edge predict`` and the benchmarks
all go through :class:`FractureDetector`.

A bundle is a folder with ``model.tflite`` and ``model_card.json`` (see docs/compress.md). The
card is read and validated by :func:`edge_app.card.read_card` (every field the runtime and the
front ends read, for type, range and finiteness), the model file's sha256 is checked against it,
and the model's input and output shapes against the card's, all on load: a bundle that fails
is refused before any input is read. Every output comes from one ``invoke()``:
the fracture logit and the class-activation map (the graph computes it, see
:mod:`compress.export`), plus any auxiliary head.

Verdicts use the card's two operating points on the temperature-scaled probability
``p = sigmoid(logit / T)``:

- ``fracture``: p ≥ the "fracture" threshold (Youden-optimal on validation);
- ``uncertain``: between the two ("uncertain — review");
- ``no_fracture``: p < the "doubt" threshold (chosen for ≥ 95 % validation sensitivity).

A study (several views of one patient, or the slices of a volume) gets one verdict from the
**mean of its images' calibrated probabilities**, with the same thresholds. The mean, not the
maximum: every view was scored by a model calibrated per image, and a maximum over n views
inflates the false-positive rate with n. Whatever was opened, one file or a study, the result is
one :class:`StudyResult` that keeps the radiographs for display next to their predictions.

Each prediction also says where to look: the heatmap's ``peak`` and, for a *fracture* or
*uncertain* verdict, the ``box`` around its top region (:func:`edge_app.findings.locate`), both
in coordinates normalised to the image. They are computed here, once, so every front end draws
the same box; :mod:`edge_app.render` draws them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_app.card import CAM_OUTPUT, CARD_FILE, LOGIT_OUTPUT, OPERATING_POINTS, read_card
from edge_app.errors import ModelCardError
from edge_app.files import file_sha256
from edge_app.findings import Box, Point, locate
from edge_app.image_io import decoded_sizes
from edge_app.limits import DEFAULT_MAX_PIXELS, check_study_size
from edge_app.preprocess import (
    LetterboxGeometry,
    PreprocessConfig,
    letterbox_geometry,
    preprocess,
)
from edge_app.radiograph import Radiograph, load_study
from edge_app.sniff import sniff_format
from edge_app.tflite import ModelFileError, TFLiteModel

VERDICTS = ("fracture", "uncertain", "no_fracture")
VERDICT_TEXT = {
    "fracture": "fracture",
    "uncertain": "uncertain — review",
    "no_fracture": "no fracture seen",
}
#: Where the repository keeps the default bundle (``fracture-edge predict`` without --model).
DEFAULT_BUNDLE = Path(__file__).resolve().parents[1] / "models" / "fracture-lite0-int8"


@dataclass(frozen=True)
class Bundle:
    """A model bundle on disk, its card validated and its model file's sha256 verified."""

    folder: Path
    card: dict[str, Any]

    @property
    def model_path(self) -> Path:
        return self.folder / "model.tflite"

    @property
    def name(self) -> str:
        return str(self.card.get("name", self.folder.name))

    @property
    def site_calibration(self) -> dict[str, Any] | None:
        """The card's ``site_calibration`` record (at least ``site`` and ``date``, checked on
        load), or None for a bundle that was not calibrated on a site's own films."""
        return self.card.get("site_calibration")

    @classmethod
    def load(cls, folder: str | Path, verify: bool = True) -> Bundle:
        """Read ``folder``'s card through :func:`edge_app.card.read_card` (which refuses any
        field of the wrong type, out of range or not finite) and, with ``verify``, check the
        model file's sha256 against it."""
        folder = Path(folder)
        if not folder.is_dir():
            raise ModelCardError(f"model bundle not found: {folder}")
        for name in (CARD_FILE, "model.tflite"):
            if not (folder / name).is_file():
                raise ModelCardError(f"{folder} is not a model bundle: {name} is missing")
        card = read_card(folder, "bundle")
        if verify:
            model_path = folder / "model.tflite"
            expected, actual = card["model_sha256"], file_sha256(model_path)
            if actual != expected:
                raise ModelFileError(
                    f"{model_path} does not match its card (sha256 {actual[:12]}… instead of "
                    f"{expected[:12]}…): the file was changed or corrupted"
                )
        return cls(folder, card)


@dataclass
class Prediction:
    """One image's result. ``heatmap`` is in [0, 1] at the image's own size.

    ``peak`` is the heatmap's maximum as normalised ``(x, y)`` (None for an empty map); ``box``
    is its top region's bounding box as normalised ``(x0, y0, x1, y1)``, None for a
    *no fracture* verdict or an empty map. x runs right and y down, both from 0 to 1.
    """

    source: str
    probability: float
    logit: float
    verdict: str
    region: str | None = None
    region_probabilities: dict[str, float] | None = None
    cam: np.ndarray | None = field(default=None, repr=False)
    heatmap: np.ndarray | None = field(default=None, repr=False)
    warnings: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    peak: Point | None = None
    box: Box | None = None

    @property
    def verdict_text(self) -> str:
        return VERDICT_TEXT[self.verdict]

    def to_json(self) -> dict[str, Any]:
        return _record(
            self,
            peak=list(self.peak) if self.peak else None,
            box=list(self.box) if self.box else None,
            warnings=list(self.warnings),
        )


def _record(result: Prediction | StudyResult, **extra: Any) -> dict[str, Any]:
    """The ``predict --json`` contract's fields, then ``extra``, then ``error``."""
    return {
        "path": result.source,
        "fracture_probability": round(result.probability, 6),
        "verdict": result.verdict,
        "region": result.region,
        **extra,
        "error": None,
    }


@dataclass
class StudyResult:
    """What one opened input gives: its radiographs, one prediction per radiograph, one verdict.

    ``is_study`` is False for a single image opened on its own (an image file, a one-frame
    DICOM): the verdict and the JSON record are that image's. Otherwise (a folder, even of one
    image; several files; a multi-frame DICOM; a volume) the verdict comes from the mean of the
    images' calibrated probabilities, and the JSON record is the study's, with each image's.
    """

    source: str
    radiographs: list[Radiograph]
    predictions: list[Prediction]
    probability: float
    verdict: str
    region: str | None = None
    is_study: bool = True
    aggregation: str = "mean of the images' calibrated probabilities"

    @property
    def verdict_text(self) -> str:
        return VERDICT_TEXT[self.verdict]

    @property
    def is_volume(self) -> bool:
        """Slices of a CT/MRI volume (browsed with a slider rather than a list)."""
        return "slice_count" in self.radiographs[0].metadata

    @property
    def warnings(self) -> list[str]:
        return sorted({w for prediction in self.predictions for w in prediction.warnings})

    def most_suspicious(self) -> int:
        """Index of the image with the highest fracture probability."""
        return int(np.argmax([prediction.probability for prediction in self.predictions]))

    def to_json(self) -> dict[str, Any]:
        """A single image's own record; for a study, the study's, with ``peak`` and ``box``
        null (each image in ``per_image`` has its own)."""
        if not self.is_study:
            return self.predictions[0].to_json()
        return _record(
            self,
            peak=None,
            box=None,
            images=len(self.predictions),
            aggregation=self.aggregation,
            per_image=[prediction.to_json() for prediction in self.predictions],
            warnings=self.warnings,
        )


def softmax(values: np.ndarray) -> np.ndarray:
    shifted = np.asarray(values, dtype=np.float64) - np.max(values)
    exponent = np.exp(shifted)
    return exponent / exponent.sum()


def _cubic_tap_weights(offset: np.ndarray) -> tuple[np.ndarray, ...]:
    """Keys' cubic convolution weights (a = -0.5, as Pillow's and OpenCV's bicubic) of the four
    taps at distances 1 + t, t, 1 - t and 2 - t, for fractional offsets t in [0, 1)."""
    squared = offset * offset
    cubed = squared * offset
    return (
        -0.5 * cubed + squared - 0.5 * offset,
        1.5 * cubed - 2.5 * squared + 1,
        -1.5 * cubed + 2 * squared + 0.5 * offset,
        0.5 * cubed - 0.5 * squared,
    )


def interpolation_matrix(size: int, start: float, span: float, cells: int, canvas: int):
    """(size, cells) bicubic weights taking a CAM axis to ``size`` image pixels.

    Image pixel ``i`` (centre ``i + 0.5``) sits at canvas coordinate
    ``start + (i + 0.5) * span / size``; CAM cell ``j`` covers the canvas uniformly, centre
    ``(j + 0.5) * canvas / cells``. Edges are clamped (each row's weights sum to 1).
    """
    position = (start + (np.arange(size) + 0.5) * span / size) * cells / canvas - 0.5
    base = np.floor(position)
    tap_weights = _cubic_tap_weights(position - base)
    base = base.astype(int)
    weights = np.zeros((size, cells), dtype=np.float32)
    rows = np.arange(size)
    for tap, tap_weight in zip(range(-1, 3), tap_weights, strict=True):
        # One column per row and tap, so plain fancy-index += never meets a duplicate pair.
        weights[rows, np.clip(base + tap, 0, cells - 1)] += tap_weight
    return weights


def heatmap_from_cam(
    cam: np.ndarray,
    geometry: LetterboxGeometry,
    height: int,
    width: int,
    scale: float | None = None,
) -> np.ndarray:
    """ReLU, scale to [0, 1], and interpolate (bicubic) onto the image's own pixels.

    The letterbox is undone inside the interpolation: each image pixel is mapped to its canvas
    position and from there to the CAM grid, so a map for a 4000 × 3000 film costs two small
    matrix products instead of resizing a canvas-sized image twice.

    ``scale`` (the card's ``cam_scale``: a high percentile of the CAM's peak over validation
    images) makes the map absolute: an image with little fracture evidence shows a faint map
    instead of one stretched to full heat. Without it each map is scaled by its own peak.
    """
    positive = np.maximum(np.asarray(cam, dtype=np.float32), 0.0)
    divisor = float(scale) if scale else float(positive.max())
    if divisor > 0:
        positive = positive / divisor
    cells_y, cells_x = positive.shape
    canvas = geometry.canvas_size
    rows = interpolation_matrix(height, geometry.top, geometry.height, cells_y, canvas)
    columns = interpolation_matrix(width, geometry.left, geometry.width, cells_x, canvas)
    heatmap = (rows @ positive) @ columns.T
    return np.clip(heatmap, 0.0, 1.0, out=heatmap)


def load_together(paths: Sequence[Path], source: str) -> list[Radiograph]:
    """Every image of ``paths``, read as one study (``source`` names it): bounded together as
    one folder is (``MAX_STUDY_IMAGES`` images, ``VOLUME_PIXEL_FACTOR`` × ``max_pixels`` pixels
    as decoded; :func:`edge_app.limits.check_study_size`), so several files uploaded at once
    cannot hold more than a folder may. Image files are counted from their headers before any
    is decoded; DICOM and NIfTI files as each is read."""
    if len(paths) == 1:
        return load_study(paths[0])
    label = f"the study of {source}"
    planned, count = 0, 0
    for path in paths:
        if sniff_format(path) == "image":
            sizes = decoded_sizes(path, DEFAULT_MAX_PIXELS)
            planned += sum(width * height for width, height in sizes)
            count += len(sizes)
    check_study_size(count, planned, DEFAULT_MAX_PIXELS, label)
    radiographs: list[Radiograph] = []
    total = 0
    for path in paths:
        loaded = load_study(path)
        radiographs += loaded
        total += sum(radiograph.pixels.size for radiograph in loaded)
        check_study_size(len(radiographs), total, DEFAULT_MAX_PIXELS, label)
    return radiographs


class FractureDetector:
    """A loaded bundle, ready to score radiographs. Thread-compatible, not thread-safe: give
    each thread its own detector (the app runs inference on one worker thread)."""

    def __init__(self, bundle: str | Path | Bundle, num_threads: int | None = 2, tta: bool = False):
        """``tta``: also score the horizontally flipped input and average the logits and the
        (flipped-back) maps. Two invokes per image: inference costs about twice as much, and
        the card's temperature and thresholds were fitted on single-pass logits."""
        self.tta = tta
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
        card = self.bundle.card
        self.card = card
        self.preprocessing = PreprocessConfig.from_card(card)
        self.cam_shape = tuple(int(n) for n in card["cam_shape"])
        self.temperature = float(card["calibration_temperature"])  # in [1e-3, 1e3]: read_card
        self.thresholds = {name: float(card["operating_points"][name]) for name in OPERATING_POINTS}
        self.region_labels = list(card.get("region_labels") or [])
        self.cam_scale = card.get("cam_scale")
        self.model = TFLiteModel(
            self.bundle.model_path, outputs=card["outputs"], num_threads=num_threads
        )
        expected = tuple(card["input"]["shape"])
        if self.model.input_shape != expected:
            raise ModelCardError(
                f"{self.bundle.folder}: the model takes input of shape {self.model.input_shape} "
                f"but its card says {expected} (input.shape): the card does not belong to this "
                "model file"
            )
        if self.model.batch_size != 1:
            raise ModelCardError(f"{self.bundle.model_path} has batch {self.model.batch_size}")

    # ----------------------------------------------------------------- scores

    def calibrated(self, logit: float) -> float:
        return float(1.0 / (1.0 + np.exp(-logit / self.temperature)))

    def verdict(self, probability: float) -> str:
        if probability >= self.thresholds["fracture"]:
            return "fracture"
        if probability >= self.thresholds["doubt"]:
            return "uncertain"
        return "no_fracture"

    def predict_pixels(
        self, pixels: np.ndarray, source: str = "<array>", heatmap: bool = True
    ) -> Prediction:
        """Score one 2-D image with intensities in [0, 1] (as :mod:`edge_app.radiograph` gives)."""
        pixels = np.asarray(pixels, dtype=np.float32)
        if pixels.ndim != 2:
            raise ValueError(f"expected a 2-D grey image, got shape {pixels.shape}")
        model_input, geometry = preprocess(pixels, self.preprocessing)
        outputs = self.infer(model_input)
        logit = float(outputs[LOGIT_OUTPUT][0, 0])
        probability = self.calibrated(logit)
        cam = outputs[CAM_OUTPUT][0].reshape(self.cam_shape)
        region, region_probabilities = None, None
        if "region_logits" in outputs and self.region_labels:
            values = softmax(outputs["region_logits"][0])
            region_probabilities = {
                label: round(float(p), 4)
                for label, p in zip(self.region_labels, values, strict=True)
            }
            region = self.region_labels[int(values.argmax())]
        verdict = self.verdict(probability)
        # The map is made even when it is not kept: the peak and the box are read off it, so
        # they are the same with or without it, in every front end.
        full_map = heatmap_from_cam(cam, geometry, *pixels.shape, self.cam_scale)
        peak, box = locate(full_map, with_box=verdict != "no_fracture")
        return Prediction(
            source=source,
            probability=probability,
            logit=logit,
            verdict=verdict,
            region=region,
            region_probabilities=region_probabilities,
            cam=cam,
            heatmap=full_map if heatmap else None,
            peak=peak,
            box=box,
        )

    def heatmap(self, prediction: Prediction, height: int, width: int) -> np.ndarray:
        """The heatmap ``predict_pixels`` keeps with ``heatmap=True``, made again from the
        prediction's class-activation map for its ``height`` × ``width`` image: a caller that
        draws a study one image at a time holds one full-size map, not one per image."""
        if prediction.cam is None:
            raise ValueError(f"{prediction.source}: the prediction kept no class-activation map")
        geometry = letterbox_geometry(height, width, self.preprocessing.input_size)
        return heatmap_from_cam(prediction.cam, geometry, height, width, self.cam_scale)

    def infer(self, model_input: np.ndarray) -> dict[str, np.ndarray]:
        """The model's outputs for one preprocessed input (size × size), with flip TTA if on."""
        outputs = self.model(model_input[None, :, :, None])
        if not self.tta:
            return outputs
        flipped = self.model(np.ascontiguousarray(model_input[:, ::-1])[None, :, :, None])
        averaged = {name: (value + flipped[name]) / 2 for name, value in outputs.items()}
        mirror = flipped[CAM_OUTPUT].reshape(-1, *self.cam_shape)[:, :, ::-1].reshape(1, -1)
        averaged[CAM_OUTPUT] = (outputs[CAM_OUTPUT] + mirror) / 2
        return averaged

    def predict_radiograph(self, radiograph: Radiograph, heatmap: bool = True) -> Prediction:
        prediction = self.predict_pixels(radiograph.pixels, radiograph.source, heatmap)
        prediction.warnings = tuple(radiograph.warnings)
        prediction.metadata = dict(radiograph.metadata)
        return prediction

    def predict_study(
        self,
        radiographs: Sequence[Radiograph] | Iterable[Radiograph],
        source: str,
        heatmap: bool = True,
        is_study: bool = True,
    ) -> StudyResult:
        """Score every radiograph; one verdict from the mean of their probabilities."""
        radiographs = list(radiographs)
        predictions = [self.predict_radiograph(image, heatmap) for image in radiographs]
        if not predictions:
            raise ValueError(f"{source} holds no image to score")
        probability = float(np.mean([p.probability for p in predictions]))
        regions = [p.region for p in predictions if p.region]
        region = max(set(regions), key=regions.count) if regions else None
        return StudyResult(
            source=source,
            radiographs=radiographs,
            predictions=predictions,
            probability=probability,
            verdict=self.verdict(probability),
            region=region,
            is_study=is_study,
        )

    def predict_files(
        self, paths: Sequence[str | Path], source: str | None = None, heatmap: bool = True
    ) -> StudyResult:
        """Score files and folders as one input. One path that is not a folder and holds one
        image is a single image; anything more is a study (:class:`StudyResult`). ``source``
        names it (default: the path, or "N files")."""
        paths = [Path(path) for path in paths]
        if not paths:
            raise ValueError("no file to score: give at least one path")
        if source is None:
            source = str(paths[0]) if len(paths) == 1 else f"{len(paths)} files"
        radiographs = load_together(paths, source)
        is_study = len(paths) > 1 or len(radiographs) > 1 or paths[0].is_dir()
        return self.predict_study(radiographs, source, heatmap, is_study=is_study)

    def predict_path(self, path: str | Path, heatmap: bool = True) -> StudyResult:
        """An image, a DICOM file or volume, a NIfTI volume or a study folder
        (:meth:`predict_files` with one path)."""
        return self.predict_files([path], heatmap=heatmap)

    def describe(self) -> dict[str, Any]:
        """Model name, version and validation/test metrics, for the app's info panel."""
        metrics = self.card.get("metrics") or {}
        return {
            "name": self.bundle.name,
            "folder": str(self.bundle.folder),
            "site_calibration": self.bundle.site_calibration,
            "architecture": self.card.get("architecture"),
            "quantization": self.card.get("quantization"),
            "input_size": self.preprocessing.input_size,
            "created": (self.card.get("export") or {}).get("created"),
            "val_auroc": metrics.get("val_auroc"),
            "test_auroc": metrics.get("test_auroc"),
            "test_auroc_ci95": metrics.get("test_auroc_ci95"),
            "thresholds": self.thresholds,
            "sha256": self.card.get("model_sha256"),
        }
