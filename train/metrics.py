"""Metrics as pure functions on arrays (no torch), tested against hand-computed values.

The ones the device needs too (AUROC, sensitivity/specificity, the two thresholds and their
selector, the temperature fit) live in :mod:`edge_app.metrics` and are re-exported here: one
implementation for training, evaluation, the benchmarks and site calibration.
"""

from __future__ import annotations

import numpy as np

from edge_app.metrics import (
    apply_temperature,
    auroc,
    binary_labels,
    binary_nll,
    bootstrap_proportion_ci,
    choose_operating_points,
    fit_temperature,
    labels_and_scores,
    sensitivity_specificity,
    sigmoid,
    threshold_for_sensitivity,
    youden_threshold,
)

__all__ = [
    "apply_temperature",
    "auprc",
    "auroc",
    "balanced_accuracy",
    "binary_nll",
    "bootstrap_auroc_ci",
    "bootstrap_proportion_ci",
    "calibration_bins",
    "choose_operating_points",
    "cohen_kappa",
    "confusion_matrix",
    "expected_calibration_error",
    "fit_temperature",
    "group_bootstrap_auroc_ci",
    "group_indices",
    "precision_recall_curve",
    "roc_curve",
    "sensitivity_specificity",
    "sigmoid",
    "threshold_for_sensitivity",
    "weighted_auroc",
    "youden_threshold",
]


def bootstrap_auroc_ci(
    labels: np.ndarray,
    scores: np.ndarray,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the AUROC (resampling images)."""
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        index = rng.integers(0, len(labels), len(labels))
        value = auroc(labels[index], scores[index])
        if np.isfinite(value):
            values.append(value)
    return _percentile_interval(values, level)


def _percentile_interval(values: list[float], level: float) -> tuple[float, float]:
    """The central ``level`` interval of bootstrap values; NaN when there are none."""
    if not values:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def group_indices(groups) -> np.ndarray:
    """Each item's group as 0..G-1, numbered in order of first appearance (so one-item groups
    number the items as they come)."""
    _, first, inverse = np.unique(np.asarray(groups), return_index=True, return_inverse=True)
    order = np.empty(first.size, dtype=np.int64)
    order[np.argsort(first, kind="mergesort")] = np.arange(first.size)
    return order[inverse.ravel()]


def weighted_auroc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> float:
    """The AUROC of a sample holding item i ``weights[i]`` times (ties count one half), without
    building the sample. NaN when one class has no weight."""
    labels = np.asarray(labels).astype(bool).ravel()
    weights = np.asarray(weights, dtype=np.float64).ravel()
    values, value_index = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True)
    value_index = value_index.ravel()
    positive = np.bincount(value_index[labels], weights[labels], values.size)
    negative = np.bincount(value_index[~labels], weights[~labels], values.size)
    total_positive, total_negative = positive.sum(), negative.sum()
    if total_positive == 0 or total_negative == 0:
        return float("nan")
    below = np.cumsum(negative) - negative
    return float(positive @ (below + 0.5 * negative) / (total_positive * total_negative))


def group_bootstrap_auroc_ci(
    labels: np.ndarray,
    scores: np.ndarray,
    groups,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the AUROC, resampling whole groups with replacement.

    Films that are not independent (augmented copies of one picture, several films of one
    patient) share a group: each resample draws as many groups as there are and keeps every
    film of each drawn group. With one film per group it draws exactly what
    :func:`bootstrap_auroc_ci` draws for the same seed; a set of k identical copies per group
    gives the interval of the single copies (a film bootstrap would narrow it by about √k).
    """
    labels = binary_labels(labels)
    scores = np.asarray(scores, dtype=np.float64).ravel()
    group_of = group_indices(groups)
    if not labels.shape == scores.shape == group_of.shape:
        raise ValueError(
            f"labels {labels.shape}, scores {scores.shape} and groups {group_of.shape} differ "
            "in shape"
        )
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN; drop or impute them before computing AUROC")
    if group_of.size == 0:
        return float("nan"), float("nan")
    count = int(group_of.max()) + 1
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        drawn = np.bincount(rng.integers(0, count, count), minlength=count)
        value = weighted_auroc(labels, scores, drawn[group_of])
        if np.isfinite(value):
            values.append(value)
    return _percentile_interval(values, level)


def _descending_counts(
    labels: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True and false positives of ``score >= t`` for each distinct ``t``, highest ``t`` first.

    Tied scores enter together, so a tie is never broken in anyone's favour.
    """
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_labels = scores[order], labels[order]
    last_of_each_value = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1]
    true_positives = np.cumsum(sorted_labels)[last_of_each_value]
    false_positives = (last_of_each_value + 1) - true_positives
    return true_positives, false_positives, sorted_scores[last_of_each_value]


def _ratio(numerator: np.ndarray | float, denominator: float) -> np.ndarray | float:
    if denominator == 0:
        return np.full_like(np.asarray(numerator, dtype=np.float64), np.nan)
    return np.asarray(numerator, dtype=np.float64) / denominator


# --------------------------------------------------------------------------- curves


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` of ``score >= threshold``, thresholds descending from +inf.

    Every distinct score is a threshold (scikit-learn's ``drop_intermediate=False``); the first
    point is (0, 0) at +inf. A rate whose class is absent is NaN.
    """
    labels, scores = labels_and_scores(labels, scores, "a ROC curve")
    true_positives, false_positives, thresholds = _descending_counts(labels, scores)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    true_positive_rate = _ratio(np.r_[0, true_positives], positives)
    false_positive_rate = _ratio(np.r_[0, false_positives], negatives)
    return false_positive_rate, true_positive_rate, np.r_[np.inf, thresholds]


def precision_recall_curve(
    labels: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(precision, recall, thresholds)`` as scikit-learn returns them.

    Thresholds ascend over the distinct scores; precision and recall hold one more element, the
    end point (precision 1, recall 0). Recall is NaN when no positive is present.
    """
    labels, scores = labels_and_scores(labels, scores, "a precision-recall curve")
    true_positives, false_positives, thresholds = _descending_counts(labels, scores)
    precision = true_positives / (true_positives + false_positives)
    recall = _ratio(true_positives, int(labels.sum()))
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thresholds[::-1]


def auprc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision: sum over thresholds of (R_n - R_{n-1}) * P_n, step-wise, no interpolation.

    scikit-learn's ``average_precision_score``. NaN when no positive is present (recall is
    undefined); 1.0 when every example is positive. Raises on NaN scores.
    """
    labels, scores = labels_and_scores(labels, scores, "AUPRC")
    if not labels.any():
        return float("nan")
    precision, recall, _ = precision_recall_curve(labels, scores)
    return float(-np.sum(np.diff(recall) * precision[:-1]))


# --------------------------------------------------------------------------- hard predictions


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """``[[TN, FP], [FN, TP]]`` (rows: truth, columns: prediction) of 0/1 predictions."""
    labels = binary_labels(labels)
    predictions = binary_labels(predictions, "predictions")
    if labels.shape != predictions.shape:
        raise ValueError(
            f"labels {labels.shape} and predictions {predictions.shape} differ in shape"
        )
    return np.array(
        [
            [int((~labels & ~predictions).sum()), int((~labels & predictions).sum())],
            [int((labels & ~predictions).sum()), int((labels & predictions).sum())],
        ],
        dtype=np.int64,
    )


def cohen_kappa(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Cohen's kappa between truth and prediction: (p_o - p_e) / (1 - p_e).

    NaN when chance agreement is already 1 (truth and prediction are one and the same constant),
    and for empty input.
    """
    matrix = confusion_matrix(labels, predictions).astype(np.float64)
    total = matrix.sum()
    if total == 0:
        return float("nan")
    observed = np.trace(matrix) / total
    expected = float(matrix.sum(axis=1) @ matrix.sum(axis=0)) / total**2
    if expected == 1.0:
        return float("nan")
    return float((observed - expected) / (1.0 - expected))


def balanced_accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    """(sensitivity + specificity) / 2; NaN when a class is absent from ``labels``.

    (scikit-learn would average the recall of the classes present, with a warning; a one-class
    "balanced" accuracy is the recall of that class alone and is better reported as such.)
    """
    (true_negatives, false_positives), (false_negatives, true_positives) = confusion_matrix(
        labels, predictions
    )
    positives, negatives = true_positives + false_negatives, true_negatives + false_positives
    if positives == 0 or negatives == 0:
        return float("nan")
    return float((true_positives / positives + true_negatives / negatives) / 2)


# --------------------------------------------------------------------------- calibration


def calibration_bins(
    labels: np.ndarray, probabilities: np.ndarray, bins: int = 15
) -> dict[str, np.ndarray]:
    """Per equal-width bin of ``[0, 1]``: edges, count, mean probability, fraction positive.

    Bins are closed on the left, the last one on both sides (1.0 falls in it). Empty bins have
    count 0 and NaN means.
    """
    if bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins}")
    labels, probabilities = labels_and_scores(
        labels, probabilities, "calibration", scores_name="probabilities"
    )
    if probabilities.min() < 0 or probabilities.max() > 1:
        raise ValueError(
            "probabilities must lie in [0, 1]; pass sigmoid(logits), not the logits themselves"
        )
    index = np.minimum((probabilities * bins).astype(np.int64), bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_probability = np.bincount(index, probabilities, bins) / counts
        fraction_positive = np.bincount(index, labels.astype(np.float64), bins) / counts
    return {
        "edges": np.linspace(0.0, 1.0, bins + 1),
        "count": counts,
        "mean_probability": mean_probability,
        "fraction_positive": fraction_positive,
    }


def expected_calibration_error(
    labels: np.ndarray, probabilities: np.ndarray, bins: int = 15
) -> float:
    """Sum over equal-width bins of (n_bin / n) * |mean(label) - mean(probability)|.

    Binary calibration of the positive-class probability (not the top-label confidence).
    """
    table = calibration_bins(labels, probabilities, bins)
    filled = table["count"] > 0
    gaps = np.abs(table["fraction_positive"][filled] - table["mean_probability"][filled])
    return float(np.sum(table["count"][filled] * gaps) / table["count"].sum())
