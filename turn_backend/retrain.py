"""Retrain with my decisions: a new run whose training labels are a run's reviewed labels.

`create_retrain_run(source, out, **overrides)` snapshots the source run's review decisions
into the new run folder as `reviewed_labels.parquet` and records `retrained_from` in its
config; `turn_backend.worker.launch` starts it like any run. When the new run loads its
data (`apply_reviewed_labels`, called by the runner):

- relabel: the sample trains with its new label (it is the sample's given label there);
- remove, and none (the image belongs to none of the classes): the sample is left out of
  the training set (and of samples.parquet);
- ambiguous (it could be more than one class): as `ambiguous` says, "drop" (the default)
  leaves it out, "keep" trains it with its given label, not held clean;
- keep (and relabel: a person chose that label): the sample is held clean, cleansing
  never drops it (its clean probability is set to 1 before selection).

A source that was itself retrained passes its own snapshot on, updated by its decisions,
so a chain of runs accumulates every decision made along it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from turn_backend.config import RunConfig
from turn_backend.reviewed import (  # noqa: F401  (re-exported: the retrain API)
    AMBIGUOUS_CHOICES,
    COLUMNS,
    REVIEWED_LABELS,
    ReviewedData,
    apply_reviewed_labels,
    reviewed_labels,
)
from turn_backend.runfolder import RunFolder
from turn_backend.runner import create_run


def create_retrain_run(source_run_dir: str | Path, out_dir: str | Path, ambiguous: str = "drop",
                       **overrides) -> RunFolder:
    """A new (queued) run that trains on the source run's reviewed labels; start it with
    `turn_backend.worker.launch(out_dir)`.

    ambiguous: what to do with images decided "ambiguous": "drop" (default) leaves them out
    of training, "keep" trains them with their given label. Images decided "none" are
    always left out. overrides: RunConfig fields to change (e.g. tau=0.5, method="turn",
    fft_epochs=2); the rest is the source run's config. The new config records
    `retrained_from`: the source run's path, the number of decisions (relabelled / removed /
    kept / none / ambiguous) it was built from, and the ambiguous choice. The folder
    appears complete or not at all.
    """
    source = RunFolder(source_run_dir)
    table = reviewed_labels(source.path, ambiguous=ambiguous)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not empty; choose a new folder for the retrained run")
    counts = table["decision"].value_counts()
    settings = {k: v for k, v in source.config().items() if k != "retrained_from"}
    settings.update(overrides)
    settings["retrained_from"] = {
        "run": str(source.path.resolve()), "decisions": int(len(table)),
        "relabelled": int(counts.get("relabel", 0)), "removed": int(counts.get("remove", 0)),
        "kept": int(counts.get("keep", 0)), "none": int(counts.get("none", 0)),
        "ambiguous": int(counts.get("ambiguous", 0)), "ambiguous_choice": ambiguous, "created": time.time(),
    }
    config = RunConfig.from_dict(settings)  # unknown or invalid overrides fail here, before any file
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        create_run(config, tmp / "run")
        table.to_parquet(tmp / "run" / REVIEWED_LABELS, index=False)
        os.replace(tmp / "run", out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    folder = RunFolder(out)
    folder.log("retrain", f"created from {source.path} with {len(table)} review decision(s)",
               **settings["retrained_from"])
    return folder
