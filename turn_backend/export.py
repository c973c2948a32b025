"""Exports of a run's reviewed labels.

The cleaned label file (`build_export`): one row per training sample, review decisions
applied. Columns: sample_id, path, given_label, predicted_label, clean_prob, flagged (clean
probability at or below tau), decision (keep / relabel / remove / none / ambiguous / empty),
final_label (empty for removed samples and for "none", an image of none of the classes;
an "ambiguous" one keeps its given label), and from the run's audit (turn_backend.audit): duplicate_of
(another training sample with the same or nearly the same image), test_duplicate (such a
test sample), outlier, outlier_score (empty / false where the run has no audit). Written
atomically in CSV, Parquet or JSON; CSV cells that a spreadsheet would run as a formula are
escaped.

The decision log (`build_decision_log`): one row per reviewed sample, with when, at which
tau, and the detection signals. Folder exports that other tools load: an ImageFolder tree
(`export_imagefolder`, one folder per final label) and a Hugging Face `datasets` folder
(`export_hf`, `save_to_disk`). Every export appears complete or not at all.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from turn_backend.annotator_export import consensus_columns
from turn_backend.audit.stage import replace_dir
from turn_backend.config import RunConfig
from turn_backend.io import atomic_write_bytes
from turn_backend.review import ReviewStore
from turn_backend.rundata import load_run_data
from turn_backend.runfolder import RunFolder

FORMATS = ("csv", "parquet", "json")
FOLDER_FORMATS = ("imagefolder", "hf")  # written by export_imagefolder / export_hf
LINK_MODES = ("hardlink", "symlink", "copy")
AUDIT_COLUMNS = ("duplicate_of", "test_duplicate", "outlier", "outlier_score")
MARKER = ".turn-export.json"  # marks a folder this module wrote (and may replace)
SCOPES = {
    "all": "every training sample (removed and \"none\" ones with an empty final label)",
    "kept": "every sample not removed or decided \"none\" in review",
    "clean": "samples not removed, not \"none\" and not flagged-and-unreviewed",
}
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


class ExportError(ValueError):
    """An export that could not be built or written; the previous file is left as it was.

    A ValueError, like the other errors a user can fix (turn_backend.errors), so the CLI
    prints its message instead of a traceback."""


def default_tau(folder: RunFolder) -> float:
    """The tau applied on the Threshold page, else the run's training tau. A run never reviewed
    has no review database, and reading its tau does not create one."""
    value = ReviewStore(folder.review_db).get_setting("tau") if folder.review_db.exists() else None
    return float(value) if value is not None else float(folder.config().get("tau", 0.6))


def build_export(run_dir: str | Path, tau: float | None = None, scope: str = "all") -> pd.DataFrame:
    folder = RunFolder(run_dir)
    final = folder.final()
    if final is None:
        raise ExportError(f"run {folder.name} has no final clean probabilities yet; let the run finish first")
    if scope not in SCOPES:
        raise ExportError(f"unknown scope {scope!r}; choose one of {', '.join(SCOPES)}")
    tau = default_tau(folder) if tau is None else float(tau)
    classes = folder.class_names()
    samples = folder.samples()
    train = samples.loc[samples["split"] == "train", ["sample_id", "source", "given_label"]].reset_index(drop=True)
    names = np.asarray(classes, dtype=object)
    decisions = ReviewStore(folder.review_db).current() if folder.review_db.exists() else {}
    ids = train["sample_id"]
    action = np.full(len(train), "", dtype=object)
    final_label = names[train["given_label"].to_numpy()].copy()
    # only the decided rows are looked up: a Python loop over a million ids took a second
    decided = np.flatnonzero(ids.isin(list(decisions)).to_numpy()) if decisions else np.empty(0, dtype=np.int64)
    for i in decided:
        a, lab = decisions[ids.iat[i]]
        action[i] = a or ""
        if a == "relabel":
            final_label[i] = names[lab]
        elif a in ("remove", "none"):  # none: the image belongs to none of the classes
            final_label[i] = None
    flagged = final["clean_prob"] <= tau
    df = pd.DataFrame({
        "sample_id": train["sample_id"],
        "path": train["source"],
        "given_label": names[train["given_label"].to_numpy()],
        "predicted_label": names[final["pred"]],
        "clean_prob": np.round(final["clean_prob"].astype(float), 6),
        "flagged": flagged,
        "decision": action,
        "final_label": final_label,
        **audit_columns(folder, len(train)),
        **consensus_columns(folder, classes, len(train)),  # runs with several annotators per image
    })
    left_out = df["decision"].isin(["remove", "none"])
    if scope == "kept":
        df = df[~left_out]
    elif scope == "clean":
        df = df[~left_out & ~(df["flagged"] & (df["decision"] == ""))]
    return df.reset_index(drop=True)


def audit_columns(folder: RunFolder, n_train: int) -> dict:
    """The audit's per-sample columns of the label file; empty / false without an audit."""
    audit = folder.audit()
    if audit is None or len(audit["train"]) != n_train:
        return {"duplicate_of": [""] * n_train, "test_duplicate": [""] * n_train,
                "outlier": np.zeros(n_train, dtype=bool), "outlier_score": np.full(n_train, np.nan)}
    t = audit["train"]
    return {"duplicate_of": t["duplicate_of"].to_numpy(), "test_duplicate": t["test_duplicate"].to_numpy(),
            "outlier": t["outlier"].to_numpy(dtype=bool),
            "outlier_score": np.round(t["outlier_score"].to_numpy(float), 6)}


def build_decision_log(run_dir: str | Path, tau: float | None = None) -> pd.DataFrame:
    """One row per reviewed sample (its standing decision), oldest decision first.

    Columns: sample_id, path, given_label, final_label (empty: removed or "none"), decision
    (keep / relabel / remove / none / ambiguous),
    decided_at (UTC, ISO 8601), session, tau, clean_prob, flagged, predicted_label, the
    detection signals of final/signals.parquet where the run has them (combined and
    per-signal clean scores, suggested_label, suggested_confidence), and the audit columns.
    """
    folder = RunFolder(run_dir)
    labels = build_export(run_dir, tau, "all")
    tau = default_tau(folder) if tau is None else float(tau)
    detection = folder.detection()
    if detection is not None and len(detection["signals"]) == len(labels):
        names = np.asarray(folder.class_names(), dtype=object)
        for col, values in detection["signals"].reset_index(drop=True).items():
            if col == "suggested_label":
                labels[col] = names[values.to_numpy(dtype=np.int64)]
            elif col.startswith("suggested_"):
                labels[col] = values.to_numpy()
            else:  # a clean score in [0, 1], higher = cleaner
                labels[f"signal_{col}"] = np.round(values.to_numpy(float), 6)
    rows = ReviewStore(folder.review_db).current_rows() if folder.review_db.exists() else []
    position = {sid: i for i, sid in enumerate(labels["sample_id"])}
    unknown = [r["sample_id"] for r in rows if r["sample_id"] not in position]
    if unknown:
        raise ExportError(f"{len(unknown)} decision(s) name samples that are not in run {folder.name} "
                          f"(e.g. {unknown[0]!r}); the review database does not belong to this run")
    log = labels.iloc[[position[r["sample_id"]] for r in rows]].reset_index(drop=True)
    log["decided_at"] = [datetime.fromtimestamp(r["time"], tz=timezone.utc).isoformat(timespec="seconds")
                         for r in rows]
    log["session"] = [r["session"] or "" for r in rows]
    log["tau"] = tau
    first = ["sample_id", "path", "given_label", "final_label", "decision", "decided_at", "session", "tau",
             "clean_prob", "flagged", "predicted_label"]
    return log[first + [c for c in log.columns if c not in first]]


def escape_formula(value):
    """Prefix a quote to text a spreadsheet would evaluate (CSV formula injection)."""
    if isinstance(value, str) and value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    return value


def to_bytes(df: pd.DataFrame, fmt: str) -> bytes:
    if fmt == "csv":
        safe = df.copy()
        for col in safe.columns:
            # text columns are `object` or, from pandas 3, `str`
            if pd.api.types.is_object_dtype(safe[col]) or pd.api.types.is_string_dtype(safe[col]):
                safe[col] = safe[col].map(escape_formula)
        # CRLF rows (RFC 4180): the csv writer then quotes every cell holding a CR or LF, so a
        # file name with a carriage return cannot start a new row
        return safe.to_csv(index=False, lineterminator="\r\n").encode("utf-8")
    if fmt == "parquet":
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        return buf.getvalue()
    if fmt == "json":
        return df.to_json(orient="records", indent=1, force_ascii=False).encode("utf-8")
    raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def write_export(df: pd.DataFrame, path: str | Path, fmt: str | None = None) -> Path:
    """Write atomically (temporary file + rename): a failure leaves any previous file intact."""
    path = Path(path)
    fmt = fmt or path.suffix.lstrip(".").lower()
    data = to_bytes(df, fmt)
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if isinstance(exc, (FileExistsError, NotADirectoryError)):
            blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
            reason = f"{blocker or 'a part of the path'} is a file, not a folder"
        raise ExportError(f"could not write {path}: {reason}. The previous file, if any, is unchanged; "
                          "choose a folder you can write to with free space") from exc
    return path


def summary(df: pd.DataFrame) -> dict:
    d = df["decision"]
    return {
        "rows": int(len(df)),
        "kept": int((d == "keep").sum()),
        "relabelled": int((d == "relabel").sum()),
        "removed": int((d == "remove").sum()),
        "none": int((d == "none").sum()),
        "ambiguous": int((d == "ambiguous").sum()),
        "flagged": int(df["flagged"].sum()),
        "flagged_unreviewed": int((df["flagged"] & (d == "")).sum()),
    }


# --- folder exports ----------------------------------------------------------------------

def folder_names(class_names: list[str]) -> dict[str, str]:
    """A safe, unique folder name for each class name ("T-shirt/top" -> "T-shirt_top")."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for name in class_names:
        base = re.sub(r"[^\w.+-]+", "_", str(name)).strip("._") or "class"
        safe, n = base, 2
        while safe.lower() in used:
            safe, n = f"{base}_{n}", n + 1
        used.add(safe.lower())
        out[name] = safe
    return out


class ExportImages:
    """The images of a run's rows: their files, or the dataset's arrays where there are none."""

    def __init__(self, folder: RunFolder, rows: pd.DataFrame) -> None:
        self.paths = rows["path"].astype(str).tolist()
        self.ids = rows["sample_id"].astype(str).tolist()
        self.is_file = [Path(p).is_file() for p in self.paths]
        self.images = None
        if not all(self.is_file):  # array data (or files gone): the run's dataset, loaded again
            missing = [p for p, ok in zip(self.paths, self.is_file) if not ok]
            try:
                bundle = load_run_data(RunConfig.from_dict(folder.config()))
            except (ValueError, OSError) as exc:  # DatasetError is a ValueError
                raise ExportError(f"{len(missing)} image(s) of the run can no longer be read (e.g. {missing[0]}) "
                                  f"and its dataset could not be loaded again: {exc}. Nothing was written") from exc
            self.images = bundle.train
            self.index = {sid: i for i, sid in enumerate(bundle.train.ids)}
            lost = [p for p, ok, sid in zip(self.paths, self.is_file, self.ids)
                    if not ok and (bundle.train.arrays is None or sid not in self.index)]
            if lost:
                raise ExportError(f"{len(lost)} image(s) of the run can no longer be read (e.g. {lost[0]}); "
                                  "nothing was written")

    def write(self, i: int, dest_stem: Path, link: str) -> Path:
        """Sample i as a file at dest_stem (+ its extension): linked or copied, or written as PNG."""
        if self.is_file[i]:
            src = Path(self.paths[i])
            dest = dest_stem.with_suffix(src.suffix.lower() or ".png")
            if link == "hardlink":
                try:
                    os.link(src, dest)
                    return dest
                except OSError:  # another file system, or links not allowed: copy
                    pass
            elif link == "symlink":
                os.symlink(src.resolve(), dest)
                return dest
            shutil.copyfile(src, dest)
            return dest
        dest = dest_stem.with_suffix(".png")
        self.images.load_image(self.index[self.ids[i]]).save(dest, format="PNG")
        return dest

    def load(self, i: int):
        if self.is_file[i]:
            return {"path": None, "bytes": Path(self.paths[i]).read_bytes()}
        buf = io.BytesIO()
        self.images.load_image(self.index[self.ids[i]]).save(buf, format="PNG")
        return {"path": None, "bytes": buf.getvalue()}


def _labelled_rows(run_dir: str | Path, tau: float | None, scope: str) -> pd.DataFrame:
    """Rows that have a final label, for the folder exports: removed samples and those decided
    "none" (of none of the classes) have none; "ambiguous" ones keep their given label."""
    df = build_export(run_dir, tau, scope)
    return df[df["final_label"].notna()].reset_index(drop=True)


def write_export_folder(out_dir: str | Path, fill, info: dict) -> Path:
    """Build a folder export in a temporary sibling, then rename it to `out_dir`.

    `fill(tmp)` writes the content. An existing `out_dir` is replaced only if it is an
    earlier export (it holds MARKER) or empty: a folder of the user's own is never touched.
    """
    out = Path(out_dir)
    if out.exists() and not (out.is_dir() and ((out / MARKER).exists() or not any(out.iterdir()))):
        raise ExportError(f"{out} exists and is not an earlier TURN export; choose a new or empty folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
        tmp.chmod(0o755)  # mkdtemp's 0700 would make the export private to this user
    except OSError as exc:
        raise ExportError(f"could not create {out}: {exc.strerror or exc}") from exc
    try:
        fill(tmp)
        (tmp / MARKER).write_text(json.dumps(info, indent=1))
        replace_dir(tmp, out)
    except OSError as exc:
        raise ExportError(f"could not write {out}: {exc.strerror or exc}; nothing was changed there") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def export_imagefolder(run_dir: str | Path, out_dir: str | Path, tau: float | None = None, scope: str = "kept",
                       link: str = "hardlink") -> dict:
    """An ImageFolder tree: out_dir/<final label>/<sample>.<ext>. Removed samples and those
    decided "none" (an image of none of the classes) are left out; samples decided
    "ambiguous" are kept, in the folder of their given label (the decision column of the
    label file and the decision log say which they are).

    Files are hard-linked where the file system allows (link="hardlink", else copied),
    symlinked (link="symlink") or copied (link="copy"); array datasets are written as PNG.
    Class folder names are the class names made safe for a file system; MARKER maps them
    back. Loads with torchvision.datasets.ImageFolder(out_dir). Returns a summary.
    """
    if link not in LINK_MODES:
        raise ExportError(f"unknown link mode {link!r}; choose one of {', '.join(LINK_MODES)}")
    folder = RunFolder(run_dir)
    rows = _labelled_rows(run_dir, tau, scope)
    classes = folder.class_names()
    dirs = folder_names(classes)
    images = ExportImages(folder, rows)
    used: set[str] = set()

    def fill(tmp: Path) -> None:
        for name in set(rows["final_label"]):
            (tmp / dirs[name]).mkdir()
        for i, (sid, label) in enumerate(zip(rows["sample_id"], rows["final_label"])):
            stem = re.sub(r"[^\w.+-]+", "_", str(sid)).strip("._") or "sample"
            while stem.lower() in used:  # two ids that differ only in unsafe characters
                stem += "_"
            used.add(stem.lower())
            images.write(i, tmp / dirs[label] / stem, link)

    info = {"run": str(folder.path), "format": "imagefolder", "rows": int(len(rows)),
            "folders": {dirs[c]: c for c in classes if c in set(rows["final_label"])}, "scope": scope}
    write_export_folder(out_dir, fill, info)
    return info


def export_hf(run_dir: str | Path, out_dir: str | Path, tau: float | None = None, scope: str = "kept") -> dict:
    """A Hugging Face `datasets` folder (DatasetDict.save_to_disk) with a "train" split.

    Columns: image (encoded bytes), label (ClassLabel: the final label), sample_id,
    given_label, decision, clean_prob, flagged, and the audit columns. Removed samples and
    those decided "none" (an image of none of the classes) are left out; samples decided
    "ambiguous" are kept with their given label as `label`, and "ambiguous" in `decision`,
    so a user can filter them. Loads with datasets.load_from_disk(out_dir); TURN reads it as kind "hf".
    """
    import datasets

    folder = RunFolder(run_dir)
    rows = _labelled_rows(run_dir, tau, scope)
    classes = list(folder.class_names())
    images = ExportImages(folder, rows)
    index = {c: i for i, c in enumerate(classes)}
    features = datasets.Features({
        "image": datasets.Image(), "label": datasets.ClassLabel(names=classes),
        "sample_id": datasets.Value("string"), "given_label": datasets.ClassLabel(names=classes),
        "decision": datasets.Value("string"), "clean_prob": datasets.Value("float64"),
        "flagged": datasets.Value("bool"), "duplicate_of": datasets.Value("string"),
        "test_duplicate": datasets.Value("string"), "outlier": datasets.Value("bool"),
        "outlier_score": datasets.Value("float64"),
    })

    def records():
        for i, row in enumerate(rows.itertuples(index=False)):
            yield {"image": images.load(i), "label": index[row.final_label], "sample_id": str(row.sample_id),
                   "given_label": index[row.given_label], "decision": row.decision,
                   "clean_prob": float(row.clean_prob), "flagged": bool(row.flagged),
                   "duplicate_of": row.duplicate_of, "test_duplicate": row.test_duplicate,
                   "outlier": bool(row.outlier), "outlier_score": float(row.outlier_score)}

    def fill(tmp: Path) -> None:
        cache = tmp / ".build-cache"  # the generator's Arrow cache stays inside the temporary folder
        ds = datasets.Dataset.from_generator(records, features=features, cache_dir=str(cache))
        datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp / "data"))
        del ds
        shutil.rmtree(cache, ignore_errors=True)
        for p in (tmp / "data").iterdir():
            os.replace(p, tmp / p.name)
        (tmp / "data").rmdir()

    info = {"run": str(folder.path), "format": "hf", "rows": int(len(rows)), "scope": scope}
    write_export_folder(out_dir, fill, info)
    return info
