"""The training data: the cache as one tensor bank on the device, and the batches cut from it.

:class:`CacheData` holds every cached canvas (uint8 or uint16), labels, splits, regions, the
films' original sizes and their fracture-outline masks. :class:`Batches` turns indices into
canvases at the model's input size with the app's letterbox (the torch twin), and — when
training — the augmentation policy, moving the outline masks with the films.
"""

from __future__ import annotations

import csv
import logging
from typing import Any

import numpy as np

from edge_app._optional import require
from edge_app.errors import UsageError
from edge_app.preprocess import PreprocessConfig, letterbox_geometry
from train import device_augment
from train.augment import AugmentConfig, augment
from train.cache import LEVELS, load_cached_bank, parse_outlines, read_cache_index, read_cache_meta
from train.config import TrainConfig
from train.outlines import rasterise_outlines
from train.tensor_preprocess import letterbox_batch

torch = require("torch", "train models")
logger = logging.getLogger(__name__)

REGIONS = ("hand", "leg", "hip", "shoulder", "mixed")


class CacheData:
    """The cache as one uint8 tensor bank on the device, plus labels, splits and regions."""

    def __init__(self, config: TrainConfig, device):
        rows = read_cache_index(config.cache)
        if config.limit:
            rng = np.random.default_rng(config.seed)
            keep = sorted(rng.choice(len(rows), min(config.limit, len(rows)), replace=False))
            rows = [rows[i] for i in keep]
        self.rows = rows
        self.meta = read_cache_meta(config.cache)
        self.fill = float(self.meta.get("fill", 0.0))
        self.levels = float(LEVELS[self.meta["format"]])
        self.bank = torch.from_numpy(load_cached_bank(config.cache, rows)).unsqueeze(1).to(device)
        self.labels = torch.tensor([float(r["label"]) for r in rows], device=device)
        self.fracture_types = list(self.meta.get("fracture_types", []))
        self.types = torch.tensor(
            [
                self.fracture_types.index(r["fracture_type"]) if r.get("fracture_type") else -1
                for r in rows
            ],
            device=device,
        )
        self.regions = torch.tensor(
            [REGIONS.index(r["region"]) if r.get("region") in REGIONS else -1 for r in rows],
            device=device,
        )
        self.original_sizes = [
            (int(r.get("original_height") or 0), int(r.get("original_width") or 0)) for r in rows
        ]
        self.masks = self._outline_masks(rows) if any(r.get("outlines") for r in rows) else None
        split = np.array([r["split"] for r in rows])
        self.index = {
            name: torch.from_numpy(np.flatnonzero(split == name)).to(device)
            for name in ("train", "val", "test")
        }
        if len(self.index["train"]) == 0 or len(self.index["val"]) == 0:
            raise UsageError(f"{config.cache} has no train or no val rows; rebuild the split")

    def _outline_masks(self, rows):
        """The fracture outlines rasterised on the canvases (uint8, 255 inside)."""
        size = self.bank.shape[-1]
        masks = np.zeros((len(rows), 1, size, size), np.uint8)
        for index, row in enumerate(rows):
            outlines = parse_outlines(row.get("outlines", ""))
            if outlines:
                masks[index, 0] = rasterise_outlines(outlines, size, size) * 255
        logger.info(
            "outline masks for %d films", int((masks.reshape(len(rows), -1).max(1) > 0).sum())
        )
        return torch.from_numpy(masks).to(self.bank.device)

    def positive_weight(self) -> float:
        labels = self.labels[self.index["train"]]
        positives = float(labels.sum())
        return (len(labels) - positives) / max(positives, 1.0)

    def describe(self) -> dict[str, Any]:
        return {
            "size": self.meta.get("size"),
            "format": self.meta.get("format"),
            "split_id": self.meta.get("split_id"),
            **{f"{name}_images": int(len(index)) for name, index in self.index.items()},
        }


def teacher_logit_column(spec: str, rows) -> np.ndarray:
    """Fixed teacher logits per cached image from ``file.csv:column`` (e.g. a teacher's CSV)."""
    path, _, column = spec.rpartition(":")
    if not path or not column:
        raise UsageError(f"--teacher-logits takes FILE.csv:COLUMN, got {spec!r}")
    with open(path, newline="") as handle:
        table = {r["file"]: r for r in csv.DictReader(handle)}
    missing = [r["file"] for r in rows if r["file"] not in table]
    if missing:
        raise UsageError(
            f"{path} has no logits for {len(missing)} cached images, e.g. {missing[:3]}"
        )
    if column not in next(iter(table.values())):
        raise UsageError(f"{path} has no column {column!r}")
    return np.array([float(table[r["file"]][column]) for r in rows], dtype=np.float32)


class Batches:
    """Canvases (and outline masks) for a set of cached films, augmented when training."""

    def __init__(
        self,
        data: CacheData,
        preprocessing: PreprocessConfig,
        policy: AugmentConfig,
        generator,
        on_device: bool,
        pipeline=None,
        with_masks: bool = False,
    ):
        self.data, self.preprocessing, self.policy = data, preprocessing, policy
        self.generator, self.on_device, self.pipeline = generator, on_device, pipeline
        self.with_masks = with_masks
        self.device = data.bank.device
        self.content = self._content_geometry()

    def _content_geometry(self):
        """Per cached film: (top, left, height, width) of the film on the input-size canvas."""
        size = self.preprocessing.input_size
        boxes = [
            (lambda g: (g.top, g.left, g.height, g.width))(letterbox_geometry(h, w, size))
            if h and w
            else (0, 0, size, size)
            for h, w in self.data.original_sizes
        ]
        return torch.tensor(boxes, device=self.device)

    def content_masks(self, indices):
        """(n, 1, size, size) booleans: where each canvas shows the film, not the letterbox."""
        size = self.preprocessing.input_size
        top, left, height, width = self.content[indices].unbind(1)
        grid = torch.arange(size, device=self.device)
        rows = (grid[None, :] >= top[:, None]) & (grid[None, :] < (top + height)[:, None])
        columns = (grid[None, :] >= left[:, None]) & (grid[None, :] < (left + width)[:, None])
        return (rows[:, :, None] & columns[:, None, :]).unsqueeze(1)

    def images(self, indices, training: bool):
        """Float [0, 1] canvases at the input size (the app's letterbox), augmented if training."""
        return self.batch(indices, training)[0]

    def batch(self, indices, training: bool):
        """(canvases, outline masks or None) at the input size, augmented together if training."""
        size = self.preprocessing.input_size
        canvases = self.data.bank[indices].float() / self.data.levels
        canvases = letterbox_batch(canvases, size, self.data.fill)
        masks = None
        if self.data.masks is not None and (self.with_masks or not training):
            masks = letterbox_batch(self.data.masks[indices].float() / 255.0, size, 0.0)
        if not training:
            return canvases, masks
        canvases = device_augment.invert_films(
            canvases,
            self.content_masks(indices),
            self.generator,
            self.policy.invert,
            self.data.fill,
        )
        if self.on_device:
            if masks is None:
                return device_augment.augment_batch(canvases, self.generator, self.policy), None
            return device_augment.augment_batch(canvases, self.generator, self.policy, masks)
        arrays = canvases.squeeze(1).cpu().numpy()
        if masks is None:
            augmented = np.stack([augment(self.pipeline, canvas) for canvas in arrays])
            return torch.from_numpy(augmented).unsqueeze(1).to(self.device), None
        mask_arrays = (masks.squeeze(1).cpu().numpy() * 255).round().astype(np.uint8)
        pairs = [
            augment(self.pipeline, canvas, mask)
            for canvas, mask in zip(arrays, mask_arrays, strict=True)
        ]
        images = torch.from_numpy(np.stack([pair[0] for pair in pairs])).unsqueeze(1)
        masks = torch.from_numpy(np.stack([pair[1] for pair in pairs])).unsqueeze(1).float() / 255
        return images.to(self.device), masks.to(self.device)
