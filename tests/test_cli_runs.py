"""The `turn` command as a user runs it: subprocesses, real worker processes, real kills."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.cli import REPO, turn, turn_env
from helpers.server import free_port
from helpers.waiting import wait_for
from turn_backend.runfolder import RunFolder
from turn_backend.worker import launch, live_state

REPO = Path(__file__).resolve().parents[1]
TINY = ["--n-train", "200", "--n-test", "100", "--image-size", "32", "--lp-epochs", "10", "--fft-epochs", "3",
        "--noise", "symmetric", "--noise-rate", "0.4", "--device", "cpu", "--method", "turn", "--quiet"]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """One uninterrupted tiny run, the yardstick for resume and multi-process runs."""
    base = tmp_path_factory.mktemp("reference")
    out = base / "run"
    result = turn("run", *TINY, "--out", out, cache=base / "cache")
    assert result.returncode == 0, result.stderr
    return out


def test_run_writes_a_complete_run_folder(reference_run):
    folder = RunFolder(reference_run)
    assert folder.status()["state"] == "done"
    metrics = folder.metrics()
    assert metrics["n_train"] == 200 and metrics["n_test"] == 100
    assert 0 <= metrics["test_acc_last"] <= 1 and metrics["test_acc_best"] >= metrics["test_acc_last"]
    assert metrics["noise_rate"] == pytest.approx(0.4)
    assert len(folder.rounds()) == 3
    for stage in ("features", "lp", "fft", "final"):
        assert metrics["seconds"][stage] > 0
    final = folder.final()
    assert final["clean_prob"].shape == (200,)
    # runs started from the CLI map every training sample, before and after tuning
    assert folder.projection("train", "before", "tsne").shape == (200, 2)
    assert folder.projection("train", "after", "tsne").shape == (200, 2)
    stages = [e["stage"] for e in folder.events()]
    assert stages[0] == "start" and stages[-1] == "done" and "cleanse" in stages


@pytest.mark.slow  # over 10 s on 2 busy cores: in the full suite, not the fast tier
def test_resume_after_a_kill_during_fine_tuning_matches_the_uninterrupted_run(reference_run, tmp_path):
    cache = tmp_path / "cache"
    # the same configuration as the reference, in a new folder
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "config.json").write_text((reference_run / "config.json").read_text())
    pid = launch(killed, env={"TURN_CACHE_DIR": str(cache)})
    folder = RunFolder(killed)
    assert wait_for(lambda: "round-1" in folder.completed()), "round 1 never finished"
    os.killpg(os.getpgid(pid), signal.SIGKILL)
    assert wait_for(lambda: live_state(killed)["state"] == "interrupted", timeout=30)
    assert "round-3" not in folder.completed()

    result = turn("resume", killed, "--quiet", cache=cache)
    assert result.returncode == 0, result.stderr
    assert folder.status()["state"] == "done"
    ref = RunFolder(reference_run)
    for r in (1, 2, 3):
        np.testing.assert_array_equal(np.load(folder.round_dir(r) / "selected.npy"),
                                      np.load(ref.round_dir(r) / "selected.npy"))
    np.testing.assert_allclose(folder.final()["clean_prob"], ref.final()["clean_prob"], atol=1e-5)
    assert folder.metrics()["test_acc_last"] == ref.metrics()["test_acc_last"]
    assert any(e["stage"] == "resume" for e in folder.events())


@pytest.mark.slow  # over 10 s on 2 busy cores: in the full suite, not the fast tier
def test_two_process_gloo_run_selects_the_same_first_clean_set(reference_run, tmp_path):
    out = tmp_path / "ddp"
    # its own feature cache, so the two processes really extract (each its shard)
    result = turn("run", *TINY, "--processes", "2", "--out", out, cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr + (out / "worker.log").read_text()
    folder, ref = RunFolder(out), RunFolder(reference_run)
    assert folder.status()["processes"] == 2
    # each process wrote a shard of the feature cache; they were joined into one file, then removed
    assert not list((tmp_path / "cache").rglob("*.partial.npy"))
    np.testing.assert_array_equal(np.load(folder.round_dir(1) / "selected.npy"),
                                  np.load(ref.round_dir(1) / "selected.npy"))
    np.testing.assert_allclose(np.load(folder.round_dir(1) / "clean_prob.npy"),
                               np.load(ref.round_dir(1) / "clean_prob.npy"), atol=1e-4)
    assert folder.status()["state"] == "done"


@pytest.mark.slow
def test_a_run_over_two_nodes_selects_the_same_first_clean_set(reference_run, tmp_path):
    # two "machines" on this one: node 0 starts the run, node 1 joins it through torchrun's
    # static rendezvous at node 0's address; one process each, on a shared run folder and cache
    out, master = tmp_path / "two-nodes", f"127.0.0.1:{free_port()}"
    node0 = subprocess.Popen([sys.executable, "-m", "turn_backend.cli", "run", *TINY, "--nodes", "2", "--master",
                              master, "--out", str(out)], env=turn_env(tmp_path / "cache"), cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        joined = turn("join", out, "--node-rank", "1", "--master", master, "--wait", "120", cache=tmp_path / "cache")
        node0_output = node0.communicate(timeout=600)[0]
    finally:
        node0.kill()
    assert joined.returncode == 0, joined.stdout + joined.stderr
    assert node0.returncode == 0, node0_output + (out / "worker.log").read_text()
    assert "turn join" in node0_output  # node 0 tells the user what to run on the others
    folder, ref = RunFolder(out), RunFolder(reference_run)
    assert folder.status()["processes"] == 2 and folder.status()["state"] == "done"
    np.testing.assert_array_equal(np.load(folder.round_dir(1) / "selected.npy"),
                                  np.load(ref.round_dir(1) / "selected.npy"))


def test_join_refuses_what_torchrun_would_hang_on(tmp_path):
    bad_master = turn("join", tmp_path, "--node-rank", "1", "--master", "node0", "--wait", "0")
    assert bad_master.returncode == 1 and "HOST:PORT" in bad_master.stderr
    rank_zero = turn("join", tmp_path, "--node-rank", "0", "--master", "127.0.0.1:1", "--wait", "0")
    assert rank_zero.returncode == 1 and "node 0 starts the run" in rank_zero.stderr
    no_run = turn("join", tmp_path / "missing", "--node-rank", "1", "--master", "127.0.0.1:1", "--wait", "0")
    assert no_run.returncode == 1 and "start node 0 first" in no_run.stderr


def test_export_writes_the_cleaned_label_file(reference_run, tmp_path):
    out = tmp_path / "labels.csv"
    result = turn("export", reference_run, "--out", out, cache=tmp_path)
    assert result.returncode == 0, result.stderr
    df = pd.read_csv(out)
    assert list(df.columns) == ["sample_id", "path", "given_label", "predicted_label", "clean_prob", "flagged",
                                "decision", "final_label", "duplicate_of", "test_duplicate", "outlier",
                                "outlier_score"]
    assert len(df) == 200
    assert (df["final_label"] == df["given_label"]).all()  # nothing reviewed yet
    assert df["flagged"].sum() == (RunFolder(reference_run).final()["clean_prob"] <= 0.6).sum()
    assert "wrote" in result.stdout


def test_cli_errors_are_messages_not_tracebacks(tmp_path):
    result = turn("run", "--data", tmp_path / "missing", "--quiet", cache=tmp_path)
    assert result.returncode == 1
    assert "no such file or folder" in result.stderr and "Traceback" not in result.stderr
    result = turn("resume", tmp_path, cache=tmp_path)
    assert result.returncode == 1 and "not a run folder" in result.stderr
    result = turn("run", "--method", "magic", cache=tmp_path)
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_help_lists_the_commands(tmp_path):
    result = turn("--help", cache=tmp_path)
    for command in ("run", "resume", "export", "demo", "bench"):
        assert command in result.stdout


@pytest.mark.slow  # over 10 s on 2 busy cores: in the full suite, not the fast tier
def test_demo_writes_metrics_for_turn_and_its_baselines(tmp_path):
    out = tmp_path / "demo"
    result = turn("demo", "--out", out, "--n-train", "200", "--n-test", "100", "--image-size", "32", "--quiet",
                  cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    rows = json.loads((out / "metrics.json").read_text())
    assert [r["method"] for r in rows] == ["turn+", "turn", "lp-gce", "fft-ce"]
    for row in rows:
        for key in ("test_acc_best", "test_acc_last", "n_train", "seconds"):
            assert row[key] is not None
        assert row["n_train"] == 200
    for turn_row in rows[:2]:
        assert turn_row["n_clean"] > 0 and 0 <= turn_row["clean_purity"] <= 1
    # the frozen features are extracted once (train + test) and every later method reads them
    assert len(list((tmp_path / "cache" / "features").glob("*.npy"))) == 2
    from_cache, maps_from_cache = [], []
    for row in rows:
        events = RunFolder(row["run_dir"]).events()
        from_cache += [e["from_cache"] for e in events if "from_cache" in e]
        maps_from_cache += [e["maps_from_cache"] for e in events if "maps_from_cache" in e]
    assert from_cache == [False, True, True, True]
    # so are the maps of the pre-trained features, and each run's copy is the same map
    assert maps_from_cache == [False, True, True, True]
    first, last = (np.load(Path(rows[k]["run_dir"]) / "projections" / "train_before_tsne.npy") for k in (0, -1))
    assert first.shape == (200, 2) and np.array_equal(first, last)
