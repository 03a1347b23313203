"""Model inputs read from the training cache: fast, for the Optuna search's many trials and
the BatchNorm re-estimation benchmark. A bundle's own card is scored on the original films
instead (:mod:`train.split_scoring`, through :func:`compress.export.export_bundle`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from compress.export import ExportError
from edge_app.preprocess import PreprocessConfig, preprocess


def cache_rows(cache_dir: str | Path, split: str) -> list[dict[str, str]]:
    from train.cache import read_cache_index

    rows = [row for row in read_cache_index(cache_dir) if row["split"] == split]
    if not rows:
        raise ExportError(f"{cache_dir} has no '{split}' rows")
    return rows


def model_inputs(cache_dir: str | Path, rows, config: PreprocessConfig) -> np.ndarray:
    """The cached canvases of ``rows`` through the shared preprocessing, as (N, H, W, 1)."""
    from train.cache import load_cached_image

    return np.stack(
        [preprocess(load_cached_image(cache_dir, row["file"]), config)[0] for row in rows]
    )[..., None]


def calibration_sample(
    cache_dir: str | Path, config: PreprocessConfig, count: int = 200, seed: int = 0
) -> tuple[np.ndarray, dict[str, Any]]:
    """A class-stratified random sample of *training* images for int8 calibration."""
    rows = cache_rows(cache_dir, "train")
    rng = np.random.default_rng(seed)
    labels = np.array([int(row["label"]) for row in rows])
    chosen: list[int] = []
    for label in (0, 1):
        members = np.flatnonzero(labels == label)
        share = round(count * len(members) / len(rows))
        chosen += rng.choice(members, size=min(share, len(members)), replace=False).tolist()
    chosen.sort()
    picked = [rows[i] for i in chosen]
    info = {"split": "train", "images": len(picked), "seed": seed, "stratified": True}
    return model_inputs(cache_dir, picked, config), info
