""""None of these classes" and "ambiguous" as review decisions (issue 18, item 3): the store
and its migration from the old schema, ReviewIndex codes and filter, retraining with both
ambiguous choices, every export format, and `turn retrain --ambiguous` / `turn export` as
subprocesses."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.exports import CLASSES, file_run, imagefolder_labels
from turn_backend import analysis as an
from turn_backend.export import build_decision_log, build_export, export_hf, export_imagefolder, summary
from turn_backend.retrain import REVIEWED_LABELS, apply_reviewed_labels, create_retrain_run, reviewed_labels
from turn_backend.review import ACTIONS, ReviewStore
from turn_backend.runfolder import RunFolder

ROOT = Path(__file__).resolve().parents[1]

OLD_SCHEMA = """
CREATE TABLE decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sample_id TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('keep', 'relabel', 'remove')),
    label INTEGER,
    time REAL NOT NULL,
    session TEXT,
    undone INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX decisions_sample ON decisions (sample_id, id);
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _old_database(path: Path) -> list[tuple]:
    """A review database as the app wrote it before "none" and "ambiguous", with decisions
    (one undone) and a setting; returns its rows."""
    con = sqlite3.connect(path)
    con.executescript(OLD_SCHEMA)
    rows = [(1, "a", "keep", None, 100.0, "tab1", 0), (2, "b", "relabel", 3, 101.0, "tab1", 0),
            (3, "c", "remove", None, 102.0, "tab2", 0), (4, "a", "remove", None, 103.0, "tab1", 1),
            (5, "d", "keep", None, 104.0, "tab1", 0)]
    con.executemany("INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    con.execute("INSERT INTO settings VALUES ('tau', '0.45')")
    con.commit()
    with pytest.raises(sqlite3.IntegrityError):  # the old constraint refuses the new actions
        con.execute("INSERT INTO decisions (sample_id, action, time) VALUES ('x', 'none', 1.0)")
    con.close()
    return rows


def _all_rows(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as con:
        return con.execute("SELECT id, sample_id, action, label, time, session, undone FROM decisions "
                           "ORDER BY id").fetchall()


# ---------------------------------------------------------------------------- the store


def test_store_records_none_and_ambiguous_and_undoes_them(tmp_path):
    assert {"none", "ambiguous"} <= set(ACTIONS)
    store = ReviewStore(tmp_path / "review.sqlite")
    store.record("s1", "none", session="t")
    store.record("s2", "ambiguous", session="t")
    store.record_many([("s3", "none", None), ("s4", "ambiguous", None)], session="t")
    assert store.current() == {"s1": ("none", None), "s2": ("ambiguous", None), "s3": ("none", None),
                               "s4": ("ambiguous", None)}
    assert store.undo_last("t") == "s4"
    assert store.undo_last("t") == "s3"
    assert store.current() == {"s1": ("none", None), "s2": ("ambiguous", None)}
    with pytest.raises(ValueError, match="unknown review action"):
        store.record("s1", "maybe")


def test_old_database_is_migrated_without_losing_a_decision(tmp_path):
    path = tmp_path / "review.sqlite"
    rows = _old_database(path)
    store = ReviewStore(path)  # opening it migrates
    assert _all_rows(path) == rows  # every row, its id, time, session and undone flag
    assert store.current() == {"a": ("keep", None), "b": ("relabel", 3), "c": ("remove", None),
                               "d": ("keep", None)}
    assert store.get_setting("tau") == "0.45"
    with sqlite3.connect(path) as con:
        sql = con.execute("SELECT sql FROM sqlite_master WHERE name = 'decisions'").fetchone()[0]
        assert "'none'" in sql and "'ambiguous'" in sql
        assert con.execute("SELECT name FROM sqlite_master WHERE name = 'decisions_sample'").fetchone()
        assert not con.execute("SELECT name FROM sqlite_master WHERE name = 'decisions_migrating'").fetchone()
    # new decisions after the old ones (ids never reused), and undo goes on working
    store.record("e", "none", session="tab1")
    store.record("b", "ambiguous", session="tab1")
    assert [r[0] for r in _all_rows(path)][-2:] == [6, 7]
    assert store.current()["b"] == ("ambiguous", None)
    assert store.undo_last("tab1") == "b"
    assert store.current()["b"] == ("relabel", 3)  # the old decision stands again
    assert store.undo_last("tab1") == "e"
    assert store.undo_last("tab1") == "d"  # an old decision is undone as before
    assert store.undo_last("tab2") == "c"
    assert store.current() == {"a": ("keep", None), "b": ("relabel", 3)}
    assert [h["action"] for h in store.history("a")] == ["keep", "remove"]
    ReviewStore(path)  # opening again: nothing to migrate, nothing changes
    assert len(_all_rows(path)) == 7


def test_migration_of_an_empty_old_database_and_a_failed_one_keeps_the_old_table(tmp_path, monkeypatch):
    empty = tmp_path / "empty.sqlite"
    con = sqlite3.connect(empty)
    con.executescript(OLD_SCHEMA)
    con.close()
    ReviewStore(empty).record("x", "none")
    assert ReviewStore(empty).current() == {"x": ("none", None)}

    path = tmp_path / "review.sqlite"
    rows = _old_database(path)
    from turn_backend import review

    real = review._DECISIONS_TABLE
    monkeypatch.setattr(review, "_DECISIONS_TABLE", real.replace("undone INTEGER", "undone BROKEN SYNTAX ("))
    with pytest.raises(sqlite3.OperationalError):
        ReviewStore(path)
    assert _all_rows(path) == rows  # rolled back: the old table whole
    monkeypatch.setattr(review, "_DECISIONS_TABLE", real)
    assert ReviewStore(path).current()["d"] == ("keep", None)


# ------------------------------------------------------------------------- ReviewIndex


def test_review_index_codes_text_and_decided_as_filter():
    assert an.ACTION_CODES["none"] != an.ACTION_CODES["ambiguous"]
    assert len(set(an.ACTION_CODES.values())) == len(an.ACTION_CODES)
    assert an.ACTIONS_BY_CODE[an.ACTION_CODES["none"]] == "none"
    index = an.ReviewIndex.build([f"s{i}" for i in range(6)], [0.1, 0.2, 0.3, 0.4, 0.9, 0.05],
                                 [0, 1, 0, 1, 0, 1], [1, 0, 0, 1, 0, 0], [0.9] * 6, tau=0.5)
    codes, labels = index.decision_arrays({"s0": ("none", None), "s1": ("ambiguous", None),
                                           "s2": ("keep", None), "s4": ("none", None)})
    rows = index.rows(index.view(), codes, labels).set_index("sample_id")
    assert rows.loc["s0", "decision"] == "none" and rows.loc["s1", "decision"] == "ambiguous"
    view = index.view()
    decided = lambda *a: set(index.ids[index.order[index.decided_as(view, codes, a)]])  # noqa: E731
    assert decided("none") == {"s0"}  # s4 is not in the queue (clean probability above tau)
    assert decided("ambiguous") == {"s1"}
    assert decided("none", "ambiguous") == {"s0", "s1"}
    assert decided("") == {"s3", "s5"}
    assert len(index.decided_as(view, codes, [])) == len(view)
    with pytest.raises(ValueError, match="unknown decision"):
        index.decided_as(view, codes, ["maybe"])
    assert an.decision_text("none", None, ["a"]) == "None of these classes"
    assert an.decision_text("ambiguous", None, ["a"]) == "Ambiguous"


# ------------------------------------------------------------------------------ retrain


def _train_rows(folder: RunFolder) -> pd.DataFrame:
    s = folder.samples()
    return s[s["split"] == "train"].reset_index(drop=True)


def _review_none_ambiguous(tiny_run: Path) -> dict:
    folder = RunFolder(tiny_run)
    train = _train_rows(folder)
    order = np.argsort(folder.final()["clean_prob"])
    none, amb, keep, relabel = (str(train.loc[i, "sample_id"]) for i in order[:4])
    new_label = (int(train.loc[order[3], "given_label"]) + 1) % 10
    store = ReviewStore(folder.review_db)
    store.record(none, "none")
    store.record(amb, "ambiguous")
    store.record(keep, "keep")
    store.record(relabel, "relabel", new_label)
    given = dict(zip(train["sample_id"].astype(str), train["given_label"].astype(int)))
    return {"none": none, "ambiguous": amb, "keep": keep, "relabel": relabel, "new_label": new_label,
            "given": given}


@pytest.mark.parametrize("choice", ["drop", "keep"])
def test_retrain_leaves_none_out_and_treats_ambiguous_as_chosen(tiny_run, runs_root, tiny_config, choice):
    from turn_backend.rundata import load_run_data

    d = _review_none_ambiguous(tiny_run)
    out = runs_root / f"retrained-{choice}"
    folder = create_retrain_run(tiny_run, out, ambiguous=choice, lp_epochs=1)
    src = folder.config()["retrained_from"]
    assert (src["none"], src["ambiguous"], src["ambiguous_choice"]) == (1, 1, choice)
    snap = pd.read_parquet(out / REVIEWED_LABELS).set_index("sample_id")
    assert snap.loc[d["none"], "final_label"] == -1 and not snap.loc[d["none"], "held_clean"]
    assert snap.loc[d["ambiguous"], "decision"] == "ambiguous" and not snap.loc[d["ambiguous"], "held_clean"]
    # what the retrained run trains on: the dataset with the snapshot applied
    bundle = load_run_data(tiny_config())
    reviewed = apply_reviewed_labels(bundle, out)
    labels = dict(zip(reviewed.bundle.train.ids, reviewed.bundle.train.labels.astype(int)))
    assert d["none"] not in labels
    if choice == "drop":
        assert d["ambiguous"] not in labels and len(labels) == len(bundle.train) - 2
    else:
        assert labels[d["ambiguous"]] == d["given"][d["ambiguous"]] and len(labels) == len(bundle.train) - 1
        held = dict(zip(reviewed.bundle.train.ids, reviewed.held_clean))
        assert not held[d["ambiguous"]] and held[d["keep"]]
    assert labels[d["relabel"]] == d["new_label"] and labels[d["keep"]] == d["given"][d["keep"]]


def test_an_inherited_ambiguous_decision_follows_the_later_choice(tiny_run, runs_root):
    d = _review_none_ambiguous(tiny_run)
    out = runs_root / "first"
    create_retrain_run(tiny_run, out, ambiguous="drop")
    # the retrained run's snapshot passes the decisions on (as the chain does after training)
    table = pd.read_parquet(out / REVIEWED_LABELS)
    tiny_again = runs_root / "second-source"
    import shutil

    shutil.copytree(tiny_run, tiny_again)
    (tiny_again / "review.sqlite").unlink()
    for extra in tiny_again.glob("review.sqlite-*"):
        extra.unlink()
    table.to_parquet(tiny_again / REVIEWED_LABELS, index=False)
    kept = reviewed_labels(tiny_again, ambiguous="keep").set_index("sample_id")
    assert kept.loc[d["ambiguous"], "final_label"] == d["given"][d["ambiguous"]]
    assert kept.loc[d["none"], "final_label"] == -1
    dropped = reviewed_labels(tiny_again, ambiguous="drop").set_index("sample_id")
    assert dropped.loc[d["ambiguous"], "final_label"] == -1
    with pytest.raises(ValueError, match="ambiguous must be one of"):
        reviewed_labels(tiny_again, ambiguous="maybe")


# ------------------------------------------------------------------------------ exports


def _run_with_none_and_ambiguous(tmp_path: Path) -> Path:
    """The six-image run of test_export_formats (s1 relabelled, s4 removed, s5 kept), with s0
    decided "none" and s3 "ambiguous"."""
    run = file_run(tmp_path)
    store = ReviewStore(run / "review.sqlite")
    time.sleep(0.01)
    store.record("s0", "none")
    store.record("s3", "ambiguous")
    return run


def test_label_file_carries_none_and_ambiguous_in_every_format_and_scope(tmp_path):
    from turn_backend.export import to_bytes

    run = _run_with_none_and_ambiguous(tmp_path)
    df = build_export(run).set_index("sample_id")
    assert df.loc["s0", "decision"] == "none" and pd.isna(df.loc["s0", "final_label"])
    assert df.loc["s3", "decision"] == "ambiguous" and df.loc["s3", "final_label"] == CLASSES[1]
    s = summary(build_export(run))
    assert (s["none"], s["ambiguous"], s["removed"], s["relabelled"], s["kept"]) == (1, 1, 1, 1, 1)
    assert set(build_export(run, scope="kept")["sample_id"]) == {"s1", "s2", "s3", "s5"}
    assert "s0" not in set(build_export(run, scope="clean")["sample_id"])
    full = build_export(run)
    for fmt, read in (("csv", pd.read_csv), ("parquet", pd.read_parquet), ("json", pd.read_json)):
        import io

        back = read(io.BytesIO(to_bytes(full, fmt)))
        got = dict(zip(back["sample_id"], back["decision"].fillna("")))
        assert got["s0"] == "none" and got["s3"] == "ambiguous", fmt


def test_folder_exports_leave_none_out_and_keep_ambiguous_with_its_label(tmp_path):
    import datasets

    run = _run_with_none_and_ambiguous(tmp_path)
    assert export_imagefolder(run, tmp_path / "tree", link="copy")["rows"] == 4
    assert imagefolder_labels(tmp_path / "tree") == {"s1": "dog/wolf", "s2": "cat", "s3": "dog/wolf",
                                                      "s5": "dog/wolf"}
    assert export_hf(run, tmp_path / "hf")["rows"] == 4
    ds = datasets.load_from_disk(str(tmp_path / "hf"))["train"]
    names = ds.features["label"].names
    got = {r["sample_id"]: (names[r["label"]], r["decision"]) for r in ds}
    assert "s0" not in got and got["s3"] == ("dog/wolf", "ambiguous")


def test_decision_log_includes_none_and_ambiguous(tmp_path):
    run = _run_with_none_and_ambiguous(tmp_path)
    log = build_decision_log(run, tau=0.4)
    assert log["decision"].tolist() == ["relabel", "remove", "keep", "none", "ambiguous"]
    assert pd.isna(log["final_label"][3]) and log["final_label"][4] == "dog/wolf"


# ---------------------------------------------------------------------------------- CLI


def _turn(*args, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "turn_backend.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def test_turn_export_counts_none_and_ambiguous(tmp_path):
    run = _run_with_none_and_ambiguous(tmp_path)
    proc = _turn("export", str(run), "--out", str(tmp_path / "labels.csv"))
    assert proc.returncode == 0, proc.stderr
    assert "1 none of these, 1 ambiguous" in proc.stdout
    back = pd.read_csv(tmp_path / "labels.csv")
    assert dict(zip(back["sample_id"], back["decision"].fillna("")))["s0"] == "none"
    proc = _turn("export", str(run), "--out", str(tmp_path / "tree"), "--format", "imagefolder", "--link", "copy")
    assert proc.returncode == 0, proc.stderr
    assert "4 images" in proc.stdout and "s0" not in imagefolder_labels(tmp_path / "tree")
    proc = _turn("export", str(run), "--out", str(tmp_path / "log.json"), "--format", "decisions")
    assert proc.returncode == 0, proc.stderr
    assert [r["decision"] for r in json.loads((tmp_path / "log.json").read_text())][-2:] == ["none", "ambiguous"]


def test_turn_retrain_ambiguous_keep(tiny_run, runs_root):
    d = _review_none_ambiguous(tiny_run)
    out = runs_root / "cli-keep"
    proc = _turn("retrain", str(tiny_run), "--out", str(out), "--ambiguous", "keep", "--method", "lp-gce",
                 "--lp-epochs", "1", "--quiet", timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "1 none of these (left out), 1 ambiguous (kept with their label)" in proc.stdout
    assert RunFolder(out).config()["retrained_from"]["ambiguous_choice"] == "keep"
    after = dict(zip(*(_train_rows(RunFolder(out))[c].astype(t) for c, t in (("sample_id", str),
                                                                                  ("given_label", int)))))
    assert d["none"] not in after and after[d["ambiguous"]] == d["given"][d["ambiguous"]]
    assert after[d["relabel"]] == d["new_label"]
    bad = _turn("retrain", str(tiny_run), "--out", str(runs_root / "x"), "--ambiguous", "maybe")
    assert bad.returncode != 0 and "invalid choice" in bad.stderr
