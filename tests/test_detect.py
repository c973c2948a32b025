"""Detection signals against hand-computed cases, the combination where single signals fail,
and bad inputs (turn_backend.detect)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from turn_backend.cleansing import fit_clean_probability
from turn_backend.detect import DetectionInputError, combine, detect_label_issues, signals
from turn_backend.runfolder import RunFolder


def test_nearest_neighbours_exact_by_cosine():
    angles = np.deg2rad([0, 10, 30, 100, 180])
    x = np.stack([np.cos(angles), np.sin(angles)], 1) * np.array([[1], [5], [2], [1], [3]])  # norms differ
    idx, sim = signals.nearest_neighbours(x, 2)
    assert idx[0].tolist() == [1, 2]  # 10 and 30 degrees away
    np.testing.assert_allclose(sim[0], np.cos(np.deg2rad([10, 30])), atol=1e-6)
    assert idx[3].tolist() == [2, 4]  # 70 and 80 degrees away (10 degrees is 90 away)
    assert 4 not in idx[:3, 0]  # 180 degrees: nobody's nearest


@pytest.mark.slow  # over 10 s on 2 busy cores: in the full suite, not the fast tier
def test_nearest_neighbours_chunked_and_indexed_paths_agree_with_brute_force(monkeypatch):
    # two tight clusters: each sample's 3 nearest others are unambiguous
    rng = np.random.default_rng(0)
    centres = np.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0]])
    x = np.repeat(centres, 40, 0) + 0.05 * rng.normal(size=(80, 4))
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    s = xn @ xn.T
    np.fill_diagonal(s, -np.inf)
    truth = np.argsort(-s, axis=1)[:, :3]
    monkeypatch.setattr(signals, "SIMILARITY_BLOCK", 80 * 7)  # 7 rows per chunk: chunk edges are exercised
    idx, _ = signals.nearest_neighbours(x, 3)
    np.testing.assert_array_equal(idx, truth)
    monkeypatch.setattr(signals, "EXACT_KNN_MAX", 10)  # the pynndescent index
    idx, sim = signals.nearest_neighbours(x, 3)
    assert (idx != np.arange(80)[:, None]).all()  # never its own neighbour
    assert np.mean([len(set(a) & set(b)) / 3 for a, b in zip(idx, truth)]) > 0.9
    np.testing.assert_allclose(sim, np.take_along_axis(s, idx, 1), atol=1e-5)


def test_knn_label_distribution_counts_votes_and_smooths_towards_label_frequencies():
    labels = np.array([0, 0, 1, 1])
    neighbours = np.array([[1, 2], [0, 3], [3, 0], [2, 1]])
    p = signals.knn_label_distribution(neighbours, labels, 2, smoothing=1.0)
    # sample 0: votes (1, 1) + prior (0.5, 0.5) -> (1.5, 1.5) / 3
    np.testing.assert_allclose(p[0], [0.5, 0.5])
    # sample 2: votes (1, 1) as well; sample 3: labels of 2 and 1 -> (1, 1)
    np.testing.assert_allclose(p.sum(1), 1.0)
    p0 = signals.knn_label_distribution(neighbours, labels, 2, smoothing=0.0)
    np.testing.assert_allclose(p0, [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])
    unanimous = signals.knn_label_distribution(np.array([[1, 1], [0, 0]]), np.array([0, 0]), 2, smoothing=0.0)
    np.testing.assert_allclose(unanimous, [[1, 0], [1, 0]])


def test_stratified_folds_spread_every_class():
    labels = np.repeat([0, 1, 2], [10, 5, 7])
    fold = signals.stratified_folds(labels, 5, seed=0)
    for c, n in ((0, 10), (1, 5), (2, 7)):
        counts = np.bincount(fold[labels == c], minlength=5)
        assert counts.max() - counts.min() <= 1 and counts.sum() == n


def test_out_of_fold_probe_does_not_learn_a_sample_s_own_wrong_label():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-3, 1, (40, 5)), rng.normal(3, 1, (40, 5))])
    labels = np.repeat([0, 1], 40)
    labels[3] = 1  # a class-0 point labelled 1
    p = signals.out_of_fold_probabilities(x, labels, 2, folds=4)
    assert p.shape == (80, 2)
    np.testing.assert_allclose(p.sum(1), 1.0)
    assert p[3, 1] < 0.2  # out of fold, its wrong label gets little probability
    assert np.delete(p[np.arange(80), labels], 3).min() > 0.7


def test_joint_fit_of_several_regressions_finds_each_one_s_own_optimum():
    """The folds are fitted as one problem; since they share no parameters, each fold's
    weights must be what fitting that fold alone gives, and its gradient (written out by
    hand in the fit) must vanish there: X^T (softmax - onehot) w / sum(w) + l2 W = 0."""
    rng = np.random.default_rng(5)
    x = torch.tensor(rng.normal(size=(60, 4)), dtype=torch.float64)
    y = torch.tensor(rng.integers(0, 3, 60))
    weights = torch.tensor(rng.uniform(0, 1, (60, 3)) * (rng.uniform(size=(60, 3)) > 0.3), dtype=torch.float64)
    l2 = 0.1
    w, b = signals.fit_softmax_regressions(x, y, 3, l2, weights, max_iter=500)
    assert w.shape == (3, 4, 3) and b.shape == (3, 3)
    onehot = torch.nn.functional.one_hot(y, 3).double()
    for f in range(3):
        alone = signals.fit_softmax_regression(x, y, 3, l2, weight=weights[:, f], max_iter=500)
        torch.testing.assert_close(w[f], alone.weight.detach().T, atol=1e-4, rtol=0)
        # the unregularised bias is defined up to a shift shared by every class
        torch.testing.assert_close(b[f] - b[f].mean(), alone.bias.detach() - alone.bias.detach().mean(),
                                   atol=1e-4, rtol=0)
        m = (weights[:, f] / weights[:, f].sum())[:, None]
        residual = (torch.softmax(x @ w[f] + b[f], 1) - onehot) * m
        torch.testing.assert_close(x.T @ residual + l2 * w[f], torch.zeros(4, 3, dtype=torch.float64),
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(residual.sum(0), torch.zeros(3, dtype=torch.float64), atol=1e-5, rtol=0)


def test_gmm_signal_is_turns_per_class_gmm_on_the_cross_entropy():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(3), size=60)
    labels = rng.integers(0, 3, 60)
    expected = fit_clean_probability(-np.log(probs[np.arange(60), labels]), labels, 3).clean_prob
    np.testing.assert_allclose(signals.gmm_clean_probability(probs, labels, 3), expected)


def test_posterior_by_bayes_rule():
    t = np.array([[0.8, 0.3], [0.2, 0.7]])  # P(given | true), columns sum to 1
    p_true = np.array([[0.5, 0.5], [0.9, 0.1]])
    post = combine.true_class_posterior(t, np.array([0, 1]), p_true)
    # sample 0, given 0: 0.8*0.5 / (0.8*0.5 + 0.3*0.5)
    np.testing.assert_allclose(post[0], [0.4 / 0.55, 0.15 / 0.55])
    # sample 1, given 1: 0.7*0.1 / (0.2*0.9 + 0.7*0.1)
    np.testing.assert_allclose(post[1, 1], 0.07 / 0.25)


def test_log_linear_pool_is_the_weighted_geometric_mean_renormalised():
    from turn_backend.detect.combine import log_linear_pool

    a = np.array([[0.8, 0.2], [0.5, 0.5], [1.0, 0.0]])
    b = np.array([[0.2, 0.8], [0.9, 0.1], [0.5, 0.5]])
    pooled = log_linear_pool([a, b], [2.0, 1.0])
    # row 0: (0.8^2 x 0.2)^(1/3) = 0.5040, (0.2^2 x 0.8)^(1/3) = 0.3175 -> 0.6135, 0.3865
    np.testing.assert_allclose(pooled[0], [0.6135, 0.3865], atol=1e-4)
    # row 1: 0.5^(2/3) x 0.9^(1/3) = 0.6082, 0.5^(2/3) x 0.1^(1/3) = 0.2924 -> 0.6753, 0.3247
    np.testing.assert_allclose(pooled[1], [0.6753, 0.3247], atol=1e-4)
    np.testing.assert_allclose(pooled[2], [1.0, 0.0])  # a class one estimate rules out stays out
    np.testing.assert_allclose(log_linear_pool([a, a], [1.0, 1.0]), a, atol=1e-12)


def test_em_recovers_the_flip_rates_when_the_true_posterior_is_known():
    true = np.repeat([0, 1], 100)
    given = true.copy()
    given[:30] = 1  # 30% of class 0 flipped to 1, class 1 untouched
    p_true = np.eye(2)[true]
    t0 = np.full((2, 2), 0.5)
    t = combine.refine_noise_matrix(t0, given, p_true)
    np.testing.assert_allclose(t, [[0.7, 0.0], [0.3, 1.0]], atol=1e-9)


def test_recalibrate_fits_the_logistic_curve_of_the_target_and_keeps_the_ranking():
    score = np.linspace(0.001, 0.999, 400)
    z = np.log(score / (1 - score))
    target = 1 / (1 + np.exp(-(0.5 * z + 1.0)))  # sigma(a logit(p) + b) with a = 0.5, b = 1
    out = combine.recalibrate(score, target)
    np.testing.assert_allclose(out, target, atol=1e-3)
    assert (np.diff(out) > 0).all()  # monotone: every tau still flags a prefix of the ranking
    np.testing.assert_allclose(combine.recalibrate(np.full(5, 0.3), np.array([0.2, 0.4, 0.6, 0.8, 1.0])), 0.6)


def test_a_row_takes_the_new_clean_probability_and_the_other_classes_share_the_rest():
    posterior = np.array([[0.2, 0.5, 0.3], [1.0, 0.0, 0.0]])
    p_true = np.array([[0.2, 0.5, 0.3], [0.5, 0.1, 0.4]])
    out = combine.with_clean_probability(posterior, np.array([0, 0]), np.array([0.6, 0.7]), p_true)
    # row 0: 0.4 left, shared 0.5 : 0.3 -> 0.25, 0.15
    np.testing.assert_allclose(out[0], [0.6, 0.25, 0.15])
    # row 1: no other class had mass; the rest goes to p_true's most likely other class (2)
    np.testing.assert_allclose(out[1], [0.7, 0.0, 0.3])


def test_a_classifier_that_memorised_the_labels_cannot_talk_the_clean_probability_out_of_its_doubt():
    """The pool ranks, the out-of-fold probe calibrates: a classifier that saw every given label
    in training (here: one that memorised them) joins the ranking, but the combined clean
    probability keeps the calibration of the probe, which never saw a sample's own label. So
    the estimated noise rate is the one found without that classifier, and stays near the truth."""
    d = 8
    x, true = _blobs(500, [np.eye(d)[i] * 2.0 for i in range(4)], 1.0, seed=5)
    rng = np.random.default_rng(6)
    given = true.copy()
    flip = rng.choice(len(true), int(0.2 * len(true)), replace=False)
    given[flip] = (true[flip] + rng.integers(1, 4, len(flip))) % 4
    noisy = given != true
    memoriser = 0.96 * np.eye(4)[given] + 0.01
    alone = detect_label_issues(x, given, 4, k=15, seed=0)
    pooled = detect_label_issues(x, given, 4, model_probs=memoriser, k=15, seed=0)
    assert abs(pooled.noise_rate - alone.noise_rate) < 1e-3, (pooled.noise_rate, alone.noise_rate)
    assert abs(pooled.noise_rate - noisy.mean()) < 0.05, (pooled.noise_rate, noisy.mean())  # 15.7% for 20%
    p = pooled.clean_prob
    bins = np.clip((p * 5).astype(int), 0, 4)
    ece = sum((bins == b).mean() * abs(p[bins == b].mean() - (~noisy)[bins == b].mean())
              for b in range(5) if (bins == b).any())
    assert ece < 0.06, ece
    # the noise matrix holds the same clean probabilities on its diagonal
    np.testing.assert_allclose(np.diag(pooled.noise_counts).sum(), p.sum())
    np.testing.assert_allclose(pooled.noise_counts.sum(), len(given))

def test_pca_reduction_keeps_shape_and_distances_of_low_rank_data():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 8)) @ rng.normal(size=(8, 64))  # rank 8 in 64 dims
    z = signals.reduce_features(x, dims=16)
    assert z.shape == (300, 16) and z.dtype == np.float32
    d_x = np.linalg.norm(x[:20, None] - x[None, :20], axis=2)
    d_z = np.linalg.norm(z[:20, None] - z[None, :20], axis=2)
    np.testing.assert_allclose(d_z, d_x, rtol=1e-3, atol=1e-3)


def _blobs(n_per_class, centres, spread, seed):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(c, spread, (n_per_class, len(c))) for c in centres])
    return x, np.repeat(np.arange(len(centres)), n_per_class)


def test_combined_finds_pair_flips_that_every_single_signal_misses_or_overflags():
    """Look-alike pairs: classes 0 and 1 sit side by side and 40% of each is labelled as the
    other (systematic pair flips); class 2 is clean. A classifier trained on these labels
    learns the flips (its losses do not separate them), k-NN votes split, and cleanlab's
    per-class thresholds miss part of them; the noise-model posterior separates them."""
    d = 12
    c0 = np.zeros(d)
    c1 = np.zeros(d)
    c1[0] = 5.0
    c2 = np.zeros(d)
    c2[1] = 8.0
    x, true = _blobs(250, [c0, c1, c2], 1.0, seed=3)
    rng = np.random.default_rng(4)
    given = true.copy()
    for a, b in ((0, 1), (1, 0)):
        members = np.flatnonzero(true == a)
        given[rng.choice(members, size=int(0.4 * len(members)), replace=False)] = b
    noisy = given != true
    # the in-sample classifier TURN would pass (its linear probe on the noisy labels)
    xs = signals._standardise(torch.tensor(x, dtype=torch.float32))
    head = signals.fit_softmax_regression(xs, torch.tensor(given), 3, l2=1 / np.sqrt(len(x)))
    lp_probs = torch.softmax(head(xs), 1).detach().double().numpy()
    result = detect_label_issues(x, given, 3, model_probs=lp_probs, k=15, seed=0)

    def f1(flag):
        tp = (flag & noisy).sum()
        return 2 * tp / (flag.sum() + noisy.sum())

    from cleanlab.filter import find_label_issues

    singles = {
        "gmm": f1(result.signals["gmm_lp"] <= 0.6),
        "oof_gmm": f1(result.signals["oof_gmm"] <= 0.6),
        # one process, as the bench calls it: cleanlab's default forks a pool after torch has started
        # its threads, and a forked worker hung a CI run for the whole 900-s timeout
        "cleanlab": f1(find_label_issues(given, result.pred_probs, n_jobs=1)),
        "knn": f1(result.knn_probs.argmax(1) != given),
    }
    combined = f1(result.flagged(0.6))
    assert combined > max(singles.values()), (combined, singles)
    # the estimated noise rate is close to the true 26.7%
    assert abs(result.noise_rate - noisy.mean()) < 0.08
    # a flagged wrong label mostly gets another class suggested, and that class is its true one
    hit = np.flatnonzero(result.flagged(0.6) & noisy)
    moved = hit[result.suggested_label[hit] != given[hit]]
    assert len(moved) > 0.6 * len(hit)
    assert (result.suggested_label[moved] == true[moved]).mean() > 0.95
    # the noise matrix puts the flips in the (0, 1) and (1, 0) cells
    counts = result.noise_counts
    assert counts[0, 1] > 50 and counts[1, 0] > 50 and counts[2, :2].sum() < 10


def test_result_round_trips_through_a_run_folder(tmp_path):
    x, y = _blobs(30, [np.zeros(4), np.full(4, 4.0)], 1.0, seed=5)
    result = detect_label_issues(x, y, 2, k=5)
    folder = RunFolder(tmp_path)
    folder.save_detection(tmp_path, result)
    back = folder.load_detection(tmp_path)
    np.testing.assert_allclose(back.clean_prob, result.clean_prob, rtol=1e-6)
    assert set(back.signals) == set(result.signals)
    np.testing.assert_array_equal(back.suggested_label, result.suggested_label)
    np.testing.assert_allclose(back.noise_counts, result.noise_counts, atol=1e-3)
    assert folder.load_detection(tmp_path / "missing") is None


def test_bad_inputs_get_clear_messages():
    x, y = _blobs(10, [np.zeros(3), np.ones(3) * 5], 1.0, seed=6)
    bad = x.copy()
    bad[4, 1] = np.nan
    with pytest.raises(DetectionInputError, match="1 sample.*NaN or infinite features"):
        detect_label_issues(bad, y, 2)
    with pytest.raises(DetectionInputError, match="shape"):
        detect_label_issues(x[:5], y, 2)
    with pytest.raises(DetectionInputError, match="outside 0..1"):
        detect_label_issues(x, np.where(y == 1, 2, 0), 2)
    with pytest.raises(DetectionInputError, match="integer class indices"):
        detect_label_issues(x, y.astype(float), 2)


def test_tiny_classes_and_large_k_are_reported_not_fatal():
    x, y = _blobs(20, [np.zeros(3), np.ones(3) * 5], 1.0, seed=7)
    x = np.concatenate([x, [[10.0, -10.0, 0.0]]])
    y = np.concatenate([y, [2]])  # a one-sample class
    result = detect_label_issues(x, y, 3, k=30)
    assert result.clean_prob[-1] == 1.0  # too few to judge: kept
    assert any("fewer samples than folds" in n for n in result.notes)
    assert any("no more samples than k" in n for n in result.notes)
    assert np.isfinite(result.clean_prob).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_signals_on_cuda_match_the_cpu():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 100)
    x = rng.normal(size=(300, 16)) + 2.5 * np.eye(3)[labels].repeat(6, axis=1)[:, :16]
    idx_cpu, sim_cpu = signals.nearest_neighbours(x, 5)
    idx_gpu, sim_gpu = signals.nearest_neighbours(x, 5, device="cuda")
    assert (idx_cpu == idx_gpu).mean() > 0.99  # ties may order differently
    np.testing.assert_allclose(sim_gpu, sim_cpu, atol=1e-4)
    p_cpu = signals.out_of_fold_probabilities(x, labels, 3, seed=0)
    p_gpu = signals.out_of_fold_probabilities(x, labels, 3, seed=0, device="cuda")
    assert np.abs(p_cpu - p_gpu).max() < 0.02 and (p_cpu.argmax(1) == p_gpu.argmax(1)).mean() > 0.98
    result = detect_label_issues(x, labels, 3, device="cuda", seed=0)
    assert result.clean_prob.shape == (300,) and np.isfinite(result.clean_prob).all()


def test_the_callers_gmm_fit_is_stored_as_the_gmm_signal_verbatim():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    x = rng.normal(size=(60, 6)) + 3 * np.eye(3)[labels].repeat(2, axis=1)
    probs = np.full((60, 3), 0.1)
    probs[np.arange(60), labels] = 0.8
    mine = rng.uniform(size=60)
    result = detect_label_issues(x, labels, 3, model_probs=probs, gmm_clean=mine)
    np.testing.assert_array_equal(result.signals["gmm_lp"], mine)
    with pytest.raises(DetectionInputError, match="gmm_clean needs model_probs"):
        detect_label_issues(x, labels, 3, gmm_clean=mine)
    with pytest.raises(DetectionInputError, match=r"shape \(60,\)"):
        detect_label_issues(x, labels, 3, model_probs=probs, gmm_clean=mine[:10])


def test_a_runs_gmm_chip_and_its_gmm_clean_probability_are_one_fit(tiny_run):
    folder = RunFolder(tiny_run)  # a TURN run: its final clean probability is the per-class GMM
    stored = folder.detection()["signals"]["gmm_lp"].to_numpy()
    np.testing.assert_allclose(stored, np.load(folder.final_dir / "clean_prob.npy"), atol=1e-6)


def test_a_given_neighbour_graph_gives_the_votes_of_the_search_it_replaces():
    """The run's audit stores one neighbour graph (cosine, exact at this size) and detection
    votes with it instead of searching again: the result is the same, and the parts are timed."""
    from turn_backend.audit.stage import neighbour_graph

    x, y = _blobs(60, [np.zeros(8), np.full(8, 3.0), np.r_[np.full(4, 3.0), np.zeros(4)]], 1.0, seed=0)
    y[::9] = (y[::9] + 1) % 3
    searched = detect_label_issues(x, y, 3, k=10, seed=0)
    graph, _ = neighbour_graph(x.astype(np.float32), 20)
    given = detect_label_issues(x, y, 3, k=10, seed=0, neighbours=graph)
    np.testing.assert_allclose(given.knn_probs, searched.knn_probs)
    np.testing.assert_allclose(given.clean_prob, searched.clean_prob, atol=1e-6)
    assert set(given.seconds) == {"reduce", "probes", "knn", "noise_model"}
    with pytest.raises(DetectionInputError, match="neighbours must have shape"):
        detect_label_issues(x, y, 3, k=10, neighbours=graph[:, :5])


def test_dirichlet_multinomial_evidence_matches_scipy_up_to_the_multinomial_coefficient():
    from scipy.special import gammaln
    from scipy.stats import dirichlet_multinomial

    counts = np.array([[7.0, 1.0, 0.0], [2.0, 9.0, 3.0], [1.0, 0.0, 5.0]])
    centre = combine.symmetric_noise_centre(counts)
    for strength in (0.5, 4.0, 300.0):
        expected = sum(dirichlet_multinomial.logpmf(counts[:, j], strength * centre[:, j], counts[:, j].sum())
                       - (gammaln(counts[:, j].sum() + 1) - gammaln(counts[:, j] + 1).sum()) for j in range(3))
        assert combine.dirichlet_multinomial_evidence(counts, strength, centre) == pytest.approx(expected, rel=1e-9)


def test_symmetric_noise_centre_keeps_each_class_rate_and_spreads_its_wrong_labels_evenly():
    counts = np.array([[8.0, 0.0, 1.0], [2.0, 6.0, 0.0], [0.0, 4.0, 9.0]])
    # columns (true classes): 8 of 10 right, 6 of 10, 9 of 10
    np.testing.assert_allclose(combine.symmetric_noise_centre(counts),
                               [[0.8, 0.2, 0.05], [0.1, 0.6, 0.05], [0.1, 0.2, 0.9]], atol=1e-5)


@pytest.mark.parametrize("c", [10, 150])  # 150: the prior's strength is chosen on a subset of the classes
def test_noise_matrix_shrinks_stray_counts_and_keeps_a_pattern_the_counts_bear_out(c):
    # ten images per true class, two wrong each, the wrong labels landing in one or two cells by chance
    rng = np.random.default_rng(0)
    stray = np.diag(np.full(c, 8.0))
    for j in range(c):
        for k in rng.choice([i for i in range(c) if i != j], 2):
            stray[k, j] += 1.0
    t = combine.noise_matrix_from_counts(stray)
    np.testing.assert_allclose(t.sum(axis=0), 1.0)
    np.testing.assert_allclose(np.diag(t), 0.8, atol=1e-3)  # each class keeps its rate of wrong labels
    # the stray 0.1-0.2 cells spread evenly: 0.2 / (c - 1) each
    assert t[~np.eye(c, dtype=bool)].max() < 1.5 * 0.2 / (c - 1)
    # a pattern with many samples behind it (class-pair flips: 1,000 per class, 30% to the next class)
    flips = np.diag(np.full(c, 700.0)) + np.roll(np.diag(np.full(c, 300.0)), 1, axis=0)
    t = combine.noise_matrix_from_counts(flips)
    np.testing.assert_allclose(t, combine.noise_matrix_from_joint(flips), atol=0.01)
    # two classes: nothing to spread, the counts' own matrix
    two = np.array([[30.0, 4.0], [2.0, 50.0]])
    np.testing.assert_allclose(combine.noise_matrix_from_counts(two), combine.noise_matrix_from_joint(two))
    # a true class no sample is estimated to have keeps an empty column
    empty = np.array([[5.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 6.0]])
    np.testing.assert_allclose(combine.noise_matrix_from_counts(empty)[:, 1], 0.0)
