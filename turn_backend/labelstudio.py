"""A round trip with Label Studio (labelstud.io): the flagged samples out as a Label Studio
import, the annotations back in as review decisions. Plain JSON both ways: the product never
imports label_studio or its SDK.

Out (`export_labelstudio`): a folder holding
- TASKS (tasks.json): one task per flagged sample (clean probability at or below tau, in the
  label file's scope: `turn_backend.export.build_export`) and per sample of the run's spot check
  (`turn_backend.review.spot_check_rows`: random ones, whose decisions recalibrate the estimates),
  least probably clean first. `data` holds the image URL, the sample's identity (sample_id, its
  training row, its path), its given and suggested labels and whether it is in the spot check;
  `predictions` pre-annotates the suggested label (the one Review shows), with the sample's clean
  probability as its score.
- CONFIG (labeling_config.xml): the labelling interface, one choice per class plus NONE and
  AMBIGUOUS.
- IMAGES/ (images/): the images, hard-linked or copied (array datasets written as PNG), which
  tasks.json names by a local-files URL `/data/local-files/?d=<folder name>/images/<file>`:
  Label Studio serves them when started with LOCAL_FILES_SERVING_ENABLED=true and
  LOCAL_FILES_DOCUMENT_ROOT set to the folder that holds the export, once the project has a
  Local Storage on <export>/images (HOWTO, written beside, says each step). With
  `inline=True` the images go into tasks.json as data: URIs instead, and no folder or server
  setting is needed (small sets: every image travels in the JSON).

In (`import_labels`): Label Studio's "JSON" export (a list of tasks, each with
`annotations[].result[].value.choices`) applied to the run's review store: the given label is
a keep, another class a relabel, NONE the "none" decision, AMBIGUOUS "ambiguous". Cancelled
(skipped) annotations are ignored; of several, the latest counts. A task whose sample is not
in the run, whose choice is not a class, or that has no annotation is skipped and counted.
"""

from __future__ import annotations

import base64
import io
import json
import mimetypes
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote
from xml.etree import ElementTree

import numpy as np

from turn_backend.export import (
    LINK_MODES,
    SCOPES,
    ExportError,
    ExportImages,
    build_export,
    default_tau,
    write_export_folder,
)
from turn_backend.review import ReviewStore, spot_check_mask
from turn_backend.run_views import review_inputs
from turn_backend.runfolder import RunFolder

TASKS = "tasks.json"
CONFIG = "labeling_config.xml"
IMAGES = "images"
HOWTO = "LABEL_STUDIO.md"
NONE = "None of these classes"
AMBIGUOUS = "Ambiguous"
FROM_NAME, TO_NAME = "label", "image"  # the Choices and Image tags of the labelling config
SESSION = "label-studio"  # the review session that imported decisions are recorded under
LOCAL_FILES_URL = "/data/local-files/?d="


def labeling_config(class_names: list[str]) -> str:
    """The labelling interface: the image, its given and suggested labels, one choice per
    class plus NONE and AMBIGUOUS (single choice)."""
    clash = {NONE, AMBIGUOUS} & set(map(str, class_names))
    if clash:
        raise ExportError(f"a class is named {sorted(clash)[0]!r}, which Label Studio export uses for its own "
                          "choice; rename that class to export to Label Studio")
    view = ElementTree.Element("View")
    ElementTree.SubElement(view, "Image", name=TO_NAME, value="$image", zoom="true")
    ElementTree.SubElement(view, "Header", value="Given label: $given_label (TURN suggests: $suggested_label)",
                           size="5")
    choices = ElementTree.SubElement(view, "Choices", name=FROM_NAME, toName=TO_NAME, choice="single",
                                     showInline="true", required="true")
    for name in [*map(str, class_names), NONE, AMBIGUOUS]:
        ElementTree.SubElement(choices, "Choice", value=name)
    ElementTree.indent(view)
    return ElementTree.tostring(view, encoding="unicode") + "\n"


def _flagged_rows(run_dir: str | Path, tau: float | None, scope: str):
    """The rows of the label file at tau (in `scope`) that are flagged or in the run's spot check,
    least probably clean first, with the training row, the suggested label Review shows and
    whether each is in the spot check."""
    folder = RunFolder(run_dir)
    df = build_export(run_dir, tau, scope)
    inputs = review_inputs(folder)
    row_of = {sid: i for i, sid in enumerate(inputs["ids"])}
    df["row"] = df["sample_id"].astype(str).map(row_of).astype(np.int64)
    size = ReviewStore(folder.review_db).spot_check_size() if folder.review_db.exists() else 0
    spot = spot_check_mask(len(inputs["ids"]), size)
    df["spot_check"] = spot[df["row"].to_numpy()]
    df = df[df["flagged"] | df["spot_check"]].copy()
    names = np.asarray(inputs["names"], dtype=object)
    df["suggested_label"] = names[inputs["suggested"][df["row"].to_numpy()]]
    return df.sort_values(["clean_prob", "row"], kind="stable").reset_index(drop=True)


def _task(row, image_url: str, model_version: str) -> dict:
    return {
        "data": {"image": image_url, "sample_id": str(row.sample_id), "row": int(row.row), "path": str(row.path),
                 "given_label": str(row.given_label), "suggested_label": str(row.suggested_label),
                 "clean_prob": float(row.clean_prob), "decision": str(row.decision),
                 "spot_check": bool(row.spot_check)},
        "predictions": [{
            "model_version": model_version, "score": float(row.clean_prob),
            "result": [{"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices",
                        "value": {"choices": [str(row.suggested_label)]}}],
        }],
    }


def _howto(name: str, n: int, inline: bool) -> str:
    """LABEL_STUDIO.md: the steps from this folder to decisions on the run."""
    steps = ["Start Label Studio: `label-studio start`." if inline else
             "Start Label Studio with local file serving, the folder that holds this one as its root:\n\n"
             "       LOCAL_FILES_SERVING_ENABLED=true LOCAL_FILES_DOCUMENT_ROOT=\"$(cd .. && pwd)\" label-studio start",
             f"Create a project; under *Settings > Labeling Interface > Code* paste {CONFIG}."]
    if not inline:
        steps.append(f"*Settings > Cloud Storage > Add Source Storage*: type *Local files*, absolute local path\n"
                     f"   `<this folder>/{IMAGES}` (do not sync it: {TASKS} names the images).")
    steps += [f"*Import* {TASKS}. Each task shows TURN's suggestion pre-selected (its score: the clean\n"
              "   probability of the given label).",
              "Annotate, then *Export* as \"JSON\" and apply the decisions to the run:\n\n"
              "       turn import-labels RUN_FOLDER project-export.json"]
    where = (f"The images are inside {TASKS}." if inline else
             f"Keep this folder's name ({name}) and place: the image URLs in {TASKS} name it.")
    return (f"# Label Studio import: {n} flagged sample(s)\n\n"
            + "\n\n".join(f"{k}. {step}" for k, step in enumerate(steps, 1)) + f"\n\n{where}\n")


@dataclass
class LabelStudioExport:
    rows: int
    out: Path
    images: str  # "local-files" or "inline"


def export_labelstudio(run_dir: str | Path, out_dir: str | Path, tau: float | None = None, scope: str = "all",
                       inline: bool = False, link: str = "hardlink") -> LabelStudioExport:
    """Write the flagged samples as a Label Studio import into `out_dir` (module docstring).

    The folder appears complete or not at all; an existing folder is replaced only if it is
    an earlier TURN export or empty."""
    if scope not in SCOPES:
        raise ExportError(f"unknown scope {scope!r}; choose one of {', '.join(SCOPES)}")
    if link not in LINK_MODES:
        raise ExportError(f"unknown link mode {link!r}; choose one of {', '.join(LINK_MODES)}")
    folder = RunFolder(run_dir)
    tau = default_tau(folder) if tau is None else float(tau)
    config = labeling_config(folder.class_names())
    rows = _flagged_rows(run_dir, tau, scope)
    images = ExportImages(folder, rows)
    out = Path(out_dir)
    model_version = f"turn {folder.name} tau={tau:g}"

    def fill(tmp: Path) -> None:
        tasks = []
        if not inline:
            (tmp / IMAGES).mkdir()
        for i, row in enumerate(rows.itertuples(index=False)):
            if inline:
                data = images.load(i)["bytes"]
                kind = mimetypes.guess_type(images.paths[i])[0] if images.is_file[i] else "image/png"
                url = f"data:{kind or 'image/png'};base64,{base64.b64encode(data).decode('ascii')}"
            else:
                path = images.write(i, tmp / IMAGES / f"{int(row.row):06d}", link)
                url = LOCAL_FILES_URL + quote(f"{out.name}/{IMAGES}/{path.name}")
            tasks.append(_task(row, url, model_version))
        (tmp / TASKS).write_text(json.dumps(tasks, indent=1, ensure_ascii=False), encoding="utf-8")
        (tmp / CONFIG).write_text(config, encoding="utf-8")
        (tmp / HOWTO).write_text(_howto(out.name, len(tasks), inline), encoding="utf-8")

    write_export_folder(out, fill, {"run": str(folder.path), "format": "label-studio", "rows": int(len(rows)),
                              "tau": tau, "scope": scope, "images": "inline" if inline else "local-files"})
    return LabelStudioExport(int(len(rows)), out, "inline" if inline else "local-files")


def zip_export(export_dir: str | Path) -> bytes:
    """An export folder as a zip whose top folder has the export's name (the name its image
    URLs use): unzipped into Label Studio's document root, it is ready to import."""
    export_dir = Path(export_dir)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(export_dir.rglob("*")):
            if path.is_file():
                zf.write(path, f"{export_dir.name}/{path.relative_to(export_dir).as_posix()}")
    return buf.getvalue()


# --- import ------------------------------------------------------------------------------

@dataclass
class ImportSummary:
    """What `import_labels` did: decisions recorded per action, and tasks skipped per reason
    (each with a few example task ids)."""

    recorded: Counter = field(default_factory=Counter)  # keep / relabel / none / ambiguous
    unchanged: int = 0  # the sample already had that decision
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> task descriptions

    def skip(self, reason: str, task: dict) -> None:
        data = task.get("data") if isinstance(task.get("data"), dict) else {}
        self.skipped.setdefault(reason, []).append(f"task {task.get('id', '?')} ({data.get('sample_id', '?')})")

    @property
    def n_skipped(self) -> int:
        return sum(len(v) for v in self.skipped.values())

    def lines(self) -> list[str]:
        counts = ", ".join(f"{self.recorded[a]} {a}" for a in ("keep", "relabel", "none", "ambiguous"))
        out = [f"recorded {sum(self.recorded.values())} decision(s): {counts}; "
               f"{self.unchanged} already so; {self.n_skipped} task(s) skipped"]
        for reason, tasks in self.skipped.items():
            more = f" and {len(tasks) - 3} more" if len(tasks) > 3 else ""
            out.append(f"  skipped {len(tasks)}: {reason}: {', '.join(tasks[:3])}{more}")
        return out


def read_tasks(data: bytes | str, source: str = "the file") -> list[dict]:
    """Label Studio's JSON export, checked: a list of task objects."""
    try:
        tasks = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{source} is not JSON ({exc}); export the Label Studio project as \"JSON\"") from exc
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise ValueError(f"{source} is not a Label Studio JSON export (a list of tasks); export the project "
                         "as \"JSON\", not JSON-MIN, CSV or another format")
    return tasks


def _latest_choice(task: dict) -> str | None:
    """The choice of the task's latest annotation that was not cancelled; None without one."""
    annotations = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    if not annotations:
        return None
    latest = max(annotations, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0))
    for result in latest.get("result") or []:
        if not isinstance(result, dict) or result.get("from_name", FROM_NAME) != FROM_NAME:
            continue
        choices = (result.get("value") or {}).get("choices")
        if choices:
            return str(choices[0])
    return None


def plan_import(run_dir: str | Path, tasks: list[dict]) -> tuple[list[tuple[str, str, int | None]], ImportSummary]:
    """The decisions the tasks ask for (sample_id, action, label), and the summary; nothing is written."""
    folder = RunFolder(run_dir)
    if folder.final() is None:
        raise ValueError(f"run {folder.name} has no final results yet; let the run finish first")
    samples = folder.samples()
    train = samples[samples["split"] == "train"]
    given = dict(zip(train["sample_id"].astype(str), train["given_label"].astype(int)))
    by_path = dict(zip(train["source"].astype(str), train["sample_id"].astype(str)))
    class_index = {str(c): i for i, c in enumerate(folder.class_names())}
    current = ReviewStore(folder.review_db).current()
    summary, decisions = ImportSummary(), []
    for task in tasks:
        data = task.get("data") if isinstance(task.get("data"), dict) else {}
        sid = str(data.get("sample_id", ""))
        sid = sid if sid in given else by_path.get(str(data.get("path", "")), "")
        if not sid:
            summary.skip("image not in this run", task)
            continue
        choice = _latest_choice(task)
        if choice is None:
            summary.skip("no annotation", task)
            continue
        if choice == NONE:
            decision = ("none", None)
        elif choice == AMBIGUOUS:
            decision = ("ambiguous", None)
        elif choice in class_index:
            label = class_index[choice]
            decision = ("keep", None) if label == given[sid] else ("relabel", label)
        else:
            summary.skip(f"unknown class {choice!r}", task)
            continue
        if current.get(sid) == decision:
            summary.unchanged += 1
            continue
        current[sid] = decision  # a sample in two tasks: the later task's choice counts once
        decisions.append((sid, *decision))
        summary.recorded[decision[0]] += 1
    return decisions, summary


def import_labels(run_dir: str | Path, tasks: list[dict], session: str = SESSION) -> ImportSummary:
    """Record the tasks' annotations as review decisions, all in one transaction (module docstring)."""
    decisions, summary = plan_import(run_dir, tasks)
    if decisions:
        ReviewStore(RunFolder(run_dir).review_db).record_many(decisions, session=session)
    return summary
