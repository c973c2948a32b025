"""Plays a Label Studio user through the SDK, for tests/test_labelstudio_server.py. It runs with
the Python of the Label Studio venv (scripts/labelstudio_env.sh), never the product's, and
imports nothing of the project.

    python labelstudio_driver.py URL TOKEN EXPORT_DIR CHOICES_JSON OUT_JSON

Creates a project with EXPORT_DIR's labelling config and a Local Storage on its images,
imports its tasks, checks that the server serves each task's image, annotates the tasks that
CHOICES_JSON names ({"sample_id": ["choice", ...], ...}: one annotation per entry, in order,
so the last is the latest; "cancel:<choice>" records a cancelled one), and writes the
project's "JSON" export to OUT_JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
from label_studio_sdk import LabelStudio


def choice_result(choice: str) -> list[dict]:
    return [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [choice]}}]


def main(url: str, token: str, export_dir: str, choices_json: str, out_json: str) -> None:
    export = Path(export_dir)
    ls = LabelStudio(base_url=url, api_key=token)
    project = ls.projects.create(title="TURN round trip", label_config=(export / "labeling_config.xml").read_text())
    # a Local Storage on the images lets the server serve them; not synced: tasks.json names them
    ls.import_storage.local.create(project=project.id, path=str((export / "images").resolve()), title="images")
    tasks = json.loads((export / "tasks.json").read_text())
    ls.projects.import_tasks(project.id, request=tasks)
    stored = list(ls.tasks.list(project=project.id, fields="all"))
    assert len(stored) == len(tasks), f"imported {len(stored)} of {len(tasks)} tasks"
    by_sample = {t.data["sample_id"]: t for t in stored}
    with httpx.Client(base_url=url, headers={"Authorization": f"Token {token}"}) as http:
        for t in stored:
            image = http.get(t.data["image"])
            assert image.status_code == 200, f"{t.data['image']}: HTTP {image.status_code}"
            name = t.data["image"].rsplit("/", 1)[-1]
            assert image.content == (export / "images" / name).read_bytes(), f"{name}: other bytes served"
            assert t.predictions and t.predictions[0].score == t.data["clean_prob"], "prediction lost on import"
    for sample_id, entries in json.loads(choices_json).items():
        for entry in entries:
            cancelled = entry.startswith("cancel:")
            choice = entry.removeprefix("cancel:")
            ls.annotations.create(id=by_sample[sample_id].id, result=choice_result(choice), was_cancelled=cancelled)
    data = b"".join(ls.projects.exports.download_sync(project.id, export_type="JSON", download_all_tasks=True))
    Path(out_json).write_bytes(data)


if __name__ == "__main__":
    main(*sys.argv[1:])
