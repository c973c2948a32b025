"""RunFolder's accessors: names, states, summaries, the cache stamp."""

from __future__ import annotations

import os
from datetime import datetime

from turn_backend.runfolder import (
    ACTIVE_STATES,
    RESUMABLE_STATES,
    TERMINAL_STATES,
    RunFolder,
    RunState,
    new_run_path,
)


def test_new_run_paths_are_timestamped_and_never_taken(tmp_path):
    now = datetime(2026, 1, 2, 3, 4, 5)
    first = new_run_path(tmp_path, "turn+", now)
    assert first == tmp_path / "turn+-20260102-030405"  # as `turn run` has always named them
    first.mkdir()
    assert new_run_path(tmp_path, "turn+", now) == tmp_path / "turn+-20260102-030405-2"
    assert new_run_path(tmp_path, "fft-ce-my data/x", now).name == "fft-ce-my-data-x-20260102-030405"


def test_run_states_are_one_enum():
    assert RunState.DONE == "done" and RunFolder("/nowhere").status()["state"] == RunState.NEW
    groups = (ACTIVE_STATES, TERMINAL_STATES, RESUMABLE_STATES)
    assert set().union(*groups) | {RunState.NEW.value} == {s.value for s in RunState}
    assert not set(ACTIVE_STATES) & set(TERMINAL_STATES)


def test_summaries_are_each_stages_latest_summary_event(tmp_path):
    folder = RunFolder(tmp_path)
    folder.log("features", "features ready: 3 train x 2 dims", summary=True, n_train=3, n_dims=2)
    folder.log("features", "a note")
    folder.log("features", "features ready: 4 train x 2 dims", summary=True, n_train=4, n_dims=2)
    assert folder.summaries()["features"]["n_train"] == 4
    assert set(folder.summaries()) == {"features"}


def test_the_stamp_moves_when_a_result_is_rewritten(tmp_path):
    folder = RunFolder(tmp_path)
    assert folder.stamp() == 0.0
    folder.final_dir.mkdir()
    clean = folder.final_dir / folder.CLEAN_PROB
    clean.write_bytes(b"x")
    os.utime(clean, (1000, 1000))
    before = folder.stamp()
    os.utime(clean, (2000, 2000))
    assert folder.stamp() != before
    extra = tmp_path / "map.npy"
    extra.write_bytes(b"x")
    assert folder.stamp(extra) != folder.stamp()


def test_accessors_read_what_is_there_and_default_otherwise(tmp_path):
    folder = RunFolder(tmp_path)
    assert (folder.class_names(), folder.lp_history(), folder.choice(), folder.round_info(1)) == ([], [], None, {})
    assert not folder.exists() and not folder.has_samples() and folder.worker_log() == ""
    assert not folder.has_final() and folder.final() is None
    folder.classes_path.write_text('["a", "b"]')
    assert folder.class_names() == ["a", "b"]
