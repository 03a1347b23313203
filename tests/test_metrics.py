import math

import numpy as np
import pytest

from train.metrics import auroc


def test_auroc_perfect_and_inverted():
    labels = np.array([0, 0, 1, 1])
    assert auroc(labels, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert auroc(labels, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0


def test_auroc_hand_computed_with_a_tie():
    # Pairs (positive, negative): (0.4 vs 0.1) win, (0.4 vs 0.4) tie, (0.8 vs both) win,
    # (0.3 vs 0.1) win, (0.3 vs 0.4) loss -> (4 + 0.5) / 6.
    labels = np.array([0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.4, 0.4, 0.8, 0.3])
    assert auroc(labels, scores) == pytest.approx(4.5 / 6)


def test_auroc_single_class_is_nan():
    assert math.isnan(auroc(np.ones(4), np.arange(4.0)))


def test_auroc_rejects_nan_scores_and_shape_mismatch():
    with pytest.raises(ValueError, match="NaN"):
        auroc(np.array([0, 1]), np.array([0.2, np.nan]))
    with pytest.raises(ValueError, match="shape"):
        auroc(np.array([0, 1, 1]), np.array([0.2, 0.3]))
