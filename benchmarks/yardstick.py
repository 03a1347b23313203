"""The yardstick for other hospitals, inside ``fracture-edge bench`` (docs/benchmarks.md).

- **Shift robustness** (``--shifts``): the measured images (test, or an external set's
  labelled rows) are scored again, once clean and once under each acquisition shift of
  :mod:`benchmarks.shifts`, applied to the loaded radiograph before the shared
  :func:`edge_app.preprocess.preprocess`. Per artifact: the clean AUROC, the AUROC under each
  shift, its drop, and the mean drop, each drop with a paired bootstrap 95 % CI; and the
  sensitivity and specificity at the operating points chosen on clean validation films, since
  a shift that keeps the ranking can still move every score past a fixed threshold.
- **Shortcut check**: the test AUROC on the films without surgical hardware (FracAtlas
  ``hardware`` flag 0), next to the overall AUROC; 97 of FracAtlas's 99 films with hardware
  are fractured.

The table functions are pure (arrays in, dicts out); :func:`score_shifts` does the reading.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks.shifts import DEFAULT_SHIFT_SEED, SHIFT_NAMES, SHIFTS, apply_shift
from edge_app.preprocess import preprocess
from edge_app.radiograph import load_radiograph
from train.metrics import apply_temperature, auroc, bootstrap_auroc_ci, sensitivity_specificity

logger = logging.getLogger(__name__)

CLEAN = "clean"


def _rounded(value: float, digits: int = 4) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), digits)


# --------------------------------------------------------------------------- shortcut check


def subset_auroc(
    labels: np.ndarray, scores: np.ndarray, keep: np.ndarray, resamples: int, seed: int
) -> dict[str, Any]:
    """AUROC with a percentile-bootstrap 95 % CI on the rows where ``keep`` is true."""
    labels = np.asarray(labels).astype(bool)[keep]
    scores = np.asarray(scores, dtype=np.float64)[keep]
    both = 0 < labels.sum() < labels.size
    interval = bootstrap_auroc_ci(labels, scores, resamples, seed) if both else (None, None)
    return {
        "images": int(labels.size),
        "fractured": int(labels.sum()),
        "auroc": _rounded(auroc(labels, scores)) if both else None,
        "auroc_ci95": [_rounded(value) if value is not None else None for value in interval],
    }


def hardware_free_auroc(
    labels: np.ndarray, scores: np.ndarray, hardware: np.ndarray, resamples: int, seed: int
) -> dict[str, Any]:
    """The AUROC on the films whose hardware flag is "no" (``subgroups_from_fracatlas``)."""
    return subset_auroc(labels, scores, np.asarray(hardware) == "no", resamples, seed)


# --------------------------------------------------------------------------- shift table


def operating_points_under(
    labels: np.ndarray, logits: np.ndarray, temperature: float, thresholds: dict[str, float]
) -> dict[str, dict[str, float | None]]:
    """Sensitivity and specificity of ``sigmoid(logit / T) >= threshold`` per operating point."""
    probabilities = apply_temperature(np.asarray(logits, dtype=np.float64), temperature)
    points = {}
    for name, threshold in thresholds.items():
        sensitivity, specificity = sensitivity_specificity(labels, probabilities, threshold)
        points[name] = {"sensitivity": _rounded(sensitivity), "specificity": _rounded(specificity)}
    return points


def shift_table(
    labels: np.ndarray,
    logits: dict[str, np.ndarray],
    resamples: int = 2000,
    seed: int = 0,
    temperature: float = 1.0,
    thresholds: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Clean AUROC, each shift's AUROC and drop (clean − shifted), and the mean drop.

    ``logits`` maps ``"clean"`` and every shift name to one score per image. AUROCs are rounded
    to 4 digits first and the drops taken from the rounded values, so the table adds up as
    printed. The CIs are paired percentile-bootstrap intervals: each resample draws images once
    and scores them clean and shifted. With ``thresholds`` (probabilities after
    ``temperature``), each variant also gets sensitivity and specificity at each of them.
    """
    labels = np.asarray(labels).astype(bool)
    names = [name for name in logits if name != CLEAN]
    clean = _rounded(auroc(labels, logits[CLEAN]))

    def points(values: np.ndarray) -> dict[str, Any]:
        return operating_points_under(labels, values, temperature, thresholds or {})

    shifts = {}
    for name in names:
        value = _rounded(auroc(labels, logits[name]))
        drop = None if clean is None or value is None else round(clean - value, 4)
        shifts[name] = {"auroc": value, "drop": drop, "operating_points": points(logits[name])}
    drops = [entry["drop"] for entry in shifts.values()]
    mean_drop = round(float(np.mean(drops)), 4) if drops and None not in drops else None
    intervals = paired_drop_ci(labels, logits, names, resamples, seed)
    for name in names:
        shifts[name]["drop_ci95"] = intervals[name]
    return {
        "images": int(labels.size),
        "fractured": int(labels.sum()),
        "clean_auroc": clean,
        "clean_operating_points": points(logits[CLEAN]),
        "temperature": temperature,
        "shifts": shifts,
        "mean_drop": mean_drop,
        "mean_drop_ci95": intervals["mean"],
    }


def paired_drop_ci(
    labels: np.ndarray,
    logits: dict[str, np.ndarray],
    names: Sequence[str],
    resamples: int,
    seed: int,
    level: float = 0.95,
) -> dict[str, list[float | None]]:
    """Percentile CIs of each shift's AUROC drop and of the mean drop, images resampled once
    per draw for the clean and every shifted score (paired)."""
    rng = np.random.default_rng(seed)
    draws: list[list[float]] = []
    for _ in range(resamples if names else 0):
        index = rng.integers(0, labels.size, labels.size)
        truth = labels[index]
        if truth.all() or not truth.any():
            continue
        clean = auroc(truth, logits[CLEAN][index])
        draws.append([clean - auroc(truth, logits[name][index]) for name in names])
    if not draws:
        return {name: [None, None] for name in [*names, "mean"]}
    values = np.asarray(draws)
    values = np.column_stack([values, values.mean(axis=1)])
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail], axis=0)
    return {name: [_rounded(low[i]), _rounded(high[i])] for i, name in enumerate([*names, "mean"])}


def shift_definitions(seed: int = DEFAULT_SHIFT_SEED) -> dict[str, Any]:
    """What report.json records about the shifts: the seed and each shift's severity."""
    return {
        "seed": seed,
        "shifts": {name: SHIFTS[name].severity for name in SHIFT_NAMES},
        "seeding": "numpy default_rng([seed, crc32(shift), crc32(file name)]) per film and shift",
    }


# --------------------------------------------------------------------------- scoring


def measured_indices(images: Sequence[Any]) -> list[int]:
    """The images accuracy is measured on: test rows, or an external set's labelled rows."""
    return [
        index
        for index, image in enumerate(images)
        if image.label is not None and image.split in ("test", "external")
    ]


def score_shifts(
    images: Sequence[Any],
    scorers: dict[str, Any],
    seed: int = DEFAULT_SHIFT_SEED,
    names: Sequence[str] = SHIFT_NAMES,
) -> dict[str, dict[str, np.ndarray]]:
    """Row id → {"clean" and each shift → one logit per image}.

    Each film is read once; every variant of it goes through the shared preprocessing once per
    card preprocessing, and each scorer scores the variants of one film as one batch.
    """
    variants = [CLEAN, *names]
    configs = {scorer.config for scorer in scorers.values()}
    logits = {row_id: {name: [] for name in variants} for row_id in scorers}
    for count, image in enumerate(images, start=1):
        pixels = load_radiograph(image.path).pixels
        shifted = [pixels] + [apply_shift(name, pixels, seed, image.file) for name in names]
        inputs = {
            config: np.stack([preprocess(variant, config)[0] for variant in shifted])
            for config in configs
        }
        for row_id, scorer in scorers.items():
            values, _ = scorer.score(inputs[scorer.config])
            for name, value in zip(variants, np.asarray(values).ravel(), strict=True):
                logits[row_id][name].append(float(value))
        if count % 50 == 0 or count == len(images):
            logger.info("shifts: scored %d of %d images", count, len(images))
    return {
        row_id: {name: np.asarray(values) for name, values in by_name.items()}
        for row_id, by_name in logits.items()
    }
