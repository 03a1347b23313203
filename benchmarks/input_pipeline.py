"""Throughput of the training input pipeline on this machine (images/s, one process).

Two sources, each ending in the same augmented, normalised 224² model input:

- ``cache``: pre-letterboxed 256² JPEG → shared resize to 224² → augmentation → normalise;
- ``originals``: original file through the shared loader → shared letterbox to 224² →
  augmentation → normalise.

Usage::

    fracture-edge measure input-pipeline --data ../shared/data/fracatlas \\
        --cache cache/fracatlas-256 --images 300 --repeats 3 --json runs/input_pipeline.json

Reports the median over repeats and the cache/originals ratio from the same run.
"""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path

from edge_app.errors import InputPathError, UsageError
from edge_app.preprocess import PreprocessConfig, letterbox, normalize, resize
from edge_app.radiograph import load_radiograph
from train.augment import AugmentConfig, augment, build_augmentation
from train.cache import load_cached_image, read_cache_index


def _from_cache(cache_dir: Path, files: list[str], config: PreprocessConfig, pipeline) -> None:
    for file in files:
        canvas = resize(load_cached_image(cache_dir, file), config.input_size, config.input_size)
        normalize(augment(pipeline, canvas), config)


def _from_originals(paths: list[Path], config: PreprocessConfig, pipeline) -> None:
    for path in paths:
        canvas, _ = letterbox(load_radiograph(path).pixels, config.input_size, config.fill)
        normalize(augment(pipeline, canvas), config)


def _images_per_second(run, count: int, repeats: int) -> list[float]:
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        rates.append(count / (time.perf_counter() - start))
    return rates


def measure(data: Path, cache_dir: Path, images: int, repeats: int) -> dict:
    data, cache_dir = Path(data), Path(cache_dir)
    if images < 1 or repeats < 1:
        raise UsageError(f"--images and --repeats must be at least 1, got {images} and {repeats}")
    if not data.is_dir():
        raise InputPathError(f"--data {data} is not a folder; give the original images' root")
    rows = [row for row in read_cache_index(cache_dir) if row["split"] == "train"][:images]
    files = [row["file"] for row in rows]
    paths = {p.name: p for p in data.rglob("*") if p.suffix.lower() in {".jpg", ".png"}}
    missing = [f for f in files if f not in paths]
    if missing:
        raise UsageError(
            f"{len(missing)} cached training images have no original under {data}, e.g. "
            f"{', '.join(missing[:5])}; give the root the cache was built from"
        )
    originals = [paths[f] for f in files]
    config = PreprocessConfig(input_size=224)
    pipeline = build_augmentation(AugmentConfig(), seed=0)
    cache_rates = _images_per_second(
        lambda: _from_cache(cache_dir, files, config, pipeline), len(files), repeats
    )
    original_rates = _images_per_second(
        lambda: _from_originals(originals, config, pipeline), len(files), repeats
    )
    cache_median, original_median = (
        statistics.median(cache_rates),
        statistics.median(original_rates),
    )
    return {
        "images": len(files),
        "repeats": repeats,
        "input_size": 224,
        "cache_images_per_second": {
            "median": round(cache_median, 1),
            "runs": [round(r, 1) for r in cache_rates],
        },
        "originals_images_per_second": {
            "median": round(original_median, 1),
            "runs": [round(r, 1) for r in original_rates],
        },
        "cache_over_originals": round(cache_median / original_median, 2),
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "processes": 1,
    }
