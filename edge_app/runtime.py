"""The on-device runtime: bundle → verdict, probability, region and heatmap.

numpy and Pillow only (pydicom and nibabel are imported lazily by :mod:`edge_app.radiograph`);
no network call anywhere. The app, the Gradio page, ``fracture-edge predict`` and the benchmarks
all go through :class:`FractureDetector`.

A bundle is a folder with ``model.tflite`` and ``model_card.json`` (see docs/compress.md). The
card's sha256 of the model file is checked on load. Every output comes from one ``invoke()``:
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
inflates the false-positive rate with n.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_app.errors import ModelCardError
from edge_app.files import file_sha256
from edge_app.preprocess import LetterboxGeometry, PreprocessConfig, preprocess
from edge_app.radiograph import Radiograph, load_study
from edge_app.tflite import ModelFileError, TFLiteModel

VERDICTS = ("fracture", "uncertain", "no_fracture")
VERDICT_TEXT = {
    "fracture": "fracture",
    "uncertain": "uncertain — review",
    "no_fracture": "no fracture seen",
}
LOGIT_OUTPUT = "fracture_logit"
CAM_OUTPUT = "cam"
SUPPORTED_FORMAT_VERSION = 1
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

    @classmethod
    def load(cls, folder: str | Path, verify: bool = True) -> Bundle:
        folder = Path(folder)
        card_path, model_path = folder / "model_card.json", folder / "model.tflite"
        if not folder.is_dir():
            raise ModelCardError(f"model bundle not found: {folder}")
        for path in (card_path, model_path):
            if not path.is_file():
                raise ModelCardError(f"{folder} is not a model bundle: {path.name} is missing")
        try:
            card = json.loads(card_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ModelCardError(f"{card_path} is not valid JSON: {error}") from error
        if card.get("format") != "fracture-edge-bundle":
            raise ModelCardError(f"{card_path} is not a fracture-edge bundle card")
        if int(card.get("format_version", 0)) > SUPPORTED_FORMAT_VERSION:
            raise ModelCardError(
                f"{card_path} has format version {card['format_version']}; this runtime reads "
                f"up to {SUPPORTED_FORMAT_VERSION}. Update fracture-edge."
            )
        for key in ("preprocessing", "outputs", "cam_shape", "operating_points"):
            if key not in card:
                raise ModelCardError(f"{card_path} lacks '{key}'")
        for name in ("doubt", "fracture"):
            if name not in card["operating_points"]:
                raise ModelCardError(f"{card_path} has no '{name}' operating point")
        if card["operating_points"]["doubt"] > card["operating_points"]["fracture"]:
            raise ModelCardError(f"{card_path}: the doubt threshold exceeds the fracture one")
        if verify:
            expected = card.get("model_sha256")
            if not expected:
                raise ModelCardError(f"{card_path} carries no model_sha256 to verify against")
            actual = file_sha256(model_path)
            if actual != expected:
                raise ModelFileError(
                    f"{model_path} does not match its card (sha256 {actual[:12]}… instead of "
                    f"{expected[:12]}…): the file was changed or corrupted"
                )
        return cls(folder, card)


@dataclass
class Prediction:
    """One image's result. ``heatmap`` is in [0, 1] at the image's own size."""

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

    @property
    def verdict_text(self) -> str:
        return VERDICT_TEXT[self.verdict]

    def to_json(self) -> dict[str, Any]:
        return _record(self, warnings=list(self.warnings))


def _record(result: Prediction | StudyPrediction, **extra: Any) -> dict[str, Any]:
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
class StudyPrediction:
    """Several images of one study (views or slices) and their one verdict."""

    source: str
    images: list[Prediction]
    probability: float
    verdict: str
    region: str | None = None
    aggregation: str = "mean of the images' calibrated probabilities"

    @property
    def verdict_text(self) -> str:
        return VERDICT_TEXT[self.verdict]

    def to_json(self) -> dict[str, Any]:
        return _record(
            self,
            images=len(self.images),
            aggregation=self.aggregation,
            per_image=[image.to_json() for image in self.images],
            warnings=sorted({w for image in self.images for w in image.warnings}),
        )


def softmax(values: np.ndarray) -> np.ndarray:
    shifted = np.asarray(values, dtype=np.float64) - np.max(values)
    exponent = np.exp(shifted)
    return exponent / exponent.sum()


def _cubic_weights(distance: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel (a = -0.5, as Pillow's and OpenCV's bicubic)."""
    d = np.abs(distance)
    return np.where(
        d <= 1,
        1.5 * d**3 - 2.5 * d**2 + 1,
        np.where(d < 2, -0.5 * d**3 + 2.5 * d**2 - 4 * d + 2, 0.0),
    )


def interpolation_matrix(size: int, start: float, span: float, cells: int, canvas: int):
    """(size, cells) bicubic weights taking a CAM axis to ``size`` image pixels.

    Image pixel ``i`` (centre ``i + 0.5``) sits at canvas coordinate
    ``start + (i + 0.5) * span / size``; CAM cell ``j`` covers the canvas uniformly, centre
    ``(j + 0.5) * canvas / cells``. Edges are clamped (each row's weights sum to 1).
    """
    position = (start + (np.arange(size) + 0.5) * span / size) * cells / canvas - 0.5
    base = np.floor(position).astype(int)
    weights = np.zeros((size, cells), dtype=np.float32)
    rows = np.arange(size)
    for tap in range(-1, 3):
        index = base + tap
        # One column per row and tap, so plain fancy-index += never meets a duplicate pair.
        weights[rows, np.clip(index, 0, cells - 1)] += _cubic_weights(position - index)
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


# A perceptually ordered map (dark blue → cyan → yellow → red), as anchor colours.
_ANCHORS = np.array(
    [
        [0.00, 0.19, 0.07, 0.23],
        [0.25, 0.16, 0.47, 0.95],
        [0.45, 0.10, 0.85, 0.75],
        [0.65, 0.64, 0.99, 0.23],
        [0.85, 0.98, 0.60, 0.12],
        [1.00, 0.73, 0.06, 0.02],
    ]
)
COLORMAP = np.stack(
    [np.interp(np.linspace(0, 1, 256), _ANCHORS[:, 0], _ANCHORS[:, c]) for c in (1, 2, 3)], 1
)
COLORMAP = (COLORMAP * 255).round().astype(np.uint8)


def colourise(heatmap: np.ndarray) -> np.ndarray:
    """A [0, 1] map as RGB uint8 through :data:`COLORMAP`."""
    index = np.clip(np.asarray(heatmap) * 255, 0, 255).astype(np.uint8)
    return COLORMAP[index]


def overlay(pixels: np.ndarray, heatmap: np.ndarray | None, opacity: float = 0.45) -> np.ndarray:
    """The radiograph in grey with the heatmap blended where it is warm; RGB uint8.

    Opacity scales with the heatmap's own value, so cold regions keep the radiograph visible.
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must lie in [0, 1], got {opacity}")
    grey = np.repeat(np.round(np.clip(pixels, 0, 1) * 255).astype(np.float32)[..., None], 3, axis=2)
    if heatmap is None or opacity == 0:
        return grey.astype(np.uint8)
    if heatmap.shape != pixels.shape:
        raise ValueError(f"heatmap {heatmap.shape} and image {pixels.shape} differ in shape")
    weight = (opacity * np.clip(heatmap, 0, 1))[..., None]
    blended = grey * (1 - weight) + colourise(heatmap).astype(np.float32) * weight
    return blended.round().astype(np.uint8)


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
        self.temperature = float(card.get("calibration_temperature", 1.0))
        if not self.temperature > 0:
            raise ModelCardError(f"{self.bundle.folder}: calibration_temperature must be > 0")
        self.thresholds = {k: float(v) for k, v in card["operating_points"].items()}
        self.region_labels = list(card.get("region_labels") or [])
        self.cam_scale = card.get("cam_scale")
        self.model = TFLiteModel(
            self.bundle.model_path, outputs=card["outputs"], num_threads=num_threads
        )
        expected = tuple(card.get("input", {}).get("shape", self.model.input_shape))
        if self.model.input_shape != expected:
            raise ModelCardError(
                f"{self.bundle.folder}: the model takes {self.model.input_shape} but the card "
                f"says {expected}"
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
        return Prediction(
            source=source,
            probability=probability,
            logit=logit,
            verdict=self.verdict(probability),
            region=region,
            region_probabilities=region_probabilities,
            cam=cam,
            heatmap=(
                heatmap_from_cam(cam, geometry, *pixels.shape, self.cam_scale) if heatmap else None
            ),
        )

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
        self, images: Sequence[Radiograph] | Iterable[Radiograph], source: str, heatmap=True
    ) -> StudyPrediction:
        predictions = [self.predict_radiograph(image, heatmap) for image in images]
        if not predictions:
            raise ValueError(f"{source} holds no image to score")
        probability = float(np.mean([p.probability for p in predictions]))
        regions = [p.region for p in predictions if p.region]
        region = max(set(regions), key=regions.count) if regions else None
        return StudyPrediction(
            source=source,
            images=predictions,
            probability=probability,
            verdict=self.verdict(probability),
            region=region,
        )

    def predict_path(self, path: str | Path, heatmap: bool = True) -> Prediction | StudyPrediction:
        """An image or single DICOM gives a :class:`Prediction`; a folder, a multi-frame DICOM
        or a NIfTI volume a :class:`StudyPrediction`."""
        images = load_study(path)
        if len(images) == 1 and not Path(path).is_dir():
            return self.predict_radiograph(images[0], heatmap)
        return self.predict_study(images, str(path), heatmap)

    def describe(self) -> dict[str, Any]:
        """Model name, version and validation/test metrics, for the app's info panel."""
        metrics = self.card.get("metrics") or {}
        return {
            "name": self.bundle.name,
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
