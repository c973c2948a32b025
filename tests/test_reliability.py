"""Never lose work, never crash on bad input: faults (killed workers, a killed app server, a
full disk, two tabs writing at once) and bad input (NaN features, missing models and
devices, GPU out of memory, arbitrary clean probabilities and losses).

Every test is marked `@pytest.mark.reliability(area=..., case=..., outcome=...)`;
docs/reliability.md is generated from these marks (scripts/reliability_doc.py) and
tests/test_reliability_doc.py keeps the two in step.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn

from helpers.cli import turn
from helpers.reliability import write_decisions
from helpers.server import CHROMIUM, CHROMIUM_ARGS, AppServer, wait_idle
from helpers.waiting import wait_for
from turn_backend import analysis as an
from turn_backend import run_views
from turn_backend.cleansing import fit_clean_probability, floor_size, select_clean
from turn_backend.config import RunConfig
from turn_backend.export import ExportError, build_export, default_tau, to_bytes, write_export
from turn_backend.review import ReviewStore
from turn_backend.runfolder import RunFolder
from turn_backend.worker import launch, live_state

REPO = Path(__file__).resolve().parents[1]
reliability = pytest.mark.reliability


_turn = turn  # the `turn` command in a subprocess (helpers.cli)


# =========================================================================== faults

# Big enough that extraction takes several seconds on 2 busy cores (10-20 s here), small
# enough to run it twice in the test.
FEATURE_RUN = dict(
    dataset={"kind": "demo", "n_train": 600, "n_test": 100}, noise={"kind": "symmetric", "rate": 0.4, "seed": 0},
    model="efficientnet_lite0", image_size=64, batch_size=64, lp_epochs=5, method="lp-gce",
    projection_methods=[], device="cpu", num_workers=0,
)


def _new_run(path: Path) -> Path:
    from turn_backend.runner import create_run

    create_run(RunConfig(**FEATURE_RUN), path)
    return path


def _feature_files(cache: Path) -> dict[str, np.ndarray]:
    return {p.name: np.load(p) for p in sorted((cache / "features").glob("*.npy")) if ".partial" not in p.name}


@pytest.mark.slow
@reliability(area="fault", case="The training worker is killed (SIGKILL to its process group) during feature "
                                "extraction",
             outcome="The app and `turn status` show the run as interrupted; no cached feature file looks complete; "
                     "`turn resume` finishes it with the same clean probabilities and test accuracy as an "
                     "uninterrupted run")
def test_kill_during_feature_extraction_then_resume_matches_uninterrupted_run(tmp_path):
    ref_cache, killed_cache = tmp_path / "cache-ref", tmp_path / "cache-killed"
    ref = _new_run(tmp_path / "reference")
    killed = _new_run(tmp_path / "killed")
    # each run has its own feature cache, so both really extract; they run side by side
    ref_pid = launch(ref, env={"TURN_CACHE_DIR": str(ref_cache)})
    pid = launch(killed, env={"TURN_CACHE_DIR": str(killed_cache)})
    try:
        folder = RunFolder(killed)

        def extracting() -> bool:
            s = folder.status()
            return s.get("stage") == "features" and s.get("stage_done", 0) > 0

        assert wait_for(extracting, timeout=300, interval=0.02), f"never saw extraction: {folder.status()}"
        os.killpg(pid, signal.SIGKILL)
        status = folder.status()
        assert status["stage_done"] < status["stage_total"], "extraction finished before the kill"
        assert wait_for(lambda: live_state(killed)["state"] == "interrupted", timeout=30)
        assert "features" not in folder.completed()
        assert _feature_files(killed_cache) == {}, "a killed extraction left a file that looks complete"

        result = _turn("resume", killed, "--quiet", env={"TURN_CACHE_DIR": str(killed_cache)})
        assert result.returncode == 0, result.stderr + (killed / "worker.log").read_text()
        assert "Traceback" not in result.stderr
        assert wait_for(lambda: live_state(ref)["state"] in ("done", "failed"), timeout=600)
    finally:
        for p in (pid, ref_pid):
            try:
                os.killpg(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    reference = RunFolder(ref)
    assert reference.status()["state"] == "done", (ref / "worker.log").read_text()
    assert folder.status()["state"] == "done"
    assert [e["stage"] for e in folder.events()].count("start") == 2  # started, killed, started again
    ref_feats, resumed_feats = _feature_files(ref_cache), _feature_files(killed_cache)
    assert ref_feats.keys() == resumed_feats.keys() and len(ref_feats) == 2  # train and test
    for name in ref_feats:
        np.testing.assert_array_equal(resumed_feats[name], ref_feats[name])
    np.testing.assert_allclose(folder.final()["clean_prob"], reference.final()["clean_prob"], atol=1e-6)
    assert folder.metrics()["test_acc_last"] == reference.metrics()["test_acc_last"]


@reliability(area="fault", case="Stop is pressed while a library call is running (torch's load_state_dict catches "
                                "the stop signal's exception and raises its own RuntimeError)",
             outcome="The run is recorded as stopped, not failed, and the worker exits as stopped; "
                     "`turn resume` continues it")
def test_stop_inside_a_library_that_wraps_the_exception_is_still_a_stop(tmp_path, monkeypatch):
    from turn_backend import runner

    def execute_wrapping_the_stop(self):
        try:  # what torch does around each parameter copy
            signal.raise_signal(signal.SIGTERM)
        except Exception as exc:
            raise RuntimeError(f"Error(s) in loading state_dict: {exc!r}") from exc

    monkeypatch.setattr(runner.TurnRun, "execute", execute_wrapping_the_stop)
    monkeypatch.setattr(runner, "_stop_signalled", False)
    folder = runner.create_run(runner.RunConfig(device="cpu"), tmp_path / "run")
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(runner.StopRequested):
            runner.execute_run(folder.path)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert folder.status()["state"] == "stopped"
    assert folder.events()[-1]["stage"] == "stop"


# in a fresh interpreter: forking pytest itself, with the threads earlier tests left, can deadlock the child
FORK_AND_TERMINATE = """
import multiprocessing, signal, sys, time
from turn_backend import runner

def sleep_ready(ready):
    ready.set()
    time.sleep(60)

if __name__ == "__main__":
    runner._install_stop_handler()
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    child = ctx.Process(target=sleep_ready, args=(ready,))
    child.start()
    assert ready.wait(60), "the child never started"
    child.terminate()  # SIGTERM, as Pool.terminate() sends its workers
    child.join(30)
    print(child.exitcode, runner._stop_signalled)
"""


@reliability(area="fault", case="A multiprocessing pool stops its forked workers with SIGTERM while a run's stop "
                                "handler is installed (the workers inherit it)",
             outcome="Each worker dies of the signal; none raises the run's stop exception and unwinds into a copy "
                     "of the run (that once left a second pytest running the rest of the suite)")
def test_forked_children_die_of_sigterm_instead_of_raising_the_runs_stop(tmp_path):
    script = tmp_path / "fork_and_terminate.py"
    script.write_text(FORK_AND_TERMINATE)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    # the child died of SIGTERM (exit code -15), and the parent was not told to stop
    assert result.stdout.split() == [str(-signal.SIGTERM.value), "False"], result.stdout + result.stderr


# ------------------------------------------------------------------------- export faults


def _frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    old = pd.DataFrame({"sample_id": ["a", "b"], "final_label": ["cat", "dog"]})
    new = pd.DataFrame({"sample_id": ["a", "b", "c"], "final_label": ["cat", "", "bird"]})
    return old, new


def _full_disk():
    return OSError(errno.ENOSPC, "No space left on device")


@reliability(area="fault", case="The disk fills up while an export is written (ENOSPC from the file write, "
                                "after part of the data, or from fsync)",
             outcome="ExportError says the file could not be written and that the previous file is unchanged; the "
                     "previous export is byte-identical; no temporary file is left")
@pytest.mark.parametrize("where", ["write", "fsync"])
def test_full_disk_during_export_keeps_the_previous_file(tmp_path, monkeypatch, where):
    import turn_backend.io as tio  # the atomic writes

    old, new = _frames()
    path = tmp_path / "exports" / "labels.csv"
    write_export(old, path)
    before = path.read_bytes()
    if where == "fsync":
        def fsync(fd):
            raise _full_disk()

        monkeypatch.setattr(tio.os, "fsync", fsync)
    else:
        real_fdopen = os.fdopen

        class HalfWritten:
            """Writes half of the data, then the disk is full."""

            def __init__(self, fh):
                self.fh = fh

            def write(self, data):
                self.fh.write(data[: len(data) // 2])
                self.fh.flush()
                raise _full_disk()

            def __getattr__(self, name):
                return getattr(self.fh, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.fh.close()

        monkeypatch.setattr(tio.os, "fdopen", lambda fd, mode: HalfWritten(real_fdopen(fd, mode)))
    with pytest.raises(ExportError, match=r"could not write .*labels\.csv: No space left on device\. The previous "
                                          r"file, if any, is unchanged"):
        write_export(new, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["labels.csv"]  # no temporary file left
    monkeypatch.undo()
    write_export(new, path)  # space again: the export goes through
    assert path.read_bytes() == to_bytes(new, "csv")


@reliability(area="fault", case="An export is written to a path under a file (`somefile/out.csv`, "
                                "`somefile/sub/out.csv`) or into a folder that cannot be written",
             outcome="ExportError names the file that is in the way (or the OS reason); nothing is written and the "
                     "blocking file is unchanged")
def test_export_to_a_path_under_a_file(tmp_path, monkeypatch):
    old, _ = _frames()
    blocker = tmp_path / "somefile"
    blocker.write_text("keep me")
    for target in (blocker / "out.csv", blocker / "sub" / "out.csv"):
        with pytest.raises(ExportError, match=f"{blocker} is a file, not a folder.*previous file"):
            write_export(old, target)
    assert blocker.read_text() == "keep me"
    # Tests run as root, so chmod cannot make a folder read-only; simulate the refusal.
    import turn_backend.io as tio  # the atomic writes

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tio.tempfile, "mkstemp", refuse)
    with pytest.raises(ExportError, match="Permission denied.*previous file"):
        write_export(old, tmp_path / "locked" / "out.csv")


@reliability(area="fault", case="`turn export` to an unusable path, or of a run that has not finished",
             outcome="One line `turn: error: ...` naming the problem, exit code 1, no traceback")
def test_cli_export_errors_are_messages(tiny_run, tmp_path):
    blocker = tmp_path / "somefile"
    blocker.write_text("x")
    result = _turn("export", tiny_run, "--out", blocker / "out.csv")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{blocker} is a file, not a folder" in result.stderr
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text((tiny_run / "config.json").read_text())
    result = _turn("export", unfinished, "--out", tmp_path / "out.csv")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "no final clean probabilities yet" in result.stderr


# ---------------------------------------------------------------- two tabs on one run

SAMPLES = [f"s{k}" for k in range(7)]


def _check_review_db(db: Path, writers: dict[str, int], undone: dict[str, list[int]]) -> None:
    """Every decision is in the history, undone exactly where its writer undid it, and
    current() is each sample's latest decision that stands."""
    store = ReviewStore(db)
    rows = []
    for s in SAMPLES:
        for h in store.history(s):
            rows.append((s, h))
    assert len(rows) == sum(writers.values())
    for session, n in writers.items():
        base = int(session.rsplit("-", 1)[1]) * 10_000
        mine = [(s, h) for s, h in rows if h["session"] == session]
        assert sorted(h["label"] for _, h in mine) == [base + k for k in range(n)]
        for s, h in mine:
            assert s == SAMPLES[(h["label"] - base) % len(SAMPLES)]
            assert h["undone"] == int(h["label"] in undone[session])
        # a writer's own decisions on a sample stay in its order
        for s in SAMPLES:
            labels = [h["label"] for t, h in mine if t == s]
            assert labels == sorted(labels)
    current = store.current()
    for s in SAMPLES:
        standing = [h for h in store.history(s) if not h["undone"]]
        if standing:
            assert current[s] == ("relabel", standing[-1]["label"])
        else:
            assert s not in current
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@reliability(area="fault", case="Several tabs open a run's review database at the same moment, before it exists "
                                "(SQLite refuses a concurrent switch to WAL at once, without waiting)",
             outcome="Every tab gets its store; none fails with `database is locked`")
def test_tabs_opening_a_new_review_database_at_once_all_succeed(tmp_path):
    errors = []
    for trial in range(40):
        db = tmp_path / f"review-{trial}.sqlite"
        start = threading.Barrier(4, timeout=60)

        def open_store() -> None:
            start.wait()
            try:
                ReviewStore(db)
            except sqlite3.OperationalError as exc:
                errors.append(str(exc))

        threads = [threading.Thread(target=open_store, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert errors == []
    with sqlite3.connect(tmp_path / "review-0.sqlite") as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@reliability(area="fault", case="Two browser tabs review the same run at once (two ReviewStore connections in two "
                                "threads writing and undoing interleaved decisions)",
             outcome="Every decision is in the sample's history, undo affects only the tab's own last decision, "
                     "and the current decision of each sample is its latest standing one")
def test_two_tabs_in_threads_keep_every_decision(tmp_path):
    db = tmp_path / "review.sqlite"
    writers = {"tab-1": 150, "tab-2": 150}
    undone: dict[str, list[int]] = {}
    start = threading.Barrier(len(writers), timeout=60)  # a tab that dies early fails the test, not hangs it

    def tab(session: str, n: int) -> None:
        store = ReviewStore(db)  # its own store, as each browser session has
        base = int(session.rsplit("-", 1)[1]) * 10_000
        start.wait()
        undone[session] = []
        for k in range(n):
            store.record(SAMPLES[k % len(SAMPLES)], "relabel", base + k, session=session)
            if k % 10 == 9:
                store.undo_last(session)
                undone[session].append(base + k)

    threads = [threading.Thread(target=tab, args=item, daemon=True) for item in writers.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    _check_review_db(db, writers, undone)
    sessions = [h["session"] for s in SAMPLES for h in ReviewStore(db).history(s)]
    assert set(sessions) == set(writers)


@reliability(area="fault", case="Two app processes write decisions to the same run at once (multiprocessing)",
             outcome="No decision is lost or duplicated, no 'database is locked' error, the database passes "
                     "SQLite's integrity check, current() is the latest standing decision per sample")
def test_two_processes_keep_every_decision(tmp_path):
    db = tmp_path / "review.sqlite"
    ReviewStore(db)
    ctx = multiprocessing.get_context("spawn")
    writers = {"proc-1": 120, "proc-2": 120, "proc-3": 120}
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=write_decisions, args=(str(db), s, SAMPLES, n, 7, start, out))
             for s, n in writers.items()]
    for p in procs:
        p.start()
    start.set()
    undone = dict(out.get(timeout=180) for _ in procs)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    _check_review_db(db, writers, undone)


# ------------------------------------------------------------ app server killed mid-review


def _open_review(page, url: str) -> list[str]:
    """The sample ids of the Review cards, in order (cards are keyed by their slot on the
    page; a card's last caption is its sample id)."""
    page.goto(url)
    page.wait_for_selector("[class*=st-key-keep_] button", timeout=180_000)
    wait_idle(page)
    return page.eval_on_selector_all(
        "[class*='st-key-card_']",
        "els => els.map(e => [...e.querySelectorAll('[data-testid=stCaptionContainer]')].pop().innerText.trim())")


def _card(page, sid: str):
    return page.locator("[class*='st-key-card_']").filter(has=page.get_by_text(sid, exact=True)).first


@pytest.mark.browser
@reliability(area="fault", case="The app server is killed (SIGKILL) while a person reviews samples in the browser",
             outcome="Every decision the page acknowledged is in the run's database after the restart, shown on the "
                     "Review page and applied by the export; a click in flight when the server died is either fully "
                     "saved or absent, and the database is intact")
def test_app_server_killed_during_review_loses_no_decision(tiny_run, runs_root, tmp_path):
    from playwright.sync_api import sync_playwright

    folder = RunFolder(tiny_run)
    store = ReviewStore(folder.review_db)
    ids = folder.samples().query("split == 'train'")["sample_id"].astype(str).tolist()
    names = json.loads((tiny_run / "classes.json").read_text())
    url = "{}/review?run=" + tiny_run.name
    servers = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            servers.append(AppServer(runs_root, tmp_path / "server-1.log").start())
            page = browser.new_page()
            sids = _open_review(page, url.format(servers[-1].url))
            assert len(sids) >= 4
            clicks = [("keep", sids[0]), ("remove", sids[1]), ("accept", sids[2])]
            for action, sid in clicks:
                _card(page, sid).locator(f"[class*='st-key-{action}_'] button").first.click()
                assert wait_for(lambda: sid in store.current(), timeout=60), f"{action} on {sid} not saved"
                wait_idle(page)
            acknowledged = store.current()
            assert acknowledged[sids[0]] == ("keep", None) and acknowledged[sids[1]] == ("remove", None)
            i2 = ids.index(sids[2])
            inputs = run_views.review_inputs(folder)  # accept takes the card's suggested class
            pred, given = int(inputs["suggested"][i2]), int(inputs["given"][i2])
            assert acknowledged[sids[2]] == (("relabel", pred) if pred != given else ("keep", None))
            # one more click, and the server dies while it is being handled
            _card(page, sids[3]).locator("[class*='st-key-keep_'] button").first.click()
            servers[-1].kill()

            with sqlite3.connect(folder.review_db) as con:
                assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            after = store.current()
            for sid, decision in acknowledged.items():
                assert after[sid] == decision
            assert after.get(sids[3], ("keep", None)) == ("keep", None)  # saved whole, or not at all
            assert set(after) <= set(acknowledged) | {sids[3]}

            servers.append(AppServer(runs_root, tmp_path / "server-2.log").start())
            page = browser.new_page()  # a fresh tab: nothing comes from the old browser session
            _open_review(page, url.format(servers[-1].url))
            index = an.ReviewIndex.for_run(inputs, default_tau(folder))
            left, total = index.progress(index.decision_arrays(after)[0])
            assert page.get_by_text(f"{left} of {total} flagged samples left to review").count() == 1
            for sid, (action, label) in after.items():
                badge = an.decision_text(action, label, names)
                assert badge in _card(page, sid).inner_text(), sid
        finally:
            for server in servers:
                server.kill()
            browser.close()
    exported = build_export(tiny_run).set_index("sample_id")
    for sid, (action, label) in after.items():
        row = exported.loc[sid]
        assert row["decision"] == action
        if action == "remove":
            assert pd.isna(row["final_label"])
        else:
            assert row["final_label"] == (names[label] if action == "relabel" else row["given_label"])


# ====================================================================== bad input: engine


@reliability(area="bad input", case="The model produces NaN or infinite features (a forward hook poisons some rows)",
             outcome="The run fails at the end of feature extraction with `ValueError: the model produced NaN or "
                     "infinite features for N train image(s) ...`, recorded in status.json and the event log; the bad "
                     "features are not cached, so a fixed model's next run extracts afresh and finishes")
def test_nan_features_fail_clearly_and_are_not_cached(tmp_path, monkeypatch):
    import turn_backend.runner as runner
    from turn_backend.stages import data as data_stage

    cache = tmp_path / "cache"
    monkeypatch.setenv("TURN_CACHE_DIR", str(cache))
    real_load = data_stage.load_model

    def poisoned(*args, **kwargs):
        loaded = real_load(*args, **kwargs)

        def hook(module, inputs, output):
            out = output.clone()
            out[0, 0] = float("nan")
            out[-1, 1] = float("inf")
            return out

        loaded.extractor.register_forward_hook(hook)
        return loaded

    config = dict(FEATURE_RUN, dataset={"kind": "demo", "n_train": 100, "n_test": 50}, image_size=32, lp_epochs=1)
    old_handler = signal.getsignal(signal.SIGTERM)
    try:
        monkeypatch.setattr(data_stage, "load_model", poisoned)
        # 2 bad rows in each batch of 64: 2 batches of train images, 1 of test images
        with pytest.raises(ValueError, match=r"NaN or infinite features for 4 train and 2 test image\(s\)"):
            runner.run_turn(RunConfig(**config), tmp_path / "poisoned")
        status = RunFolder(tmp_path / "poisoned").status()
        assert status["state"] == "failed"
        assert status["error"].startswith("ValueError: the model produced NaN or infinite features")
        assert RunFolder(tmp_path / "poisoned").events()[-1]["stage"] == "error"
        assert "features" not in RunFolder(tmp_path / "poisoned").completed()
        assert not [p for p in (cache / "features").glob("*.npy") if ".partial" not in p.name]

        monkeypatch.setattr(data_stage, "load_model", real_load)  # the model is fixed
        metrics = runner.run_turn(RunConfig(**config), tmp_path / "fixed")
    finally:
        signal.signal(signal.SIGTERM, old_handler)  # execute_run installs a stop handler
    assert 0 <= metrics["test_acc_last"] <= 1
    assert all(np.isfinite(np.load(p)).all() for p in (cache / "features").glob("*.npy"))


@pytest.mark.slow  # 8-11 s on 2 busy cores: in the full suite, not the fast tier
@reliability(area="bad input", case="`turn run --model no_such_model_xyz` (a model id that does not exist)",
             outcome="`turn: error: timm has no model named 'no_such_model_xyz'; see timm.list_models() for "
                     "names`, exit code 1, no traceback, and no run folder: the estimate before the run loads the "
                     "model first, so nothing starts")
def test_cli_unknown_model_is_a_message(tmp_path):
    result = _turn("run", "--n-train", "200", "--n-test", "100", "--image-size", "32", "--method", "lp-gce",
                   "--projections", "--quiet", "--device", "cpu", "--model", "no_such_model_xyz",
                   "--out", tmp_path / "run", env={"TURN_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "turn: error: timm has no model named 'no_such_model_xyz'" in result.stderr
    assert not (tmp_path / "run").exists()


@reliability(area="bad input", case="A device that is not there or not a device (`--device cuda` or `cuda:7` "
                                    "without that GPU; `tpu`, `cuda:x`, `gpu`)",
             outcome="The run's Runtime, built before any other work, refuses it: `device 'cuda:7' was asked for "
                     "but no CUDA GPU is visible; use "
                     "--device cpu`, `there is no GPU 7: this machine has N`, or `unknown device 'tpu'; use auto, "
                     "cpu, cuda or cuda:N`")
def test_runtime_refuses_missing_and_unknown_devices():
    from turn_backend.engine import Runtime

    for device in ("tpu", "cuda:x", "gpu", "CPU"):
        with pytest.raises(ValueError, match=f"unknown device '{device}'; use auto, cpu, cuda or cuda:N"):
            Runtime(device)
    if torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="there is no GPU"):
            Runtime(f"cuda:{torch.cuda.device_count()}")
    else:
        for device in ("cuda", "cuda:7"):
            with pytest.raises(RuntimeError, match=f"device '{device}' was asked for but no CUDA GPU is visible"):
                Runtime(device)


@reliability(area="bad input", case="fp16 mixed precision on a CPU (`--precision fp16 --device cpu`, or no GPU)",
             outcome="The run's Runtime refuses it before any work: `fp16 mixed precision needs a CUDA GPU: on a "
                     "CPU it runs about 16x slower than full precision; use --precision no (or bf16)`")
def test_runtime_refuses_fp16_on_a_cpu():
    from turn_backend.engine import Runtime

    with pytest.raises(ValueError, match="fp16 mixed precision needs a CUDA GPU"):
        Runtime("cpu", "fp16")


class OOMAbove(nn.Module):
    """A tiny extractor that fails like a GPU out of memory for batches above `limit`."""

    def __init__(self, limit: int, dim: int = 6) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(3 * 8 * 8, dim)
        self.feature_dim = dim
        self.limit = limit
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(len(x))
        if len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.lin(x.flatten(1))


def _tiny_images(n: int = 40):
    from turn_backend.data.core import ImageSet
    from turn_backend.models.core import Preprocess

    rng = np.random.default_rng(0)
    images = ImageSet(ids=[f"i{k}" for k in range(n)], labels=np.arange(n) % 3, class_names=["a", "b", "c"],
                      arrays=rng.integers(0, 256, (n, 8, 8), dtype=np.uint8))
    return images, Preprocess(8, (0.5,) * 3, (0.5,) * 3)


@reliability(area="bad input", case="The GPU runs out of memory during feature extraction or scoring (batch too "
                                    "large; simulated on CPU by a forward that raises torch.cuda.OutOfMemoryError "
                                    "above N images)",
             outcome="The batch is split in halves until it fits and later batches keep the smaller size; each "
                     "halving is logged and passed to the `notify` callback (the runner's event log); the features "
                     "equal those of an unconstrained run. Out of memory at one image: BatchTooLargeError saying "
                     "what to change, and no feature file")
def test_oom_in_inference_retries_with_half_the_batch(tmp_path, caplog):
    from turn_backend.engine import BatchTooLargeError, Runtime, extract_features

    images, pre = _tiny_images()
    rt = Runtime("cpu")
    expected = np.asarray(extract_features(OOMAbove(10**6), images, pre, tmp_path / "ok.npy", rt, batch_size=16))
    model, notes = OOMAbove(limit=5), []
    with caplog.at_level("WARNING", logger="turn_backend.engine"):
        got = extract_features(model, images, pre, tmp_path / "oom.npy", rt, batch_size=16, notify=notes.append)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6, atol=1e-6)
    assert notes == ["out of GPU memory at batch size 16; retrying with batch size 8",
                     "out of GPU memory at batch size 8; retrying with batch size 4"]
    assert [r.getMessage() for r in caplog.records if r.name == "turn_backend.engine"] == notes
    assert max(b for b in model.batches[3:]) == 4  # later batches start at the size that fits
    assert not list(tmp_path.glob("*.partial.npy"))
    with pytest.raises(BatchTooLargeError, match="out of GPU memory even for a single image"):
        extract_features(OOMAbove(limit=0), images, pre, tmp_path / "never.npy", rt, batch_size=4)
    assert not (tmp_path / "never.npy").exists()


@reliability(area="bad input", case="The GPU runs out of memory during full fine-tuning (simulated on CPU)",
             outcome="BatchTooLargeError: `out of GPU memory while fine-tuning at batch size 16; lower --batch-size "
                     "(for example --batch-size 8) ...` (the run records it as its error); at a batch size that fits "
                     "the same epoch runs")
def test_oom_in_fine_tuning_says_lower_the_batch_size():
    from turn_backend.engine import BatchTooLargeError, Runtime, fft_epoch, make_optimizer
    from turn_backend.losses import make_loss
    from turn_backend.models.core import StageHParams

    images, pre = _tiny_images()
    rt = Runtime("cpu")
    model = OOMAbove(limit=10)
    opt = make_optimizer(model.parameters(), StageHParams("adamw", 1e-3, 0.0))
    loss = make_loss("ce", len(images), 3)
    with pytest.raises(BatchTooLargeError, match=r"batch size 16; lower --batch-size \(for example --batch-size 8\)"):
        fft_epoch(model, opt, images, np.arange(len(images)), images.labels, pre, rt, loss, 16, 0, 0)
    # at a batch size that fits, the same epoch runs
    assert np.isfinite(fft_epoch(model, opt, images, np.arange(len(images)), images.labels, pre, rt, loss, 8, 0, 0))


# ============================================================ bad input: property-based


@st.composite
def selection_inputs(draw):
    num_classes = draw(st.integers(1, 6))
    n = draw(st.integers(0, 60))
    labels = draw(arrays(np.int64, n, elements=st.integers(0, num_classes - 1)))
    probs = draw(arrays(np.float64, n, elements=st.one_of(st.floats(0, 1), st.sampled_from([0.0, 0.6, 1.0]))))
    tau = draw(st.one_of(st.floats(0, 1), st.sampled_from([0.0, 0.6, 1.0])))
    return probs, labels, num_classes, tau


def _allowed(probs, labels, num_classes, tau) -> tuple[dict[int, set], dict[int, int]]:
    """Per class: the indices select_clean may return, and how many candidates it has."""
    allowed, counts = {}, {}
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if not len(members):
            continue
        cand = members[probs[members] > tau]
        if len(cand):
            allowed[c], counts[c] = set(cand.tolist()), len(cand)
        else:  # the floor: the class's floor_size most probably clean samples (ties: any of them)
            k = floor_size(len(members))
            kth = np.sort(probs[members])[::-1][k - 1]
            allowed[c], counts[c] = set(members[probs[members] >= kth].tolist()), k
    return allowed, counts


@reliability(area="bad input", case="Clean-sample selection on arbitrary clean probabilities, labels (empty classes, "
                                    "single samples, ties, no candidate) and tau (hypothesis)",
             outcome="Only candidates (p > tau) or a class's floor are selected; balance='min' draws exactly "
                     "N = min over classes of the candidate count, without repeats, from every class with samples; "
                     "balance='mean' keeps every candidate; the set is never empty when any class has samples; the "
                     "same seed gives the same set")
@settings(max_examples=150, deadline=None)
@given(selection_inputs(), st.sampled_from(["min", "mean"]), st.integers(0, 2**32 - 1))
def test_select_clean_properties(inputs, balance, seed):
    probs, labels, num_classes, tau = inputs
    sel = select_clean(probs, labels, num_classes, tau, np.random.default_rng(seed), balance)
    allowed, counts = _allowed(probs, labels, num_classes, tau)
    picked = sel.indices
    assert picked.dtype == np.int64
    if len(labels):
        assert len(picked) > 0
    else:
        assert len(picked) == 0 and sel.per_class == 0
    assert sel.candidates_per_class.tolist() == [counts.get(c, 0) for c in range(num_classes)]
    per_class = {c: picked[labels[picked] == c] for c in allowed}
    assert set(labels[picked].tolist()) <= set(allowed)
    for c, mine in per_class.items():
        assert set(mine.tolist()) <= allowed[c]
    if balance == "min" and allowed:
        n = min(counts.values())
        assert sel.per_class == n
        for _c, mine in per_class.items():
            assert len(mine) == n and len(set(mine.tolist())) == n
    elif allowed:
        for c, mine in per_class.items():
            if counts[c] == len(allowed[c]):  # no tie at a floor's edge: every candidate is kept
                assert set(mine.tolist()) == allowed[c]
            assert len(mine) == max(counts[c], sel.per_class)
    again = select_clean(probs, labels, num_classes, tau, np.random.default_rng(seed), balance)
    np.testing.assert_array_equal(again.indices, picked)


# Losses are cross-entropies: non-negative, and below 1e39 for float32 logits. (Finite losses
# more than ~1e308 apart overflow the per-class min-max normalisation in cleansing.py.)
finite_or_not = st.one_of(
    st.floats(min_value=0, max_value=1e300, allow_nan=False),
    st.floats(min_value=0, max_value=50, allow_nan=False),
    st.sampled_from([0.0, 1.0, float("nan"), float("inf"), -float("inf"), 1e-300, 1e30, 1e300]),
)


@reliability(area="bad input", case="Per-class GMM on arbitrary losses: NaN, +-inf, ties, one sample, empty classes, "
                                    "tiny and huge values (hypothesis)",
             outcome="Clean probabilities are finite and in [0, 1] for every sample; non-finite losses are reported "
                     "in the notes")
@settings(max_examples=150, deadline=None)
@given(st.integers(1, 5).flatmap(lambda c: st.tuples(
    st.just(c),
    st.integers(0, 40).flatmap(lambda n: st.tuples(arrays(np.float64, n, elements=finite_or_not),
                                                   arrays(np.int64, n, elements=st.integers(0, c - 1)))))))
def test_fit_clean_probability_is_a_probability_for_any_losses(case):
    num_classes, (losses, labels) = case
    fit = fit_clean_probability(losses, labels, num_classes, seed=0)
    assert fit.clean_prob.shape == losses.shape
    assert np.isfinite(fit.clean_prob).all()
    assert ((fit.clean_prob >= 0) & (fit.clean_prob <= 1)).all()
    assert len(fit.fits) == num_classes
    if not np.isfinite(losses).all():
        assert any("non-finite" in note for note in fit.notes)
