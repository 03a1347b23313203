"""Data audit: duplicates, label conflicts, truncated files, label-source disagreements and the
class / region / image-size distributions, written as Markdown, JSON and PNG plots.

The JSON is an interface other tools rely on; these keys are lists of image *file names*:
``exact_duplicate_groups`` and ``near_duplicate_groups`` (lists of lists, the near groups include
the exact ones), ``label_conflict_groups`` (lists), ``truncated`` and
``label_source_disagreements``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_app.errors import ImageReadError, UsageError
from edge_app.preprocess import resize
from edge_app.radiograph import load_radiograph
from train import duplicates
from train.datasets import Sample
from train.metrics import auroc

logger = logging.getLogger(__name__)


@dataclass
class ImageRecord:
    """What the scan learns about one image."""

    name: str
    path: str
    label: int
    metadata: dict[str, Any]
    sha256: str = ""
    file_bytes: int = 0
    width: int = 0
    height: int = 0
    truncated: bool = False
    error: str | None = None


@dataclass
class AuditResult:
    records: list[ImageRecord]
    exact_duplicate_groups: list[list[int]]
    near_duplicate_groups: list[list[int]]
    near_duplicate_pairs: list[tuple[int, int, float]]
    label_conflict_groups: list[list[int]]
    label_source_disagreements: list[int]
    summary: dict[str, Any] = field(default_factory=dict)

    def names(self, indices: Iterable[int]) -> list[str]:
        return [self.records[index].name for index in indices]

    def to_json(self) -> dict[str, Any]:
        """The interface contract (file names), plus the summary and the pair scores."""
        return {
            "exact_duplicate_groups": [self.names(g) for g in self.exact_duplicate_groups],
            "near_duplicate_groups": [self.names(g) for g in self.near_duplicate_groups],
            "label_conflict_groups": [self.names(g) for g in self.label_conflict_groups],
            "truncated": [r.name for r in self.records if r.truncated],
            "label_source_disagreements": self.names(self.label_source_disagreements),
            "unreadable": {r.name: r.error for r in self.records if r.error},
            "near_duplicate_pairs": [
                {"files": self.names((a, b)), "similarity": round(s, 4)}
                for a, b, s in self.near_duplicate_pairs
            ],
            "summary": self.summary,
        }


# --------------------------------------------------------------------------- scanning


def _scan_one(sample: Sample) -> tuple[ImageRecord, np.ndarray | None]:
    size = duplicates.THUMBNAIL_SIZE
    path = Path(sample.path)
    record = ImageRecord(path.name, str(path), int(sample.label), dict(sample.metadata))
    try:
        payload = path.read_bytes()
        record.sha256 = hashlib.sha256(payload).hexdigest()
        record.file_bytes = len(payload)
        radiograph = load_radiograph(path, draft_size=2 * size)
    except (ImageReadError, OSError) as error:
        record.error = f"{type(error).__name__}: {error}"
        return record, None
    record.width, record.height = radiograph.metadata.get(
        "original_size", radiograph.pixels.shape[::-1]
    )
    record.truncated = radiograph.truncated
    # Squashed on purpose: copies keep their aspect ratio, so squashing both sides is harmless.
    thumbnail = resize(radiograph.pixels, size, size)
    return record, np.clip(thumbnail * 255 + 0.5, 0, 255).astype(np.uint8)


def scan_images(
    samples: Sequence[Sample], workers: int = 2
) -> tuple[list[ImageRecord], np.ndarray, np.ndarray]:
    """Hash, decode and thumbnail every image; returns records, thumbnails and a readable mask."""
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_scan_one, samples, chunksize=32))
    else:
        results = [_scan_one(sample) for sample in samples]
    size = duplicates.THUMBNAIL_SIZE
    records = [record for record, _ in results]
    readable = np.array([thumbnail is not None for _, thumbnail in results], dtype=bool)
    thumbnails = (
        np.stack(
            [
                thumbnail if thumbnail is not None else np.zeros((size, size), np.uint8)
                for _, thumbnail in results
            ]
        )
        if results
        else np.zeros((0, size, size), np.uint8)
    )
    return records, thumbnails, readable


# --------------------------------------------------------------------------- findings


def exact_duplicate_groups(records: Sequence[ImageRecord]) -> list[list[int]]:
    by_hash: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        if record.sha256:
            by_hash.setdefault(record.sha256, []).append(index)
    return sorted((g for g in by_hash.values() if len(g) > 1), key=lambda g: g[0])


def find_near_duplicates(
    records: Sequence[ImageRecord],
    thumbnails: np.ndarray,
    readable: np.ndarray,
    exact_groups: Sequence[Sequence[int]],
) -> tuple[list[list[int]], list[tuple[int, int, float]]]:
    """Near-duplicate groups (exact groups merged in) and the confirmed pairs behind them."""
    readable_index = np.flatnonzero(readable)
    truncated = [records[i].truncated for i in readable_index]
    pairs = [
        (int(readable_index[a]), int(readable_index[b]), similarity)
        for a, b, similarity in duplicates.near_duplicate_pairs(
            thumbnails[readable_index].astype(np.float32) / 255.0, truncated
        )
    ]
    edges = [(a, b) for a, b, _ in pairs]
    edges += [(group[0], other) for group in exact_groups for other in group[1:]]
    return duplicates.connected_groups(len(records), edges), pairs


def label_conflicts(records: Sequence[ImageRecord], groups: Sequence[Sequence[int]]):
    return [list(g) for g in groups if len({records[i].label for i in g}) > 1]


def label_source_disagreements(records: Sequence[ImageRecord]) -> list[int]:
    """Images whose label sources disagree (folder vs CSV), or marked negative yet boxed."""
    found = []
    for index, record in enumerate(records):
        sources = record.metadata.get("label_sources", {})
        boxed_negative = record.label == 0 and bool(record.metadata.get("boxes"))
        if len(set(sources.values())) > 1 or boxed_negative:
            found.append(index)
    return found


# --------------------------------------------------------------------------- summary


def _label_table(records: Sequence[ImageRecord], key) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    for record in records:
        for value in key(record):
            row = table.setdefault(str(value), {"fractured": 0, "not_fractured": 0})
            row["fractured" if record.label == 1 else "not_fractured"] += 1
    return dict(sorted(table.items()))


def _regions(record: ImageRecord) -> list[str]:
    regions = record.metadata.get("regions")
    if regions:
        return list(regions)
    region = record.metadata.get("region") or record.metadata.get("class_name")
    return [region or "unknown"]


def summarize(result: AuditResult) -> dict[str, Any]:
    records = [r for r in result.records if not r.error]
    labels = np.array([r.label for r in records])
    aspect = np.array([r.width / max(r.height, 1) for r in records])
    pixels = np.array([r.width * r.height for r in records], dtype=np.float64)
    binary = set(labels.tolist()) <= {0, 1}
    summary: dict[str, Any] = {
        "images": len(result.records),
        "unreadable": len(result.records) - len(records),
        "classes": {str(k): v for k, v in sorted(Counter(labels.tolist()).items())},
        "regions_by_label": _label_table(records, _regions),
        "image_sizes": {
            f"{w}x{h}": n
            for (w, h), n in Counter((r.width, r.height) for r in records).most_common(10)
        },
        "counts": {
            "exact_duplicate_groups": len(result.exact_duplicate_groups),
            "images_in_exact_duplicate_groups": sum(map(len, result.exact_duplicate_groups)),
            "near_duplicate_groups": len(result.near_duplicate_groups),
            "images_in_near_duplicate_groups": sum(map(len, result.near_duplicate_groups)),
            "near_duplicate_pairs": len(result.near_duplicate_pairs),
            "label_conflict_groups": len(result.label_conflict_groups),
            "images_in_label_conflict_groups": sum(map(len, result.label_conflict_groups)),
            "truncated": sum(r.truncated for r in result.records),
            "label_source_disagreements": len(result.label_source_disagreements),
        },
    }
    if any("hardware" in r.metadata for r in records):
        summary["hardware_by_label"] = _label_table(records, lambda r: [r.metadata.get("hardware")])
    if binary and len(records):
        # How well would a shortcut alone predict the label? 0.5 = no leak.
        summary["shortcut_auroc"] = {
            "aspect_ratio": _symmetric_auroc(labels, aspect),
            "pixel_count": _symmetric_auroc(labels, pixels),
            "file_bytes": _symmetric_auroc(labels, np.array([r.file_bytes for r in records])),
        }
        if "hardware_by_label" in summary:
            hardware = np.array([float(r.metadata.get("hardware") or 0) for r in records])
            summary["shortcut_auroc"]["hardware_flag"] = _symmetric_auroc(labels, hardware)
    return summary


def _symmetric_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUROC folded to ≥ 0.5: a shortcut predicts in whichever direction it points."""
    value = auroc(labels, scores)
    return round(max(value, 1 - value), 4) if np.isfinite(value) else float("nan")


# --------------------------------------------------------------------------- entry point


def audit_dataset(samples: Sequence[Sample], workers: int = 2) -> AuditResult:
    samples = list(samples)
    logger.info("Scanning %d images with %d worker(s)", len(samples), workers)
    records, thumbnails, readable = scan_images(samples, workers)
    exact = exact_duplicate_groups(records)
    logger.info("Looking for near-duplicates")
    near, pairs = find_near_duplicates(records, thumbnails, readable, exact)
    result = AuditResult(
        records=records,
        exact_duplicate_groups=exact,
        near_duplicate_groups=near,
        near_duplicate_pairs=pairs,
        label_conflict_groups=label_conflicts(records, near),
        label_source_disagreements=label_source_disagreements(records),
    )
    result.summary = summarize(result)
    return result


def write_json(result: AuditResult, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_json(), indent=1))
    return path


def read_json(path: str | Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text())
    missing = {"near_duplicate_groups", "label_conflict_groups", "truncated"} - set(data)
    if missing:
        raise UsageError(f"{path} is not a FractureEdge audit JSON: it lacks {sorted(missing)}")
    return data
