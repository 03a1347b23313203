"""Accuracy of one artifact's per-image logits: on a FracAtlas split (temperature and operating
points chosen on validation, measured on test) or on an external folder (the card's own
temperature and thresholds), and a GPU run's logits column read in image order."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks.specs import ArtifactSpec, BenchError
from train.split_scoring import SplitImage


def split_accuracy(
    images: Sequence[SplitImage],
    logits: np.ndarray,
    subgroups: dict[str, np.ndarray] | None,
    resamples: int,
    seed: int,
) -> dict[str, Any]:
    """Temperature and operating points chosen on val, everything measured on test; with a
    ``hardware`` subgroup, also the AUROC on the test films without surgical hardware."""
    from train.evaluate import evaluate_scores

    labels = np.asarray([image.label for image in images], dtype=np.int64)
    val = np.asarray([image.split == "val" for image in images])
    test = np.asarray([image.split == "test" for image in images])
    report = evaluate_scores(
        labels[val],
        logits[val],
        labels[test],
        logits[test],
        subgroups,
        resamples=resamples,
        seed=seed,
    )
    points = {
        name: {"probability": point["probability"], **point["test"]}
        for name, point in report["operating_points"].items()
    }
    hardware_free = None
    if subgroups and "hardware" in subgroups:
        from benchmarks.yardstick import hardware_free_auroc

        hardware_free = hardware_free_auroc(
            labels[test], logits[test], subgroups["hardware"], resamples, seed
        )
    return {
        "measured_on": "test",
        "thresholds_from": "validation split (temperature fitted there too)",
        "counts": report["counts"]["test"],
        "auroc": report["test"]["auroc"],
        "auroc_ci95": report["test"]["auroc_ci95"],
        "auprc": report["test"]["auprc"],
        "hardware_free": hardware_free,
        "temperature": report["calibration"]["temperature"],
        "operating_points": points,
        "subgroups": report.get("subgroups"),
        "flag_rate": None,
        "evaluation": report,
    }


def card_accuracy(
    labels: Sequence[int | None],
    logits: np.ndarray,
    temperature: float,
    thresholds: dict[str, float],
    resamples: int,
    seed: int,
) -> dict[str, Any]:
    """External data: the card's own temperature and thresholds; AUROC on labelled rows only;
    rows of unknown label give the share called fracture / uncertain / no fracture."""
    from train.metrics import (
        apply_temperature,
        auprc,
        auroc,
        bootstrap_auroc_ci,
        cohen_kappa,
        confusion_matrix,
        sensitivity_specificity,
    )

    known = np.asarray([label is not None for label in labels])
    truth = np.asarray([label or 0 for label in labels], dtype=np.int64)[known]
    probabilities = apply_temperature(np.asarray(logits, dtype=np.float64), temperature)
    scores = np.asarray(logits, dtype=np.float64)[known]
    both_classes = known.any() and 0 < truth.sum() < truth.size
    points = {}
    for name, threshold in thresholds.items():
        predicted = probabilities[known] >= threshold
        sensitivity, specificity = sensitivity_specificity(truth, probabilities[known], threshold)
        points[name] = {
            "probability": float(threshold),
            "sensitivity": _rounded(sensitivity),
            "specificity": _rounded(specificity),
            "cohen_kappa": _rounded(cohen_kappa(truth, predicted)) if both_classes else None,
            "confusion_matrix": confusion_matrix(truth, predicted).tolist(),
        }
    return {
        "measured_on": "labelled external rows",
        "thresholds_from": "the artifact's own model card (no validation split here)",
        "counts": {"images": int(known.sum()), "fractured": int(truth.sum())},
        "auroc": _rounded(auroc(truth, scores)) if both_classes else None,
        "auroc_ci95": (
            [_rounded(v) for v in bootstrap_auroc_ci(truth, scores, resamples, seed)]
            if both_classes
            else [None, None]
        ),
        "auprc": _rounded(auprc(truth, scores)) if both_classes else None,
        "hardware_free": None,
        "temperature": temperature,
        "operating_points": points,
        "subgroups": None,
        "flag_rate": flag_rate(probabilities[~known], thresholds),
        "evaluation": None,
    }


def flag_rate(probabilities: np.ndarray, thresholds: dict[str, float]) -> dict[str, Any]:
    """Share of images called fracture / uncertain / no fracture at the card thresholds."""
    count = int(len(probabilities))
    if not count or not {"doubt", "fracture"} <= set(thresholds):
        return {"images": count, "fracture": None, "uncertain": None, "no_fracture": None}
    fracture = probabilities >= thresholds["fracture"]
    uncertain = ~fracture & (probabilities >= thresholds["doubt"])
    return {
        "images": count,
        "fracture": round(float(fracture.mean()), 4),
        "uncertain": round(float(uncertain.mean()), 4),
        "no_fracture": round(float((~fracture & ~uncertain).mean()), 4),
    }


def _rounded(value: float, digits: int = 4) -> float | None:
    value = float(value)
    return None if math.isnan(value) else round(value, digits)


def logits_of_images(spec: ArtifactSpec, images: Sequence[SplitImage]) -> np.ndarray:
    """A logits column in image order; every image must be in the CSV with the same label."""
    from train.evaluate import load_logits_csv

    rows, columns = load_logits_csv(spec.target)
    if spec.column not in columns:
        raise BenchError(f"{spec.text}: no column {spec.column!r}; columns: {sorted(columns)}")
    by_file = {
        row.file: (row.label, value) for row, value in zip(rows, columns[spec.column], strict=True)
    }
    missing = [image.file for image in images if image.file not in by_file]
    if missing:
        raise BenchError(
            f"{spec.text}: {len(missing)} images are not in the CSV, e.g. {missing[:5]}"
        )
    wrong = [image.file for image in images if by_file[image.file][0] != image.label]
    if wrong:
        raise BenchError(f"{spec.text}: labels differ from the split for {wrong[:5]}")
    values = np.asarray([by_file[image.file][1] for image in images], dtype=np.float64)
    if np.isnan(values).any():
        raise BenchError(f"{spec.text}: {int(np.isnan(values).sum())} images have no logit")
    return values
