"""What the clean probabilities say without ground truth (turn_backend.detect.estimates):
hand-computed cases, agreement with the truth where the probabilities are calibrated, and
the reliability check on features that do and do not separate the classes."""

from __future__ import annotations

import numpy as np
import pytest

from turn_backend.detect import detect_label_issues
from turn_backend.detect import estimates as est

P = np.array([0.1, 0.2, 0.9, 1.0])  # expected wrong labels 0.9, 0.8, 0.1, 0: 1.8 in all


def test_noise_rate_is_the_mean_of_one_minus_p_with_a_poisson_binomial_interval():
    out = est.estimate_noise_rate(P)
    assert out["rate"] == pytest.approx(1.8 / 4)
    half = 1.959964 * np.sqrt(0.1 * 0.9 + 0.2 * 0.8 + 0.9 * 0.1 + 0.0) / 4
    assert out["low"] == pytest.approx(0.45 - half) and out["high"] == pytest.approx(0.45 + half)
    assert est.estimate_noise_rate(np.ones(10)) == {"rate": 0.0, "low": 0.0, "high": 0.0}


def test_flag_curves_count_expected_wrong_labels_among_the_flagged():
    c = est.estimated_flag_curves(P, [0.05, 0.15, 0.5, 0.95])
    assert c["n_flagged"].tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(c["expected_wrong"], [0.0, 0.9, 1.7, 1.8])
    np.testing.assert_allclose(c["precision"], [0.0, 0.9, 0.85, 0.6])
    np.testing.assert_allclose(c["recall"], [0.0, 0.5, 1.7 / 1.8, 1.0])
    np.testing.assert_allclose(c["f1"], [0.0, 2 * 0.9 / 2.8, 2 * 1.7 / 3.8, 2 * 1.8 / 4.8])
    np.testing.assert_allclose(c["share_flagged"], [0, 0.25, 0.5, 0.75])


def test_flags_from_one_score_can_be_counted_with_another_calibrated_probability():
    gmm = np.array([0.9, 0.1, 0.5, 0.95])  # flags sample 1 first, then 2
    c = est.estimated_flag_curves(gmm, [0.2, 0.6], calibrated=P)
    np.testing.assert_allclose(c["expected_wrong"], [0.8, 0.8 + 0.1])
    np.testing.assert_allclose(c["recall"], [0.8 / 1.8, 0.9 / 1.8])
    with pytest.raises(ValueError, match="calibrated probabilities"):
        est.estimated_flag_curves(gmm, calibrated=P[:3])


def test_suggested_tau_maximises_estimated_f1_or_meets_a_precision():
    # F1 at tau 0.1-0.19: 0.643; at 0.2-0.89: 0.895; at 0.9-0.99: 0.75
    assert est.suggest_tau(P) == pytest.approx(0.2)
    assert est.suggest_tau(P, min_precision=0.85) == pytest.approx(0.89)  # the most flags at >= 85%
    assert est.suggest_tau(P, min_precision=0.95) is None  # no tau flags at 95% precision
    assert est.suggest_tau(np.full(20, 0.99)) is None  # 0.2 expected wrong labels: nothing to suggest


def test_estimates_agree_with_the_truth_where_the_probabilities_are_calibrated():
    # labels drawn wrong with probability 1 - p: every estimate is then unbiased
    rng = np.random.default_rng(0)
    p = rng.beta(0.6, 0.3, 50_000)
    wrong = rng.random(p.size) > p
    noise = est.estimate_noise_rate(p)
    assert noise["low"] <= wrong.mean() <= noise["high"]
    for tau in (0.3, 0.6, 0.9):
        flagged = p <= tau
        at = est.estimates_at(p, tau)
        assert at["precision"] == pytest.approx(wrong[flagged].mean(), abs=0.01)
        assert at["recall"] == pytest.approx(wrong[flagged].sum() / wrong.sum(), abs=0.01)


def test_expected_wrong_per_class_and_bad_input():
    np.testing.assert_allclose(est.expected_wrong_per_class(P, [0, 1, 1, 0], 3), [0.9, 0.9, 0.0])
    with pytest.raises(ValueError, match="one per sample"):
        est.expected_wrong_per_class(P, [0, 1], 2)
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        est.estimate_noise_rate([0.5, 1.5])


def test_summarise_flags_holds_what_metrics_json_stores():
    out = est.summarise_flags(P, 0.5, reliability={"reliable": False, "reasons": ["x"]})
    assert out["tau"] == 0.5
    assert out["estimated_precision"] == pytest.approx(0.85) and out["estimated_recall"] == pytest.approx(1.7 / 1.8)
    assert out["estimated_noise_rate"]["rate"] == pytest.approx(0.45)
    assert out["flags_reliable"] is False and out["flags_reliability"]["reasons"] == ["x"]
    assert out["suggested_tau"] is None  # no tau makes untrustworthy flags right
    trusted = est.summarise_flags(P, 0.5)
    assert "flags_reliable" not in trusted and trusted["suggested_tau"] == pytest.approx(0.2)


def _clusters(n_per: int, classes: int, dims: int, seed: int, spread: float = 0.3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dims)) * 3
    true = np.repeat(np.arange(classes), n_per)
    return centres[true] + spread * rng.normal(size=(len(true), dims)), true


def test_reliability_check_passes_on_separable_features_with_heavy_noise():
    x, true = _clusters(60, 5, 16, 0)
    rng = np.random.default_rng(1)
    labels = true.copy()
    flip = rng.random(len(true)) < 0.4
    labels[flip] = (true[flip] + rng.integers(1, 5, flip.sum())) % 5
    result = detect_label_issues(x, labels, 5)
    assert result.reliability["reliable"], result.reliability
    assert result.reliability["signal_agreement"] > 0.8
    # 60 images per class: usable flags, rough estimates, and the run says so
    assert result.reliability["images_per_class"] == pytest.approx(60)
    assert any("rough" in c for c in result.reliability["cautions"])
    # the estimated noise rate is near the true one on data this easy
    assert est.estimate_noise_rate(result.clean_prob)["rate"] == pytest.approx(flip.mean(), abs=0.05)


def test_reliability_check_fires_when_the_features_do_not_separate_the_classes():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 16))  # features that say nothing about the labels
    result = detect_label_issues(x, rng.integers(0, 5, 300), 5)
    assert not result.reliability["reliable"]
    assert any("do not separate the classes" in r for r in result.reliability["reasons"])
    assert "a larger image size" in result.reliability["fixes"]


def test_reliability_check_fires_when_the_model_confuses_whole_classes():
    # 3 separable clusters, each split at random into 4 labels the features cannot tell apart
    x, true = _clusters(80, 3, 16, 3)
    labels = true * 4 + np.random.default_rng(4).integers(0, 4, len(true))
    result = detect_label_issues(x, labels, 12)
    assert not result.reliability["reliable"], result.reliability
    assert any("confuses whole classes" in r for r in result.reliability["reasons"])


def test_reliability_check_fires_when_the_classifier_learnt_nothing():
    x, true = _clusters(60, 4, 16, 5)
    constant = np.tile([0.97, 0.01, 0.01, 0.01], (len(true), 1))  # always the first class
    result = detect_label_issues(x, true, 4, model_probs=constant)
    assert not result.reliability["reliable"]
    assert any("hardly better than always guessing" in r for r in result.reliability["reasons"])


def test_no_caution_from_enough_images_per_class():
    x, true = _clusters(est.MIN_IMAGES_PER_CLASS, 3, 16, 6)
    result = detect_label_issues(x, true, 3)
    assert result.reliability["reliable"] and result.reliability["cautions"] == []


def test_held_out_temperature_by_hand():
    # every row says 0.9 for class 0 and three labels in four are 0: the labels bear out 0.75,
    # and softmax(log(0.9, 0.1) / t) gives 0.75 where 9^(1/t) = 3, so t = log 9 / log 3 = 2
    probs = np.tile([0.9, 0.1], (4, 1))
    assert est.held_out_temperature(probs, np.array([0, 0, 0, 1])) == pytest.approx(2.0, abs=1e-3)
    # probabilities the labels are drawn from need no softening
    rng = np.random.default_rng(0)
    q = rng.dirichlet([0.5] * 3, size=20_000)
    drawn = (rng.random((len(q), 1)) > q.cumsum(1)).sum(1)
    assert est.held_out_temperature(q, drawn) == pytest.approx(1.0, abs=0.05)


def test_caution_when_the_probe_overfits_classes_its_features_barely_separate():
    # two heavily overlapping classes in many dimensions, 150 images each, 20% of labels flipped:
    # the out-of-fold probe is far surer than the labels bear out
    rng = np.random.default_rng(7)
    true = np.repeat([0, 1], 150)
    x = rng.normal(size=(300, 128)) + 0.25 * true[:, None]
    labels = np.where(rng.random(300) < 0.2, 1 - true, true)
    result = detect_label_issues(x, labels, 2)
    rel = result.reliability
    assert rel["images_per_class"] >= est.MIN_IMAGES_PER_CLASS
    assert rel["probe_temperature"] > est.MAX_PROBE_TEMPERATURE
    assert any("more confident on held-out images" in c for c in rel["cautions"]), rel["cautions"]


def test_review_agreement_by_hand():
    # expected wrong: 0.9 + 0.8 + 0.1 + 0.2 = 2.0 of 4; found 2 of 4, Wilson 95% interval
    # (2 + 1.92) / 7.84 -/+ 1.96 / 7.84 * sqrt(1 + 0.96) = 0.15-0.85: they agree
    check = est.review_agreement([0.1, 0.2, 0.9, 0.8], [True, True, False, False])
    assert check["n"] == 4 and check["found_wrong"] == 2 and check["expected_wrong"] == pytest.approx(2.0)
    assert check["low"] == pytest.approx(0.150, abs=2e-3) and check["high"] == pytest.approx(0.850, abs=2e-3)
    assert check["agrees"]
    # probabilities that expect 5% wrong where a person found half: they disagree
    sure = est.review_agreement(np.full(20, 0.95), np.arange(20) < 10)
    assert sure["expected_wrong"] == pytest.approx(1.0) and sure["high"] < 0.75 and not sure["agrees"]
    with pytest.raises(ValueError, match="one per sample"):
        est.review_agreement([0.5, 0.5], [True])


def test_calibration_on_decisions_by_hand():
    # 20 decided samples at p = 0.5 (logit(1 - p) = 0), 10 of them wrong; 20 at p = 0.1
    # (logit(0.9) = log 9), 15 wrong. Without the prior the fit matches both shares exactly:
    # sigmoid(a) = 0.5 gives a = 0, sigmoid(b log 9) = 0.75 gives b = log 3 / log 9 = 0.5.
    p = np.concatenate([np.full(20, 0.5), np.full(20, 0.1), [0.1, 0.5, 0.9]])
    rows = np.arange(40)
    wrong = np.concatenate([np.arange(20) < 10, np.arange(20) < 15])
    spot = np.ones(40, dtype=bool)  # all drawn at random
    fit = est.calibrate_on_decisions(p, rows, wrong, spot, prior=0.0)
    assert fit["n"] == 40
    assert fit["a"] == pytest.approx(0.0, abs=1e-3) and fit["b"] == pytest.approx(0.5, abs=1e-3)
    q = fit["probability"]
    np.testing.assert_array_equal(q[:40], 1.0 - wrong)  # a decided sample counts as decided
    # undecided: p = 0.1 -> 1 - 0.75; p = 0.5 -> 0.5; p = 0.9 -> 1 - sigmoid(0.5 * log(1/9)) = 1 - 1/4
    np.testing.assert_allclose(q[40:], [0.25, 0.5, 0.75], atol=1e-3)
    # the prior pulls toward the model's own calibration: infinitely strong, nothing moves
    held = est.calibrate_on_decisions(p, rows, wrong, spot, prior=1e9)
    assert held["a"] == pytest.approx(0.0, abs=1e-6) and held["b"] == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(held["probability"][40:], p[40:], atol=1e-6)


def test_calibration_on_decisions_needs_enough_random_ones_and_one_per_sample():
    p = np.linspace(0.05, 0.95, 50)
    rows, wrong = np.arange(40), np.arange(40) % 3 == 0
    # 40 decisions, but only 19 of a spot check: the rest would be extrapolation
    assert est.calibrate_on_decisions(p, rows, wrong, np.arange(40) < est.MIN_RANDOM_DECISIONS - 1) is None
    assert est.calibrate_on_decisions(p, rows, wrong, np.arange(40) < est.MIN_RANDOM_DECISIONS)["n"] == 40
    with pytest.raises(ValueError, match="one per sample"):
        est.calibrate_on_decisions(p, np.arange(30), np.zeros(29, dtype=bool), np.ones(30, dtype=bool))


def test_calibration_on_decisions_corrects_overconfident_probabilities():
    # the model says 1 - p wrong; the truth is softer: P(wrong) = sigmoid(-1 + 0.5 logit(1 - p)).
    # A person decides the 150 lowest p (as Review lists them) and 100 random samples.
    rng = np.random.default_rng(0)
    p = rng.beta(4, 1, 5000)
    truth = 1 / (1 + np.exp(-(-1 + 0.5 * np.log((1 - p) / p))))
    wrong = rng.random(5000) < truth
    spot = rng.choice(5000, 100, replace=False)
    rows = np.unique(np.concatenate([np.argsort(p)[:150], spot]))
    fit = est.calibrate_on_decisions(p, rows, wrong[rows], np.isin(rows, spot))
    assert fit["a"] < -0.3 and fit["b"] < 0.8  # softer than the model, as the truth is
    # the noise rate it implies is nearer the truth, and its interval (the fit's uncertainty too)
    # covers the truth where the model's own (sampling only) does not
    true_rate, own = wrong.mean(), est.estimate_noise_rate(p)
    calibrated = fit["noise_rate"]
    assert abs(calibrated["rate"] - true_rate) < abs(own["rate"] - true_rate) / 2
    assert calibrated["low"] <= true_rate <= calibrated["high"]
    assert not own["low"] <= true_rate <= own["high"]
    assert calibrated["rate"] == pytest.approx(1 - fit["probability"].mean())


def test_calibration_prior_is_chosen_by_how_well_the_decisions_bear_the_model_out():
    rng = np.random.default_rng(1)
    p = rng.beta(4, 1, 3000)
    rows = rng.choice(3000, 200, replace=False)
    # decisions drawn from the model's own probabilities: it stays near its calibration
    spot = np.ones(200, dtype=bool)
    agree = est.calibrate_on_decisions(p, rows, rng.random(200) < 1 - p[rows], spot)
    assert agree["prior"] >= 30 and abs(agree["a"]) < 0.2 and abs(agree["b"] - 1) < 0.2
    # decisions that find wrong labels four times as often as the model expects: it lets go
    odds = 4 * (1 - p[rows]) / p[rows]
    contradict = est.calibrate_on_decisions(p, rows, rng.random(200) < odds / (1 + odds), spot)
    assert contradict["prior"] <= 3 and contradict["a"] > 0.8
    assert contradict["prior"] in est.CALIBRATION_PRIOR_GRID and agree["prior"] in est.CALIBRATION_PRIOR_GRID


def test_reliability_bins_by_hand():
    # p 0.05 -> bin 0; 0.15 and 0.12 -> bin 1; 0.95 -> bin 9
    table = est.reliability_bins([0.05, 0.15, 0.12, 0.95], [0, 1, 0, 1])
    assert table.shape == (10, 3)
    np.testing.assert_allclose(table[0], [0.05, 0.0, 1])
    np.testing.assert_allclose(table[1], [0.135, 0.5, 2])
    np.testing.assert_allclose(table[9], [0.95, 1.0, 1])
    assert table[2:9].sum() == 0  # empty bins
    with pytest.raises(ValueError, match="one per sample"):
        est.reliability_bins([0.5], [1, 0])
