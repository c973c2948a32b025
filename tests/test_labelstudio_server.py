"""The Label Studio round trip against a real Label Studio server (its own venv, made by
scripts/labelstudio_env.sh where missing): `turn export --format label-studio`, a project made
through the SDK with the exported config, tasks and images, four annotations, Label Studio's
JSON export, `turn import-labels`, and a retrain that trains on the imported decisions."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from helpers.cli import turn
from helpers.labelstudio import DRIVER, LabelStudioServer, labelstudio_python
from turn_backend.export import build_decision_log
from turn_backend.labelstudio import AMBIGUOUS, NONE, SESSION
from turn_backend.review import ReviewStore
from turn_backend.runfolder import RunFolder

# the first run makes the venv (under a minute from the registries here) before the server's own minute
pytestmark = [pytest.mark.slow, pytest.mark.labelstudio, pytest.mark.timeout(20 * 60)]


def _train_labels(run) -> dict[str, int]:
    samples = RunFolder(run).samples()
    train = samples[samples["split"] == "train"]
    return dict(zip(train["sample_id"].astype(str), train["given_label"].astype(int)))


def test_round_trip_through_a_real_label_studio_server(tiny_run, runs_root, tmp_path):
    python = labelstudio_python()
    root = tmp_path / "label-studio-files"  # the server's LOCAL_FILES_DOCUMENT_ROOT
    export = root / "flagged"
    proc = turn("export", tiny_run, "--out", export, "--format", "label-studio")
    assert proc.returncode == 0, proc.stderr
    tasks = json.loads((export / "tasks.json").read_text())
    assert len(tasks) >= 5, "the tiny run flags too few samples for this test"
    names = RunFolder(tiny_run).class_names()
    agree, relabel, none, ambiguous = (t["data"] for t in tasks[:4])
    other = next(n for n in names if n != relabel["given_label"])
    choices = {  # one annotation per entry, the last the latest
        agree["sample_id"]: [agree["given_label"], f"cancel:{other}"],  # a cancelled annotation does not count
        relabel["sample_id"]: [relabel["given_label"], other],  # the later annotation counts
        none["sample_id"]: [NONE],
        ambiguous["sample_id"]: [AMBIGUOUS],
    }
    answers = tmp_path / "project-export.json"
    server = LabelStudioServer(tmp_path / "ls-data", root, tmp_path / "label-studio.log")
    (tmp_path / "ls-data").mkdir()
    with server:
        server.start()
        driven = subprocess.run([str(python), str(DRIVER), server.url, server.token, str(export), json.dumps(choices),
                                 str(answers)], capture_output=True, text=True, timeout=300,
                                env={**os.environ, "PYTHONPATH": ""})
        assert driven.returncode == 0, (f"the Label Studio driver failed:\n{driven.stdout}\n{driven.stderr[-4000:]}\n"
                                        f"server log:\n{server.log_tail()}")

    proc = turn("import-labels", tiny_run, answers)
    assert proc.returncode == 0, proc.stderr
    assert "recorded 4 decision(s): 1 keep, 1 relabel, 1 none, 1 ambiguous" in proc.stdout
    assert f"skipped {len(tasks) - 4}: no annotation" in proc.stdout
    store = ReviewStore(RunFolder(tiny_run).review_db)
    expected = {agree["sample_id"]: ("keep", None), relabel["sample_id"]: ("relabel", names.index(other)),
                none["sample_id"]: ("none", None), ambiguous["sample_id"]: ("ambiguous", None)}
    assert store.current() == expected
    assert {r["session"] for r in store.current_rows()} == {SESSION}
    log = build_decision_log(tiny_run).set_index("sample_id")
    assert log.loc[relabel["sample_id"], "final_label"] == other
    assert {sid: log.loc[sid, "decision"] for sid in expected} == {sid: a for sid, (a, _) in expected.items()}

    out = runs_root / "retrained"
    proc = turn("retrain", tiny_run, "--out", out, "--method", "lp-gce", "--lp-epochs", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "1 relabelled, 0 removed, 1 kept, 1 none of these (left out), 1 ambiguous (left out)" in proc.stdout
    labels = _train_labels(out)
    assert labels[relabel["sample_id"]] == names.index(other)
    assert labels[agree["sample_id"]] == names.index(agree["given_label"])
    assert none["sample_id"] not in labels and ambiguous["sample_id"] not in labels
