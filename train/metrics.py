"""Metrics as pure functions on arrays (no torch), tested against hand-computed values."""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)


def _rank_average(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    boundaries = np.flatnonzero(np.diff(sorted_values)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(values)]])
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return ranks


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney U), ties counted as one half.

    Returns NaN when only one class is present; raises on NaN scores, which would otherwise be
    ranked arbitrarily and silently change the result.
    """
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in shape")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN; drop or impute them before computing AUROC")
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = _rank_average(scores)
    u_statistic = ranks[labels].sum() - positives * (positives + 1) / 2.0
    return float(u_statistic / (positives * negatives))


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
    if not values:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def threshold_for_sensitivity(labels: np.ndarray, scores: np.ndarray, sensitivity: float) -> float:
    """The highest threshold whose sensitivity (score >= threshold) reaches ``sensitivity``."""
    labels = np.asarray(labels).astype(bool).ravel()
    positives = np.sort(np.asarray(scores, dtype=np.float64).ravel()[labels])[::-1]
    if positives.size == 0:
        raise ValueError("no positive example to set a sensitivity threshold on")
    needed = int(np.ceil(sensitivity * positives.size))
    return float(positives[max(needed, 1) - 1])


def youden_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """Threshold maximising sensitivity + specificity - 1 (ties: the higher threshold)."""
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    best_threshold, best_value = float(scores.max()), -1.0
    for threshold in np.unique(scores)[::-1]:
        sensitivity, specificity = sensitivity_specificity(labels, scores, threshold)
        if sensitivity + specificity - 1 > best_value:
            best_threshold, best_value = float(threshold), sensitivity + specificity - 1
    return best_threshold


def sensitivity_specificity(
    labels: np.ndarray, scores: np.ndarray, threshold: float
) -> tuple[float, float]:
    """Sensitivity and specificity of ``score >= threshold``; NaN for an absent class."""
    labels = np.asarray(labels).astype(bool).ravel()
    predicted = np.asarray(scores, dtype=np.float64).ravel() >= threshold
    positives, negatives = labels.sum(), (~labels).sum()
    sensitivity = (predicted & labels).sum() / positives if positives else float("nan")
    specificity = (~predicted & ~labels).sum() / negatives if negatives else float("nan")
    return float(sensitivity), float(specificity)


# --------------------------------------------------------------------------- validation


def _binary_labels(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    """0/1 (or boolean) labels as a boolean vector; anything else is a caller's mistake."""
    values = np.asarray(labels).ravel()
    if values.dtype != bool:
        numeric = values.astype(np.float64)
        if np.isnan(numeric).any() or not np.isin(numeric, (0.0, 1.0)).all():
            found = np.unique(numeric[~np.isin(numeric, (0.0, 1.0))])[:5]
            raise ValueError(f"{name} must be 0/1, found {found.tolist()}; binarise them first")
        values = numeric == 1.0
    return values


def _labels_and_scores(
    labels: np.ndarray, scores: np.ndarray, metric: str, scores_name: str = "scores"
) -> tuple[np.ndarray, np.ndarray]:
    labels = _binary_labels(labels)
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and {scores_name} {scores.shape} differ in shape")
    if labels.size == 0:
        raise ValueError(f"{metric} needs at least one example; got empty arrays")
    if np.isnan(scores).any():
        raise ValueError(
            f"{scores_name} contain NaN; drop or impute them before computing {metric}"
        )
    return labels, scores


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
    labels, scores = _labels_and_scores(labels, scores, "a ROC curve")
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
    labels, scores = _labels_and_scores(labels, scores, "a precision-recall curve")
    true_positives, false_positives, thresholds = _descending_counts(labels, scores)
    precision = true_positives / (true_positives + false_positives)
    recall = _ratio(true_positives, int(labels.sum()))
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thresholds[::-1]


def auprc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision: sum over thresholds of (R_n - R_{n-1}) * P_n, step-wise, no interpolation.

    scikit-learn's ``average_precision_score``. NaN when no positive is present (recall is
    undefined); 1.0 when every example is positive. Raises on NaN scores.
    """
    labels, scores = _labels_and_scores(labels, scores, "AUPRC")
    if not labels.any():
        return float("nan")
    precision, recall, _ = precision_recall_curve(labels, scores)
    return float(-np.sum(np.diff(recall) * precision[:-1]))


# --------------------------------------------------------------------------- hard predictions


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """``[[TN, FP], [FN, TP]]`` (rows: truth, columns: prediction) of 0/1 predictions."""
    labels = _binary_labels(labels)
    predictions = _binary_labels(predictions, "predictions")
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


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """The logistic function without overflow for large |logit|."""
    logits = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -logits))


def calibration_bins(
    labels: np.ndarray, probabilities: np.ndarray, bins: int = 15
) -> dict[str, np.ndarray]:
    """Per equal-width bin of ``[0, 1]``: edges, count, mean probability, fraction positive.

    Bins are closed on the left, the last one on both sides (1.0 falls in it). Empty bins have
    count 0 and NaN means.
    """
    if bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins}")
    labels, probabilities = _labels_and_scores(
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


def binary_nll(labels: np.ndarray, logits: np.ndarray) -> float:
    """Mean binary cross-entropy of ``sigmoid(logits)`` (natural log), computed from logits."""
    labels, logits = _labels_and_scores(labels, logits, "the NLL", scores_name="logits")
    return float(np.mean(np.logaddexp(0.0, logits) - labels * logits))


_TEMPERATURE_RANGE = (1e-3, 1e3)


def fit_temperature(labels: np.ndarray, logits: np.ndarray, tolerance: float = 1e-10) -> float:
    """The T > 0 minimising the binary NLL of ``sigmoid(logits / T)``.

    The NLL is convex in the inverse temperature b = 1/T, with derivative
    g(b) = mean((sigmoid(b z) - y) z), increasing in b; g = 0 is found by Newton steps kept
    inside a bracket (bisection when Newton would leave it). T is clamped to [1e-3, 1e3]: an
    optimum outside (separable data; logits so off-centre or weak that a flat 0.5 beats any
    scaling) is logged. A temperature rescales, it cannot shift: a bias from a positive-class
    weight in training survives it.
    """
    labels, logits = _labels_and_scores(labels, logits, "a temperature", scores_name="logits")
    if labels.all() or not labels.any():
        raise ValueError(
            "fitting a temperature needs both classes; with one class the NLL falls forever "
            "as T shrinks or grows. Fit it on a validation set holding both."
        )
    if not np.any(logits):
        return 1.0  # every T gives sigmoid(0) = 0.5: nothing to scale
    targets = labels.astype(np.float64)

    def gradient(inverse: float) -> float:
        return float(np.mean((sigmoid(inverse * logits) - targets) * logits))

    low, high = 1.0 / _TEMPERATURE_RANGE[1], 1.0 / _TEMPERATURE_RANGE[0]
    if gradient(low) >= 0:
        logger.warning(
            "temperature fit: the NLL keeps falling as T grows (logits off-centre or carrying "
            "little signal; a temperature cannot shift them); T clamped to %g",
            1 / low,
        )
        return 1.0 / low
    if gradient(high) <= 0:
        logger.warning("temperature fit: classes are separated; T clamped to %g", 1 / high)
        return 1.0 / high
    inverse = 1.0 if low < 1.0 < high else np.sqrt(low * high)
    for _ in range(200):
        value = gradient(inverse)
        if abs(value) < tolerance:
            break
        if value < 0:
            low = inverse
        else:
            high = inverse
        if high / low - 1 < tolerance:
            break
        probability = sigmoid(inverse * logits)
        curvature = float(np.mean(probability * (1 - probability) * logits**2))
        step = inverse - value / curvature if curvature > 0 else np.nan
        inverse = step if low < step < high else np.sqrt(low * high)
    return float(1.0 / inverse)


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Calibrated fracture probabilities ``sigmoid(logits / temperature)``."""
    if not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    return sigmoid(np.asarray(logits, dtype=np.float64) / temperature)
