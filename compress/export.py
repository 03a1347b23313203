"""torch → ONNX → TFLite (onnx2tf), with the class-activation map computed inside the graph.

The exported graph has one image input (NHWC, one channel, normalised by the card's
preprocessing) and these outputs, each found by its shape (see :mod:`edge_app.tflite`):

- ``fracture_logit`` (batch, 1): the fracture head's logit. The runtime applies the card's
  temperature and the sigmoid. A logit, not a probability, because int8 output tensors hold 256
  levels: a quantised sigmoid rounds every probability below 1/256 to zero, and the "doubt"
  operating point of a pos-weighted model sits near p = 0.001.
- ``cam`` (batch, h·w): the last feature map weighted by the fracture head (a 1×1 convolution
  with the head's weights), flattened row-major; ``cam_shape`` in the card gives (h, w). For a
  GAP + linear head this is Grad-CAM before its ReLU, up to a positive scale, and its mean plus
  the head's bias is the logit.
- ``<aux>_logits`` (batch, classes) for each auxiliary head (e.g. the body region).

    fracture-edge export models/checkpoints/RUN --format tflite --int8 --out models/NAME
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compress.static_padding import fold_pads_into_convs, make_padding_static
from edge_app._optional import install_hint, require
from edge_app.card import CAM_OUTPUT, LOGIT_OUTPUT, aux_output_name, write_card
from edge_app.errors import FractureEdgeError, MissingDependencyError
from edge_app.files import file_sha256
from edge_app.preprocess import PreprocessConfig
from train.metrics import sigmoid
from train.provenance import git_commit
from train.split_scoring import SplitImage, model_inputs, split_images, stratified_sample

torch = require("torch", "export models")
nn = torch.nn
functional = torch.nn.functional

logger = logging.getLogger(__name__)

OPSET = 17
INPUT_NAME = "image"

#: Quantisation mode → the suffix onnx2tf gives that file.
#: ``int8`` is full-integer quantisation with float32 input/output tensors (the app's choice:
#: no quantisation arithmetic outside the graph); ``int8_io`` also has int8 input/output.
MODES: dict[str, str] = {
    "float32": "float32",
    "float16": "float16",
    "dynamic_int8": "dynamic_range_quant",
    "int8": "integer_quant",
    "int8_io": "full_integer_quant",
}
INTEGER_MODES = ("dynamic_int8", "int8", "int8_io")
#: Modes that need representative (calibration) images.
CALIBRATED_MODES = ("int8", "int8_io")


class ExportError(FractureEdgeError):
    """Export or conversion failed."""


class DeployableNet(nn.Module):
    """A :class:`~train.models.FractureNet` with the outputs the app reads from one invoke."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.eval()
        weight = net.fracture_head.weight.detach().reshape(1, -1, 1, 1)
        self.register_buffer("cam_weight", weight.clone())
        self.eval()  # the exporter restores the wrapper's mode afterwards, recursively

    @property
    def output_names(self) -> list[str]:
        return [LOGIT_OUTPUT, CAM_OUTPUT] + [aux_output_name(n) for n in self.net.aux_heads]

    def forward(self, image):
        features = self.net.features(image)
        pooled = features.mean((2, 3))
        outputs = [self.net.fracture_head(pooled), functional.conv2d(features, self.cam_weight)]
        outputs[1] = outputs[1].flatten(1)
        outputs += [head(pooled) for head in self.net.aux_heads.values()]
        return tuple(outputs)

    def output_shapes(self, input_size: int) -> dict[str, list[int]]:
        """Each output's shape without the batch axis, plus the CAM grid."""
        with torch.no_grad():
            outputs = self(torch.zeros(1, 1, input_size, input_size))
            grid = self.net.features(torch.zeros(1, 1, input_size, input_size)).shape[2:]
        shapes = {
            name: list(out.shape[1:]) for name, out in zip(self.output_names, outputs, strict=True)
        }
        seen: dict[tuple, str] = {}
        for name, shape in shapes.items():
            if tuple(shape) in seen:
                raise ExportError(
                    f"outputs '{seen[tuple(shape)]}' and '{name}' share the shape {shape}; the "
                    "runtime tells outputs apart by shape, so export at another input size"
                )
            seen[tuple(shape)] = name
        return {"outputs": shapes, "cam_shape": [int(grid[0]), int(grid[1])]}


def export_onnx(
    net: nn.Module, path: str | Path, input_size: int, batch_size: int = 1, opset: int = OPSET
) -> Path:
    """Write the deployable graph as ONNX with a static input (batch, 1, size, size).

    Run-time "same" padding is made static at this size first and folded into the convolutions
    (:mod:`compress.static_padding`), so the graph holds no shape arithmetic for a converter to
    get wrong. ``net`` itself is not changed.
    """
    if opset < 17:
        raise ExportError(f"opset {opset} is too old; use 17 or newer")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    deployable = net if isinstance(net, DeployableNet) else DeployableNet(net)
    deployable = copy.deepcopy(deployable).eval()
    make_padding_static(deployable.net, input_size)
    example = torch.zeros(batch_size, 1, input_size, input_size)
    with torch.no_grad():
        torch.onnx.export(
            deployable,
            (example,),
            str(path),
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=deployable.output_names,
            dynamo=False,  # the TorchScript exporter gives the plain graph onnx2tf reads best
        )
    fold_pads_into_convs(path)  # also runs onnx.checker
    return path


def convert_tflite(
    onnx_path: str | Path,
    out_dir: str | Path,
    calibration: np.ndarray | None = None,
    timeout_s: float = 1800,
) -> dict[str, Path]:
    """Convert with onnx2tf in a child process; returns the TFLite file of each mode.

    ``calibration`` (N, H, W, 1) holds *normalised* model inputs; without it the integer modes
    are skipped (onnx2tf would otherwise calibrate on its own sample images, which are not
    radiographs). TensorFlow runs in the child so the caller does not carry it in memory.
    """
    # Only looked up here: importing onnx2tf imports TensorFlow, which must not share a
    # process with torchvision (it segfaults when torchvision is imported after it).
    if importlib.util.find_spec("onnx2tf") is None:
        raise MissingDependencyError(install_hint("onnx2tf", "convert ONNX to TFLite"))
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    arguments: dict[str, Any] = {
        "input_onnx_file_path": str(onnx_path),
        "output_folder_path": str(out_dir),
        "non_verbose": True,
        # onnx2tf would run the ``onnxsim`` executable found on PATH, and silently go on
        # without it when there is none (a venv that is not activated), with a different
        # result. The graph export_onnx writes is already static, so never run it.
        "not_use_onnxsim": True,
    }
    if calibration is not None:
        calibration = np.asarray(calibration, dtype=np.float32)
        if calibration.ndim != 4 or calibration.shape[-1] != 1:
            raise ExportError(f"calibration must be (N, H, W, 1), got {calibration.shape}")
        calibration_path = out_dir / "calibration.npy"
        np.save(calibration_path, calibration)
        # onnx2tf computes (x - mean) / std; the images are normalised already.
        arguments["output_integer_quantized_tflite"] = True
        arguments["custom_input_op_name_np_data_path"] = [
            [INPUT_NAME, str(calibration_path), [0.0], [1.0]]
        ]
    script = "import json, sys, onnx2tf; onnx2tf.convert(**json.loads(sys.argv[1]))"
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(arguments)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise ExportError(f"onnx2tf failed on {onnx_path}:\n{tail}")
    logger.info("onnx2tf took %.1f s", time.perf_counter() - started)
    files = {}
    for mode, suffix in MODES.items():
        candidate = out_dir / f"{onnx_path.stem}_{suffix}.tflite"
        if candidate.is_file():
            files[mode] = candidate
    if "float32" not in files:
        raise ExportError(f"onnx2tf wrote no float32 model in {out_dir}")
    return files


# ----------------------------------------------------------------------------- scoring


def torch_outputs(net: nn.Module, images: np.ndarray, batch_size: int = 32) -> dict:
    """The deployable outputs of the torch model on NHWC inputs, as numpy."""
    deployable = net if isinstance(net, DeployableNet) else DeployableNet(net)
    deployable.eval()
    collected: dict[str, list] = {}
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(images[start : start + batch_size]).permute(0, 3, 1, 2)
            for name, value in zip(
                deployable.output_names, deployable(batch.contiguous()), strict=True
            ):
                collected.setdefault(name, []).append(value.numpy())
    return {name: np.concatenate(parts) for name, parts in collected.items()}


def onnx_outputs(path: str | Path, images: np.ndarray) -> dict:
    """ONNX Runtime outputs on NHWC inputs, one image at a time (the graph's batch is static)."""
    ort = require("onnxruntime", "check ONNX parity")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    batch = session.get_inputs()[0].shape[0]
    collected: dict[str, list] = {}
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch].transpose(0, 3, 1, 2)
        count = len(chunk)
        if count < batch:
            chunk = np.concatenate([chunk, np.zeros((batch - count, *chunk.shape[1:]), "f4")])
        for name, value in zip(names, session.run(None, {INPUT_NAME: chunk}), strict=True):
            collected.setdefault(name, []).append(value[:count])
    return {name: np.concatenate(parts) for name, parts in collected.items()}


def tflite_outputs(path: str | Path, outputs: dict, images: np.ndarray, threads: int = 2):
    from edge_app.tflite import TFLiteModel

    return TFLiteModel(path, outputs=outputs, num_threads=threads).run_many(images)


def cam_correlation(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Pearson correlation per image between two batches of flattened maps."""
    a = first.reshape(len(first), -1).astype(np.float64)
    b = second.reshape(len(second), -1).astype(np.float64)
    a -= a.mean(1, keepdims=True)
    b -= b.mean(1, keepdims=True)
    denominator = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (a * b).sum(1) / denominator, np.nan)


# ----------------------------------------------------------------------------- bundles


@dataclass
class ExportResult:
    bundle: Path
    card: dict[str, Any]
    files: dict[str, Path]


def _report_metrics(report: dict) -> dict[str, Any]:
    """The card's slice of an :func:`train.evaluate.evaluate_scores` report."""
    points = report["operating_points"]
    return {
        "val_auroc": report["val"]["auroc"],
        "test_auroc": report["test"]["auroc"],
        "test_auroc_ci95": report["test"]["auroc_ci95"],
        "test_auprc": report["test"]["auprc"],
        "test_counts": report["counts"]["test"],
        "test_ece_calibrated": report["calibration"]["test_ece_after"],
        **{f"test_at_{name}": point["test"] for name, point in points.items()},
    }


def export_bundle(
    checkpoint: str | Path,
    out: str | Path,
    mode: str = "int8",
    split: str | Path | None = None,
    data: str | Path | None = None,
    input_size: int | None = None,
    calibration_images: int = 200,
    batch_variant: int | None = None,
    parity_images: int = 64,
    net: nn.Module | None = None,
    card: dict | None = None,
    threads: int = 2,
    keep_work: bool = False,
    command: str | None = None,
    selection: dict[str, Any] | None = None,
) -> ExportResult:
    """Export a checkpoint to a bundle ``out/`` (``model.tflite`` + ``model_card.json``).

    With evaluation data (``split`` CSV + FracAtlas ``data`` root) the int8 modes are calibrated
    on training films, and the exported file itself is scored on the original validation and
    test films through the app's loader and preprocessing (:mod:`train.split_scoring`, the path
    ``bench`` uses): its temperature and operating points are chosen on *its* validation
    scores, and the parity checks run on real validation films. The card is written once, here.
    Without evaluation data only float modes export, with the checkpoint's own validation
    points. ``net``/``card`` pass an in-memory model (e.g. freshly pruned) instead of loading
    one; ``selection`` records how a search chose it.
    """
    if mode not in MODES:
        raise ExportError(f"unknown mode '{mode}'; choose one of {', '.join(MODES)}")
    if (split is None) != (data is None):
        raise ExportError("evaluation needs both --split and --data (or neither)")
    if mode in CALIBRATED_MODES and split is None:
        raise ExportError(
            f"mode '{mode}' needs evaluation data (--split, --data): int8 is calibrated on "
            "training films"
        )
    films = split_images(split, data, ("train", "val", "test")) if split is not None else None

    if net is None:
        from train.checkpoints import load_checkpoint

        net, card, _ = load_checkpoint(checkpoint)
    assert card is not None
    net = net.eval().float()
    config = PreprocessConfig.from_card(card)
    if input_size is not None:
        config = PreprocessConfig(
            input_size=input_size, mean=config.mean, std=config.std, fill=config.fill
        )
    deployable = DeployableNet(net)
    shapes = deployable.output_shapes(config.input_size)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fracture-edge-export-"))
    try:
        onnx_path = export_onnx(deployable, work / "model.onnx", config.input_size)
        calibration, calibration_info = None, None
        if films is not None and mode in INTEGER_MODES:
            calibration, calibration_info = calibration_films(
                films, config, count=calibration_images
            )
        files = convert_tflite(onnx_path, work / "tflite", calibration)
        if mode not in files:
            raise ExportError(f"onnx2tf produced no '{mode}' model (got {sorted(files)})")
        shutil.copyfile(files[mode], out / "model.tflite")
        if batch_variant and batch_variant > 1:
            batched = export_onnx(
                deployable, work / "batched" / "model.onnx", config.input_size, batch_variant
            )
            batched_files = convert_tflite(batched, work / "batched" / "tflite", calibration)
            shutil.copyfile(batched_files[mode], out / f"model_b{batch_variant}.tflite")

        bundle_card: dict[str, Any] = {
            "name": out.name,
            "architecture": card["architecture"],
            "initialisation": card.get("initialisation"),
            "labels": card.get("labels", ["no_fracture", "fracture"]),
            "region_labels": card.get("region_labels", []),
            "aux_heads": card.get("aux_heads", {}),
            "input": {
                "shape": [1, config.input_size, config.input_size, 1],
                "layout": "NHWC",
                "dtype": "int8" if mode == "int8_io" else "float32",
                "name": INPUT_NAME,
            },
            "preprocessing": config.to_card(),
            **shapes,
            "quantization": mode,
            "calibration": calibration_info,
            "training_data": card.get("training_data"),
            "teachers": card.get("teachers", []),
            "pruning": card.get("pruning"),
            "source_checkpoint": {
                "name": card.get("name"),
                "path": str(checkpoint) if checkpoint else None,
                "weights_sha256": card.get("weights_sha256"),
                "trained_input_size": card.get("preprocessing", {}).get("input_size"),
                "command": card.get("command"),
                "metrics_torch": card.get("metrics"),
            },
            "export": {
                "command": command,
                "commit": git_commit(),
                "opset": OPSET,
                "converter": "onnx2tf",
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            "dataset": {
                "name": "FracAtlas",
                "license": "CC BY 4.0",
                "citation": "Abedeen I. et al. FracAtlas: A Dataset for Fracture Classification, "
                "Localization and Segmentation of Musculoskeletal Radiographs. Scientific Data "
                "10, 521 (2023). doi:10.1038/s41597-023-02432-4",
            },
        }
        if films is not None:
            bundle_card["evaluation_data"] = {"split": str(split), "data": str(data)}
            bundle_card.update(
                _score_artifact(
                    deployable,
                    onnx_path,
                    files,
                    mode,
                    out / "model.tflite",
                    films,
                    config,
                    shapes["outputs"],
                    parity_images,
                    threads,
                )
            )
        else:
            bundle_card.update(_checkpoint_operating_points(card))
        if selection is not None:
            bundle_card["selection"] = selection
        tflite = out / "model.tflite"
        bundle_card["model_sha256"] = file_sha256(tflite)
        bundle_card["model_bytes"] = tflite.stat().st_size
        bundle_card = write_card(out, bundle_card, "bundle")
        kept = {}
        if keep_work:
            kept = {mode: path for mode, path in files.items()}
        return ExportResult(out, bundle_card, kept)
    finally:
        if not keep_work:
            shutil.rmtree(work, ignore_errors=True)


def _checkpoint_operating_points(card: dict) -> dict[str, Any]:
    """Without evaluation data the bundle takes the temperature and operating points the
    checkpoint chose on validation with torch (marked as such); a bundle without them would
    give no verdict, so export refuses."""
    if "operating_points" not in card or card.get("calibration_temperature") is None:
        raise ExportError(
            "this checkpoint's card has no operating points or temperature; export it with "
            "--split and --data so they are chosen on the exported file's validation scores"
        )
    return {
        "calibration_temperature": card["calibration_temperature"],
        "operating_points": dict(card["operating_points"]),
        "operating_points_source": "the checkpoint's validation scores (torch), not this file's",
    }


def calibration_films(
    films: Sequence[SplitImage], config: PreprocessConfig, count: int = 200, seed: int = 0
) -> tuple[np.ndarray, dict[str, Any]]:
    """A class-stratified random sample of *training* films, read and preprocessed as the app
    does, for int8 calibration."""
    train = [film for film in films if film.split == "train"]
    if not train:
        raise ExportError("the split has no train rows to calibrate int8 on")
    picked = stratified_sample(train, count, seed)
    info = {"split": "train", "images": len(picked), "seed": seed, "stratified": True,
            "read_from": "original films"}  # fmt: skip
    return model_inputs(picked, config), info


def _score_artifact(
    deployable,
    onnx_path,
    files,
    mode,
    tflite,
    films: Sequence[SplitImage],
    config,
    outputs,
    parity_images,
    threads,
) -> dict[str, Any]:
    """Metrics of the deployed file on the original films, its operating points, parity."""
    from train.evaluate import evaluate_scores

    val = [film for film in films if film.split == "val"]
    test = [film for film in films if film.split == "test"]
    val_inputs, test_inputs = model_inputs(val, config), model_inputs(test, config)
    labels_val = np.array([film.label for film in val])
    labels_test = np.array([film.label for film in test])

    deployed_val = tflite_outputs(tflite, outputs, val_inputs, threads)
    deployed_test = tflite_outputs(tflite, outputs, test_inputs, threads)
    report = evaluate_scores(
        labels_val,
        deployed_val[LOGIT_OUTPUT][:, 0],
        labels_test,
        deployed_test[LOGIT_OUTPUT][:, 0],
    )
    points = report["operating_points"]

    # Parity on real validation images: torch vs ONNX vs TFLite float32 (and the shipped mode).
    sample = val_inputs[:parity_images]
    reference = torch_outputs(deployable, sample)
    onnx = onnx_outputs(onnx_path, sample)
    float_tflite = tflite_outputs(files["float32"], outputs, sample, threads)
    probability = sigmoid(reference[LOGIT_OUTPUT][:, 0])
    parity: dict[str, Any] = {
        "images": len(sample),
        "split": "val",
        "max_abs_probability_torch_vs_onnx": float(
            np.abs(probability - sigmoid(onnx[LOGIT_OUTPUT][:, 0])).max()
        ),
        "max_abs_probability_torch_vs_tflite_float32": float(
            np.abs(probability - sigmoid(float_tflite[LOGIT_OUTPUT][:, 0])).max()
        ),
        "max_abs_logit_torch_vs_tflite_float32": float(
            np.abs(reference[LOGIT_OUTPUT] - float_tflite[LOGIT_OUTPUT]).max()
        ),
    }
    if mode != "float32":
        float_val = tflite_outputs(files["float32"], outputs, val_inputs, threads)
        from train.metrics import auroc

        float_auroc = auroc(labels_val, float_val[LOGIT_OUTPUT][:, 0])
        parity["val_auroc_float32"] = round(float(float_auroc), 4)
        parity[f"val_auroc_{mode}"] = report["val"]["auroc"]
        parity["val_auroc_drop"] = round(float(float_auroc) - report["val"]["auroc"], 4)
        correlation = cam_correlation(float_val[CAM_OUTPUT], deployed_val[CAM_OUTPUT])
        parity["cam_pearson_vs_float32_median"] = round(float(np.nanmedian(correlation)), 4)
        parity["cam_pearson_vs_float32_min"] = round(float(np.nanmin(correlation)), 4)
        parity["max_abs_probability_vs_tflite_float32"] = float(
            np.abs(
                sigmoid(float_val[LOGIT_OUTPUT][:, 0]) - sigmoid(deployed_val[LOGIT_OUTPUT][:, 0])
            ).max()
        )
    # The CAM's peak over validation images, for heatmaps on one absolute scale (the 95th
    # percentile of per-image positive peaks, so one outlier does not wash every map out).
    peaks = np.maximum(deployed_val[CAM_OUTPUT], 0).max(axis=1)
    return {
        "cam_scale": round(float(np.percentile(peaks, 95)), 6),
        "calibration_temperature": report["calibration"]["temperature"],
        "operating_points": {name: point["probability"] for name, point in points.items()},
        # The same thresholds on the raw logit (exact: the temperature is monotone).
        "operating_logits": {name: point["raw_logit"] for name, point in points.items()},
        "operating_point_rules": {
            name: {"rule": point["rule"], "val": point["val"]} for name, point in points.items()
        },
        "metrics": {
            **_report_metrics(report),
            "measured_on": "this .tflite file, LiteRT CPU, the original films (app's loader)",
        },
        "parity": parity,
    }
