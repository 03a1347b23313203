"""``fracture-edge bench``: every artifact on the same images — accuracy, size, latency, memory
and heatmaps — in one Markdown/JSON report with plots (see docs/benchmarks.md).

Artifacts are named by SPECs:

- ``tflite:BUNDLE_DIR``: a bundle through LiteRT, as :class:`edge_app.runtime.FractureDetector`
  runs it (fp32, fp16 and int8 are simply different bundles);
- ``torch:CHECKPOINT_DIR``: the checkpoint in torch fp32 on the CPU, plus a second row on CUDA
  when ``torch.cuda.is_available()``;
- ``onnx:CHECKPOINT_DIR``: the checkpoint exported to ONNX (a temporary file) under ONNX Runtime;
- ``arch:NAME@SIZE``: ``train.models.create_model(NAME)`` with random weights, latency and size
  only (teachers whose weights stay on the GPU machine; ``custom_cnn`` is the seed's floor);
  ``onnx:arch:NAME@SIZE`` the same architecture exported to ONNX, under ONNX Runtime;
- ``logits:CSV:COLUMN``: accuracy only, from per-image logits of a GPU run;
- ``default``: the default list (every ``models/*/model_card.json`` bundle, the five student
  checkpoints, ``arch:`` and ``onnx:arch:`` rows of VGG16-BN and ResNet50 at 224,
  ``arch:custom_cnn@224`` and the four teacher logits columns); other SPECs may follow it.

Every artifact with weights scores the same images, read from the original files with
:func:`edge_app.radiograph.load_radiograph` and prepared by the shared
:func:`edge_app.preprocess.preprocess` with the artifact's own card. On the FracAtlas split the
temperature and both operating points are chosen on validation and everything is measured on
test (:func:`train.evaluate.evaluate_scores`). On an external folder (``--external``) there is
no validation split, so each artifact's own card thresholds and temperature are used.

With ``--shifts`` every artifact with weights also scores the measured images under each
acquisition shift of :mod:`benchmarks.shifts` (:mod:`benchmarks.yardstick`); on FracAtlas the
accuracy section also gives the test AUROC on films without surgical hardware.
``--no-latency`` skips the latency children (a quick accuracy or shift run).

Latency and peak RSS are measured per artifact in a child process (``python -m
benchmarks.bench --latency-child JOB``), so the peak belongs to that artifact and its runtime
alone, and TensorFlow never shares a process with torchvision (LiteRT comes from
``ai_edge_litert``).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.shifts import DEFAULT_SHIFT_SEED
from edge_app._optional import install_hint
from edge_app.errors import FractureEdgeError, MissingDependencyError
from edge_app.errors import LabelsFileError as LabelsFileError  # re-exported: one reader
from edge_app.labelled_folder import parse_boxes as parse_boxes  # (edge_app.labelled_folder)
from edge_app.labelled_folder import read_labels_csv
from edge_app.latency import measure_latency, peak_rss_mb
from edge_app.preprocess import PreprocessConfig, preprocess
from edge_app.radiograph import load_radiograph
from edge_app.runtime import heatmap_from_cam
from edge_app.site_calibration import DEFAULT_MIN_FRACTURED, DEFAULT_MIN_UNFRACTURED

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
KINDS = ("tflite", "torch", "onnx", "arch", "logits")
DEFAULT_SPLIT = REPO_ROOT / "splits" / "fracatlas-bd42f929f115.csv"
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "fracatlas"
GPU_RUN = "models/checkpoints/gpu-2026-11-27"
DEFAULT_CHECKPOINTS = (
    "models/checkpoints/gpu-160-2026-11-27/student_tf_efficientnet_lite0_imagenet_160",
    f"{GPU_RUN}/student_tf_efficientnet_lite0_imagenet",
    f"{GPU_RUN}/student_tf_efficientnet_lite0_imagenet_kd",
    f"{GPU_RUN}/student_mobilenetv2_100_scratch",
    f"{GPU_RUN}/rerun/student_mobilenetv2_100_scratch_kd",
)
DEFAULT_ARCHITECTURES = (
    "arch:vgg16_bn@224",
    "onnx:arch:vgg16_bn@224",
    "arch:resnet50@224",
    "onnx:arch:resnet50@224",
    "arch:custom_cnn@224",
)
DEFAULT_LOGITS = f"{GPU_RUN}/logits.csv"
TEACHER_COLUMNS = (
    "teacher_tf_efficientnet_lite2_imagenet",
    "teacher_ensemble",
    "teacher_resnet50_scratch",
    "teacher_vgg16_bn_scratch",
)
SPEEDUP_REFERENCE = "arch:vgg16_bn@224"
NO_WEIGHTS = "n/a (no weights here)"
GPU_ONLY = "n/a (GPU run)"
#: Keys every row of report.json carries (None, with a ``*_note``, where they do not apply).
ROW_KEYS = (
    "id",
    "name",
    "kind",
    "format",
    "device",
    "source",
    "teacher",
    "file_mb",
    "file_note",
    "accuracy",
    "accuracy_note",
    "latency",
    "latency_note",
    "peak_rss_mb",
    "rss_after_import_mb",
    "load_s",
    "speedup",
    "speedup_p50",
    "speedup_note",
    "heatmap",
    "heatmap_note",
    "shifts",
    "shifts_note",
    "logits",
    "errors",
)


class BenchError(FractureEdgeError):
    """A benchmark input (spec, split, data, labels CSV) is unusable, or a child run failed."""


# --------------------------------------------------------------------------- artifact specs


@dataclass(frozen=True)
class ArtifactSpec:
    """One parsed SPEC. ``target`` is a folder or CSV path, or an architecture name."""

    text: str
    kind: str
    target: str
    input_size: int | None = None
    column: str | None = None
    random_weights: bool = False  # arch:NAME@SIZE and onnx:arch:NAME@SIZE: latency and size only


def parse_spec(text: str) -> ArtifactSpec:
    """Parse ``KIND:TARGET`` (see the module docstring); errors name the valid forms."""
    kind, separator, rest = text.partition(":")
    if not separator or kind not in KINDS or not rest:
        raise BenchError(
            f"artifact spec {text!r} is not understood; use one of tflite:BUNDLE_DIR, "
            "torch:CHECKPOINT_DIR, onnx:CHECKPOINT_DIR, arch:NAME@SIZE, onnx:arch:NAME@SIZE, "
            "logits:CSV:COLUMN or 'default'"
        )
    if kind == "arch":
        return _parse_arch(text, rest)
    if kind == "onnx" and rest.startswith("arch:"):
        return _parse_arch(text, rest.removeprefix("arch:"), "onnx")
    if kind == "logits":
        path, separator, column = rest.rpartition(":")
        if not separator or not path or not column:
            raise BenchError(f"logits spec {text!r} needs a column: logits:CSV:COLUMN")
        if not Path(path).is_file():
            raise BenchError(f"{text}: logits file {path} does not exist")
        return ArtifactSpec(text, kind, path, column=column)
    marker = "model_card.json"
    if not (Path(rest) / marker).is_file():
        what = "bundle" if kind == "tflite" else "checkpoint"
        raise BenchError(f"{text}: {rest} is not a {what} folder (no {marker} there)")
    return ArtifactSpec(text, kind, rest)


def _parse_arch(text: str, rest: str, kind: str = "arch") -> ArtifactSpec:
    from train.registry import BACKBONES

    name, _, size = rest.partition("@")
    if name not in BACKBONES:
        raise BenchError(f"{text}: unknown architecture {name!r}; valid: {', '.join(BACKBONES)}")
    try:
        input_size = int(size) if size else 224
    except ValueError as error:
        raise BenchError(f"{text}: the size after '@' must be an integer, got {size!r}") from error
    if not 16 <= input_size <= 4096:
        raise BenchError(f"{text}: input size {input_size} is outside 16–4096")
    return ArtifactSpec(text, kind, name, input_size=input_size, random_weights=True)


def default_spec_texts(external: bool = False) -> list[str]:
    """The default SPECs; logits rows only for the FracAtlas split (they score its files)."""
    bundles = [
        f"tflite:{display_path(card.parent)}"
        for card in sorted((REPO_ROOT / "models").glob("*/model_card.json"))
        if (card.parent / "model.tflite").is_file()
    ]
    checkpoints = [
        f"torch:{display_path(REPO_ROOT / path)}"
        for path in DEFAULT_CHECKPOINTS
        if (REPO_ROOT / path / "model_card.json").is_file()
    ]
    logits = []
    if not external and (REPO_ROOT / DEFAULT_LOGITS).is_file():
        csv_path = display_path(REPO_ROOT / DEFAULT_LOGITS)
        logits = [f"logits:{csv_path}:{column}" for column in TEACHER_COLUMNS]
    return [*bundles, *checkpoints, *DEFAULT_ARCHITECTURES, *logits]


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    path = path.resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def resolve_specs(texts: Sequence[str] | None, external: bool = False) -> list[ArtifactSpec]:
    """Parse the requested SPECs (``default`` expands in place); repeats are dropped."""
    expanded: list[str] = []
    for text in texts or ["default"]:
        expanded += default_spec_texts(external) if text == "default" else [text]
    specs = [parse_spec(text) for text in dict.fromkeys(expanded)]
    if external and any(spec.kind == "logits" for spec in specs):
        raise BenchError(
            "logits:… rows hold a GPU run's scores of FracAtlas files; they cannot score an "
            "external folder. Leave them out of --models."
        )
    if not specs:
        raise BenchError("no artifact to benchmark; pass --models SPEC ...")
    return specs


# --------------------------------------------------------------------------- images


@dataclass(frozen=True)
class BenchImage:
    """One image every artifact scores. ``label`` None: unknown (external sets only)."""

    file: str
    split: str
    label: int | None
    path: Path
    boxes: tuple[tuple[float, float, float, float], ...] = ()
    outlines: tuple[tuple[tuple[float, float], ...], ...] = ()


def fracatlas_images(split_csv: str | Path, data_root: str | Path) -> list[BenchImage]:
    """The split's val and test rows, with FracAtlas boxes (normalised to the original image)."""
    from train.datasets import iter_fracatlas
    from train.splits import read_split

    split_csv, data_root = Path(split_csv), Path(data_root)
    if not split_csv.is_file():
        raise BenchError(f"split file {split_csv} does not exist; pass --split FILE")
    if not (data_root / "dataset.csv").is_file():
        raise BenchError(f"{data_root} is not a FracAtlas root (no dataset.csv); pass --data ROOT")
    samples = {sample.path.name: sample.metadata for sample in iter_fracatlas(data_root)}
    images = [
        BenchImage(
            row.file,
            row.split,
            int(row.label),
            data_root / row.relpath,
            tuple(
                tuple(float(v) for v in box) for box in samples.get(row.file, {}).get("boxes", [])
            ),
            tuple(
                tuple((float(x), float(y)) for x, y in outline)
                for outline in samples.get(row.file, {}).get("outlines", [])
            ),
        )
        for row in read_split(split_csv)
        if row.split in ("val", "test")
    ]
    missing = [image.path for image in images if not image.path.is_file()]
    if missing:
        raise BenchError(
            f"{len(missing)} images of {split_csv} are missing under {data_root}, e.g. "
            f"{', '.join(map(str, missing[:5]))}"
        )
    for split in ("val", "test"):
        labels = {image.label for image in images if image.split == split}
        if labels != {0, 1}:
            raise BenchError(f"{split_csv} needs both classes in '{split}', found {sorted(labels)}")
    return images


def stratified_subset(images: Sequence[BenchImage], limit: int, seed: int = 0) -> list[BenchImage]:
    """At most ``limit`` images per split, each label keeping its share (at least one each)."""
    if limit < 1:
        raise BenchError(f"--limit must be at least 1, got {limit}")
    rng = np.random.default_rng(seed)
    chosen: set[int] = set()
    for split in dict.fromkeys(image.split for image in images):
        strata: dict[Any, list[int]] = {}
        for index, image in enumerate(images):
            if image.split == split:
                strata.setdefault(image.label, []).append(index)
        for label, members in strata.items():
            picked = rng.choice(members, size=_quotas(strata, limit)[label], replace=False)
            chosen.update(int(i) for i in picked)
    return [image for index, image in enumerate(images) if index in chosen]


def _quotas(strata: dict[Any, list[int]], limit: int) -> dict[Any, int]:
    """Largest-remainder shares of ``limit`` by stratum size, at least one per stratum."""
    total = sum(len(members) for members in strata.values())
    if total <= limit:
        return {label: len(members) for label, members in strata.items()}
    exact = {label: limit * len(members) / total for label, members in strata.items()}
    quotas = {label: max(1, int(value)) for label, value in exact.items()}
    by_remainder = sorted(exact, key=lambda label: exact[label] - int(exact[label]), reverse=True)
    for label in by_remainder:
        if sum(quotas.values()) >= limit:
            break
        quotas[label] = min(quotas[label] + 1, len(strata[label]))
    return quotas


def read_external_labels(folder: str | Path, labels_csv: str | Path) -> list[BenchImage]:
    """The labels CSV's rows as images (:func:`edge_app.labelled_folder.read_labels_csv`, the
    reader ``fracture-edge calibrate`` uses too)."""
    return [
        BenchImage(film.file, "external", film.label, film.path, film.boxes)
        for film in read_labels_csv(folder, labels_csv)
    ]


# --------------------------------------------------------------------------- configuration


@dataclass
class BenchConfig:
    """Everything one run depends on; saved in report.json."""

    models: list[str] | None = None
    out: str = ""
    split: str = str(DEFAULT_SPLIT)
    data: str = str(DEFAULT_DATA)
    external: str | None = None
    labels: str | None = None
    limit: int | None = None
    repeats: int = 5
    threads: list[int] = field(default_factory=lambda: [1, 2])
    runs: int = 50
    warmup: int = 10
    heatmap_reference: str | None = None
    heatmap_images: int = 100
    speedup_reference: str = SPEEDUP_REFERENCE
    resamples: int = 2000
    seed: int = 0
    note: str = ""
    cuda: bool = True
    latency_only: bool = False
    latency: bool = True
    shifts: bool = False
    shift_seed: int = DEFAULT_SHIFT_SEED
    tta: bool = False  # TFLite rows' accuracy with horizontal-flip TTA (two invokes per image)
    calibrate: int | None = None  # --calibrate K: site calibration on K films, over folds
    calibration_folds: int = 10
    min_fractured: int = DEFAULT_MIN_FRACTURED
    min_unfractured: int = DEFAULT_MIN_UNFRACTURED
    child_timeout_s: float = 3600.0

    def __post_init__(self) -> None:
        if not self.out:
            self.out = str(Path("benchmarks", "reports", time.strftime("%Y-%m-%d")))
        if (self.external is None) != (self.labels is None):
            raise BenchError("--external DIR and --labels CSV go together")
        if self.repeats < 1 or self.runs < 1 or self.warmup < 0:
            raise BenchError("--repeats and --runs must be ≥ 1 and --warmup ≥ 0")
        if not self.threads or min(self.threads) < 1:
            raise BenchError(f"--threads takes positive integers, got {self.threads}")
        if self.heatmap_images < 0:
            raise BenchError("--heatmap-images must be ≥ 0")
        if self.latency_only and self.external:
            raise BenchError("--latency-only reads no images: leave out --external and --labels")
        if self.latency_only and not self.latency:
            raise BenchError("--latency-only and --no-latency leave nothing to measure")
        if self.latency_only and self.shifts:
            raise BenchError("--shifts scores images; --latency-only reads none: drop one")
        if self.calibrate is not None and not self.external:
            raise BenchError("--calibrate K calibrates to an external site: add --external DIR")
        if self.calibrate is not None and (self.calibrate < 1 or self.calibration_folds < 1):
            raise BenchError("--calibrate and --calibration-folds must be at least 1")
        self.threads = list(dict.fromkeys(int(n) for n in self.threads))


# --------------------------------------------------------------------------- rows


def new_row(spec: ArtifactSpec, device: str = "cpu") -> dict[str, Any]:
    """A row with every :data:`ROW_KEYS` key; ``id`` is the SPEC (plus ``@cuda``)."""
    row: dict[str, Any] = dict.fromkeys(ROW_KEYS)
    row.update(
        id=spec.text + ("@cuda" if device == "cuda" else ""),
        kind=spec.kind,
        device=device if spec.kind != "logits" else "gpu (logits file)",
        source=spec.target,
        errors=[],
        teacher=spec.random_weights or (spec.column or "").startswith("teacher"),
    )
    if spec.random_weights:
        row.update(
            name=f"{spec.target}@{spec.input_size} (random weights)",
            format=f"{'onnx' if spec.kind == 'onnx' else 'torch'} fp32, architecture only",
            accuracy_note=NO_WEIGHTS,
            heatmap_note=NO_WEIGHTS,
            file_note="fp32 parameter bytes",
        )
    elif spec.kind == "logits":
        row.update(
            name=spec.column,
            format="logits from the GPU run",
            file_note=GPU_ONLY,
            latency_note=GPU_ONLY,
            speedup_note=GPU_ONLY,
            heatmap_note=GPU_ONLY,
        )
    return row


def plan_rows(specs: Sequence[ArtifactSpec], cuda: bool) -> list[tuple[ArtifactSpec, dict]]:
    """One row per spec, and a second (CUDA) row per torch or arch spec when CUDA is there."""
    planned = []
    for spec in specs:
        planned.append((spec, new_row(spec)))
        if spec.kind in TORCH_KINDS and cuda:
            planned.append((spec, new_row(spec, "cuda")))
    return planned


TORCH_KINDS = ("torch", "arch")


def cuda_available(specs: Sequence[ArtifactSpec], allowed: bool = True) -> bool:
    if not allowed or not any(spec.kind in TORCH_KINDS for spec in specs):
        return False
    import torch

    return bool(torch.cuda.is_available())


# --------------------------------------------------------------------------- scorers


class _TFLiteScorer:
    """A bundle through FractureDetector's LiteRT model; the heatmap is the in-graph CAM."""

    heatmap_kind = "in-graph CAM"

    def __init__(self, folder: str | Path, threads: int = 2, tta: bool = False) -> None:
        from edge_app.runtime import FractureDetector

        if importlib.util.find_spec("ai_edge_litert") is None:
            # edge_app.tflite would fall back to tensorflow.lite, which must not share this
            # process with torchvision.
            raise MissingDependencyError(install_hint("ai_edge_litert", "benchmark TFLite bundles"))
        self.detector = FractureDetector(folder, num_threads=threads, tta=tta)
        self.config = self.detector.preprocessing
        self.card = self.detector.card
        self.temperature = self.detector.temperature
        self.thresholds = dict(self.detector.thresholds)
        self.file_bytes = self.detector.bundle.model_path.stat().st_size
        self.reference: Path | None = None

    def score(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, cams = [], []
        for image in inputs:
            outputs = self.detector.infer(image)
            logits.append(float(outputs["fracture_logit"][0, 0]))
            cams.append(outputs["cam"][0].reshape(self.detector.cam_shape))
        return np.asarray(logits), np.stack(cams)

    def canvas_heatmaps(self, inputs, cams, chosen: Sequence[int]) -> list[np.ndarray]:
        return [cams[index] for index in chosen]


class _TorchScorer:
    """A checkpoint in torch fp32; the heatmap is Grad-CAM (CPU rows only)."""

    heatmap_kind = "Grad-CAM"

    def __init__(self, folder: str | Path, device: str = "cpu") -> None:
        from train.checkpoints import load_checkpoint

        self.folder = Path(folder)
        self.device = device
        self.model, self.card, self.config = load_checkpoint(folder, device)
        self.temperature = float(self.card.get("calibration_temperature", 1.0))
        self.thresholds = dict(self.card.get("operating_points") or {})
        self.file_bytes = (self.folder / "model.safetensors").stat().st_size
        self.reference: Path | None = None

    def score(self, inputs: np.ndarray) -> tuple[np.ndarray, None]:
        import torch

        with torch.no_grad():
            batch = torch.from_numpy(np.ascontiguousarray(inputs))[:, None].to(self.device)
            return self.model(batch).float().cpu().numpy().astype(np.float64), None

    def canvas_heatmaps(self, inputs, cams, chosen: Sequence[int]) -> list[np.ndarray]:
        import torch

        from train.gradcam import explain

        batch = torch.from_numpy(np.ascontiguousarray(inputs[list(chosen)]))[:, None]
        return list(explain(self.model, batch.to(self.device)))


class _OnnxScorer:
    """A checkpoint exported to ONNX under ONNX Runtime; the heatmap is the in-graph CAM."""

    heatmap_kind = "in-graph CAM"

    def __init__(self, folder: str | Path, work: Path) -> None:
        from compress.export import DeployableNet, export_onnx
        from train.checkpoints import load_checkpoint

        net, self.card, self.config = load_checkpoint(folder)
        deployable = DeployableNet(net)
        self.cam_shape = tuple(deployable.output_shapes(self.config.input_size)["cam_shape"])
        work.mkdir(parents=True, exist_ok=True)
        self.path = export_onnx(deployable, work / "model.onnx", self.config.input_size)
        self.temperature = float(self.card.get("calibration_temperature", 1.0))
        self.thresholds = dict(self.card.get("operating_points") or {})
        self.file_bytes = self.path.stat().st_size
        self.reference: Path | None = None

    def score(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from compress.export import onnx_outputs

        outputs = onnx_outputs(self.path, inputs[..., None])
        cams = outputs["cam"].reshape(len(inputs), *self.cam_shape)
        return outputs["fracture_logit"][:, 0].astype(np.float64), cams

    def canvas_heatmaps(self, inputs, cams, chosen: Sequence[int]) -> list[np.ndarray]:
        return [cams[index] for index in chosen]


def heatmap_reference(card: dict, override: str | None) -> tuple[Path | None, str | None]:
    """The torch checkpoint whose Grad-CAM a bundle's CAM is compared with, or a reason why not."""
    if override:
        path = Path(override)
        if not (path / "model_card.json").is_file():
            raise BenchError(f"--heatmap-reference {override} is not a checkpoint folder")
        return path, None
    source = (card.get("source_checkpoint") or {}).get("path")
    if not source:
        return None, "the bundle card names no source checkpoint; pass --heatmap-reference"
    for candidate in (Path(source), REPO_ROOT / source):
        if (candidate / "model_card.json").is_file():
            return candidate, None
    return None, f"source checkpoint {source} is not on this machine; pass --heatmap-reference"


# --------------------------------------------------------------------------- scoring


@dataclass
class _Heatmaps:
    kind: str
    pointing: list[bool] = field(default_factory=list)
    outline_pointing: list[bool] = field(default_factory=list)
    outline_iou: list[float] = field(default_factory=list)
    agreement: list[dict] = field(default_factory=list)
    reference: str | None = None
    empty: int = 0  # all-zero maps: no positive evidence anywhere, so no point to play

    def summary(self) -> dict[str, Any]:
        evaluated = len(self.pointing)
        hits = int(sum(self.pointing))
        summary: dict[str, Any] = {
            "kind": self.kind,
            "images": evaluated,
            "pointing_game": {
                "hits": hits,
                "evaluated": evaluated,
                "rate": round(hits / evaluated, 4) if evaluated else None,
                "empty_heatmaps": self.empty,
            },
            "agreement": None,
            "outlines": {
                "films": len(self.outline_pointing),
                "pointing_game": round(float(np.mean(self.outline_pointing)), 4)
                if self.outline_pointing
                else None,
                "top_region_iou_mean": _mean(self.outline_iou),
            },
        }
        if self.reference is not None:
            pearson = [a["pearson"] for a in self.agreement]
            iou = [a["top10_iou"] for a in self.agreement]
            summary["agreement"] = {
                "reference": self.reference,
                "reference_kind": "Grad-CAM of the reference torch checkpoint",
                "images": len(self.agreement),
                "pearson_median": _median(pearson),
                "top10_iou_median": _median(iou),
            }
        return summary


def _mean(values: Sequence[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return round(float(np.mean(finite)), 4) if finite else None


def _median(values: Sequence[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return round(float(np.median(finite)), 4) if finite else None


class _Chunk:
    """A few images read once, preprocessed once per card preprocessing; heatmaps mapped back
    to each original image with the runtime's :func:`edge_app.runtime.heatmap_from_cam`."""

    def __init__(self, images, configs, chosen: list[int], references: dict) -> None:
        self.images, self.chosen, self.references = images, chosen, references
        self.pixels = [load_radiograph(image.path).pixels for image in images]
        self.prepared = {c: [preprocess(p, c) for p in self.pixels] for c in configs}
        self._gradcams: dict[Path, list[np.ndarray]] = {}

    def inputs(self, config: PreprocessConfig) -> np.ndarray:
        return np.stack([model_input for model_input, _ in self.prepared[config]])

    def original_heatmaps(self, scorer, inputs: np.ndarray, cams) -> list[np.ndarray]:
        maps = scorer.canvas_heatmaps(inputs, cams, self.chosen)
        return [
            heatmap_from_cam(
                heatmap,
                self.prepared[scorer.config][i][1],
                *self.pixels[i].shape,
                # Twice the peak, not the peak: bicubic upsampling overshoots it, and clipping
                # at 1 would flatten the top into thousands of tied maxima for the pointing game.
                scale=2 * float(heatmap.max()) if heatmap.max() > 0 else None,
            )
            for heatmap, i in zip(maps, self.chosen, strict=True)
        ]

    def gradcam(self, folder: Path) -> list[np.ndarray]:
        """Grad-CAM of a torch checkpoint, computed once per chunk however many rows ask."""
        if folder not in self._gradcams:
            scorer = self.references[folder]
            self._gradcams[folder] = self.original_heatmaps(
                scorer, self.inputs(scorer.config), None
            )
        return self._gradcams[folder]


def score_images(
    images: Sequence[BenchImage],
    scorers: dict[str, Any],
    heatmap_indices: set[int],
    chunk_size: int = 32,
) -> tuple[dict[str, np.ndarray], dict[str, _Heatmaps]]:
    """Each scorer's logit per image, plus pointing game and CAM agreement on ``heatmap_indices``
    (heatmaps in the original image's frame, where the boxes are)."""
    from train.gradcam import cam_agreement, pointing_game

    references = _reference_scorers(scorers) if heatmap_indices else {}  # Grad-CAM only
    configs = {s.config for s in [*scorers.values(), *references.values()]}
    logits: dict[str, list[float]] = {row_id: [] for row_id in scorers}
    heatmaps = {
        row_id: _Heatmaps(s.heatmap_kind, reference=str(s.reference) if s.reference else None)
        for row_id, s in scorers.items()
        if s.heatmap_kind and heatmap_indices
    }
    for start in range(0, len(images), chunk_size):
        members = images[start : start + chunk_size]
        chosen = [i for i in range(len(members)) if start + i in heatmap_indices]
        chunk = _Chunk(members, configs, chosen, references)
        for row_id, scorer in scorers.items():
            inputs = chunk.inputs(scorer.config)
            chunk_logits, cams = scorer.score(inputs)
            logits[row_id].extend(float(v) for v in chunk_logits)
            if not chosen or row_id not in heatmaps:
                continue
            if isinstance(scorer, _TorchScorer):
                maps = chunk.gradcam(scorer.folder.resolve())
            else:
                maps = chunk.original_heatmaps(scorer, inputs, cams)
            boxes = [members[i].boxes for i in chosen]
            heatmaps[row_id].pointing += [
                bool(pointing_game(m, b)) for m, b in zip(maps, boxes, strict=True)
            ]
            heatmaps[row_id].empty += sum(not m.any() for m in maps)
            _score_outlines(heatmaps[row_id], maps, [members[i].outlines for i in chosen])
            if scorer.reference is not None:
                reference = chunk.gradcam(scorer.reference.resolve())
                heatmaps[row_id].agreement += [
                    cam_agreement(a, b) for a, b in zip(maps, reference, strict=True)
                ]
        logger.info("scored %d of %d images", start + len(members), len(images))
    return {k: np.asarray(v) for k, v in logits.items()}, heatmaps


def _score_outlines(record: _Heatmaps, maps, outlines_per_image) -> None:
    """Peak inside a fracture outline, and IoU of the map's top region (the region a front end
    boxes) with the outlines, on the images that have outlines."""
    from edge_app.findings import mask_iou, peak, top_region
    from train.outlines import rasterise_outlines

    for heatmap, outlines in zip(maps, outlines_per_image, strict=True):
        if not outlines:
            continue
        mask = rasterise_outlines(outlines, *heatmap.shape) > 0
        point = peak(heatmap)
        record.outline_pointing.append(point is not None and bool(mask[point]))
        record.outline_iou.append(mask_iou(top_region(heatmap), mask))


def _reference_scorers(scorers: dict[str, Any]) -> dict[Path, _TorchScorer]:
    """Torch CPU scorers by resolved folder: the torch rows' own, and each bundle's reference."""
    references: dict[Path, _TorchScorer] = {}
    for scorer in scorers.values():
        if isinstance(scorer, _TorchScorer) and scorer.device == "cpu":
            references.setdefault(scorer.folder.resolve(), scorer)
    for scorer in scorers.values():
        if scorer.reference is not None and scorer.reference.resolve() not in references:
            references[scorer.reference.resolve()] = _TorchScorer(scorer.reference)
    return references


# --------------------------------------------------------------------------- accuracy


def split_accuracy(
    images: Sequence[BenchImage],
    logits: np.ndarray,
    subgroups: dict[str, np.ndarray] | None,
    resamples: int,
    seed: int,
) -> dict[str, Any]:
    """Temperature and operating points chosen on val, everything measured on test; with a
    ``hardware`` subgroup, also the AUROC on the test films without surgical hardware."""
    from train.evaluate import evaluate_scores

    labels = np.asarray([image.label for image in images], dtype=np.int64)
    val = np.asarray([image.split == "val" for image in images])
    test = np.asarray([image.split == "test" for image in images])
    report = evaluate_scores(
        labels[val],
        logits[val],
        labels[test],
        logits[test],
        subgroups,
        resamples=resamples,
        seed=seed,
    )
    points = {
        name: {"probability": point["probability"], **point["test"]}
        for name, point in report["operating_points"].items()
    }
    hardware_free = None
    if subgroups and "hardware" in subgroups:
        from benchmarks.yardstick import hardware_free_auroc

        hardware_free = hardware_free_auroc(
            labels[test], logits[test], subgroups["hardware"], resamples, seed
        )
    return {
        "measured_on": "test",
        "thresholds_from": "validation split (temperature fitted there too)",
        "counts": report["counts"]["test"],
        "auroc": report["test"]["auroc"],
        "auroc_ci95": report["test"]["auroc_ci95"],
        "auprc": report["test"]["auprc"],
        "hardware_free": hardware_free,
        "temperature": report["calibration"]["temperature"],
        "operating_points": points,
        "subgroups": report.get("subgroups"),
        "flag_rate": None,
        "evaluation": report,
    }


def card_accuracy(
    labels: Sequence[int | None],
    logits: np.ndarray,
    temperature: float,
    thresholds: dict[str, float],
    resamples: int,
    seed: int,
) -> dict[str, Any]:
    """External data: the card's own temperature and thresholds; AUROC on labelled rows only;
    rows of unknown label give the share called fracture / uncertain / no fracture."""
    from train.metrics import (
        apply_temperature,
        auprc,
        auroc,
        bootstrap_auroc_ci,
        cohen_kappa,
        confusion_matrix,
        sensitivity_specificity,
    )

    known = np.asarray([label is not None for label in labels])
    truth = np.asarray([label or 0 for label in labels], dtype=np.int64)[known]
    probabilities = apply_temperature(np.asarray(logits, dtype=np.float64), temperature)
    scores = np.asarray(logits, dtype=np.float64)[known]
    both_classes = known.any() and 0 < truth.sum() < truth.size
    points = {}
    for name, threshold in thresholds.items():
        predicted = probabilities[known] >= threshold
        sensitivity, specificity = sensitivity_specificity(truth, probabilities[known], threshold)
        points[name] = {
            "probability": float(threshold),
            "sensitivity": _rounded(sensitivity),
            "specificity": _rounded(specificity),
            "cohen_kappa": _rounded(cohen_kappa(truth, predicted)) if both_classes else None,
            "confusion_matrix": confusion_matrix(truth, predicted).tolist(),
        }
    return {
        "measured_on": "labelled external rows",
        "thresholds_from": "the artifact's own model card (no validation split here)",
        "counts": {"images": int(known.sum()), "fractured": int(truth.sum())},
        "auroc": _rounded(auroc(truth, scores)) if both_classes else None,
        "auroc_ci95": (
            [_rounded(v) for v in bootstrap_auroc_ci(truth, scores, resamples, seed)]
            if both_classes
            else [None, None]
        ),
        "auprc": _rounded(auprc(truth, scores)) if both_classes else None,
        "hardware_free": None,
        "temperature": temperature,
        "operating_points": points,
        "subgroups": None,
        "flag_rate": flag_rate(probabilities[~known], thresholds),
        "evaluation": None,
    }


def flag_rate(probabilities: np.ndarray, thresholds: dict[str, float]) -> dict[str, Any]:
    """Share of images called fracture / uncertain / no fracture at the card thresholds."""
    count = int(len(probabilities))
    if not count or not {"doubt", "fracture"} <= set(thresholds):
        return {"images": count, "fracture": None, "uncertain": None, "no_fracture": None}
    fracture = probabilities >= thresholds["fracture"]
    uncertain = ~fracture & (probabilities >= thresholds["doubt"])
    return {
        "images": count,
        "fracture": round(float(fracture.mean()), 4),
        "uncertain": round(float(uncertain.mean()), 4),
        "no_fracture": round(float((~fracture & ~uncertain).mean()), 4),
    }


def _rounded(value: float, digits: int = 4) -> float | None:
    value = float(value)
    return None if math.isnan(value) else round(value, digits)


def logits_of_images(spec: ArtifactSpec, images: Sequence[BenchImage]) -> np.ndarray:
    """A logits column in image order; every image must be in the CSV with the same label."""
    from train.evaluate import load_logits_csv

    rows, columns = load_logits_csv(spec.target)
    if spec.column not in columns:
        raise BenchError(f"{spec.text}: no column {spec.column!r}; columns: {sorted(columns)}")
    by_file = {
        row.file: (row.label, value) for row, value in zip(rows, columns[spec.column], strict=True)
    }
    missing = [image.file for image in images if image.file not in by_file]
    if missing:
        raise BenchError(
            f"{spec.text}: {len(missing)} images are not in the CSV, e.g. {missing[:5]}"
        )
    wrong = [image.file for image in images if by_file[image.file][0] != image.label]
    if wrong:
        raise BenchError(f"{spec.text}: labels differ from the split for {wrong[:5]}")
    values = np.asarray([by_file[image.file][1] for image in images], dtype=np.float64)
    if np.isnan(values).any():
        raise BenchError(f"{spec.text}: {int(np.isnan(values).sum())} images have no logit")
    return values


# --------------------------------------------------------------------------- latency children


def latency_job(spec: ArtifactSpec, row: dict, config: BenchConfig, onnx_path: Path | None):
    """The JSON a latency child reads; paths are absolute (the child runs in the repo root)."""
    target = spec.target if spec.random_weights else str(Path(spec.target).resolve())
    return {
        "kind": spec.kind,
        "target": str(onnx_path.resolve()) if spec.kind == "onnx" and onnx_path else target,
        "checkpoint": target if spec.kind == "onnx" else None,
        "input_size": spec.input_size,
        "device": row["device"],
        # torch's CPU thread count does not change a CUDA call: time it once
        "threads": config.threads[:1] if row["device"] == "cuda" else config.threads,
        "repeats": config.repeats,
        "runs": config.runs,
        "warmup": config.warmup,
    }


HUGEPAGE_TUNABLE = "glibc.malloc.hugetlb=1"


def child_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The latency children's environment: on Linux, glibc's malloc asks for transparent huge
    pages (``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``, glibc ≥ 2.35; older ones ignore it).

    Without it, where the kernel gives huge pages only on request (THP ``madvise``, the common
    default), a torch model's speed depends on where its process's allocations happened to land:
    measured here, fresh processes running the same custom CNN had fastest calls of 38 or 50 ms
    and kept them; with it, 39.5–42 ms. Every artifact gets the same setting.
    """
    env = dict(os.environ if base is None else base)
    if sys.platform.startswith("linux"):
        tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t]
        if not any(t.startswith("glibc.malloc.hugetlb=") for t in tunables):
            tunables.append(HUGEPAGE_TUNABLE)
        env["GLIBC_TUNABLES"] = ":".join(tunables)
    return env


def transparent_hugepages() -> str | None:
    """The kernel's THP mode (``always``, ``madvise`` or ``never``), None where unknown."""
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return None
    chosen = [word.strip("[]") for word in text.split() if word.startswith("[")]
    return chosen[0] if chosen else None


def run_latency_child(job: dict, timeout_s: float = 3600.0) -> dict:
    """Run one artifact's load + latency in a fresh interpreter; its measurements as a dict."""
    with tempfile.TemporaryDirectory(prefix="fracture-edge-bench-") as work:
        job_path, result_path = Path(work) / "job.json", Path(work) / "result.json"
        job_path.write_text(json.dumps({**job, "result": str(result_path)}))
        try:
            finished = subprocess.run(
                [sys.executable, "-m", "benchmarks.bench", "--latency-child", str(job_path)],
                cwd=REPO_ROOT,
                env=child_environment(),
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired as error:
            raise BenchError(f"latency of {job['target']} took over {timeout_s:.0f} s") from error
        if finished.returncode != 0 or not result_path.is_file():
            tail = "\n".join((finished.stdout + finished.stderr).strip().splitlines()[-8:])
            raise BenchError(f"the latency child for {job['target']} failed:\n{tail}")
        return json.loads(result_path.read_text())


def _child_callables(job: dict) -> tuple[Callable[[int], Callable[[], object]], dict]:
    """``(threads → zero-argument call, extra facts)`` for the job's artifact, loaded once."""
    rng = np.random.default_rng(0)
    kind = job["kind"]
    if kind == "tflite":
        from edge_app.runtime import FractureDetector

        def tflite_call(threads: int):
            model = FractureDetector(job["target"], num_threads=threads).model
            image = rng.normal(size=model.input_shape).astype(np.float32)
            return lambda: model(image)

        tflite_call(job["threads"][0])  # load once before the clock: sha256 and allocation
        return tflite_call, {}
    if kind == "onnx":
        import onnxruntime

        def onnx_call(threads: int):
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
            session = onnxruntime.InferenceSession(
                job["target"], options, providers=["CPUExecutionProvider"]
            )
            model_input = session.get_inputs()[0]
            image = rng.normal(size=model_input.shape).astype(np.float32)
            return lambda: session.run(None, {model_input.name: image})

        return onnx_call, {}
    return torch_callables(job, rng)


def torch_callables(job: dict, rng) -> tuple[Callable[[int], Callable[[], object]], dict]:
    import torch

    if job["kind"] == "arch":
        model = seeded_architecture(job["target"])
        size = job["input_size"]
    else:
        from train.checkpoints import load_checkpoint

        model, _, preprocessing = load_checkpoint(job["target"])
        size = preprocessing.input_size
    parameter_bytes = sum(p.numel() * 4 for p in model.parameters())
    device = torch.device(job["device"])
    model = model.to(device)
    image = torch.from_numpy(rng.normal(size=(1, 1, size, size)).astype(np.float32)).to(device)

    def torch_call(threads: int):
        torch.set_num_threads(threads)

        def call():
            with torch.inference_mode():
                output = model(image)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return output

        return call

    return torch_call, {"parameter_bytes": parameter_bytes}


_RUNTIME_MODULES = {
    "tflite": "ai_edge_litert.interpreter",
    "onnx": "onnxruntime",
    "torch": "timm",
    "arch": "timm",
}


def _own_peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM on Linux; see :func:`peak_rss_mb`)."""
    return peak_rss_mb()


def _child_main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    importlib.import_module(_RUNTIME_MODULES[job["kind"]])
    after_import = _own_peak_rss_mb()
    started = time.perf_counter()
    make_call, facts = _child_callables(job)
    load_s = time.perf_counter() - started
    latency = {}
    for threads in job["threads"]:
        call = make_call(threads)
        repeats = [
            measure_latency(call, runs=job["runs"], warmup=job["warmup"]).to_json()
            for _ in range(job["repeats"])
        ]
        latency[str(threads)] = {
            "p50_ms": round(statistics.median(r["p50_ms"] for r in repeats), 4),
            "p95_ms": round(statistics.median(r["p95_ms"] for r in repeats), 4),
            "min_ms": round(min(r["min_ms"] for r in repeats), 4),
            "repeats": repeats,
        }
    result = {
        "latency": latency,
        "rss_after_import_mb": round(after_import, 1),
        "peak_rss_mb": round(_own_peak_rss_mb(), 1),
        "load_s": round(load_s, 3),
        **facts,
    }
    Path(job["result"]).write_text(json.dumps(result))
    return 0


SPEEDUP_STATISTIC = "fastest call"


def _paired_p50_ratio(reference: dict, row: dict) -> float:
    """Median over rounds of reference p50 / row p50 when both have one repeat per round
    (interleaved), else the ratio of the medians."""
    first, second = reference.get("repeats") or [], row.get("repeats") or []
    if first and len(first) == len(second):
        return statistics.median(
            a["p50_ms"] / b["p50_ms"] for a, b in zip(first, second, strict=True)
        )
    return reference["p50_ms"] / row["p50_ms"]


def speedups(rows: Sequence[dict], reference_id: str) -> dict[str, Any]:
    """Set each row's speed-ups over the reference, per thread count, both measured in this run.

    ``speedup``: the reference's fastest call / the row's fastest call. On a shared machine a
    call is slowed by whatever else the host runs, and the two artifacts are slowed by different
    factors at different moments (measured: the int8 bundle alternates between 6.7 and 8.3 ms
    calls within one process, VGG16 between 0.47 and 0.81 s, independently); the fastest call of
    many is the least disturbed estimate of each, so their ratio repeats between runs where the
    ratio of medians does not (docs/benchmarks.md). ``speedup_p50``: the median over rounds of
    the per-round p50 ratios, what a user sees under that run's load.
    """
    reference = next((r for r in rows if r["id"] == reference_id and r["latency"]), None)
    for row in rows:
        if not row["latency"]:
            row["speedup_note"] = row["speedup_note"] or row["latency_note"] or "no latency"
            continue
        if reference is None:
            row["speedup_note"] = f"n/a ({reference_id} not measured in this run)"
            continue
        shared = [t for t in row["latency"] if t in reference["latency"]]
        row["speedup"] = {
            t: round(reference["latency"][t]["min_ms"] / row["latency"][t]["min_ms"], 4)
            for t in shared
        }
        row["speedup_p50"] = {
            t: round(_paired_p50_ratio(reference["latency"][t], row["latency"][t]), 4)
            for t in shared
        }
    return {"id": reference_id, "measured": reference is not None, "statistic": SPEEDUP_STATISTIC}


# --------------------------------------------------------------------------- environment


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass  # not Linux: platform.processor() below
    return platform.processor() or platform.machine()


def environment(note: str = "") -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            name: _version(name)
            for name in ("numpy", "torch", "timm", "ai-edge-litert", "onnxruntime", "onnx")
        },
        "load_average_start": [round(v, 2) for v in load] if load else None,
        "latency_children": {
            "GLIBC_TUNABLES": child_environment().get("GLIBC_TUNABLES"),
            "transparent_hugepages": transparent_hugepages(),
        },
        "note": note,
    }


# --------------------------------------------------------------------------- the run


def _images_for(config: BenchConfig) -> tuple[list[BenchImage], dict[str, Any]]:
    if config.external:
        images = read_external_labels(config.external, config.labels)
        data = {"mode": "external", "external": config.external, "labels": config.labels}
    else:
        from train.splits import read_split, split_counts, split_id

        images = fracatlas_images(config.split, config.data)
        split_rows = read_split(config.split)
        data = {
            "mode": "fracatlas",
            "split": config.split,
            "split_id": split_id(split_rows),
            "split_counts": split_counts(split_rows),
            "data": config.data,
        }
    available = len(images)
    if config.limit:
        images = stratified_subset(images, config.limit, config.seed)
    data.update(limit=config.limit, images_available=available, images_used=len(images))
    return images, data


LATENCY_ONLY = "not measured (--latency-only)"


def _latency_only(specs: Sequence[ArtifactSpec]) -> tuple[list, dict[str, Any]]:
    """No images: size, latency and memory only (a phone, a GPU box without the data)."""
    logits = [spec.text for spec in specs if spec.kind == "logits"]
    if logits:
        raise BenchError(
            f"--latency-only: {', '.join(logits)} only hold logits, which have no latency; "
            "leave them out"
        )
    return [], {"mode": "latency-only", "limit": None, "images_available": 0, "images_used": 0}


def _heatmap_indices(images: Sequence[BenchImage], cap: int) -> set[int]:
    eligible = [
        i for i, image in enumerate(images) if image.boxes and image.split in ("test", "external")
    ]
    return set(eligible[:cap])


def _build_scorer(spec: ArtifactSpec, row: dict, config: BenchConfig, work: Path):
    """The parent's scorer of one row; fills the row's name, format and file size."""
    if spec.kind == "tflite":
        scorer = _TFLiteScorer(spec.target, threads=config.threads[0], tta=config.tta)
        scorer.reference, reason = heatmap_reference(scorer.card, config.heatmap_reference)
        if reason:
            row["heatmap_note"] = f"CAM agreement skipped: {reason}"
        quantization = scorer.card.get("quantization", "?")
        row.update(name=scorer.detector.bundle.name, format=f"tflite {quantization}")
    elif spec.kind == "torch":
        scorer = _TorchScorer(spec.target, row["device"])
        if row["device"] != "cpu":
            scorer.heatmap_kind = None
            row["heatmap_note"] = "see the CPU row (same weights)"
        row.update(name=scorer.card.get("name") or Path(spec.target).name, format="torch fp32")
    else:
        scorer = _OnnxScorer(spec.target, work / f"onnx-{len(list(work.iterdir()))}")
        row.update(name=scorer.card.get("name") or Path(spec.target).name, format="onnx fp32")
    row["file_mb"] = round(scorer.file_bytes / 1e6, 3)
    return scorer


def seeded_architecture(name: str):
    """``create_model(name)`` in eval mode with the same random weights in every run and
    process (seed 0, without touching the caller's RNG): what ``arch:`` rows time."""
    import torch

    from train.models import create_model

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return create_model(name).eval()


def _architecture_onnx(spec: ArtifactSpec, work: Path) -> Path:
    """The arch rows' seeded architecture exported as the checkpoints are (``DeployableNet``,
    opset 17): a teacher under ONNX Runtime without its weights, whose latency does not depend
    on them."""
    from compress.export import DeployableNet, export_onnx

    work.mkdir(parents=True, exist_ok=True)
    model = seeded_architecture(spec.target)
    return export_onnx(DeployableNet(model), work / "model.onnx", spec.input_size)


def _unique_names(rows: Sequence[dict]) -> None:
    """Tell apart rows of one artifact: ``NAME [onnx]``, ``NAME [cuda]``, then ``#2``…"""
    seen: set[str] = set()
    for row in rows:
        name = row["name"]
        if row["device"] == "cuda":
            name += " [cuda]"
        if name in seen:
            name += f" [{row['kind']}]"
        base, count = name, 1
        while name in seen:
            count += 1
            name = f"{base} #{count}"
        seen.add(name)
        row["name"] = name


def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Score, time and report every artifact; returns report.json's content (also written)."""
    from benchmarks.report import write_report

    started = time.time()
    specs = resolve_specs(config.models, external=bool(config.external))
    if config.latency_only:
        images, data = _latency_only(specs)
    else:
        images, data = _images_for(config)
    if config.calibrate:
        from benchmarks.site_calibration import check_plan

        check_plan([image.label for image in images], config)  # refuse before scoring
    env = environment(config.note)
    planned = plan_rows(specs, cuda_available(specs, config.cuda))
    rows = [row for _, row in planned]
    with tempfile.TemporaryDirectory(prefix="fracture-edge-bench-") as work:
        scorers, onnx_paths = _prepare_scorers(planned, config, Path(work))
        _unique_names(rows)
        if config.latency_only:
            for row in rows:
                row["accuracy_note"] = row["heatmap_note"] = LATENCY_ONLY
        else:
            _score_and_evaluate(planned, scorers, images, config)
        site_calibration = _site_calibration(rows, scorers, images, config)
        if config.shifts:
            _score_shifts(planned, scorers, images, config)
        scorers.clear()  # free the parent's models before the children measure
        if config.latency:
            measure_interleaved(planned, config, onnx_paths)
        else:
            _skip_latency(rows)
    reference = speedups(rows, config.speedup_reference)
    env["load_average_end"] = (
        [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    )
    report = {
        "format": "fracture-edge-bench",
        "format_version": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_s": None,
        "config": dataclasses.asdict(config),
        "data": data,
        "environment": env,
        "speedup_reference": reference,
        "shifts": _shift_definitions(config),
        "images": [
            {
                "file": i.file,
                "split": i.split,
                "label": i.label,
                "boxes": [list(b) for b in i.boxes],
            }
            for i in images
        ],
        "rows": rows,
        "site_calibration": site_calibration,
        "errors": [f"{row['id']}: {error}" for row in rows for error in row["errors"]],
    }
    report["wall_s"] = round(time.time() - started, 1)
    write_report(report, Path(config.out))
    return report


def _prepare_scorers(planned, config: BenchConfig, work: Path):
    scorers, onnx_paths = {}, {}
    for spec, row in planned:
        if spec.kind == "onnx" and spec.random_weights:
            onnx_paths[row["id"]] = _architecture_onnx(spec, work / f"arch-{len(onnx_paths)}")
            row["file_mb"] = round(onnx_paths[row["id"]].stat().st_size / 1e6, 3)
            row["file_note"] = "the exported .onnx (random weights)"
        elif spec.kind in ("tflite", "torch", "onnx"):
            scorers[row["id"]] = _build_scorer(spec, row, config, work)
            if spec.kind == "onnx":
                onnx_paths[row["id"]] = scorers[row["id"]].path
    return scorers, onnx_paths


def _score_and_evaluate(planned, scorers, images, config: BenchConfig) -> None:
    """Every row's per-image logits, accuracy and heatmap scores (not its latency)."""
    indices = _heatmap_indices(images, config.heatmap_images)
    logits, heatmaps = score_images(images, scorers, indices) if scorers else ({}, {})
    subgroups = None
    if not config.external:
        from train.evaluate import subgroups_from_fracatlas

        test_files = [image.file for image in images if image.split == "test"]
        every = subgroups_from_fracatlas(test_files, config.data)
        subgroups = {name: every[name] for name in ("region", "hardware")}
    for spec, row in planned:
        if spec.random_weights:
            continue
        values = logits_of_images(spec, images) if spec.kind == "logits" else logits[row["id"]]
        row["logits"] = [round(float(v), 5) for v in values]
        if config.external:
            scorer = scorers[row["id"]]
            if not {"doubt", "fracture"} <= set(scorer.thresholds):
                row["accuracy_note"] = "the card has no operating points: AUROC only"
            row["accuracy"] = card_accuracy(
                [image.label for image in images],
                values,
                scorer.temperature,
                scorer.thresholds,
                config.resamples,
                config.seed,
            )
        else:
            row["accuracy"] = split_accuracy(
                images, values, subgroups, config.resamples, config.seed
            )
        if row["id"] in heatmaps:
            row["heatmap"] = heatmaps[row["id"]].summary()
        elif spec.kind != "logits" and row["device"] == "cpu" and not config.heatmap_images:
            row["heatmap_note"] = "not scored (--heatmap-images 0)"
        elif spec.kind != "logits" and row["device"] == "cpu":
            where = "labelled external" if config.external else "test"
            row["heatmap_note"] = f"no {where} image with boxes in this run"


def _site_calibration(rows, scorers, images, config: BenchConfig) -> dict | None:
    """``--calibrate K``: before/after site calibration per row (benchmarks/site_calibration)."""
    if not config.calibrate:
        return None
    from benchmarks.site_calibration import bench_site_calibration

    return bench_site_calibration(rows, scorers, images, config)


NO_LATENCY = "not measured (--no-latency)"


def _skip_latency(rows: Sequence[dict]) -> None:
    for row in rows:
        if row["kind"] != "logits":  # their "n/a (GPU run)" note stays
            row["latency_note"] = NO_LATENCY


def _shift_definitions(config: BenchConfig) -> dict[str, Any] | None:
    from benchmarks.yardstick import shift_definitions

    return shift_definitions(config.shift_seed) if config.shifts else None


def _score_shifts(planned, scorers, images, config: BenchConfig) -> None:
    """Every row with weights: AUROC clean and under each acquisition shift (test images)."""
    from benchmarks.yardstick import measured_indices, score_shifts, shift_table

    chosen = [images[index] for index in measured_indices(images)]
    logits = score_shifts(chosen, scorers, config.shift_seed) if scorers else {}
    labels = np.asarray([image.label for image in chosen])
    for spec, row in planned:
        if row["id"] in logits:
            accuracy = row["accuracy"] or {}
            thresholds = {
                name: point["probability"]
                for name, point in (accuracy.get("operating_points") or {}).items()
            }
            row["shifts"] = shift_table(
                labels,
                logits[row["id"]],
                config.resamples,
                config.seed,
                temperature=accuracy.get("temperature") or 1.0,
                thresholds=thresholds,
            )
        elif spec.kind == "logits":
            row["shifts_note"] = "n/a (logits of a GPU run cannot be re-scored under shifts)"
        elif spec.random_weights:
            row["shifts_note"] = NO_WEIGHTS


def _latency_once(spec: ArtifactSpec, row: dict, config: BenchConfig, onnx_path) -> dict | None:
    """One child, one repeat of every thread count; None (and the error noted) on failure."""
    job = {**latency_job(spec, row, config, onnx_path), "repeats": 1}
    started = time.perf_counter()
    try:
        result = run_latency_child(job, config.child_timeout_s)
    except BenchError as error:
        logger.warning("%s", error)
        row["errors"].append(str(error))
        return None
    logger.info("latency of %s: child done in %.1f s", row["id"], time.perf_counter() - started)
    return result


def measure_interleaved(planned, config: BenchConfig, onnx_paths: dict) -> None:
    """``config.repeats`` rounds; in each round every artifact runs once, in its own child.

    Interleaving puts every artifact's k-th repeat next to the reference's k-th repeat in time,
    so a slow drift in the machine's load hits both; :func:`speedups` takes the median of the
    per-round ratios. Latency is the median over rounds of each round's p50.
    """
    results: dict[str, list[dict]] = {row["id"]: [] for _, row in planned}
    for round_index in range(config.repeats):
        logger.info("latency round %d of %d", round_index + 1, config.repeats)
        for spec, row in planned:
            if spec.kind == "logits":
                continue
            result = _latency_once(spec, row, config, onnx_paths.get(row["id"]))
            if result is not None:
                results[row["id"]].append(result)
    for spec, row in planned:
        if spec.kind != "logits":
            _merge_latency(spec, row, results[row["id"]])


def _merge_latency(spec: ArtifactSpec, row: dict, results: list[dict]) -> None:
    if not results:
        row["latency_note"] = "failed (see errors)"
        return
    latency = {}
    for threads in results[0]["latency"]:
        rounds = [r["latency"][threads]["repeats"][0] for r in results if threads in r["latency"]]
        latency[threads] = {
            "p50_ms": round(statistics.median(r["p50_ms"] for r in rounds), 4),
            "p95_ms": round(statistics.median(r["p95_ms"] for r in rounds), 4),
            "min_ms": round(min(r["min_ms"] for r in rounds), 4),
            "repeats": rounds,
        }
    row.update(
        latency=latency,
        peak_rss_mb=max(r["peak_rss_mb"] for r in results),
        rss_after_import_mb=statistics.median(r["rss_after_import_mb"] for r in results),
        load_s=statistics.median(r["load_s"] for r in results),
    )
    if spec.kind == "arch":
        row["file_mb"] = round(results[0]["parameter_bytes"] / 1e6, 3)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--latency-child":
        sys.exit(_child_main(sys.argv[2]))
    sys.exit("usage: python -m benchmarks.bench --latency-child JOB.json (use fracture-edge bench)")
