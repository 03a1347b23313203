"""The metrics the device needs, as pure functions on numpy arrays (no torch, no scipy).

Site calibration (:mod:`edge_app.site_calibration`) runs where the app runs, so the temperature
fit and the operating-point selector live here; :mod:`train.metrics` re-exports them, so there
is one implementation for training, evaluation, the benchmarks and the device.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- validation


def binary_labels(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    """0/1 (or boolean) labels as a boolean vector; anything else is a caller's mistake."""
    values = np.asarray(labels).ravel()
    if values.dtype != bool:
        numeric = values.astype(np.float64)
        if np.isnan(numeric).any() or not np.isin(numeric, (0.0, 1.0)).all():
            found = np.unique(numeric[~np.isin(numeric, (0.0, 1.0))])[:5]
            raise ValueError(f"{name} must be 0/1, found {found.tolist()}; binarise them first")
        values = numeric == 1.0
    return values


def labels_and_scores(
    labels: np.ndarray, scores: np.ndarray, metric: str, scores_name: str = "scores"
) -> tuple[np.ndarray, np.ndarray]:
    labels = binary_labels(labels)
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


# --------------------------------------------------------------------------- ranking


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


# --------------------------------------------------------------------------- thresholds


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


def choose_operating_points(
    labels: np.ndarray, probabilities: np.ndarray, sensitivity_target: float
) -> dict[str, float]:
    """The ``doubt`` and ``fracture`` thresholds (fracture probabilities) chosen on ``labels``.

    ``doubt``: the highest threshold reaching ``sensitivity_target``; ``fracture``: Youden's J.
    The one selector: training and export choose them on validation films, site calibration on
    a site's labelled films.
    """
    return {
        "doubt": threshold_for_sensitivity(labels, probabilities, sensitivity_target),
        "fracture": youden_threshold(labels, probabilities),
    }


# --------------------------------------------------------------------------- calibration


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """The logistic function without overflow for large |logit|."""
    logits = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -logits))


def binary_nll(labels: np.ndarray, logits: np.ndarray) -> float:
    """Mean binary cross-entropy of ``sigmoid(logits)`` (natural log), computed from logits."""
    labels, logits = labels_and_scores(labels, logits, "the NLL", scores_name="logits")
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
    labels, logits = labels_and_scores(labels, logits, "a temperature", scores_name="logits")
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


# --------------------------------------------------------------------------- uncertainty


def bootstrap_proportion_ci(
    successes: np.ndarray, resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of a proportion (resampling the given trials).

    Sensitivity at a fixed threshold: pass ``probability >= threshold`` of the fractured films
    alone, so each resample keeps their count (the films were chosen by label). NaN, NaN when
    there is no trial.
    """
    successes = np.asarray(successes, dtype=bool).ravel()
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if successes.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    index = rng.integers(0, successes.size, (resamples, successes.size))
    proportions = successes[index].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(proportions, [tail, 100 - tail])
    return float(low), float(high)
