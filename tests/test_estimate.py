"""The time and memory of a run, known before they are spent (turn_backend.estimate,
turn_backend.preflight), the scan as the CPU default, and `turn finetune`."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest
from conftest import make_tiny_config

from helpers.cli import turn_env
from turn_backend import estimate, preflight
from turn_backend.io import atomic_write_json
from turn_backend.plan import plan_stages
from turn_backend.runfolder import RunFolder

TINY_CLI = ["--n-train", "200", "--n-test", "100", "--image-size", "64", "--batch-size", "64", "--lp-epochs", "3",
            "--fft-epochs", "1", "--device", "cpu", "--workers", "0", "--projections", "--quiet"]


@pytest.fixture(scope="module")
def measurement(turn_cache_dir):
    """One probe of the tiny TURN+ run (a few seconds)."""
    old = os.environ.get("TURN_CACHE_DIR")
    os.environ["TURN_CACHE_DIR"] = str(turn_cache_dir)
    try:
        return estimate.probe(make_tiny_config(method="turn+"))
    finally:
        if old is None:
            os.environ.pop("TURN_CACHE_DIR")
        else:
            os.environ["TURN_CACHE_DIR"] = old


def test_the_estimate_has_every_planned_step_with_a_positive_time(measurement):
    config = make_tiny_config(method="turn+", fft_epochs=2)
    est = estimate.extrapolate(config, measurement)
    assert [s["key"] for s in est["steps"]] == [key for key, _ in plan_stages(config)]
    assert all(s["seconds"] > 0 for s in est["steps"]), est["steps"]
    assert est["total_seconds"] == pytest.approx(sum(s["seconds"] for s in est["steps"]), abs=0.01)
    assert measurement.train_rate > 0 and measurement.eval_rate > 0
    assert est["peak_memory_bytes"] > measurement.base_memory > 0 and measurement.train_memory_per_sample > 0
    assert 0 < measurement.seconds < 300  # the probe's own cost is measured and said
    line = estimate.summary_line(est)
    assert line.startswith("features ") and "fine-tuning ~" in line and "(2 rounds)" in line and "GB" in line
    # a reused step costs nothing; a linear probe has no fine-tuning to estimate
    assert estimate.extrapolate(config, measurement, reused=("lp",))["steps"][2] == {
        "key": "lp", "title": "Linear probing (3 epochs)", "seconds": 0.0, "reused": True}
    assert "fine-tuning" not in estimate.summary_line(estimate.extrapolate(make_tiny_config(method="lp-gce"),
                                                                           measurement))


def test_the_batch_is_lowered_to_fit_half_the_available_memory(measurement, monkeypatch):
    per_sample = measurement.train_memory_per_sample
    short = replace(measurement, available_memory=2 * (measurement.base_memory + 20.5 * per_sample))
    monkeypatch.setattr(estimate, "probe", lambda config: short)
    config = make_tiny_config(method="turn+", batch_size=128)
    pre = preflight.prepare(config, batch_given=False)
    assert pre.config.batch_size == 16  # 20 fit: the largest multiple of 8 below
    assert any("batch size lowered from 128 to 16" in note for note in pre.notes)
    assert pre.estimate["peak_memory_bytes"] <= estimate.MEMORY_SHARE * short.available_memory
    # an explicit batch wins, with a warning where it would not fit at all
    tight = replace(measurement, available_memory=measurement.base_memory + 10 * per_sample)
    monkeypatch.setattr(estimate, "probe", lambda config: tight)
    pre = preflight.prepare(config, batch_given=True)
    assert pre.config.batch_size == 128 and any(n.startswith("WARNING") for n in pre.notes)
    # enough memory: nothing changes
    monkeypatch.setattr(estimate, "probe", lambda config: replace(measurement, available_memory=1e15))
    pre = preflight.prepare(config, batch_given=False)
    assert pre.config.batch_size == 128 and not pre.notes


def test_the_default_is_the_scan_on_a_cpu_at_224_px_and_turn_plus_on_a_gpu(measurement, monkeypatch):
    # as measured on a 2-core CPU at 224 px: about 10 images a second through a training step
    cpu = replace(measurement, device="cpu", image_size=224, n_train=2400, train_rate=10.0, eval_rate=50.0,
                  available_memory=1e12)
    monkeypatch.setattr(estimate, "probe", lambda config: cpu)
    pre = preflight.prepare(make_tiny_config(method="turn+", fft_epochs=None), method_given=False,
                            finetune_hint="turn finetune runs/x")
    assert pre.config.method == "lp-gce" and pre.estimate["rounds"] == 0
    assert pre.fine_tuning_estimate["groups"]["fine-tuning"] > estimate.LONG_FINE_TUNING_SECONDS
    assert any("turn finetune runs/x" in note and "fine-tuning would take ~" in note for note in pre.notes)
    # an explicit method always wins
    assert preflight.prepare(make_tiny_config(method="turn+"), method_given=True).config.method == "turn+"
    # a GPU ("cuda" is what the probe's runtime found) keeps TURN+, as do small images on the CPU
    monkeypatch.setattr(estimate, "probe", lambda config: replace(cpu, device="cuda:0"))
    assert preflight.prepare(make_tiny_config(method="turn+"), method_given=False).config.method == "turn+"
    monkeypatch.setattr(estimate, "probe", lambda config: replace(cpu, image_size=64))
    assert preflight.prepare(make_tiny_config(method="turn+"), method_given=False).config.method == "turn+"


def test_time_left_scales_the_remaining_estimate_by_how_the_finished_steps_ran(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    make_tiny_config(method="turn+", fft_epochs=1).to_json(folder.config_path)
    steps = [("data", 1.0), ("features", 10.0), ("lp", 1.0), ("round-1", 100.0), ("final", 10.0)]
    atomic_write_json(folder.estimate_path, {"steps": [{"key": k, "title": k, "seconds": s} for k, s in steps],
                                             "total_seconds": 122.0, "groups": {"features": 11, "scan": 1,
                                                                                "fine-tuning": 110},
                                             "rounds": 1, "peak_memory_bytes": 2**30})
    atomic_write_json(folder.timings_path, {"data": 1.0, "features": 18.0, "audit": 2.0, "lp": 2.0})
    folder.set_status(state="running")
    folder.samples_path.write_bytes(b"")  # the data step is done once the sample list is written
    for stage in ("features", "lp"):
        folder.mark_completed(stage)
    now = folder.last_completed_time() + 30.0  # round 1 has run for 30 s
    view = estimate.progress(folder, now=now)
    # data, features (its audit included), lp: 23 s for 12 estimated, shrunk towards 1
    ratio = (23.0 + estimate.RATIO_PRIOR_SECONDS) / (12.0 + estimate.RATIO_PRIOR_SECONDS)
    assert view["ratio"] == pytest.approx(ratio, abs=1e-3)
    assert view["time_left_seconds"] == pytest.approx(ratio * 110.0 - 30.0, abs=0.2)
    actual = {row["key"]: row["actual"] for row in view["steps"]}
    assert actual == {"data": 1.0, "features": 20.0, "lp": 2.0, "round-1": None, "final": None}
    lines = estimate.progress_lines(view)
    assert any("features: estimated ~10 s, took 20 s" in line for line in lines)
    assert any(line.startswith("time left for the whole run: ~") for line in lines)
    assert view["memory"] is None  # no stage has measured its memory yet
    atomic_write_json(folder.peak_memory_path, {"features": {"resident_mb": 900.0, "anonymous_mb": 600.0},
                                                 "lp": {"resident_mb": 1536.0, "anonymous_mb": 1200.0}})
    assert estimate.progress(folder, now=now)["memory"] == (
        "peak memory: estimated ~1.0 GB, measured 1.5 GB (resident set)")


def _turn(*args, cwd, cache, stdin=subprocess.DEVNULL, timeout=300):
    return subprocess.run([sys.executable, "-m", "turn_backend.cli", *map(str, args)], capture_output=True,
                          text=True, env=turn_env(cache), cwd=cwd, stdin=stdin, timeout=timeout)


@pytest.mark.slow  # a whole tiny run through the CLI: 14-40 s on 2 busy cores
def test_run_without_a_terminal_prints_the_estimate_and_starts_and_status_compares(tmp_path, turn_cache_dir):
    result = _turn("run", *TINY_CLI, "--method", "turn+", "--out", "run", cwd=tmp_path, cache=turn_cache_dir)
    assert result.returncode == 0, result.stderr
    assert "estimate (turn+, batch 64, 64 px, cpu): features " in result.stdout and "[Y/n]" not in result.stdout
    folder = RunFolder(tmp_path / "run")
    assert folder.status()["state"] == "done" and folder.estimate()["method"] == "turn+"
    status = _turn("status", "run", cwd=tmp_path, cache=turn_cache_dir)
    view = json.loads(status.stdout)["estimate"]
    assert [row["key"] for row in view["steps"]] == [s["key"] for s in folder.estimate()["steps"]]
    assert all(row["actual"] is not None and row["estimated"] >= 0 for row in view["steps"])
    assert view["time_left_seconds"] is None  # a finished run
    assert "Round 1: cleanse + fine-tune: estimated ~" in status.stderr
    # each stage measured its peak memory, which status shows beside the estimate
    peaks = folder.peak_memory()
    assert set(peaks) >= {"data", "features", "probe", "rounds", "final"}
    assert all(0 < p["anonymous_mb"] <= p["resident_mb"] for p in peaks.values())
    assert "peak memory: estimated ~" in status.stderr and "measured" in status.stderr


@pytest.mark.slow  # the probe alone: 9-20 s on 2 busy cores
def test_run_on_a_terminal_asks_before_it_starts(tmp_path, turn_cache_dir):
    leader, follower = pty.openpty()
    try:
        os.write(leader, b"n\n")
        result = _turn("run", *TINY_CLI, "--method", "lp-gce", "--out", "run", cwd=tmp_path, cache=turn_cache_dir,
                       stdin=follower)
    finally:
        os.close(leader)
        os.close(follower)
    assert result.returncode == 1 and "start the run? [Y/n]" in result.stdout and "not started" in result.stdout
    assert not (tmp_path / "run").exists()  # nothing was created


def test_finetune_continues_a_moved_scan_and_reuses_its_probe(tmp_path, turn_cache_dir, monkeypatch):
    from turn_backend.export import build_export
    from turn_backend.finetune import create_finetune_run, finetune_config
    from turn_backend.runner import execute_run, run_turn

    monkeypatch.setenv("TURN_CACHE_DIR", str(turn_cache_dir))
    run_turn(make_tiny_config(method="lp-gce", projection_methods=[]), tmp_path / "scan")
    # the scan's folder is copied elsewhere (another machine): only the dataset stays where it was
    shutil.copytree(tmp_path / "scan", tmp_path / "moved" / "scan")
    shutil.rmtree(tmp_path / "scan")
    scan = RunFolder(tmp_path / "moved" / "scan")
    config = finetune_config(scan.path, "turn+", fft_epochs=1)
    assert config.method == "turn+" and config.lp_epochs == 3 and config.rounds == 1
    folder = create_finetune_run(scan.path, config, tmp_path / "tuned")
    execute_run(folder.path)
    assert folder.status()["state"] == "done" and folder.round_info(1)["test_acc"] >= 0
    # the probe was reused, not trained again: no linear-probing event, the scan's head and history
    assert not [e for e in folder.events() if e["stage"] == "lp"]
    assert folder.summaries()["finetune"]["reused"] == ["lp", "audit"]
    assert folder.lp_history() == scan.lp_history()
    assert (folder.lp_dir / folder.LP_HEAD).read_bytes() == (scan.lp_dir / scan.LP_HEAD).read_bytes()
    assert "lp" not in folder.timings()
    export = build_export(folder.path, None, "all")
    assert len(export) == 200
    # bad input: a run whose probe is not TURN's first stage, or settings that decide the probe
    bad = RunFolder(tmp_path / "ce")
    shutil.copytree(scan.path, bad.path)
    (bad.path / bad.CONFIG).write_text(json.dumps({**bad.config(), "method": "lp-ce"}))
    with pytest.raises(ValueError, match="probe is not"):
        finetune_config(bad.path, "turn+")
    with pytest.raises(ValueError, match="lp_epochs"):
        finetune_config(scan.path, "turn+", lp_epochs=10)
    with pytest.raises(ValueError, match="not a run folder"):
        finetune_config(tmp_path / "nowhere", "turn+")
    with pytest.raises(FileExistsError):
        create_finetune_run(scan.path, config, folder.path)
