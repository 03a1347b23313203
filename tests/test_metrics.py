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


def test_sensitivity_specificity_hand_computed():
    from train.metrics import sensitivity_specificity

    labels = np.array([1, 1, 1, 0, 0, 0, 0])
    scores = np.array([0.9, 0.6, 0.2, 0.7, 0.3, 0.1, 0.0])
    # threshold 0.5: TP 2 of 3, TN 3 of 4 (0.7 is a false positive)
    assert sensitivity_specificity(labels, scores, 0.5) == pytest.approx((2 / 3, 3 / 4))


def test_threshold_for_sensitivity_and_youden():
    from train.metrics import threshold_for_sensitivity, youden_threshold

    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.4, 0.2, 0.5, 0.3, 0.1, 0.05])
    assert threshold_for_sensitivity(labels, scores, 0.75) == pytest.approx(0.4)
    assert threshold_for_sensitivity(labels, scores, 1.0) == pytest.approx(0.2)
    # threshold 0.8: sens 0.5, spec 1 -> J 0.5; 0.4: sens .75 spec .75 -> .5; 0.2: 1, .5 -> .5
    # the tie goes to the highest threshold.
    assert youden_threshold(labels, scores) == pytest.approx(0.8)


def test_bootstrap_ci_brackets_the_point_estimate():
    from train.metrics import bootstrap_auroc_ci

    rng = np.random.default_rng(0)
    labels = rng.random(400) < 0.2
    scores = labels * 1.0 + rng.normal(0, 1, 400)
    low, high = bootstrap_auroc_ci(labels, scores, resamples=300)
    point = auroc(labels, scores)
    assert low < point < high and high - low < 0.2
