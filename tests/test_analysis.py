"""turn_backend.analysis: the pure helpers behind the audit pages, on hand-made arrays."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pandas as pd
import pytest

from turn_backend import analysis as an
from turn_backend import run_views
from turn_backend.cleansing import detection_metrics, fit_clean_probability, select_clean
from turn_backend.runfolder import retrain_run_name

# Eight samples, three classes (class 2 has no sample). noisy = given != true: 0, 6, 7.
P = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9, 0.55, 0.05])
GIVEN = np.array([0, 0, 0, 0, 1, 1, 1, 1])
TRUE = np.array([1, 0, 0, 0, 1, 1, 0, 2])


# ------------------------------------------------------------------------------ tau sweep


def test_tau_sweep_by_hand():
    sweep = an.tau_sweep(P, GIVEN, TRUE, taus=[0.01, 0.5, 0.6, 0.95]).set_index("tau")
    # tau 0.5: flagged {0,1,2,7}; truly noisy flagged {0,7}; noisy total {0,6,7};
    # kept {3,4,5,6}, of which 3 are right.
    row = sweep.loc[0.5]
    assert row["n_flagged"] == 4 and row["n_kept"] == 4
    assert row["precision"] == pytest.approx(2 / 4)
    assert row["recall"] == pytest.approx(2 / 3)
    assert row["f1"] == pytest.approx(4 / 7)
    assert row["purity"] == pytest.approx(3 / 4)
    assert row["noise_rate"] == pytest.approx(0.5)
    # tau 0.6: flagged {0,1,2,6,7}: tp 3, fp 2; kept {3,4,5} all right
    row = sweep.loc[0.6]
    assert (row["precision"], row["recall"], row["purity"]) == pytest.approx((0.6, 1.0, 1.0))
    assert row["f1"] == pytest.approx(0.75)
    # tau 0.95: everything flagged, nothing kept -> purity 0 (as detection_metrics)
    row = sweep.loc[0.95]
    assert (row["precision"], row["recall"], row["purity"]) == pytest.approx((3 / 8, 1.0, 0.0))
    # tau 0.01: nothing flagged
    row = sweep.loc[0.01]
    assert (row["precision"], row["recall"], row["f1"]) == (0.0, 0.0, 0.0)
    assert row["purity"] == pytest.approx(5 / 8)


def test_tau_sweep_matches_detection_metrics_on_random_data():
    rng = np.random.default_rng(0)
    n = 500
    p = rng.random(n).round(2)  # ties on purpose
    given = rng.integers(0, 5, n)
    true = np.where(rng.random(n) < 0.3, rng.integers(0, 5, n), given)
    taus = an.default_tau_grid()
    sweep = an.tau_sweep(p, given, true, taus)
    for tau in (0.05, 0.3, 0.5, 0.6, 0.99):
        ref = detection_metrics(p <= tau, given, true)
        row = sweep[np.isclose(sweep["tau"], tau)].iloc[0]
        for key in ("precision", "recall", "f1", "purity"):
            assert row[key] == pytest.approx(ref[key]), (tau, key)
        assert row["n_flagged"] == ref["n_flagged"]


def test_tau_sweep_without_or_with_unknown_true_labels():
    plain = an.tau_sweep(P, GIVEN, None, taus=[0.5])
    assert "precision" not in plain and plain["n_flagged"].tolist() == [4]
    unknown = an.tau_sweep(P, GIVEN, np.full(8, -1), taus=[0.5])
    assert "precision" not in unknown
    # samples with an unknown true label are left out of precision / recall
    partly = TRUE.copy()
    partly[[0, 1]] = -1  # drop one noisy flagged and one clean flagged sample
    row = an.tau_sweep(P, GIVEN, partly, taus=[0.5]).iloc[0]
    assert row["precision"] == pytest.approx(1 / 2)  # flagged known {2,7}: 7 noisy
    assert row["recall"] == pytest.approx(1 / 2)  # noisy known {6,7}


def test_default_tau_grid():
    grid = an.default_tau_grid()
    assert len(grid) == 99 and grid[0] == pytest.approx(0.01) and grid[-1] == pytest.approx(0.99)


# --------------------------------------------------------------------- counts, N, noise


def test_counts_and_balanced_sizes_by_hand():
    idx = an.ThresholdIndex.build(P, GIVEN, 3)
    assert idx.class_sizes.tolist() == [4, 4, 0]
    counts = idx.counts_at(0.5)
    assert counts.tolist() == [1, 3, 0]  # class 0: {3}; class 1: {4,5,6}
    sizes = an.selection_sizes(counts, idx.class_sizes)
    assert sizes["N_min"] == 1 and sizes["total_min"] == 2  # class 2 is empty, not a zero
    assert sizes["N_mean"] == 2 and sizes["total_mean"] == 2 + 3  # max(1,2) + max(3,2)
    assert sizes["unique_mean"] == 4 and sizes["floored"] == []
    # a probability equal to tau is flagged (clean means > tau)
    assert idx.counts_at(0.7).tolist() == [0, 2, 0]
    assert idx.flagged_at(0.7) == 6


def test_selection_sizes_match_select_clean():
    rng = np.random.default_rng(1)
    p = rng.random(300)
    y = rng.integers(0, 6, 300)
    idx = an.ThresholdIndex.build(p, y, 6)
    for tau in (0.2, 0.5, 0.9, 0.999):
        counts = idx.counts_at(tau)
        sizes = an.selection_sizes(counts, idx.class_sizes)
        sel = select_clean(p, y, 6, tau, np.random.default_rng(0), "min")
        assert sizes["counts"].tolist() == sel.candidates_per_class.tolist()
        assert sizes["N_min"] == sel.per_class
        assert sizes["total_min"] == len(sel.indices)
        sel_mean = select_clean(p, y, 6, tau, np.random.default_rng(0), "mean")
        assert sizes["N_mean"] == sel_mean.per_class
        assert sizes["total_mean"] == len(sel_mean.indices)
        assert sizes["unique_mean"] == len(sel_mean.unique)


def test_floor_when_a_class_has_no_candidate():
    idx = an.ThresholdIndex.build(P, GIVEN, 3)
    counts = idx.counts_at(0.75)  # class 0's best is 0.7
    assert counts.tolist() == [0, 2, 0]
    sizes = an.selection_sizes(counts, idx.class_sizes)
    assert sizes["floored"] == [0]
    assert sizes["counts"].tolist() == [1, 2, 0]  # ceil(5% of 4) = 1
    assert sizes["N_min"] == 1


def test_estimated_noise_rate():
    assert an.flagged_share(P, 0.5) == pytest.approx(4 / 8)
    assert an.flagged_share(P, 0.05) == pytest.approx(1 / 8)  # <= tau
    assert an.flagged_share([], 0.5) == 0.0
    idx = an.ThresholdIndex.build(P, GIVEN, 3)
    assert idx.noise_rate_at(0.5) == pytest.approx(0.5)
    assert an.true_noise_rate(GIVEN, TRUE) == pytest.approx(3 / 8)
    assert an.true_noise_rate(GIVEN, np.full(8, -1)) is None


def test_threshold_queries_are_fast():
    rng = np.random.default_rng(0)
    n = 100_000
    idx = an.ThresholdIndex.build(rng.random(n), rng.integers(0, 100, n), 100)
    t0 = time.perf_counter()
    for tau in np.linspace(0.01, 0.99, 50):
        an.selection_sizes(idx.counts_at(tau), idx.class_sizes)
        idx.noise_rate_at(tau)
    assert (time.perf_counter() - t0) / 50 < 0.1


def test_build_rejects_bad_input():
    with pytest.raises(ValueError, match="one per sample"):
        an.ThresholdIndex.build([0.1, 0.2], [0], 2)
    with pytest.raises(ValueError, match="0..1"):
        an.ThresholdIndex.build([0.1], [3], 2)


# ----------------------------------------------------------------------------- GMM curves

EQUAL = {"n": 100, "status": "fit", "means": [0.0, 2.0], "stds": [1.0, 1.0], "weights": [0.5, 0.5]}


def test_posterior_crossing_by_hand():
    # equal weights and widths: log-odds noisy/clean = 2x - 2, so p_clean = tau at
    # x = 1 + ln((1 - tau) / tau) / 2
    assert an.posterior_crossing(EQUAL, 0.5, -3, 5) == pytest.approx(1.0, abs=1e-4)
    assert an.posterior_crossing(EQUAL, 0.6, -3, 5) == pytest.approx(1 + 0.5 * math.log(0.4 / 0.6), abs=1e-4)
    weighted = {**EQUAL, "weights": [0.75, 0.25]}  # adds ln 3 to the clean side
    assert an.posterior_crossing(weighted, 0.5, -3, 5) == pytest.approx(1 + 0.5 * math.log(3), abs=1e-4)
    # no crossing inside the range
    assert an.posterior_crossing(EQUAL, 0.5, 1.5, 5) is None
    assert an.posterior_crossing(EQUAL, 0.5, -3, 0.5) is None
    assert an.posterior_crossing({"status": "too few samples", "stds": [0, 0]}, 0.5, 0, 1) is None


def test_posterior_reproduces_stored_clean_probabilities():
    rng = np.random.default_rng(3)
    clean = rng.normal(0.3, 0.1, 300).clip(0)
    noisy = rng.normal(2.5, 0.5, 120)
    losses = np.concatenate([clean, noisy])
    labels = np.zeros(len(losses), dtype=int)
    fit = fit_clean_probability(losses, labels, 1).fits_as_dicts()[0]
    post = an.clean_posterior(fit, losses)
    ref = fit_clean_probability(losses, labels, 1).clean_prob
    assert np.abs(post - ref).max() < 1e-6
    # samples above the crossing loss are the flagged ones (one crossing here)
    x = an.posterior_crossing(fit, 0.6, losses.min(), losses.max())
    assert x is not None
    assert ((losses > x) == (ref <= 0.6)).mean() > 0.99


def test_component_densities_and_histogram():
    x = np.linspace(-10, 12, 20001)
    clean, noisy = an.component_densities(EQUAL, x)
    dx = x[1] - x[0]
    assert clean.sum() * dx == pytest.approx(0.5, abs=1e-3)
    assert noisy.sum() * dx == pytest.approx(0.5, abs=1e-3)
    hist = an.histogram_with_fit(np.array([0.0, 0.5, 1.0, 2.0]), EQUAL, bins=4)
    assert hist["counts"].sum() == 4 and len(hist["edges"]) == 5
    assert hist["lo"] == 0.0 and hist["hi"] == 2.0
    empty = an.histogram_with_fit(np.array([]), EQUAL)
    assert len(empty["counts"]) == 0
    flat = an.clean_posterior({"status": "too few samples"}, [1.0, 2.0])
    assert flat.tolist() == [1.0, 1.0]


# ----------------------------------------------------------------------------- embeddings


def _samples():
    return pd.DataFrame({
        "sample_id": ["a", "b", "c", "d"],
        "source": ["a.png", "b.png", "c.png", "d.png"],
        "split": "train",
        "given_label": [0, 1, 1, 0],
        "true_label": [0, 0, 1, -1],
    })


def test_projection_frame_train_and_test_split():
    coords = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    subset = np.array([0, 1, 3])
    final = {"pred": np.array([0, 0, 1, 1]), "pred_prob": np.array([0.9, 0.8, 0.7, 0.6]),
             "clean_prob": np.array([0.9, 0.1, 0.5, 0.6])}
    df = an.projection_frame(coords, subset, _samples(), ["cat", "dog"], final, tau=0.6)
    assert df["sample_id"].tolist() == ["a", "b", "d"]
    assert df["given"].tolist() == ["cat", "dog", "cat"]
    assert df["true"].tolist() == ["cat", "cat", "unknown"]
    assert df["mislabelled"].tolist() == [False, True, False]
    assert df["pred"].tolist() == ["cat", "cat", "dog"]
    assert df["flagged"].tolist() == [False, True, True]  # 0.6 <= tau
    assert list(an.colour_options(df)) == ["given", "pred", "clean_prob", "flagged", "true"]
    test = an.projection_frame(coords, subset, _samples(), ["cat", "dog"])
    assert "pred" not in test and "flagged" not in test
    assert list(an.colour_options(test)) == ["given", "true"]
    with pytest.raises(ValueError, match="stale"):
        an.projection_frame(coords[:2], subset, _samples(), ["cat", "dog"])


def test_selected_rows():
    event = {"selection": {"points": [{"customdata": [2], "curve_number": 1}, {"customdata": [0]},
                                      {"customdata": [2]}, {"x": 1}]}}
    assert an.selected_rows(event) == [2, 0]
    assert an.selected_rows(None) == []
    assert an.selected_rows({"selection": {"points": []}}) == []


def _fake_run(root, name, method, state="done", dataset=None, noise=None, mtime=None):
    d = root / name
    d.mkdir()
    cfg = {"method": method, "dataset": dataset or {"kind": "demo", "n_train": 200, "n_test": 100},
           "noise": noise or {"kind": "symmetric", "rate": 0.4, "seed": 0}, "projection_split": "test"}
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "status.json").write_text(json.dumps({"state": state}))
    return d, cfg


def test_find_reference_run(tmp_path):
    me, cfg = _fake_run(tmp_path, "turn-run", "turn")
    assert run_views.find_reference_run(tmp_path, cfg, exclude=me) is None
    _fake_run(tmp_path, "fft-running", "fft-ce", state="running")
    _fake_run(tmp_path, "fft-other-noise", "fft-ce", noise={"kind": "symmetric", "rate": 0.6, "seed": 0})
    assert run_views.find_reference_run(tmp_path, cfg, exclude=me) is None
    good, _ = _fake_run(tmp_path, "fft-good", "fft-ce")
    found = run_views.find_reference_run(tmp_path, cfg, exclude=me)
    assert found is not None and found.path == good


# --------------------------------------------------------------------------------- review


def test_review_index_order_filters_and_decisions():
    ids = [f"s{i}" for i in range(8)]
    pred = np.array([1, 0, 2, 0, 1, 1, 0, 2])
    pred_prob = np.linspace(0.5, 0.9, 8)
    idx = an.ReviewIndex.build(ids, P, GIVEN, pred, pred_prob, 0.5)
    codes, labels = idx.decision_arrays({})

    def queue(view, codes=codes, labels=labels):
        return idx.rows(view, codes, labels)

    q = queue(idx.view())
    assert q["sample_id"].tolist() == ["s7", "s0", "s1", "s2"]  # lowest clean probability first
    assert q["decision"].tolist() == ["", "", "", ""]
    assert q["kinds"].tolist() == [["label"]] * 4
    decisions = {"s0": ("relabel", 1), "s2": ("keep", None), "gone": ("remove", None)}
    codes, labels = idx.decision_arrays(decisions)  # a decision about an unknown id is ignored
    q = queue(idx.view(), codes, labels).set_index("sample_id")
    assert q.loc["s0", "decision"] == "relabel" and q.loc["s0", "decision_label"] == 1
    assert q.loc["s2", "decision"] == "keep" and q.loc["s2", "decision_label"] == -1
    assert queue(idx.undecided(idx.view(), codes))["sample_id"].tolist() == ["s7", "s1"]
    assert idx.progress(codes) == (2, 4)
    assert queue(idx.view(given_classes=[0]))["sample_id"].tolist() == ["s0", "s1", "s2"]
    assert queue(idx.view(suggested_classes=[2]))["sample_id"].tolist() == ["s7", "s2"]
    assert queue(idx.view(given_classes=[0], suggested_classes=[2]))["sample_id"].tolist() == ["s2"]
    assert queue(idx.view(pair=(0, 0)))["sample_id"].tolist() == ["s1"]  # one noise-matrix cell
    assert idx.view(given_classes=[0]) is idx.view(given_classes=(0,))  # cached per filter
    # ties by the most confident suggestion, then the sample order
    tie = an.ReviewIndex.build(["a", "b", "c", "d"], [0.2, 0.1, 0.2, 0.2], [0] * 4, [0] * 4, [0.5, 1, 0.5, 0.9],
                               0.5)
    assert tie.ids[tie.order].tolist() == ["b", "d", "a", "c"]
    with pytest.raises(ValueError, match="one entry per training sample"):
        an.ReviewIndex.build(ids[:3], P, GIVEN, pred, pred_prob, 0.5)
    with pytest.raises(ValueError, match="unknown flag kind"):
        idx.view(kinds=["typo"])


def test_review_index_audit_flags_join_the_queue():
    ids = [f"s{i}" for i in range(8)]
    dup = np.zeros(8, bool)
    dup[[1, 4]] = True  # s1 is also a label error; s4 (p = 0.8) is queued for its duplicate only
    outlier = np.zeros(8, bool)
    outlier[5] = True
    leak = np.zeros(8, bool)
    leak[3] = True
    spot = np.zeros(8, bool)
    spot[[0, 6]] = True  # a spot check drew s0 (also a label error) and s6 (p = 0.55, not flagged)
    idx = an.ReviewIndex.build(ids, P, GIVEN, GIVEN, np.ones(8), 0.5, duplicate_conflict=dup, outlier=outlier,
                               leak=leak, spot=spot)
    rows = idx.rows(idx.view(), *idx.decision_arrays({})).set_index("sample_id")
    assert rows.index.tolist() == ["s7", "s0", "s1", "s2", "s6", "s3", "s4", "s5"]
    assert rows.loc["s1", "kinds"] == ["label", "duplicate"]
    assert rows.loc["s4", "kinds"] == ["duplicate"] and rows.loc["s3", "kinds"] == ["leak"]
    assert rows.loc["s0", "kinds"] == ["label", "spot"] and rows.loc["s6", "kinds"] == ["spot"]
    assert idx.kind_counts() == {"label": 4, "duplicate": 2, "outlier": 1, "leak": 1, "annotator": 0, "spot": 2}
    assert idx.ids[idx.order[idx.view(kinds=["spot"])]].tolist() == ["s0", "s6"]
    assert idx.ids[idx.order[idx.view(kinds=["duplicate", "outlier"])]].tolist() == ["s1", "s4", "s5"]


def test_paginate():
    assert an.paginate(30, 0, 12) == (0, 0, 12, 3)
    assert an.paginate(30, 2, 12) == (2, 24, 30, 3)
    assert an.paginate(30, 9, 12) == (2, 24, 30, 3)  # clamped
    assert an.paginate(0, 3, 12) == (0, 0, 0, 1)


def test_bulk_accept_and_decision_text():
    rows = pd.DataFrame({"sample_id": ["a", "b"], "given": [0, 1], "pred": [2, 1]})
    assert an.bulk_accept(rows) == [("a", "relabel", 2), ("b", "keep", None)]
    names = ["cat", "dog", "bird"]
    assert an.decision_text("", None, names) == "Undecided"
    assert an.decision_text("relabel", 2, names) == "Relabelled to bird"
    assert an.decision_text("remove", None, names) == "Removed"


def test_retrain_run_name():
    assert retrain_run_name("demo", 0.45, []) == "demo-tau0.45"
    assert retrain_run_name("demo-tau0.45", 0.3, []) == "demo-tau0.30"
    assert retrain_run_name("demo", 0.45, ["demo-tau0.45"]) == "demo-tau0.45-2"
    assert retrain_run_name("demo-tau0.45-2", 0.45, ["demo-tau0.45", "demo-tau0.45-2"]) == "demo-tau0.45-3"


# -------------------------------------------------------------------- noise matrix, classes


def test_noise_rates_and_partners_by_hand():
    counts = [[8, 2, 0], [1, 3, 0], [0, 0, 0]]  # class 2 has no sample
    rates = an.noise_rates(counts)
    np.testing.assert_allclose(rates, [[0.8, 0.2, 0.0], [0.25, 0.75, 0.0], [0, 0, 0]])
    assert an.confused_partners(counts, ["a", "b", "c"]) == ["b 20%", "a 25%", ""]
    with pytest.raises(ValueError, match="square"):
        an.noise_rates([[1, 2, 3]])


def test_class_health_by_hand():
    names = ["a", "b", "c"]
    # GIVEN: four samples of class 0 (p 0.1 0.2 0.3 0.7), four of class 1 (0.8 0.9 0.55 0.05)
    table = an.class_health(GIVEN, P, 0.5, names).set_index("class")
    assert table["size"].tolist() == [4, 4, 0]
    assert table["flagged"].tolist() == [3, 1, 0]
    assert table.loc["a", "noise_rate"] == pytest.approx(0.75) and math.isnan(table.loc["c", "noise_rate"])
    assert table.loc["b", "mean_clean_prob"] == pytest.approx((0.8 + 0.9 + 0.55 + 0.05) / 4)
    assert "duplicates" not in table  # no audit: no audit columns
    audit = pd.DataFrame({
        "duplicate_of": ["s1", "s0", "", "", "", "", "", "s2"],
        "duplicate_label_conflict": [False, False, False, False, False, False, False, True],
        "outlier": [False, False, False, False, True, True, False, False],
        "test_duplicate": ["", "", "", "t9", "", "", "", ""],
    })
    table = an.class_health(GIVEN, P, 0.5, names, noise_counts=[[3, 1, 0], [2, 2, 0], [0, 0, 0]],
                            audit_train=audit).set_index("class")
    assert table["noise_rate"].iloc[:2].tolist() == pytest.approx([0.25, 0.5])  # from the matrix now
    assert table.loc["a", "confused_with"] == "b 25%"
    assert table["duplicates"].tolist() == [2, 1, 0]
    assert table["label_conflicts"].tolist() == [0, 1, 0]
    assert table["outliers"].tolist() == [0, 2, 0]
    assert table["test_leaks"].tolist() == [1, 0, 0]
    with pytest.raises(ValueError, match="stale"):
        an.class_health(GIVEN, P, 0.5, names, audit_train=audit.iloc[:3])


def test_noise_counts_recounted_with_recalibrated_probabilities_by_hand():
    # class 0: 10 samples at p 0.6 -> 6 expected clean, 4 wrong, shared 2:0 as the matrix shares them
    # class 1: 10 at 0.9 -> 1 wrong, shared 1:2; class 2: no off-diagonal in the matrix -> shared evenly
    counts = [[8, 2, 0], [1, 7, 2], [0, 0, 10]]
    given = np.repeat([0, 1, 2], 10)
    calibrated = np.repeat([0.6, 0.9, 0.94], 10)
    np.testing.assert_allclose(an.recount_noise_counts(counts, given, calibrated),
                               [[6, 4, 0], [1 / 3, 9, 2 / 3], [0.3, 0.3, 9.4]])
    with pytest.raises(ValueError, match="one per sample"):
        an.recount_noise_counts(counts, given, calibrated[:5])

    # the Classes table counts with them; tau still flags the run's own probabilities
    own = np.repeat([0.3, 0.8, 0.9], 10)
    table = an.class_health(given, own, 0.5, ["a", "b", "c"], noise_counts=counts, calibrated=calibrated)
    assert table["flagged"].tolist() == [10, 0, 0]
    assert table["expected_wrong"].tolist() == pytest.approx([4, 1, 0.6])
    assert table["noise_rate"].tolist() == pytest.approx([0.4, 0.1, 0.06])
    assert table["mean_clean_prob"].tolist() == pytest.approx([0.6, 0.9, 0.94])
    assert table["confused_with"].tolist() == ["b 40%", "c 7%, a 3%", "a 3%, b 3%"]
    without_matrix = an.class_health(given, own, 0.5, ["a", "b", "c"], calibrated=calibrated)
    assert without_matrix["noise_rate"].tolist() == pytest.approx([0.4, 0.1, 0.06])  # expected, not flagged
