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


def test_weighted_auroc_is_the_auroc_of_the_repeated_sample():
    from train.metrics import weighted_auroc

    labels = np.array([0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.4, 0.4, 0.8, 0.3])  # a tie across the classes
    weights = np.array([2, 0, 1, 3, 1])
    repeated = np.repeat(np.arange(5), weights)
    # Positives 0.4 ×1, 0.8 ×3, 0.3 ×1 against negatives 0.1 ×2: every pair won -> 1.0
    assert weighted_auroc(labels, scores, weights) == pytest.approx(1.0)
    assert auroc(labels[repeated], scores[repeated]) == pytest.approx(1.0)
    weights = np.array([1, 2, 1, 1, 1])  # now 0.4 (-) ×2: 0.4 (+) ties it, 0.3 (+) loses
    repeated = np.repeat(np.arange(5), weights)
    hand = (1 + 2 * 0.5 + 3 + 1) / (3 * 3)  # 0.4+: 1 win, 2 ties; 0.8+: 3 wins; 0.3+: 1 win
    assert weighted_auroc(labels, scores, weights) == pytest.approx(hand)
    assert auroc(labels[repeated], scores[repeated]) == pytest.approx(hand)
    assert math.isnan(weighted_auroc(labels, scores, [0, 0, 1, 1, 1]))


def test_group_indices_number_groups_by_first_appearance():
    from train.metrics import group_indices

    assert group_indices(["b", "a", "b", "c", "a"]).tolist() == [0, 1, 0, 2, 1]


def test_group_bootstrap_of_copies_keeps_the_width_of_the_single_films():
    """k identical copies of each film, one group per film: the group bootstrap gives the
    single films' interval; a film bootstrap of the copies is narrower (about 1/√k)."""
    from train.metrics import bootstrap_auroc_ci, group_bootstrap_auroc_ci

    rng = np.random.default_rng(1)
    labels = (rng.random(60) < 0.4).astype(int)
    scores = labels * 0.8 + rng.normal(0, 1, 60)
    names = [f"picture-{index:02d}" for index in range(60)]
    copies = 4
    copied_labels, copied_scores = np.tile(labels, copies), np.tile(scores, copies)
    copied_names = names * copies
    single = bootstrap_auroc_ci(labels, scores, resamples=400, seed=3)
    # One film per group draws exactly what the film bootstrap draws.
    assert group_bootstrap_auroc_ci(labels, scores, names, 400, 3) == pytest.approx(single)
    grouped = group_bootstrap_auroc_ci(copied_labels, copied_scores, copied_names, 400, 3)
    assert grouped == pytest.approx(single)
    films = bootstrap_auroc_ci(copied_labels, copied_scores, resamples=400, seed=3)
    width = single[1] - single[0]
    assert films[1] - films[0] < 0.7 * width  # ≈ width / 2 for k = 4
    assert films[0] < auroc(labels, scores) < films[1]


def test_group_bootstrap_checks_its_inputs():
    from train.metrics import group_bootstrap_auroc_ci

    with pytest.raises(ValueError, match="differ in shape"):
        group_bootstrap_auroc_ci([0, 1, 1], [0.1, 0.2, 0.3], ["a", "b"])
    with pytest.raises(ValueError, match="NaN"):
        group_bootstrap_auroc_ci([0, 1], [0.1, np.nan], ["a", "b"])
    low, high = group_bootstrap_auroc_ci([1, 1], [0.1, 0.2], ["a", "b"], resamples=10)
    assert math.isnan(low) and math.isnan(high)  # one class: no resample has an AUROC


# --------------------------------------------------------------------------- curves and AUPRC
# Shared hand example: sorted by score, 0.8 (+), 0.4 (-), 0.35 (+), 0.1 (-), 0.05 (-).
CURVE_LABELS = np.array([0, 0, 1, 1, 0])
CURVE_SCORES = np.array([0.1, 0.4, 0.35, 0.8, 0.05])


def test_roc_curve_hand_computed():
    from train.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(CURVE_LABELS, CURVE_SCORES)
    assert thresholds == pytest.approx([np.inf, 0.8, 0.4, 0.35, 0.1, 0.05])
    assert tpr == pytest.approx([0, 0.5, 0.5, 1, 1, 1])
    assert fpr == pytest.approx([0, 0, 1 / 3, 1 / 3, 2 / 3, 1])


def test_roc_curve_ties_enter_together_and_area_matches_auroc():
    from train.metrics import roc_curve

    # The two 0.5 scores (one +, one -) move the curve diagonally in one step.
    labels, scores = np.array([1, 0, 1, 0]), np.array([0.9, 0.5, 0.5, 0.1])
    fpr, tpr, thresholds = roc_curve(labels, scores)
    assert thresholds == pytest.approx([np.inf, 0.9, 0.5, 0.1])
    assert tpr == pytest.approx([0, 0.5, 1, 1]) and fpr == pytest.approx([0, 0, 0.5, 1])
    # Pairs: 0.9 beats both negatives, 0.5 ties 0.5 and beats 0.1 -> 3.5 / 4.
    assert np.trapezoid(tpr, fpr) == pytest.approx(auroc(labels, scores)) == pytest.approx(0.875)


def test_roc_curve_single_class_has_nan_rate():
    from train.metrics import roc_curve

    fpr, tpr, _ = roc_curve(np.ones(3), np.arange(3.0))
    assert np.isnan(fpr).all() and tpr[-1] == 1.0


def test_precision_recall_curve_hand_computed():
    from train.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(CURVE_LABELS, CURVE_SCORES)
    # Ascending thresholds; at t = 0.35: TP 2, FP 1 -> precision 2/3, recall 1.
    assert thresholds == pytest.approx([0.05, 0.1, 0.35, 0.4, 0.8])
    assert precision == pytest.approx([2 / 5, 2 / 4, 2 / 3, 1 / 2, 1, 1])
    assert recall == pytest.approx([1, 1, 1, 0.5, 0.5, 0])


def test_auprc_hand_computed():
    from train.metrics import auprc

    # Recall steps 0 -> .5 at precision 1 (t=.8), .5 -> 1 at precision 2/3 (t=.35).
    assert auprc(CURVE_LABELS, CURVE_SCORES) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert auprc(np.array([0, 1]), np.array([0.1, 0.9])) == pytest.approx(1.0)


def test_auprc_tie_is_not_broken_in_favour_of_the_positive():
    from train.metrics import auprc

    # 0.5 holds one positive and one negative: they enter together at precision 2/3.
    # Ranking the positive first would give 1.0.
    labels, scores = np.array([1, 0, 1, 0]), np.array([0.9, 0.5, 0.5, 0.1])
    assert auprc(labels, scores) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_auprc_single_class_and_nan():
    from train.metrics import auprc

    assert math.isnan(auprc(np.zeros(4), np.arange(4.0)))  # no positive: recall undefined
    assert auprc(np.ones(4), np.arange(4.0)) == 1.0  # every flagged image is a fracture
    with pytest.raises(ValueError, match="NaN"):
        auprc(np.array([0, 1]), np.array([0.2, np.nan]))
    with pytest.raises(ValueError, match="0/1"):
        auprc(np.array([0, 2]), np.array([0.2, 0.3]))


# --------------------------------------------------------------------------- hard predictions
# labels 1 1 1 0 0 0 0 with predictions 1 1 0 1 0 0 0: TN 3, FP 1, FN 1, TP 2.
HARD_LABELS = np.array([1, 1, 1, 0, 0, 0, 0])
HARD_PREDICTIONS = np.array([1, 1, 0, 1, 0, 0, 0])


def test_confusion_matrix_hand_computed():
    from train.metrics import confusion_matrix

    assert confusion_matrix(HARD_LABELS, HARD_PREDICTIONS).tolist() == [[3, 1], [1, 2]]
    assert confusion_matrix(np.ones(3), np.ones(3)).tolist() == [[0, 0], [0, 3]]
    assert confusion_matrix(np.array([True, False]), np.array([False, False])).tolist() == [
        [1, 0],
        [1, 0],
    ]


def test_confusion_matrix_rejects_scores_nan_and_shape_mismatch():
    from train.metrics import confusion_matrix

    with pytest.raises(ValueError, match="predictions must be 0/1"):
        confusion_matrix(np.array([0, 1]), np.array([0.2, 0.7]))
    with pytest.raises(ValueError, match="0/1"):
        confusion_matrix(np.array([0, 1]), np.array([0, np.nan]))
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.array([0, 1, 1]), np.array([0, 1]))


def test_cohen_kappa_hand_computed():
    from train.metrics import cohen_kappa

    # p_o = 5/7; p_e = (4*4 + 3*3) / 49 = 25/49; kappa = (35 - 25) / (49 - 25) = 10/24.
    assert cohen_kappa(HARD_LABELS, HARD_PREDICTIONS) == pytest.approx(10 / 24)
    assert cohen_kappa(np.array([0, 1, 1]), np.array([0, 1, 1])) == pytest.approx(1.0)
    assert cohen_kappa(np.array([0, 1]), np.array([1, 0])) == pytest.approx(-1.0)


def test_cohen_kappa_single_class_edges():
    from train.metrics import cohen_kappa

    # Truth and prediction the same constant: chance agreement is 1, kappa undefined.
    assert math.isnan(cohen_kappa(np.ones(4), np.ones(4)))
    # One class in truth, predictions mixed: p_o = 1/2, p_e = (2*1 + 0*1)/4 = 1/2 -> 0.
    assert cohen_kappa(np.zeros(2), np.array([0, 1])) == pytest.approx(0.0)


def test_balanced_accuracy_hand_computed_and_single_class():
    from train.metrics import balanced_accuracy

    assert balanced_accuracy(HARD_LABELS, HARD_PREDICTIONS) == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert math.isnan(balanced_accuracy(np.ones(3), np.array([1, 0, 1])))
    with pytest.raises(ValueError, match="predictions"):
        balanced_accuracy(np.array([0, 1]), np.array([0, np.nan]))


# --------------------------------------------------------------------------- calibration


def test_expected_calibration_error_hand_computed():
    from train.metrics import expected_calibration_error

    # bins=2: [0, .5) holds .1, .3 (mean .2, labels 0, 1 -> .5): gap .3, weight 1/2;
    # [.5, 1] holds .8, .9 (mean .85, labels 1, 0 -> .5): gap .35, weight 1/2.
    labels, probabilities = np.array([0, 1, 1, 0]), np.array([0.1, 0.3, 0.8, 0.9])
    assert expected_calibration_error(labels, probabilities, bins=2) == pytest.approx(0.325)
    # Perfectly calibrated single bin, and 1.0 falling into the last bin.
    assert expected_calibration_error(np.array([1, 0, 0, 0]), np.full(4, 0.25)) == 0.0
    assert expected_calibration_error(np.array([1]), np.array([1.0])) == 0.0


def test_expected_calibration_error_single_class_and_bad_input():
    from train.metrics import expected_calibration_error

    assert expected_calibration_error(np.zeros(2), np.array([0.2, 0.2])) == pytest.approx(0.2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error(np.array([0, 1]), np.array([-1.5, 2.0]))
    with pytest.raises(ValueError, match="NaN"):
        expected_calibration_error(np.array([0, 1]), np.array([0.5, np.nan]))
    with pytest.raises(ValueError, match="bins"):
        expected_calibration_error(np.array([0, 1]), np.array([0.5, 0.5]), bins=0)


def test_calibration_bins_are_left_closed():
    from train.metrics import calibration_bins

    table = calibration_bins(np.array([0, 1, 1]), np.array([0.0, 0.5, 1.0]), bins=2)
    assert table["edges"] == pytest.approx([0, 0.5, 1])
    assert table["count"].tolist() == [1, 2]
    assert table["fraction_positive"] == pytest.approx([0, 1])


def test_sigmoid_and_apply_temperature():
    from train.metrics import apply_temperature, sigmoid

    with np.errstate(over="raise"):
        assert sigmoid(np.array([-1000.0, 0.0, 1000.0])) == pytest.approx([0, 0.5, 1])
    assert apply_temperature(np.array([0.0, 2.0]), 2.0) == pytest.approx(
        [0.5, 1 / (1 + math.exp(-1))]
    )
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            apply_temperature(np.array([1.0]), bad)


def test_fit_temperature_hand_computed():
    from train.metrics import fit_temperature

    # One logit value 2 with 3 of 4 positive: the NLL is least where sigmoid(2/T) = 3/4,
    # i.e. 2/T = ln 3.
    assert fit_temperature(np.array([1, 1, 1, 0]), np.full(4, 2.0)) == pytest.approx(
        2 / math.log(3), rel=1e-6
    )
    # Symmetric: +2 right 3 times in 4, -2 right 3 times in 4 -> the same T.
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    logits = np.array([2, 2, 2, 2, -2, -2, -2, -2], dtype=float)
    assert fit_temperature(labels, logits) == pytest.approx(2 / math.log(3), rel=1e-6)


def test_fit_temperature_recovers_the_scale_of_synthetic_logits():
    from train.metrics import fit_temperature

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, 20_000)
    labels = rng.random(logits.size) < 1 / (1 + np.exp(-logits))
    assert fit_temperature(labels, logits) == pytest.approx(1.0, abs=0.05)
    assert fit_temperature(labels, 3 * logits) == pytest.approx(3.0, rel=0.05)


def test_fit_temperature_returns_the_minimum_for_off_centre_logits():
    # Regression: a converged Newton step used to be replaced by a bisection midpoint (T 0.03
    # instead of 0.99 on a real model whose logits sit off-centre).
    from train.metrics import binary_nll, fit_temperature

    rng = np.random.default_rng(1)
    labels = rng.random(600) < 0.18
    logits = np.where(labels, rng.normal(1.1, 1.5, 600), rng.normal(-0.7, 1.0, 600))
    temperature = fit_temperature(labels, logits)
    best = binary_nll(labels, logits / temperature)
    assert best <= binary_nll(labels, logits / (temperature * 1.01))
    assert best <= binary_nll(labels, logits / (temperature / 1.01))
    grid = np.exp(np.linspace(np.log(0.1), np.log(10), 801))
    brute = grid[np.argmin([binary_nll(labels, logits / t) for t in grid])]
    assert temperature == pytest.approx(brute, rel=0.01)


def test_fit_temperature_edges(caplog):
    from train.metrics import fit_temperature

    with pytest.raises(ValueError, match="both classes"):
        fit_temperature(np.ones(3), np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="NaN"):
        fit_temperature(np.array([0, 1]), np.array([0.0, np.nan]))
    assert fit_temperature(np.array([0, 1]), np.zeros(2)) == 1.0
    with caplog.at_level("WARNING", logger="train.metrics"):
        assert fit_temperature(np.array([0, 1]), np.array([-1.0, 1.0])) == pytest.approx(1e-3)
    assert "separated" in caplog.text


def test_new_metrics_agree_with_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    from train import metrics

    rng = np.random.default_rng(2)
    for _ in range(20):
        labels = rng.random(50) < 0.3
        scores = np.round(rng.normal(size=50) + labels, 1)  # rounding makes ties
        predictions = scores > 0.5
        assert metrics.auprc(labels, scores) == pytest.approx(
            sklearn_metrics.average_precision_score(labels, scores)
        )
        for ours, theirs in zip(
            metrics.precision_recall_curve(labels, scores),
            sklearn_metrics.precision_recall_curve(labels, scores),
            strict=True,
        ):
            assert ours == pytest.approx(theirs)
        for ours, theirs in zip(
            metrics.roc_curve(labels, scores),
            sklearn_metrics.roc_curve(labels, scores, drop_intermediate=False),
            strict=True,
        ):
            assert ours == pytest.approx(theirs)
        assert metrics.cohen_kappa(labels, predictions) == pytest.approx(
            sklearn_metrics.cohen_kappa_score(labels, predictions)
        )
        assert metrics.balanced_accuracy(labels, predictions) == pytest.approx(
            sklearn_metrics.balanced_accuracy_score(labels, predictions)
        )
        assert (
            metrics.confusion_matrix(labels, predictions)
            == sklearn_metrics.confusion_matrix(labels, predictions, labels=[0, 1])
        ).all()
