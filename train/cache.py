"""A compact, pre-letterboxed image cache that travels to the GPU machine.

Every usable image is loaded with the shared loader, letterboxed with the shared
preprocessing (:func:`edge_app.preprocess.letterbox`, constant fill) to ``size``² and stored as
a JPEG. ``index.csv`` holds one row per image (split, fold, label, group, region, hardware and the
fracture boxes in *canvas* coordinates); ``meta.json`` holds the settings and the split id. At
256 px and quality 90 FracAtlas takes about 40 MB. The cache is git-ignored; rebuild it with
``fracture-edge data cache``.

Training then only resizes the square canvas to the model's input size and normalises, both with
the shared functions, so the cache and the app see the same pixels up to JPEG rounding.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from edge_app.preprocess import LetterboxGeometry, letterbox
from edge_app.radiograph import load_radiograph
from train.datasets import Sample
from train.splits import EXCLUDED, SplitRow, split_id

logger = logging.getLogger(__name__)

CACHE_COLUMNS = (
    "file",
    "split",
    "fold",
    "label",
    "group",
    "region",
    "hardware",
    "boxes",
    "truncated",
    "original_width",
    "original_height",
    "fracture_type",
)


@dataclass(frozen=True)
class CacheConfig:
    size: int = 256
    quality: int = 90
    fill: float = 0.0


def _box_to_canvas(box, geometry: LetterboxGeometry) -> tuple[float, ...]:
    x0, y0, x1, y1 = box
    size = geometry.canvas_size
    return tuple(
        round(v, 5)
        for v in (
            (geometry.left + x0 * geometry.width) / size,
            (geometry.top + y0 * geometry.height) / size,
            (geometry.left + x1 * geometry.width) / size,
            (geometry.top + y1 * geometry.height) / size,
        )
    )


def format_boxes(boxes) -> str:
    """Boxes as ``x0 y0 x1 y1`` separated by ``;`` (the external-set labels format too)."""
    return ";".join(" ".join(f"{v:.5f}" for v in box) for box in boxes)


def parse_boxes(text: str) -> list[tuple[float, float, float, float]]:
    boxes = []
    for part in (text or "").split(";"):
        values = part.split()
        if len(values) == 4:
            boxes.append(tuple(float(v) for v in values))
    return boxes


def _cache_one(job: tuple[Sample, SplitRow, Path, CacheConfig]) -> dict[str, Any]:
    sample, row, out_dir, config = job
    radiograph = load_radiograph(sample.path)
    canvas, geometry = letterbox(radiograph.pixels, config.size, config.fill)
    pixels = np.clip(canvas * 255 + 0.5, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="JPEG", quality=config.quality)
    (out_dir / "images" / f"{Path(row.file).stem}.jpg").write_bytes(buffer.getvalue())
    boxes = [_box_to_canvas(box, geometry) for box in sample.metadata.get("boxes", [])]
    return {
        "file": row.file,
        "split": row.split,
        "fold": row.fold,
        "label": row.label,
        "group": row.group,
        "region": sample.metadata.get("region") or "",
        "hardware": sample.metadata.get("hardware", ""),
        "boxes": format_boxes(boxes),
        "truncated": int(radiograph.truncated),
        "original_width": radiograph.pixels.shape[1],
        "original_height": radiograph.pixels.shape[0],
        "fracture_type": sample.metadata.get("fracture_type") or "",
    }


def build_cache(
    samples: list[Sample],
    rows: list[SplitRow],
    out_dir: str | Path,
    config: CacheConfig = CacheConfig(),
    workers: int = 2,
) -> dict[str, Any]:
    """Write the cache for every non-excluded row of the split; returns ``meta.json``'s content."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    by_name = {Path(sample.path).name: sample for sample in samples}
    missing = [row.file for row in rows if row.split != EXCLUDED and row.file not in by_name]
    if missing:
        raise ValueError(
            f"{len(missing)} split rows have no image in the data set, e.g. {missing[:3]}"
        )
    jobs = [(by_name[row.file], row, out_dir, config) for row in rows if row.split != EXCLUDED]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            entries = list(pool.map(_cache_one, jobs, chunksize=16))
    else:
        entries = [_cache_one(job) for job in jobs]
    with open(out_dir / "index.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, CACHE_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(entries)
    total_bytes = sum(p.stat().st_size for p in (out_dir / "images").iterdir())
    types = sorted({entry["fracture_type"] for entry in entries if entry["fracture_type"]})
    meta = {
        "fracture_types": types,
        "size": config.size,
        "quality": config.quality,
        "fill": config.fill,
        "split_id": split_id(rows),
        "images": len(entries),
        "bytes": total_bytes,
    }
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1))
    logger.info("cache: %d images, %.1f MB in %s", len(entries), total_bytes / 1e6, out_dir)
    return meta


def read_cache_index(cache_dir: str | Path) -> list[dict[str, str]]:
    with open(Path(cache_dir) / "index.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def load_cached_bank(cache_dir: str | Path, rows) -> np.ndarray:
    """The cached canvases of ``rows`` as one uint8 array (n, size, size), as stored."""

    def read(file: str) -> np.ndarray:
        with Image.open(Path(cache_dir) / "images" / f"{Path(file).stem}.jpg") as image:
            return np.asarray(image.convert("L"))

    return np.stack([read(row["file"]) for row in rows])


def load_cached_image(cache_dir: str | Path, file: str) -> np.ndarray:
    """A cached canvas as float32 in [0, 1]."""
    path = Path(cache_dir) / "images" / f"{Path(file).stem}.jpg"
    with Image.open(path) as image:
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
