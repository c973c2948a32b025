"""The Label Studio files without a server: the export's tasks, labelling config and images, and
how `turn import-labels` maps a Label Studio JSON export to review decisions (bad cases too).
tests/test_labelstudio_server.py runs the same round trip through a real server."""

from __future__ import annotations

import base64
import json
import zipfile
from io import BytesIO
from pathlib import Path
from xml.etree import ElementTree

import pytest

from helpers.cli import turn
from helpers.exports import CLASSES, file_run
from turn_backend.export import ExportError
from turn_backend.labelstudio import (
    AMBIGUOUS,
    NONE,
    SESSION,
    export_labelstudio,
    import_labels,
    read_tasks,
    zip_export,
)
from turn_backend.review import ReviewStore, spot_check_rows

# file_run: six images, clean probabilities 0.9 0.1 0.8 0.9 0.2 0.7 at tau 0.5, so s1 (cat) and
# s4 (dog/wolf) are flagged; s1 was relabelled and s4 removed in review.


def annotated(sample_id: str, *choices: str, cancelled: tuple[bool, ...] = ()) -> dict:
    """A task of Label Studio's JSON export with one annotation per choice, the last the latest."""
    return {"id": hash(sample_id) % 1000, "data": {"sample_id": sample_id}, "annotations": [
        {"id": k, "was_cancelled": k < len(cancelled) and cancelled[k], "updated_at": f"2026-12-06T00:00:0{k}Z",
         "result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [c]}}]}
        for k, c in enumerate(choices)]}


def test_export_writes_flagged_tasks_config_and_served_images(tmp_path):
    run = file_run(tmp_path)
    out = tmp_path / "ls" / "flagged"
    done = export_labelstudio(run, out)
    assert (done.rows, done.images) == (2, "local-files")
    tasks = json.loads((out / "tasks.json").read_text())
    assert [t["data"]["sample_id"] for t in tasks] == ["s1", "s4"]  # least probably clean first
    first = tasks[0]["data"]
    assert (first["row"], first["path"], first["given_label"], first["decision"]) == (
        1, str(tmp_path / "images" / "img1.png"), "cat", "relabel")
    prediction = tasks[0]["predictions"][0]
    assert prediction["score"] == pytest.approx(0.1)
    assert prediction["result"][0]["value"]["choices"] == [first["suggested_label"]]
    # the URL Label Studio serves with LOCAL_FILES_DOCUMENT_ROOT = the export's parent folder
    assert first["image"] == "/data/local-files/?d=flagged/images/000001.png"
    assert (out / "images" / "000001.png").read_bytes() == (tmp_path / "images" / "img1.png").read_bytes()
    config = ElementTree.fromstring((out / "labeling_config.xml").read_text())
    assert [c.get("value") for c in config.iter("Choice")] == [*CLASSES, NONE, AMBIGUOUS]
    assert "LOCAL_FILES_DOCUMENT_ROOT" in (out / "LABEL_STUDIO.md").read_text()
    names = zipfile.ZipFile(BytesIO(zip_export(out))).namelist()
    assert {"flagged/tasks.json", "flagged/labeling_config.xml", "flagged/images/000004.png"} <= set(names)


def test_export_inline_images_and_scope(tmp_path):
    run = file_run(tmp_path)
    done = export_labelstudio(run, tmp_path / "inline", scope="kept", inline=True)
    tasks = json.loads((tmp_path / "inline" / "tasks.json").read_text())
    assert done.rows == 1 and [t["data"]["sample_id"] for t in tasks] == ["s1"]  # s4 was removed: not "kept"
    head, data = tasks[0]["data"]["image"].split(",", 1)
    assert head == "data:image/png;base64"
    assert base64.b64decode(data) == (tmp_path / "images" / "img1.png").read_bytes()
    assert not (tmp_path / "inline" / "images").exists()
    assert "LOCAL_FILES" not in (tmp_path / "inline" / "LABEL_STUDIO.md").read_text()


def test_export_refuses_a_users_folder_and_a_clashing_class_name(tmp_path):
    run = file_run(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not an earlier TURN export"):
        export_labelstudio(run, mine)
    with pytest.raises(ExportError, match="unknown link mode"):
        export_labelstudio(run, tmp_path / "new", link="move")
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    export_labelstudio(run, tmp_path / "again")
    export_labelstudio(run, tmp_path / "again", tau=0.85)  # an earlier export is replaced
    assert len(json.loads((tmp_path / "again" / "tasks.json").read_text())) == 4
    (run / "classes.json").write_text(json.dumps(["cat", AMBIGUOUS]))
    with pytest.raises(ExportError, match="rename that class"):
        export_labelstudio(run, tmp_path / "clash")
    assert not (tmp_path / "clash").exists()


def test_import_maps_choices_to_decisions_and_reports_what_it_skips(tmp_path):
    run = file_run(tmp_path)
    tasks = [
        annotated("s0", "cat"),  # the given label: keep
        annotated("s2", "cat", "dog/wolf"),  # the latest annotation: relabel to dog/wolf
        annotated("s3", NONE, "dog/wolf", cancelled=(False, True)),  # the cancelled one is ignored: none
        annotated("s5", AMBIGUOUS),
        annotated("s5", AMBIGUOUS),  # already so once the task above is in
        annotated("gone", "cat"),
        annotated("s4", "horse"),
        {"id": 9, "data": {"sample_id": "s1"}, "annotations": []},
        annotated("s1", "cat", cancelled=(True,)),  # only a cancelled annotation
    ]
    summary = import_labels(run, tasks)
    assert dict(summary.recorded) == {"keep": 1, "relabel": 1, "none": 1, "ambiguous": 1}
    assert summary.unchanged == 1
    assert {reason: len(t) for reason, t in summary.skipped.items()} == {
        "image not in this run": 1, "unknown class 'horse'": 1, "no annotation": 2}
    text = "\n".join(summary.lines())
    assert "1 keep, 1 relabel, 1 none, 1 ambiguous" in text and "4 task(s) skipped" in text and "(gone)" in text
    store = ReviewStore(run / "review.sqlite")
    current = store.current()
    assert {s: current[s] for s in ("s0", "s2", "s3", "s5")} == {
        "s0": ("keep", None), "s2": ("relabel", 1), "s3": ("none", None), "s5": ("ambiguous", None)}
    assert current["s1"] == ("relabel", 1) and current["s4"] == ("remove", None)  # skipped: left as they were
    assert store.history("s2")[-1]["session"] == SESSION
    again = import_labels(run, tasks)  # importing the same file twice changes nothing
    assert sum(again.recorded.values()) == 0 and again.unchanged == 5
    assert store.undo_last(SESSION) == "s5"  # imported decisions undo like any other


def test_import_finds_a_task_by_path_and_refuses_a_file_that_is_no_json_export(tmp_path):
    run = file_run(tmp_path)
    task = annotated("renamed", "dog/wolf")
    task["data"]["path"] = str(tmp_path / "images" / "img0.png")
    assert dict(import_labels(run, [task]).recorded) == {"relabel": 1}
    with pytest.raises(ValueError, match="not JSON"):
        read_tasks(b"path,label\n", "export.csv")
    with pytest.raises(ValueError, match="not JSON-MIN"):
        read_tasks(json.dumps({"tasks": []}), "export.json")


def test_turn_export_and_import_labels_commands(tmp_path):
    run = file_run(tmp_path)
    proc = turn("export", "run", "--out", "to-label", "--format", "label-studio", cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "2 flagged or spot-check sample(s)" in proc.stdout and (tmp_path / "to-label" / "tasks.json").exists()
    Path(tmp_path / "answers.json").write_text(json.dumps([annotated("s4", "cat"), annotated("x", "cat")]))
    proc = turn("import-labels", "run", "answers.json", cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "1 relabel" in proc.stdout and "skipped 1: image not in this run" in proc.stdout
    assert ReviewStore(run / "review.sqlite").current()["s4"] == ("relabel", 0)
    proc = turn("import-labels", "run", "missing.json", cwd=tmp_path, timeout=120)
    assert proc.returncode == 1 and str(tmp_path / "missing.json") in proc.stderr


def test_turn_export_adds_a_spot_check_to_the_label_studio_tasks(tmp_path):
    run = file_run(tmp_path)
    proc = turn("export", "run", "--out", "to-label", "--format", "label-studio", "--spot-check", "3", cwd=tmp_path,
                timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "spot check: 3 random training samples" in proc.stdout
    assert ReviewStore(run / "review.sqlite").spot_check_size() == 3
    tasks = json.loads((tmp_path / "to-label" / "tasks.json").read_text())
    spot = {f"s{r}" for r in spot_check_rows(6, 3)}
    assert {t["data"]["sample_id"] for t in tasks} == {"s1", "s4"} | spot  # the flagged and the spot check
    assert {t["data"]["sample_id"] for t in tasks if t["data"]["spot_check"]} == spot
    probs = [t["predictions"][0]["score"] for t in tasks]
    assert probs == sorted(probs)  # least probably clean first, as before
    # the spot check belongs to Label Studio's export; elsewhere it says where to go
    proc = turn("export", "run", "--out", "labels.csv", "--spot-check", "3", cwd=tmp_path, timeout=120)
    assert proc.returncode == 1 and "--spot-check goes with --format label-studio" in proc.stderr
    proc = turn("export", "run", "--out", "again", "--format", "label-studio", "--spot-check", "0", cwd=tmp_path,
                timeout=120)
    assert proc.returncode == 1 and "1 or more" in proc.stderr
