"""``bench --external DIR --labels CSV --calibrate K``: does calibrating to a site carry over to
that site's other films? (docs/calibration.md)

For each of ``--calibration-folds`` seeded draws, K labelled films (stratified by label: each
class keeps its share of the labelled films) calibrate the artifact exactly as
``fracture-edge calibrate`` does (:func:`edge_app.site_calibration.fit_site_calibration`: the
temperature and both operating points); every other labelled film is then scored at the new
points (*after*) and at the card's own temperature and points (*before*). Per point the report
gives the sensitivity and specificity before and after (mean, SD, min and max over folds), and
for the doubt point the gap between the held-out sensitivity and the target it was chosen for.

The functions are pure (labels and logits in, dicts out); the bench hands them each row's
logits from its one scoring pass, so calibrating costs no extra inference.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edge_app.errors import SiteCalibrationError
from edge_app.metrics import apply_temperature, sensitivity_specificity
from edge_app.site_calibration import (
    OPERATING_POINTS,
    check_counts,
    count_labels,
    fit_site_calibration,
    sensitivity_target,
)

logger = logging.getLogger(__name__)

#: The doubt point's held-out sensitivity should land this close to its target (issue 13).
TARGET_TOLERANCE = 0.05


def calibration_folds(
    labels: Sequence[int], size: int, folds: int, seed: int = 0
) -> list[np.ndarray]:
    """``folds`` draws of ``size`` indices into ``labels`` (0/1), each class keeping its share
    (largest remainder), drawn with ``numpy.random.default_rng([seed, fold])``."""
    labels = np.asarray(labels, dtype=np.int64)
    if folds < 1:
        raise SiteCalibrationError(f"--calibration-folds must be at least 1, got {folds}")
    if not 0 < size < labels.size:
        raise SiteCalibrationError(
            f"--calibrate {size} needs between 1 and {labels.size - 1} films: the labels CSV "
            f"has {labels.size} labelled films, and some must stay out to be scored"
        )
    positives, negatives = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    exact = size * positives.size / labels.size
    fractured = int(math.floor(exact))
    if exact - fractured >= 0.5:
        fractured += 1
    fractured = min(max(fractured, 0), positives.size)
    unfractured = min(size - fractured, negatives.size)
    draws = []
    for fold in range(folds):
        rng = np.random.default_rng([seed, fold])
        chosen = np.concatenate(
            [
                rng.choice(positives, fractured, replace=False),
                rng.choice(negatives, unfractured, replace=False),
            ]
        )
        draws.append(np.sort(chosen))
    return draws


def _rates(
    labels: np.ndarray, logits: np.ndarray, temperature: float, points: Mapping[str, float]
) -> dict[str, dict[str, float | None]]:
    probabilities = apply_temperature(logits, temperature)
    result = {}
    for name in OPERATING_POINTS:
        sensitivity, specificity = sensitivity_specificity(labels, probabilities, points[name])
        result[name] = {"sensitivity": _rounded(sensitivity), "specificity": _rounded(specificity)}
    return result


def fold_result(
    labels: np.ndarray,
    logits: np.ndarray,
    calibration: np.ndarray,
    card: Mapping[str, Any],
    min_fractured: int,
    min_unfractured: int,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Calibrate on ``calibration`` (indices), score the other films before and after."""
    held_out = np.setdiff1d(np.arange(labels.size), calibration)
    fit = fit_site_calibration(
        labels[calibration].tolist(),
        logits[calibration],
        sensitivity_target(card),
        min_fractured,
        min_unfractured,
        resamples=resamples,
        seed=seed,
    )
    original = {name: float(card["operating_points"][name]) for name in OPERATING_POINTS}
    temperature = float(card.get("calibration_temperature", 1.0))
    return {
        "calibration_counts": fit.counts.to_json(),
        "held_out_counts": {
            "fractured": int(labels[held_out].sum()),
            "unfractured": int((1 - labels[held_out]).sum()),
        },
        "temperature": round(fit.temperature, 4),
        "operating_points": {k: round(v, 6) for k, v in fit.operating_points.items()},
        "in_sample": fit.achieved,
        "warnings": fit.warnings,
        "before": _rates(labels[held_out], logits[held_out], temperature, original),
        "after": _rates(labels[held_out], logits[held_out], fit.temperature, fit.operating_points),
    }


def _spread(values: Sequence[float | None]) -> dict[str, float | None]:
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "sd": None, "min": None, "max": None}
    return {
        "mean": _rounded(statistics.fmean(present)),
        "sd": _rounded(statistics.stdev(present)) if len(present) > 1 else 0.0,
        "min": _rounded(min(present)),
        "max": _rounded(max(present)),
    }


def site_calibration_table(
    labels: Sequence[int | None],
    logits: Sequence[float],
    card: Mapping[str, Any],
    size: int,
    folds: int,
    min_fractured: int,
    min_unfractured: int,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Before/after over folds for one artifact (unknown labels are left out)."""
    counts = count_labels(labels)
    known = np.asarray([label is not None for label in labels])
    truth = np.asarray([label or 0 for label in labels], dtype=np.int64)[known]
    values = np.asarray(logits, dtype=np.float64)[known]
    draws = calibration_folds(truth, size, folds, seed)
    check_counts(count_labels(truth[draws[0]].tolist()), min_fractured, min_unfractured)
    results = [
        fold_result(truth, values, draw, card, min_fractured, min_unfractured, resamples, seed)
        for draw in draws
    ]
    target = sensitivity_target(card)
    summary: dict[str, Any] = {}
    for name in OPERATING_POINTS:
        summary[name] = {
            when: {
                rate: _spread([fold[when][name][rate] for fold in results])
                for rate in ("sensitivity", "specificity")
            }
            for when in ("before", "after")
        }
    after = [fold["after"]["doubt"]["sensitivity"] for fold in results]
    before = [fold["before"]["doubt"]["sensitivity"] for fold in results]
    mean_after = summary["doubt"]["after"]["sensitivity"]["mean"]
    mean_before = summary["doubt"]["before"]["sensitivity"]["mean"]
    return {
        "calibration_films": size,
        "folds": folds,
        "seed": seed,
        "counts": counts.to_json(),
        "target_sensitivity": target,
        "tolerance": TARGET_TOLERANCE,
        "previous": {
            "calibration_temperature": float(card.get("calibration_temperature", 1.0)),
            "operating_points": {k: float(card["operating_points"][k]) for k in OPERATING_POINTS},
        },
        "summary": summary,
        "doubt_gap": {
            "before": _rounded(mean_before - target) if mean_before is not None else None,
            "after": _rounded(mean_after - target) if mean_after is not None else None,
            "folds_within_tolerance_before": _within(before, target),
            "folds_within_tolerance_after": _within(after, target),
            "within_tolerance_after": (
                mean_after is not None and abs(mean_after - target) <= TARGET_TOLERANCE
            ),
        },
        "folds_with_warnings": sum(bool(fold["warnings"]) for fold in results),
        "per_fold": results,
    }


def _within(values: Sequence[float | None], target: float) -> int:
    return sum(1 for v in values if v is not None and abs(v - target) <= TARGET_TOLERANCE + 1e-12)


def _rounded(value: float, digits: int = 4) -> float | None:
    value = float(value)
    return None if math.isnan(value) else round(value, digits)


# --------------------------------------------------------------------------- the bench's hook


def check_plan(labels: Sequence[int | None], config) -> None:
    """Refuse ``--calibrate`` before any image is scored: folds too large, or a class short."""
    truth = [label for label in labels if label is not None]
    draws = calibration_folds(truth, config.calibrate, config.calibration_folds, config.seed)
    check_counts(
        count_labels(np.asarray(truth)[draws[0]].tolist()),
        config.min_fractured,
        config.min_unfractured,
    )


def bench_site_calibration(rows: Sequence[dict], scorers: Mapping[str, Any], images, config):
    """Every scored row with a card holding both points: its table, by row id; a row that
    cannot be calibrated gets ``{"error": message}`` (the run goes on)."""
    labels = [image.label for image in images]
    tables: dict[str, Any] = {}
    for row in rows:
        scorer = scorers.get(row["id"])
        if scorer is None or row.get("logits") is None:
            continue
        card = dict(scorer.card)
        if not {"doubt", "fracture"} <= set(card.get("operating_points") or {}):
            tables[row["id"]] = {"name": row["name"], "error": "the card has no operating points"}
            continue
        card.setdefault("calibration_temperature", scorer.temperature)
        table = site_calibration_table(
            labels,
            row["logits"],
            card,
            config.calibrate,
            config.calibration_folds,
            config.min_fractured,
            config.min_unfractured,
            config.resamples,
            config.seed,
        )
        tables[row["id"]] = {"name": row["name"], **table}
        logger.info("site calibration of %s: %d folds", row["name"], config.calibration_folds)
    return tables


def _cell(spread: Mapping[str, float | None]) -> str:
    if spread["mean"] is None:
        return "n/a"
    return f"{spread['mean']:.3f} ± {spread['sd']:.3f} ({spread['min']:.3f}–{spread['max']:.3f})"


def markdown_lines(section: Mapping[str, Any] | None) -> list[str]:
    """report.md's *Site calibration* section."""
    if not section:
        return []
    lines = ["## Site calibration (before → after)", ""]
    for table in section.values():
        if "error" in table:
            lines += [f"- {table['name']}: not calibrated ({table['error']})", ""]
            continue
        counts, gap = table["counts"], table["doubt_gap"]
        lines += [
            f"**{table['name']}**: {table['folds']} folds; each calibrates on "
            f"{table['calibration_films']} of the {counts['fractured'] + counts['unfractured']} "
            f"labelled films ({counts['fractured']} fractured; stratified, seed "
            f"{table['seed']}) and scores the other films at the card's points (before) and "
            f"at the refitted ones (after). Mean ± SD (min–max) over folds.",
            "",
            "| point | rate | before | after |",
            "| --- | --- | --- | --- |",
        ]
        for name in OPERATING_POINTS:
            for rate in ("sensitivity", "specificity"):
                entry = table["summary"][name]
                lines.append(
                    f"| {name} | {rate} | {_cell(entry['before'][rate])} | "
                    f"{_cell(entry['after'][rate])} |"
                )
        lines += [
            "",
            f"Doubt point, target sensitivity {table['target_sensitivity']}: mean gap "
            f"{gap['before']:+.3f} before, {gap['after']:+.3f} after; folds within "
            f"±{table['tolerance']}: {gap['folds_within_tolerance_before']} before, "
            f"{gap['folds_within_tolerance_after']} after, of {table['folds']}. Folds with a "
            f"calibration warning: {table['folds_with_warnings']}.",
            "",
        ]
    return lines


def summary_line(table: Mapping[str, Any]) -> str:
    """One line for the terminal."""
    if "error" in table:
        return f"{table['name'][:50]:<50} site calibration: {table['error']}"
    doubt = table["summary"]["doubt"]
    return (
        f"{table['name'][:50]:<50} site calibration ({table['calibration_films']} films, "
        f"{table['folds']} folds): doubt sensitivity on the other films "
        f"{doubt['before']['sensitivity']['mean']} -> {doubt['after']['sensitivity']['mean']} "
        f"(target {table['target_sensitivity']}), specificity "
        f"{doubt['before']['specificity']['mean']} -> {doubt['after']['specificity']['mean']}"
    )
