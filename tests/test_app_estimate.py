"""The Train page's estimates: before Start (and the scan where fine-tuning would be long),
each step's estimate beside its time, the whole run's time left, and Fine-tune this scan.
The probe is replaced by a fixed measurement (AppTest runs the page in this process)."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
from conftest import make_tiny_config

from helpers.apptest import app, texts
from turn_backend import estimate
from turn_backend.io import atomic_write_json
from turn_backend.runfolder import RunFolder, list_runs

# a 2-core CPU at 224 px, as measured: 10 images a second through a training step, 50 through inference
SLOW_CPU = estimate.Measurement(
    device="cpu", image_size=224, n_train=2400, n_test=600, num_classes=10, feature_dim=1280, features_cached=False,
    data_seconds=1.0, eval_rate=50.0, train_rate=10.0, lp_seconds_per_sample=2e-5, base_memory=0.9e9,
    train_memory_per_sample=90e6, eval_memory_per_sample=18e6, memory_kind="resident set",
    available_memory=14e9, seconds=9.0)


def test_train_page_estimates_before_start_recommends_the_scan_and_saves_the_estimate(runs_root, monkeypatch):
    from app import training

    monkeypatch.setattr(estimate, "probe", lambda config: SLOW_CPU)
    started = []

    def start_without_worker(config, processes=1):  # the run folder as Start makes it, no worker
        from turn_backend.runner import create_run

        folder = create_run(config, runs_root / "started")
        started.append(folder)
        return folder

    monkeypatch.setattr(training, "start_run", start_without_worker)
    at = app("train")
    at.session_state["tr_device"] = "cpu"
    at.run()
    at.number_input(key="tr_image_size").set_value(224).run()
    assert "Estimate" not in texts(at)  # nothing measured yet
    at.button(key="tr_estimate_btn").click().run()
    assert not at.exception
    # 128 images of 90 MB (11.4 GB) would not fit half of 14 GB: the slider moves to the largest that does
    assert at.select_slider(key="tr_batch").value == 64
    assert "Batch size lowered from 128 to 64" in texts(at)
    shown = texts(at)
    assert "**Estimate** (turn+, cpu, batch 64)" in shown and "fine-tuning ~" in shown
    assert any("Fine-tuning would take ~" in w.value for w in at.warning)
    at.button(key="tr_use_scan").click().run()
    assert at.selectbox(key="tr_method").value == "lp-gce"
    assert "**Estimate** (lp-gce, cpu, batch 64)" in texts(at) and "The scan is recommended" in texts(at)
    at.button(key="tr_start").click().run()
    assert not at.exception and len(started) == 1
    saved = started[0].estimate()
    assert saved["method"] == "lp-gce" and saved["batch_size"] == 64 == started[0].config()["batch_size"]


def test_train_page_shows_each_steps_estimate_beside_its_time(tiny_run):
    folder = RunFolder(tiny_run)
    config = make_tiny_config()
    atomic_write_json(folder.estimate_path, estimate.extrapolate(config, replace(SLOW_CPU, n_train=200)))
    at = app("train", tiny_run).run()
    assert not at.exception
    shown = texts(at)
    assert "Round 1: cleanse + fine-tune" in shown and "estimated ~" in shown and ", took " in shown
    # and the peak memory each stage measured, beside the estimated one
    assert "Peak memory: estimated ~" in shown and "measured" in shown


@pytest.fixture
def finished_scan(runs_root, turn_cache_dir, tmp_path_factory):
    from turn_backend.runner import run_turn

    template = tmp_path_factory.getbasetemp() / "scan-template"
    if not template.exists():
        run_turn(make_tiny_config(method="lp-gce", projection_methods=[]), template)
    shutil.copytree(template, runs_root / "scan")
    return runs_root / "scan"


def test_fine_tune_this_scan_starts_turn_plus_from_the_scans_probe(finished_scan, runs_root, monkeypatch):
    from turn_backend import worker

    monkeypatch.setattr(estimate, "probe", lambda config: replace(SLOW_CPU, image_size=64, n_train=200))
    launched = []
    monkeypatch.setattr(worker, "launch", lambda path, processes=1, env=None: launched.append(path))
    at = app("train", finished_scan).run()
    assert not at.exception
    at.button(key="tr_finetune").click().run()
    assert not at.exception
    tuned = [f for f in list_runs(runs_root) if f.name != "scan"]
    assert len(tuned) == 1 and launched == [tuned[0].path]
    new = tuned[0]
    assert new.config()["method"] == "turn+" and {"lp", "audit"} <= set(new.completed())
    assert new.estimate()["steps"][2]["reused"] and new.estimate()["steps"][2]["seconds"] == 0
    assert at.session_state["run_dir"] == str(new.path)
