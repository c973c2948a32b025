"""Retrain with my decisions: a new run trains on a run's reviewed labels."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.cli import turn
from turn_backend.data.core import DatasetError
from turn_backend.retrain import REVIEWED_LABELS, apply_reviewed_labels, create_retrain_run, reviewed_labels
from turn_backend.review import ReviewStore
from turn_backend.runfolder import RunFolder

ROOT = Path(__file__).resolve().parents[1]


def _train_rows(folder: RunFolder) -> pd.DataFrame:
    s = folder.samples()
    return s[s["split"] == "train"].reset_index(drop=True)


def _execute(run_dir: Path) -> None:
    from turn_backend.runner import execute_run

    old = signal.getsignal(signal.SIGTERM)
    try:
        execute_run(run_dir)
    finally:
        signal.signal(signal.SIGTERM, old)  # execute_run installs a stop handler


def _review(tiny_run: Path) -> dict:
    """Relabel, remove and keep one flagged sample each (least probably clean first)."""
    folder = RunFolder(tiny_run)
    train = _train_rows(folder)
    order = np.argsort(folder.final()["clean_prob"])
    relabel, remove, keep, undone = (train.loc[i, "sample_id"] for i in order[:4])
    new_label = (int(train.loc[order[0], "given_label"]) + 1) % 10
    store = ReviewStore(folder.review_db)
    store.record(relabel, "relabel", new_label)
    store.record(remove, "remove")
    store.record(keep, "keep")
    store.record(undone, "remove")
    assert store.undo_last() == undone  # an undone decision does not count
    return {"relabel": relabel, "new_label": new_label, "remove": remove, "keep": keep, "undone": undone}


def test_retrained_run_trains_on_the_reviewed_labels(tiny_run, runs_root):
    d = _review(tiny_run)
    out = runs_root / "retrained"
    folder = create_retrain_run(tiny_run, out, tau=0.9, lp_epochs=1, projection_methods=[])
    cfg = folder.config()
    assert cfg["tau"] == 0.9 and cfg["method"] == "turn"
    src = cfg["retrained_from"]
    assert Path(src["run"]) == tiny_run.resolve()
    assert (src["decisions"], src["relabelled"], src["removed"], src["kept"]) == (3, 1, 1, 1)
    snapshot = pd.read_parquet(out / REVIEWED_LABELS).set_index("sample_id")
    assert snapshot.loc[d["relabel"], "final_label"] == d["new_label"]
    assert snapshot.loc[d["remove"], "final_label"] == -1 and not snapshot.loc[d["remove"], "held_clean"]
    assert snapshot.loc[d["keep"], "held_clean"] and d["undone"] not in snapshot.index

    _execute(out)
    assert folder.status()["state"] == "done"
    before, after = _train_rows(RunFolder(tiny_run)), _train_rows(folder)
    assert len(after) == len(before) - 1
    assert d["remove"] not in set(after["sample_id"]) and d["undone"] in set(after["sample_id"])
    labels = dict(zip(after["sample_id"], after["given_label"]))
    assert labels[d["relabel"]] == d["new_label"]
    assert labels[d["keep"]] == dict(zip(before["sample_id"], before["given_label"]))[d["keep"]]
    # held clean: at tau 0.9 the GMM flags most samples, yet the reviewed ones are in the clean set
    row = {sid: i for i, sid in enumerate(after["sample_id"])}
    clean_prob = np.load(folder.round_dir(1) / "clean_prob.npy")
    selected = set(np.load(folder.round_dir(1) / "selected.npy").tolist())
    for sid in (d["keep"], d["relabel"]):
        assert clean_prob[row[sid]] == 1.0 and row[sid] in selected
    assert len(folder.audit()["train"]) == len(after)  # the audit follows the reduced training set

    # a retrain of the retrained run carries the earlier decisions on
    ReviewStore(folder.review_db).record(d["keep"], "relabel", 0 if labels[d["keep"]] else 1)
    chained = reviewed_labels(out).set_index("sample_id")
    assert chained.loc[d["relabel"], "final_label"] == d["new_label"]
    assert chained.loc[d["remove"], "decision"] == "remove"
    assert chained.loc[d["keep"], "decision"] == "relabel"
    assert chained.loc[d["keep"], "given_label"] == labels[d["keep"]]  # the dataset's label, before review


def test_retrain_refuses_bad_input_and_leaves_nothing_behind(tiny_run, runs_root):
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        create_retrain_run(runs_root / "missing", runs_root / "x")
    with pytest.raises(ValueError, match="unknown config keys"):
        create_retrain_run(tiny_run, runs_root / "x", not_a_setting=1)
    with pytest.raises(ValueError, match="tau"):
        create_retrain_run(tiny_run, runs_root / "x", tau=3.0)
    assert not (runs_root / "x").exists()
    assert [p.name for p in runs_root.iterdir()] == [tiny_run.name]  # no temporary folder left
    (runs_root / "taken").mkdir()
    (runs_root / "taken" / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        create_retrain_run(tiny_run, runs_root / "taken")
    assert (runs_root / "taken" / "mine.txt").read_text() == "keep me"
    ReviewStore(RunFolder(tiny_run).review_db).record("no-such-sample", "remove")
    with pytest.raises(ValueError, match="not in its training set"):
        create_retrain_run(tiny_run, runs_root / "y")


def test_reviewed_labels_must_match_the_data(tiny_run, tiny_config):
    from turn_backend.rundata import load_run_data

    bundle = load_run_data(tiny_config())
    assert apply_reviewed_labels(bundle, tiny_run) is None  # no snapshot: an ordinary run
    sid = bundle.train.ids[5]
    row = {"sample_id": sid, "given_label": int(bundle.train.labels[5]), "decision": "remove", "final_label": -1,
           "held_clean": False, "decided_at": 0.0}
    pd.DataFrame([row]).to_parquet(tiny_run / REVIEWED_LABELS)
    reviewed = apply_reviewed_labels(bundle, tiny_run)
    assert sid not in reviewed.bundle.train.ids and len(reviewed.kept) == len(bundle.train) - 1
    pd.DataFrame([{**row, "given_label": row["given_label"] + 1}]).to_parquet(tiny_run / REVIEWED_LABELS)
    with pytest.raises(DatasetError, match="another label"):
        apply_reviewed_labels(bundle, tiny_run)
    pd.DataFrame([{**row, "sample_id": "gone"}]).to_parquet(tiny_run / REVIEWED_LABELS)
    with pytest.raises(DatasetError, match="no longer in the dataset"):
        apply_reviewed_labels(bundle, tiny_run)


@pytest.mark.slow  # over 10 s on 2 busy cores: in the full suite, not the fast tier
def test_turn_retrain_command(tiny_run, runs_root):
    d = _review(tiny_run)
    out = runs_root / "cli-retrain"
    proc = turn("retrain", tiny_run, "--out", out, "--method", "lp-gce", "--lp-epochs", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "1 relabelled, 1 removed, 1 kept" in proc.stdout
    after = _train_rows(RunFolder(out))
    assert d["remove"] not in set(after["sample_id"])
    assert dict(zip(after["sample_id"], after["given_label"]))[d["relabel"]] == d["new_label"]
    again = turn("retrain", tiny_run, "--out", out, timeout=120)
    assert again.returncode == 1 and "not empty" in again.stderr
