"""A compact, pre-letterboxed image cache for training (and the GPU machine).

Every usable image is loaded with the shared loader, letterboxed with the shared preprocessing
(:func:`edge_app.preprocess.letterbox`, constant fill) to ``size``² and stored as 8-bit grey:

- ``--format png16`` (16-bit, lossless) at the model's input size is what training on this
  machine reads: the training input is then the app's input from the original file up to
  |Δ| ≤ 0.5/65535. ``--format png`` (8-bit) halves the size for a GPU machine's carry, at
  |Δ| ≤ 0.5/255 (both measured in docs/training.md).
- ``--format jpeg`` (quality 90) at 256 px is the compact cache that travels to a GPU machine
  (about 40 MB); training then resizes each canvas to its input size with the app's filter
  (:mod:`train.tensor_preprocess`), which adds a second resampling and the JPEG error: measured
  and stated in docs/training.md.

``index.csv`` holds one row per image (split, fold, label, group, region, hardware and the
fracture boxes in *canvas* coordinates); ``meta.json`` holds the settings and the split id. The
cache is git-ignored; rebuild it with ``fracture-edge data cache`` (a training plan builds the
cache it names when it is missing).
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

from edge_app.errors import InputPathError, UsageError
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
    "outlines",
)


#: Image format → file suffix in ``images/``, and the grey levels each stores.
FORMATS = {"jpeg": ".jpg", "png": ".png", "png16": ".png"}
LEVELS = {"jpeg": 255, "png": 255, "png16": 65535}


@dataclass(frozen=True)
class CacheConfig:
    size: int = 256
    quality: int = 90
    fill: float = 0.0
    format: str = "jpeg"

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise UsageError(f"cache format must be one of {sorted(FORMATS)}, got {self.format!r}")
        if not 16 <= self.size <= 4096:
            raise UsageError(f"cache size must be between 16 and 4096 px, got {self.size}")


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


def _outline_to_canvas(outline, geometry: LetterboxGeometry) -> list[tuple[float, float]]:
    size = geometry.canvas_size
    return [
        (
            round((geometry.left + x * geometry.width) / size, 5),
            round((geometry.top + y * geometry.height) / size, 5),
        )
        for x, y in outline
    ]


def format_outlines(outlines) -> str:
    """Polygons as ``x y x y ...`` (normalised) separated by ``;``."""
    return ";".join(
        " ".join(f"{v:.5f}" for point in outline for v in point) for outline in outlines
    )


def parse_outlines(text: str) -> list[list[tuple[float, float]]]:
    outlines = []
    for part in (text or "").split(";"):
        values = [float(v) for v in part.split()]
        if len(values) >= 6 and len(values) % 2 == 0:
            outlines.append(list(zip(values[0::2], values[1::2], strict=True)))
    return outlines


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
    levels = LEVELS[config.format]
    pixels = np.clip(canvas * levels + 0.5, 0, levels).astype(
        np.uint16 if levels > 255 else np.uint8
    )
    buffer = io.BytesIO()
    if config.format.startswith("png"):
        Image.fromarray(pixels).save(buffer, format="PNG", compress_level=6)
    else:
        Image.fromarray(pixels, mode="L").save(buffer, format="JPEG", quality=config.quality)
    (out_dir / "images" / f"{Path(row.file).stem}{FORMATS[config.format]}").write_bytes(
        buffer.getvalue()
    )
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
        "outlines": format_outlines(
            _outline_to_canvas(outline, geometry) for outline in sample.metadata.get("outlines", [])
        ),
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
        raise UsageError(
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
        "format": config.format,
        "quality": config.quality if config.format == "jpeg" else None,
        "fill": config.fill,
        "split_id": split_id(rows),
        "images": len(entries),
        "bytes": total_bytes,
    }
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1))
    logger.info("cache: %d images, %.1f MB in %s", len(entries), total_bytes / 1e6, out_dir)
    return meta


def read_cache_index(cache_dir: str | Path) -> list[dict[str, str]]:
    path = Path(cache_dir) / "index.csv"
    if not path.is_file():
        raise InputPathError(
            f"{cache_dir} is not an image cache (no index.csv); build it with "
            "`fracture-edge data cache DATA --split SPLIT.csv --out "
            f"{cache_dir}`"
        )
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def read_cache_meta(cache_dir: str | Path) -> dict[str, Any]:
    """``meta.json`` of a cache; caches written before formats existed are JPEG."""
    meta = json.loads((Path(cache_dir) / "meta.json").read_text())
    meta.setdefault("format", "jpeg")
    return meta


def cached_image_path(cache_dir: str | Path, file: str, image_format: str | None = None) -> Path:
    image_format = image_format or read_cache_meta(cache_dir)["format"]
    return Path(cache_dir) / "images" / f"{Path(file).stem}{FORMATS[image_format]}"


def cache_levels(cache_dir: str | Path) -> int:
    """The value of white in the cache's images (255, or 65535 for ``png16``)."""
    return LEVELS[read_cache_meta(cache_dir)["format"]]


def _read_canvas(path: Path, image_format: str) -> np.ndarray:
    with Image.open(path) as image:
        if image_format == "png16":
            return np.asarray(image).astype(np.uint16)
        return np.asarray(image.convert("L"))


def load_cached_bank(cache_dir: str | Path, rows) -> np.ndarray:
    """The cached canvases of ``rows`` as stored: one uint8 (or uint16) array (n, size, size).
    Divide by :func:`cache_levels` for intensities in [0, 1]."""
    image_format = read_cache_meta(cache_dir)["format"]
    return np.stack(
        [
            _read_canvas(cached_image_path(cache_dir, row["file"], image_format), image_format)
            for row in rows
        ]
    )


def load_cached_image(cache_dir: str | Path, file: str) -> np.ndarray:
    """A cached canvas as float32 in [0, 1]."""
    image_format = read_cache_meta(cache_dir)["format"]
    canvas = _read_canvas(cached_image_path(cache_dir, file, image_format), image_format)
    return canvas.astype(np.float32) / LEVELS[image_format]
