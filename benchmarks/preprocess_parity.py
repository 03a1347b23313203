"""How far the training inputs (read from the cache) are from the app's inputs (read from the
original files), in pixels and in the model's logits.

For every image of a split: the app's input is ``edge_app.preprocess.preprocess`` on the
original radiograph as ``edge_app.radiograph`` loads it; the training input is the cached canvas
through the torch twin (:mod:`train.tensor_preprocess`), without augmentation. Reported: the
absolute difference in intensity units (the [0, 1] grey scale, before normalisation) — max, 99th
percentile and mean — and, with a checkpoint, the largest logit change and both AUROCs.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from edge_app._optional import require
from edge_app.preprocess import PreprocessConfig, preprocess
from edge_app.radiograph import load_radiograph
from train.cache import cache_levels, load_cached_bank, read_cache_index, read_cache_meta
from train.metrics import auroc
from train.tensor_preprocess import preprocess_batch

torch = require("torch", "compare the cache with the originals")


def _relpaths(split_csv: str | Path) -> dict[str, str]:
    with open(split_csv, newline="") as handle:
        return {row["file"]: row["relpath"] for row in csv.DictReader(handle)}


def compare(
    data_root: str | Path,
    split_csv: str | Path,
    cache_dir: str | Path,
    config: PreprocessConfig,
    split: str = "val",
    limit: int | None = None,
    checkpoint: str | Path | None = None,
) -> dict[str, Any]:
    rows = [row for row in read_cache_index(cache_dir) if row["split"] == split][:limit]
    relpaths = _relpaths(split_csv)
    app = np.stack(
        [
            preprocess(load_radiograph(Path(data_root) / relpaths[row["file"]]).pixels, config)[0]
            for row in rows
        ]
    )
    canvases = torch.from_numpy(load_cached_bank(cache_dir, rows)).unsqueeze(1).float()
    canvases /= cache_levels(cache_dir)
    with torch.no_grad():
        trained = preprocess_batch(canvases, config).squeeze(1).numpy()
    difference = np.abs(trained - app) * config.std  # back to [0, 1] intensity units
    meta = read_cache_meta(cache_dir)
    result: dict[str, Any] = {
        "images": len(rows),
        "split": split,
        "cache": {"path": str(cache_dir), "size": meta.get("size"), "format": meta["format"]},
        "input_size": config.input_size,
        "intensity_difference": {
            "max": round(float(difference.max()), 5),
            "p99": round(float(np.percentile(difference, 99)), 5),
            "mean": round(float(difference.mean()), 6),
            "max_in_8bit_levels": round(float(difference.max() * 255), 2),
        },
    }
    if checkpoint:
        result["logits"] = _logit_effect(checkpoint, app, trained, rows)
    return result


def _logit_effect(checkpoint, app: np.ndarray, trained: np.ndarray, rows) -> dict[str, Any]:
    from train.checkpoints import load_checkpoint

    model, _, _ = load_checkpoint(checkpoint)
    with torch.no_grad():
        logits_app = model(torch.from_numpy(app).unsqueeze(1)).numpy()
        logits_trained = model(torch.from_numpy(trained).unsqueeze(1)).numpy()
    labels = np.array([int(row["label"]) for row in rows])
    difference = np.abs(logits_app - logits_trained)
    return {
        "checkpoint": str(checkpoint),
        "max_abs_logit_difference": round(float(difference.max()), 5),
        "median_abs_logit_difference": round(float(np.median(difference)), 5),
        "p99_abs_logit_difference": round(float(np.percentile(difference, 99)), 5),
        "auroc_app_inputs": round(float(auroc(labels, logits_app)), 4),
        "auroc_training_inputs": round(float(auroc(labels, logits_trained)), 4),
    }
