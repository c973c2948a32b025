"""TURN+'s end of run: the final classifier (the fine-tuned model averaged with a probe on the
cleaned labels), and the held-out validation set that can choose between them instead."""

import json
import signal

import numpy as np
import pandas as pd
import pytest

from turn_backend.engine import head_logits
from turn_backend.runfolder import RunFolder


def _run(path, config, monkeypatch, cache):
    from turn_backend.runner import run_turn

    monkeypatch.setenv("TURN_CACHE_DIR", str(cache))
    old = signal.getsignal(signal.SIGTERM)
    try:
        return run_turn(config, path)
    finally:
        signal.signal(signal.SIGTERM, old)  # execute_run installs a stop handler


@pytest.mark.parametrize("fft_lr, expect", [(None, None), (50.0, "probe")])
def test_turn_plus_ends_with_the_model_that_is_best_on_its_held_out_clean_samples(
        tmp_path, monkeypatch, turn_cache_dir, tiny_config, fft_lr, expect):
    # fft_lr 50 wrecks fine-tuning, so the probe on the cleaned labels must win
    config = tiny_config(method="turn+", noise={"kind": "symmetric", "rate": 0.2, "seed": 0}, lp_epochs=10,
                         fft_epochs=2, holdout=0.2, fft_lr=fft_lr, projection_methods=["tsne"])
    metrics = _run(tmp_path / "run", config, monkeypatch, turn_cache_dir)
    folder = RunFolder(tmp_path / "run")
    held = np.load(folder.holdout_path)
    assert len(held) >= 10
    assert (np.load(folder.round_dir(1) / "clean_prob.npy")[held] >= 0.9).all()  # confidently clean only
    for r in (1, 2):  # never trained on
        assert not np.isin(np.load(folder.round_dir(r) / "train_index.npy"), held).any()
    # a model that cannot judge the labels (fft_lr 50) does not cleanse: round 2 trains on round 1's clean set
    round2 = json.loads((folder.round_dir(2) / "round.json").read_text())
    assert round2.get("clean_set_of_round") == (1 if fft_lr else None)
    if fft_lr:
        for name in ("train_index.npy", "train_labels.npy"):
            np.testing.assert_array_equal(np.load(folder.round_dir(2) / name), np.load(folder.round_dir(1) / name))
    choice = json.loads((folder.path / "choice" / "choice.json").read_text())
    assert choice["n_holdout"] == len(held)
    better = "probe" if choice["holdout_acc_probe"] > choice["holdout_acc_fft"] else "fft"
    assert choice["chosen"] == better and (expect is None or better == expect)
    assert metrics["final_model"]["chosen"] == better
    assert metrics["test_acc_last"] == choice[f"test_acc_{better}"]
    logits = np.load(folder.final_dir / "logits.npy")
    if better == "probe":  # the final scores are the probe's on the pre-trained features (from the cache)
        import torch

        probe = torch.load(folder.path / "choice" / "probe_head.pt", weights_only=True)
        cached = [np.load(p) for p in (turn_cache_dir / "features").glob("train-*.npy")]
        assert any(np.allclose(logits, head_logits(probe, f), atol=1e-4) for f in cached if f.shape[0] == 200)
        assert not (folder.final_dir / "features.npy").exists()


def test_baseline_runs_flag_by_the_combined_score_and_turn_by_its_gmm(runs_root, tiny_config):
    from turn_backend.io import read_json
    from turn_backend.run_views import clean_prob_source
    from turn_backend.runner import run_turn

    for method, source in (("lp-gce", "combined"), ("turn", "GMM")):
        folder = RunFolder(runs_root / method)
        run_turn(tiny_config(method=method, projection_methods=[]), folder.path)
        detection = folder.detection()["signals"]
        expected = detection["combined" if source == "combined" else "gmm_lp"].to_numpy()
        np.testing.assert_allclose(np.load(folder.final_dir / "clean_prob.npy"), expected, atol=1e-6)
        assert read_json(folder.final_dir / "gmm.json")["clean_prob_source"] == source
        assert clean_prob_source(folder) == source


@pytest.mark.slow  # 8-11 s on 2 busy cores: in the full suite, not the fast tier
def test_cosine_lr_decay_sets_each_rounds_lr_and_turn_as_published_keeps_it_constant(
        tmp_path, monkeypatch, turn_cache_dir, tiny_config):
    from turn_backend.stages import rounds

    seen = []
    real_epoch = rounds.fft_epoch
    monkeypatch.setattr(rounds, "fft_epoch", lambda model, optimizer, *a, **k: (
        seen.append([g["lr"] for g in optimizer.param_groups]), real_epoch(model, optimizer, *a, **k))[1])
    for method, decay, shares in (("turn", None, [1, 1, 1]), ("turn+", "cosine", [1, 0.75, 0.25])):
        seen.clear()
        config = tiny_config(method=method, fft_epochs=3, fft_lr=0.01, lr_decay=decay, projection_methods=[])
        _run(tmp_path / method, config, monkeypatch, turn_cache_dir)
        # round r of 3 at 0.01 x (1 + cos(pi (r - 1) / 3)) / 2: 1, 3/4, 1/4
        np.testing.assert_allclose([lrs[0] for lrs in seen], [0.01 * s for s in shares])


def test_ensemble_probabilities_average_the_two_softmaxes():
    from turn_backend.stages.choice import ensemble_probabilities

    tuned = np.array([[0.0, 0.0], [np.log(3.0), 0.0]])  # softmax (1/2, 1/2), (3/4, 1/4)
    probe = np.array([[0.0, np.log(3.0)], [0.0, 0.0]])  # softmax (1/4, 3/4), (1/2, 1/2)
    np.testing.assert_allclose(ensemble_probabilities(tuned, probe), [[3 / 8, 5 / 8], [5 / 8, 3 / 8]])


def test_turn_plus_ends_with_the_fine_tuned_model_averaged_with_a_probe_on_the_cleaned_labels(
        tmp_path, monkeypatch, turn_cache_dir, tiny_config):
    import torch

    from turn_backend.detect.signals import softmax

    config = tiny_config(method="turn+", noise={"kind": "symmetric", "rate": 0.2, "seed": 0}, lp_epochs=5,
                         fft_epochs=2, projection_methods=[])
    metrics = _run(tmp_path / "run", config, monkeypatch, turn_cache_dir)
    folder = RunFolder(tmp_path / "run")
    choice = json.loads((folder.path / "choice" / "choice.json").read_text())
    assert choice["chosen"] == "ensemble"
    assert choice["n_probe_train"] == len(np.unique(np.load(folder.round_dir(2) / "train_index.npy")))
    # by hand: the last round's test logits and the saved probe on the cached pre-trained test features
    samples = pd.read_parquet(folder.path / "samples.parquet")
    y = samples.loc[samples["split"] == "test", "true_label"].to_numpy()
    tuned = np.load(folder.round_dir(2) / "test_logits.npy")
    assert len(y) == len(tuned) == 100
    probe = torch.load(folder.path / "choice" / "probe_head.pt", weights_only=True)
    cached = [np.load(p) for p in (turn_cache_dir / "features").glob("test-*.npy") if np.load(p).shape[0] == 100]
    by_hand = [float((((softmax(tuned) + softmax(head_logits(probe, f))) / 2).argmax(1) == y).mean())
               for f in cached]
    assert choice["test_acc_ensemble"] in by_hand
    assert choice["test_acc_fft"] == json.loads((folder.round_dir(2) / "round.json").read_text())["test_acc"]
    assert metrics["test_acc_last"] == choice["test_acc_ensemble"]

    # switched off, the run ends with the fine-tuned model, as TURN as published does
    off = _run(tmp_path / "off", tiny_config(method="turn+", noise={"kind": "symmetric", "rate": 0.2, "seed": 0},
                                             lp_epochs=5, fft_epochs=2, projection_methods=[],
                                             probe_ensemble=False), monkeypatch, turn_cache_dir)
    assert not (tmp_path / "off" / "choice").exists() and "final_model" not in off
    assert off["test_acc_last"] == off["test_acc_per_epoch"][-1] == choice["test_acc_fft"]


@pytest.mark.parametrize("options, message", [
    ({"probe_ensemble": "yes"}, "probe_ensemble must be true or false"),
    ({"probe_ensemble": True, "holdout": 0.1}, "set one of them, not both"),
])
def test_final_classifier_options_are_checked(tiny_config, options, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(method="turn+", **options)
