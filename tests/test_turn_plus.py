"""TURN+'s end of run: a validation set held out of its clean set, and the final model chosen on it."""

import json
import signal

import numpy as np
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
    from turn_backend.analysis import clean_prob_source
    from turn_backend.runfolder import read_json
    from turn_backend.runner import run_turn

    for method, source in (("lp-gce", "combined"), ("turn", "GMM")):
        folder = RunFolder(runs_root / method)
        run_turn(tiny_config(method=method, projection_methods=[]), folder.path)
        detection = folder.detection()["signals"]
        expected = detection["combined" if source == "combined" else "gmm_lp"].to_numpy()
        np.testing.assert_allclose(np.load(folder.final_dir / "clean_prob.npy"), expected, atol=1e-6)
        assert read_json(folder.final_dir / "gmm.json")["clean_prob_source"] == source
        assert clean_prob_source(folder) == source


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
