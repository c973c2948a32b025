"""The cleaned label file: one row per training sample, review decisions applied.

Columns: sample_id, path, given_label, predicted_label, clean_prob, flagged (clean
probability at or below tau), decision (keep / relabel / remove / empty), final_label
(empty for removed samples). Written atomically in CSV, Parquet or JSON; CSV cells that a
spreadsheet would run as a formula are escaped.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from turn_backend.review import ReviewStore
from turn_backend.runfolder import RunFolder, atomic_write_bytes, read_json

FORMATS = ("csv", "parquet", "json")
SCOPES = {
    "all": "every training sample (removed ones with an empty final label)",
    "kept": "every sample not removed in review",
    "clean": "samples not removed and not flagged-and-unreviewed",
}
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


class ExportError(ValueError):
    """An export that could not be built or written; the previous file is left as it was.

    A ValueError, like the other errors a user can fix (turn_backend.errors), so the CLI
    prints its message instead of a traceback."""


def default_tau(folder: RunFolder) -> float:
    """The tau applied on the Threshold page, else the run's training tau."""
    store = ReviewStore(folder.review_db)
    value = store.get_setting("tau")
    return float(value) if value is not None else float(folder.config().get("tau", 0.6))


def build_export(run_dir: str | Path, tau: float | None = None, scope: str = "all") -> pd.DataFrame:
    folder = RunFolder(run_dir)
    final = folder.final()
    if final is None:
        raise ExportError(f"run {folder.name} has no final clean probabilities yet; let the run finish first")
    if scope not in SCOPES:
        raise ExportError(f"unknown scope {scope!r}; choose one of {', '.join(SCOPES)}")
    tau = default_tau(folder) if tau is None else float(tau)
    classes = read_json(folder.path / "classes.json")
    samples = folder.samples()
    train = samples[samples["split"] == "train"].reset_index(drop=True)
    names = np.asarray(classes, dtype=object)
    decisions = ReviewStore(folder.review_db).current()
    action = [decisions.get(s, (None, None))[0] for s in train["sample_id"]]
    new_label = [decisions.get(s, (None, None))[1] for s in train["sample_id"]]
    final_label = names[train["given_label"].to_numpy()].copy()
    for i, (a, lab) in enumerate(zip(action, new_label)):
        if a == "relabel":
            final_label[i] = names[lab]
        elif a == "remove":
            final_label[i] = None
    flagged = final["clean_prob"] <= tau
    df = pd.DataFrame({
        "sample_id": train["sample_id"],
        "path": train["source"],
        "given_label": names[train["given_label"].to_numpy()],
        "predicted_label": names[final["pred"]],
        "clean_prob": np.round(final["clean_prob"].astype(float), 6),
        "flagged": flagged,
        "decision": pd.Series(action, dtype=object).fillna(""),
        "final_label": final_label,
    })
    if scope == "kept":
        df = df[df["decision"] != "remove"]
    elif scope == "clean":
        df = df[(df["decision"] != "remove") & ~(df["flagged"] & (df["decision"] == ""))]
    return df.reset_index(drop=True)


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
        "flagged": int(df["flagged"].sum()),
        "flagged_unreviewed": int((df["flagged"] & (d == "")).sum()),
    }
