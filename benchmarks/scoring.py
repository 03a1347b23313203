"""Score images with every scorer at once: each image is read once, preprocessed once per
card preprocessing, and each scorer's heatmaps are taken back to the original image, where the
fracture boxes and outlines are, for the pointing game and CAM agreement."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.scorers import TorchScorer
from edge_app.preprocess import PreprocessConfig, preprocess
from edge_app.radiograph import load_radiograph
from edge_app.runtime import heatmap_from_cam
from train.split_scoring import SplitImage

logger = logging.getLogger(__name__)

#: The boxes' padding for :func:`score_boxes`, a share of the image's side (x: width, y:
#: height): a heatmap of 7 × 7 cells cannot point at a hairline inside a tight box.
BOX_PADDING = 0.02


@dataclass
class Heatmaps:
    kind: str
    pointing: list[bool] = field(default_factory=list)
    outline_pointing: list[bool] = field(default_factory=list)
    outline_iou: list[float] = field(default_factory=list)
    box_pointing: list[bool] = field(default_factory=list)  # padded boxes (score_boxes)
    box_iou: list[float] = field(default_factory=list)
    box_share: list[float] = field(default_factory=list)  # the padded boxes' share of the film
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
            "boxes": self._box_summary(),
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

    def _box_summary(self) -> dict[str, Any]:
        """Pointing game and top-region IoU against the padded boxes, with the chance level of
        the pointing game: a peak dropped at random lands in the boxes with their area share."""
        evaluated = len(self.box_pointing)
        hits = int(sum(self.box_pointing))
        return {
            "films": evaluated,
            "padding": BOX_PADDING,
            "pointing_game": {
                "hits": hits,
                "evaluated": evaluated,
                "rate": round(hits / evaluated, 4) if evaluated else None,
            },
            "chance_level": _mean(self.box_share),
            "top_region_iou_mean": _mean(self.box_iou),
        }


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
    images: Sequence[SplitImage],
    scorers: dict[str, Any],
    heatmap_indices: set[int],
    chunk_size: int = 32,
) -> tuple[dict[str, np.ndarray], dict[str, Heatmaps]]:
    """Each scorer's logit per image, plus pointing game and CAM agreement on ``heatmap_indices``
    (heatmaps in the original image's frame, where the boxes are)."""
    from train.localisation import cam_agreement, pointing_game

    references = _reference_scorers(scorers) if heatmap_indices else {}  # Grad-CAM only
    configs = {s.config for s in [*scorers.values(), *references.values()]}
    logits: dict[str, list[float]] = {row_id: [] for row_id in scorers}
    heatmaps = {
        row_id: Heatmaps(s.heatmap_kind, reference=str(s.reference) if s.reference else None)
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
            if isinstance(scorer, TorchScorer):
                maps = chunk.gradcam(scorer.folder.resolve())
            else:
                maps = chunk.original_heatmaps(scorer, inputs, cams)
            boxes = [members[i].boxes for i in chosen]
            heatmaps[row_id].pointing += [
                bool(pointing_game(m, b)) for m, b in zip(maps, boxes, strict=True)
            ]
            heatmaps[row_id].empty += sum(not m.any() for m in maps)
            score_outlines(heatmaps[row_id], maps, [members[i].outlines for i in chosen])
            score_boxes(heatmaps[row_id], maps, boxes)
            if scorer.reference is not None:
                reference = chunk.gradcam(scorer.reference.resolve())
                heatmaps[row_id].agreement += [
                    cam_agreement(a, b) for a, b in zip(maps, reference, strict=True)
                ]
        logger.info("scored %d of %d images", start + len(members), len(images))
    return {k: np.asarray(v) for k, v in logits.items()}, heatmaps


def score_outlines(record: Heatmaps, maps, outlines_per_image) -> None:
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


def score_boxes(record: Heatmaps, maps, boxes_per_image, padding: float = BOX_PADDING) -> None:
    """Pointing game against the boxes padded by ``padding``, the IoU of the map's top region
    (the region a front end boxes) with the padded boxes, and their share of the film, on the
    images that have boxes. An empty map misses and overlaps nothing."""
    from edge_app.findings import mask_iou, top_region
    from train.localisation import boxes_mask, pad_boxes, pointing_game

    for heatmap, boxes in zip(maps, boxes_per_image, strict=True):
        if not boxes:
            continue
        padded = pad_boxes(boxes, padding)
        mask = boxes_mask(padded, *heatmap.shape)
        record.box_pointing.append(bool(heatmap.any()) and bool(pointing_game(heatmap, padded)))
        record.box_iou.append(mask_iou(top_region(heatmap), mask))
        record.box_share.append(float(mask.mean()))


def _reference_scorers(scorers: dict[str, Any]) -> dict[Path, TorchScorer]:
    """Torch CPU scorers by resolved folder: the torch rows' own, and each bundle's reference."""
    references: dict[Path, TorchScorer] = {}
    for scorer in scorers.values():
        if isinstance(scorer, TorchScorer) and scorer.device == "cpu":
            references.setdefault(scorer.folder.resolve(), scorer)
    for scorer in scorers.values():
        if scorer.reference is not None and scorer.reference.resolve() not in references:
            references[scorer.reference.resolve()] = TorchScorer(scorer.reference)
    return references
