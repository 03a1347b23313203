"""The parent process's scorers: one per artifact with weights, each turning a batch of
preprocessed inputs into logits (and heatmaps) the same way the artifact runs in the field.

- :class:`TFLiteScorer`: a bundle through :class:`edge_app.runtime.FractureDetector`'s LiteRT
  model; its heatmap is the in-graph CAM;
- :class:`TorchScorer`: a checkpoint in torch fp32; its heatmap is Grad-CAM (CPU rows only);
- :class:`OnnxScorer`: a checkpoint exported to ONNX under ONNX Runtime; in-graph CAM.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.specs import REPO_ROOT, BenchError
from edge_app._optional import install_hint
from edge_app.errors import MissingDependencyError


class TFLiteScorer:
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


class TorchScorer:
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


class OnnxScorer:
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
