"""The Label Studio round trip in the app, under Streamlit's AppTest: Review's download for Label
Studio and its import of a Label Studio JSON export (applied as one undoable action), and
Export's Label Studio folder."""

from __future__ import annotations

import json
import zipfile
from io import BytesIO

from helpers.apptest import app, texts
from turn_backend.labelstudio import NONE
from turn_backend.review import ReviewStore
from turn_backend.runfolder import RunFolder


def label_studio_answer(data: dict, choice: str) -> dict:
    """A task of Label Studio's JSON export, annotated with `choice`."""
    return {"id": data["row"], "data": data, "annotations": [
        {"id": 1, "was_cancelled": False, "result": [
            {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [choice]}}]}]}


def test_review_sends_the_flagged_samples_and_imports_the_answers(tiny_run):
    from app.labelstudio import zip_bytes
    from turn_backend.export import build_export, default_tau

    folder = RunFolder(tiny_run)
    tau = default_tau(folder)
    flagged = build_export(tiny_run, tau)["flagged"].sum()
    at = app("review", tiny_run)
    at.run()
    assert not at.exception
    assert at.get("download_button")[-1].proto.label == "Download for Label Studio (zip)"

    archive = zipfile.ZipFile(BytesIO(zip_bytes(folder, tau, inline=True)))
    tasks = json.loads(archive.read(f"{folder.name}-label-studio/tasks.json"))
    assert len(tasks) == flagged and tasks[0]["data"]["image"].startswith("data:image/png;base64,")
    first, second = tasks[0]["data"], tasks[1]["data"]
    answers = [label_studio_answer(first, first["given_label"]), label_studio_answer(second, NONE),
               {"id": 99, "data": {"sample_id": "not-in-this-run"}, "annotations": []}]
    at.file_uploader(key="labelstudio_upload").set_value(
        ("project-export.json", json.dumps(answers).encode(), "application/json")).run()
    assert not at.exception
    assert "1 keep, 0 relabel, 1 none, 0 ambiguous; 0 already so; 1 task(s) to skip" in texts(at)
    store = ReviewStore(folder.review_db)
    assert store.current() == {}  # nothing is recorded before Apply
    at.button(key="labelstudio_apply").click().run()
    assert not at.exception
    assert store.current() == {first["sample_id"]: ("keep", None), second["sample_id"]: ("none", None)}
    assert "Recorded 2 decision(s)" in texts(at) and "image not in this run" in texts(at)
    assert "Nothing new to apply" in texts(at)  # the same file again
    at.button(key="undo").click().run()  # one Undo reverts the whole import
    assert not at.exception and store.current() == {}


def test_export_writes_a_label_studio_folder(tiny_run, tmp_path):
    at = app("export", tiny_run)
    at.run()
    next(b for b in at.get("button_group") if b.key == "export_folder_format").set_value("label-studio").run()
    out = tmp_path / "to-label"
    at.text_input(key=f"export_out_{tiny_run.name}_label-studio").input(str(out)).run()
    at.button(key="export_folder_write").click().run()
    assert not at.exception
    tasks = json.loads((out / "tasks.json").read_text())
    assert tasks and all((out / "images" / t["data"]["image"].rsplit("/", 1)[-1]).exists() for t in tasks)
    assert (out / "labeling_config.xml").exists() and "LABEL_STUDIO.md says how to import it" in texts(at)
