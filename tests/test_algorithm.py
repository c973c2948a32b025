"""TURN's steps against hand-computed cases: GCE, the per-class GMM posterior, selection."""

import numpy as np
import pytest
import torch
from scipy.stats import norm

from turn_backend.cleansing import (
    detection_metrics,
    fit_clean_probability,
    floor_size,
    sanitize_losses,
    select_clean,
    stratified_holdout,
)
from turn_backend.engine import head_logits, train_linear_probe
from turn_backend.losses import ELRLoss, gce_loss, per_sample_ce
from turn_backend.models.core import StageHParams


def test_gce_matches_hand_computed_values():
    # logits [0, ln 3] give p = [0.25, 0.75]
    logits = torch.tensor([[0.0, np.log(3.0)], [0.0, np.log(3.0)]])
    # target 1: (1 - 0.75^0.7) / 0.7 = 0.260566 ; target 0: (1 - 0.25^0.7) / 0.7 = 0.887244
    assert gce_loss(logits[:1], torch.tensor([1])).item() == pytest.approx(0.260566, abs=1e-5)
    assert gce_loss(logits[:1], torch.tensor([0])).item() == pytest.approx(0.887244, abs=1e-5)
    assert gce_loss(logits, torch.tensor([1, 0])).item() == pytest.approx((0.260566 + 0.887244) / 2, abs=1e-5)


def test_gce_tends_to_cross_entropy_as_q_goes_to_zero():
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    ce = torch.nn.functional.cross_entropy(logits, torch.tensor([2])).item()
    assert gce_loss(logits, torch.tensor([2]), q=1e-4).item() == pytest.approx(ce, rel=1e-3)
    # q = 1 is the MAE-like loss 1 - p_y
    p = torch.softmax(logits, 1)[0, 2].item()
    assert gce_loss(logits, torch.tensor([2]), q=1.0).item() == pytest.approx(1 - p, abs=1e-6)


def test_elr_regulariser_uses_running_targets():
    elr = ELRLoss(num_samples=2, num_classes=2, lam=3.0, beta=0.7)
    logits = torch.tensor([[0.0, np.log(3.0)]])  # p = [0.25, 0.75]
    value = elr(logits, torch.tensor([1]), torch.tensor([0])).item()
    # t = 0.3 * p; <t, p> = 0.3 * (0.0625 + 0.5625) = 0.1875; CE = -ln 0.75
    assert value == pytest.approx(-np.log(0.75) + 3.0 * np.log(1 - 0.1875), abs=1e-4)
    assert torch.allclose(elr.targets[1], torch.zeros(2))


def test_per_sample_ce_is_unreduced():
    logits = torch.tensor([[0.0, np.log(3.0)], [0.0, np.log(3.0)]])
    np.testing.assert_allclose(per_sample_ce(logits, torch.tensor([1, 0])).numpy(), [-np.log(0.75), -np.log(0.25)],
                               rtol=1e-6)


def _bimodal(rng, n_clean, n_noisy):
    clean = rng.normal(0.2, 0.05, n_clean)
    noisy = rng.normal(2.5, 0.3, n_noisy)
    return np.concatenate([clean, noisy])


def test_gmm_posterior_separates_bimodal_losses_per_class():
    rng = np.random.default_rng(0)
    losses = np.concatenate([_bimodal(rng, 80, 20), _bimodal(rng, 60, 40) + 1.0])
    labels = np.repeat([0, 1], 100)
    result = fit_clean_probability(losses, labels, 2)
    p = result.clean_prob
    # each class: its low-loss samples are clean, its high-loss ones are not
    assert (p[:80] > 0.99).all() and (p[80:100] < 0.01).all()
    assert (p[100:160] > 0.99).all() and (p[160:] < 0.01).all()
    fit = result.fits[0]
    assert fit.status == "fit"
    assert fit.means[0] == pytest.approx(0.2, abs=0.05) and fit.means[1] == pytest.approx(2.5, abs=0.15)
    assert fit.weights[0] == pytest.approx(0.8, abs=0.02)


def test_gmm_posterior_equals_bayes_rule_with_the_reported_fit():
    rng = np.random.default_rng(1)
    losses = _bimodal(rng, 70, 30)
    labels = np.zeros(100, dtype=int)
    result = fit_clean_probability(losses, labels, 1)
    f = result.fits[0]
    # the reported parameters are in loss units: Bayes' rule with them, at every training
    # loss, must give the clean probabilities the function returned
    clean = f.weights[0] * norm.pdf(losses, f.means[0], f.stds[0])
    noisy = f.weights[1] * norm.pdf(losses, f.means[1], f.stds[1])
    np.testing.assert_allclose(result.clean_prob, clean / (clean + noisy), atol=1e-6)
    assert losses.min() < f.means[0] < f.means[1] < losses.max()


def test_gmm_edge_cases_are_reported_not_crashes():
    losses = np.array([0.1, 0.1, 0.1, 5.0, np.nan, np.inf, 0.2, 0.3])
    labels = np.array([0, 0, 0, 1, 2, 2, 2, 2])  # class 3 has no sample
    result = fit_clean_probability(losses, labels, 4)
    statuses = [f.status for f in result.fits]
    assert statuses[0] == "too few samples"  # a single distinct value
    assert statuses[1] == "too few samples"  # one sample
    assert statuses[3] == "empty"
    assert np.isfinite(result.clean_prob).all()
    assert (result.clean_prob[:4] == 1.0).all()
    assert any("non-finite" in n for n in result.notes)
    # the NaN and inf losses were treated as the largest finite loss: least probably clean
    assert result.clean_prob[4] == result.clean_prob[5] <= result.clean_prob[6:].min()


def test_sanitize_losses_counts_and_fills():
    out, n = sanitize_losses(np.array([1.0, np.nan, 3.0, -np.inf]))
    assert n == 2 and out.tolist() == [1.0, 3.0, 3.0, 3.0]


def test_selection_draws_the_smallest_class_size_from_every_class():
    p = np.array([0.9, 0.8, 0.7, 0.1,   0.95, 0.65, 0.2, 0.3])
    y = np.array([0, 0, 0, 0,           1, 1, 1, 1])
    sel = select_clean(p, y, 2, tau=0.6, rng=np.random.default_rng(0))
    assert sel.candidates_per_class.tolist() == [3, 2]
    assert sel.per_class == 2
    assert len(sel.indices) == 4
    assert set(sel.indices[y[sel.indices] == 1]) == {4, 5}
    assert set(sel.indices[y[sel.indices] == 0]) <= {0, 1, 2}
    assert not sel.notes


def test_selection_with_a_class_without_clean_candidate_falls_back_to_the_floor():
    p = np.array([0.9, 0.8, 0.7, 0.9,   0.5, 0.4, 0.1, 0.3])
    y = np.array([0, 0, 0, 0,           1, 1, 1, 1])
    sel = select_clean(p, y, 2, tau=0.6, rng=np.random.default_rng(0))
    # class 1 has nothing above tau: N = 0 would empty the whole clean set
    assert floor_size(4) == 1
    assert sel.candidates_per_class.tolist() == [4, 1]
    assert sel.per_class == 1
    assert len(sel.indices) == 2
    assert 4 in sel.indices  # class 1's most probably clean sample
    assert any("no sample above tau" in n for n in sel.notes)


def test_selection_ignores_classes_without_samples_and_is_seeded():
    p = np.linspace(0.61, 0.99, 30)
    y = np.repeat([0, 2], 15)  # class 1 is absent
    a = select_clean(p, y, 3, tau=0.6, rng=np.random.default_rng(5))
    b = select_clean(p, y, 3, tau=0.6, rng=np.random.default_rng(5))
    assert a.per_class == 15 and len(a.indices) == 30
    np.testing.assert_array_equal(a.indices, b.indices)


def test_mean_balance_keeps_every_candidate_and_tops_up_small_classes():
    p = np.array([0.9] * 6 + [0.9, 0.9])
    y = np.array([0] * 6 + [1, 1])
    sel = select_clean(p, y, 2, tau=0.6, rng=np.random.default_rng(0), balance="mean")
    assert sel.per_class == 4  # mean of 6 and 2
    assert set(range(6)) <= set(sel.indices.tolist())  # nothing discarded
    assert (y[sel.indices] == 1).sum() == 4  # class 1 drawn with replacement up to 4


def test_holdout_takes_a_share_of_each_class_confident_samples_only():
    # class 0: samples 0-39, class 1: 40-99; every fourth sample is below the 0.9 cut
    labels = np.repeat([0, 1], [40, 60])
    clean = np.where(np.arange(100) % 4 == 0, 0.8, 0.95)
    selected = np.concatenate([np.arange(100), np.arange(10)])  # duplicates (top-ups) count once
    held = stratified_holdout(selected, clean, labels, 2, 0.2, np.random.default_rng(0))
    # confident: 30 of class 0, 45 of class 1 -> floor(0.2 x 30) = 6 and floor(0.2 x 45) = 9
    assert np.bincount(labels[held], minlength=2).tolist() == [6, 9]
    assert (clean[held] >= 0.9).all() and len(np.unique(held)) == len(held) and (np.diff(held) > 0).all()
    assert np.array_equal(held, stratified_holdout(selected, clean, labels, 2, 0.2, np.random.default_rng(0)))
    # at most max_per_class from a class; nothing when the whole would be under min_total
    capped = stratified_holdout(selected, clean, labels, 2, 0.2, np.random.default_rng(0), max_per_class=5)
    assert np.bincount(labels[capped], minlength=2).tolist() == [5, 5]
    assert len(stratified_holdout(selected, clean, labels, 2, 0.2, np.random.default_rng(0), min_total=16)) == 0
    # only what was selected can be held out
    assert set(stratified_holdout(np.arange(50), clean, labels, 2, 0.5, np.random.default_rng(1))) <= set(range(50))


def test_detection_metrics_on_hand_made_labels():
    given = np.array([0, 0, 1, 1, 2, 2])
    true = np.array([0, 1, 1, 0, 2, 2])  # samples 1 and 3 are noisy
    flagged = np.array([False, True, True, False, False, False])
    m = detection_metrics(flagged, given, true)
    assert m["precision"] == 0.5  # 1 of 2 flagged is noisy
    assert m["recall"] == 0.5  # 1 of 2 noisy is flagged
    assert m["f1"] == 0.5
    assert m["purity"] == pytest.approx(3 / 4)  # kept 0, 3, 4, 5; sample 3 is noisy
    assert (m["n_flagged"], m["n_kept"], m["n_noisy"]) == (2, 4, 2)


def test_linear_probe_learns_separable_features_and_is_seeded():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-2, 1, (100, 8)), rng.normal(2, 1, (100, 8))]).astype(np.float32)
    y = np.repeat([0, 1], 100)
    hp = StageHParams("adamw", 1e-2, 0.0)
    head, history = train_linear_probe(x, y, 2, hp, "gce", epochs=10, batch_size=32, seed=3,
                                       eval_features=x, eval_labels=y)
    assert history[-1]["test_acc"] > 0.95
    head2, _ = train_linear_probe(x, y, 2, hp, "gce", epochs=10, batch_size=32, seed=3)
    assert torch.equal(head["weight"], head2["weight"])
    np.testing.assert_allclose(head_logits(head, x[:3]), x[:3].astype(np.float64) @ head["weight"].double().numpy().T
                               + head["bias"].double().numpy())


def test_the_probe_reads_a_memory_mapped_feature_cache_in_place_and_gives_the_same_head(tmp_path):
    """A million cached features are 5 GB: the probe trains on the memory map itself, and
    the logits are computed a chunk at a time, with the same results as on arrays in RAM."""
    from turn_backend.engine import as_tensor_view

    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(-2, 1, (60, 8)), rng.normal(2, 1, (60, 8))]).astype(np.float32)
    y = np.repeat([0, 1], 60)
    np.save(tmp_path / "features.npy", x)
    cached = np.load(tmp_path / "features.npy", mmap_mode="r")
    view = as_tensor_view(cached)
    assert view.data_ptr() == cached.ctypes.data  # no copy
    hp = StageHParams("adamw", 1e-2, 0.0)
    from_map, _ = train_linear_probe(cached, y, 2, hp, "gce", epochs=3, batch_size=16, seed=0)
    in_ram, _ = train_linear_probe(x, y, 2, hp, "gce", epochs=3, batch_size=16, seed=0)
    assert torch.equal(from_map["weight"], in_ram["weight"])
    np.testing.assert_allclose(head_logits(in_ram, cached, chunk=7), head_logits(in_ram, x), rtol=1e-12)
