"""Linear probes on frozen features: the LP of LP-FT, and the frozen multi-scale teacher.

A probe is an L2-regularised logistic regression on standardised features with balanced class
weights, fitted by L-BFGS (torch, float64). Its strength ``l2`` is chosen on validation AUROC.

Frozen ImageNet features transfer to other hospitals' films better than today's fine-tuned
weights (shared/notes/transfer-probe.md), which makes two uses:

- :func:`fit_head` initialises a model's fracture head from its own frozen GAP features before
  fine-tuning (LP-FT: the fine-tuning then starts from a head that already fits, and distorts
  the features less);
- :func:`probe_teacher` concatenates pooled features of several backbones and input sizes
  (e.g. Lite0 at 224/320/448 and Lite2 at 320, each read from the original films through the
  app's preprocessing) into a teacher whose per-image logits a student distils. Its logits on
  training films are *cross-fitted* (each fold scored by a probe fitted on the other folds), so a
  student never distils a teacher that has seen that film's label.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge_app._optional import require
from train.metrics import auroc, fit_temperature

torch = require("torch", "fit linear probes")
logger = logging.getLogger(__name__)

L2_GRID = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)


@dataclass
class Probe:
    """``logit = ((x - mean) / scale) · weight + bias``."""

    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray
    bias: float
    l2: float
    temperature: float = 1.0  # already divided out of weight and bias

    def logits(self, features: np.ndarray) -> np.ndarray:
        standardised = (np.asarray(features, np.float64) - self.mean) / self.scale
        return standardised @ self.weight + self.bias

    def as_linear(self) -> tuple[np.ndarray, float]:
        """The same map on raw features: (weight, bias) of ``x · weight + bias``."""
        weight = self.weight / self.scale
        return weight, float(self.bias - (self.mean * weight).sum())


def fit_probe(features: np.ndarray, labels: np.ndarray, l2: float, iterations: int = 200) -> Probe:
    """Balanced-class logistic regression with an L2 penalty ``l2`` on standardised features."""
    features = np.asarray(features, np.float64)
    labels = np.asarray(labels, np.float64)
    if labels.min() == labels.max():
        raise ValueError("a probe needs both classes among its training films")
    mean = features.mean(0)
    scale = features.std(0) + 1e-6
    x = torch.from_numpy((features - mean) / scale)
    y = torch.from_numpy(labels)
    positives = y.sum()
    weights = torch.where(y > 0, len(y) / (2 * positives), len(y) / (2 * (len(y) - positives)))
    weight = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS(
        [weight, bias], max_iter=iterations, line_search_fn="strong_wolfe", tolerance_grad=1e-9
    )

    def closure():
        optimiser.zero_grad()
        loss = (
            torch.nn.functional.binary_cross_entropy_with_logits(
                x @ weight + bias, y, weight=weights
            )
            + 0.5 * l2 * (weight**2).sum()
        )
        loss.backward()
        return loss

    optimiser.step(closure)
    return Probe(mean, scale, weight.detach().numpy(), float(bias.detach()), l2)


def choose_probe(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    val_features: np.ndarray,
    val_labels: np.ndarray,
    grid: Sequence[float] = L2_GRID,
) -> tuple[Probe, dict[float, float]]:
    """The probe whose ``l2`` gives the best validation AUROC, and every grid point's AUROC."""
    scores = {}
    best: Probe | None = None
    for l2 in grid:
        probe = fit_probe(train_features, train_labels, l2)
        scores[l2] = float(auroc(val_labels, probe.logits(val_features)))
        if best is None or scores[l2] > scores[best.l2]:
            best = probe
    assert best is not None
    logger.info("probe l2 %s: validation AUROC %.4f", best.l2, scores[best.l2])
    return best, scores


def cross_fitted_logits(
    features: np.ndarray, labels: np.ndarray, folds: np.ndarray, l2: float
) -> np.ndarray:
    """Each film's logit from a probe fitted on the other folds (out-of-fold)."""
    logits = np.full(len(labels), np.nan)
    for fold in np.unique(folds):
        held = folds == fold
        probe = fit_probe(features[~held], labels[~held], l2)
        logits[held] = probe.logits(features[held])
    return logits


def calibrated(probe: Probe, val_features: np.ndarray, val_labels: np.ndarray) -> Probe:
    """The same probe with its logits divided by the temperature fitted on validation.

    The AUROC that chooses ``l2`` ignores the logits' scale, and a weakly regularised probe
    separates its training films with logits in the tens: a head started there, or a teacher
    distilled from there, would carry that overconfidence into the first steps.
    """
    temperature = fit_temperature(val_labels, probe.logits(val_features))
    return Probe(
        probe.mean,
        probe.scale,
        probe.weight / temperature,
        probe.bias / temperature,
        probe.l2,
        temperature,
    )


def fit_head(
    model,
    features: np.ndarray,
    labels: np.ndarray,
    val_features,
    val_labels,
    grid: Sequence[float] = L2_GRID,
) -> dict:
    """LP: set ``model.fracture_head`` to the best probe on its frozen GAP features, calibrated
    on validation."""
    probe, scores = choose_probe(features, labels, val_features, val_labels, grid)
    probe = calibrated(probe, val_features, val_labels)
    weight, bias = probe.as_linear()
    with torch.no_grad():
        head = model.fracture_head
        head.weight.copy_(torch.from_numpy(weight).to(head.weight).view_as(head.weight))
        head.bias.fill_(bias)
    return {
        "l2": probe.l2,
        "val_auroc": round(scores[probe.l2], 4),
        "temperature": round(probe.temperature, 4),
    }
