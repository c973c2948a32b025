"""A run's review decisions as a label table, and that table applied to a dataset: the part of
retraining (`turn_backend.retrain`) that the data stage reads, below the runner."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from turn_backend.data.core import DatasetBundle, DatasetError, ImageSet
from turn_backend.review import ReviewStore
from turn_backend.runfolder import RunFolder

REVIEWED_LABELS = RunFolder.REVIEWED_LABELS
COLUMNS = ["sample_id", "given_label", "decision", "final_label", "held_clean", "decided_at"]
AMBIGUOUS_CHOICES = ("drop", "keep")  # what retraining does with images decided "ambiguous"


def _final_label(action: str, label, given: int, ambiguous: str) -> int:
    """The label a decided sample trains with; -1: left out of training."""
    if action == "relabel":
        return int(label)
    if action == "keep":
        return int(given)
    if action == "ambiguous" and ambiguous == "keep":
        return int(given)
    return -1  # remove, none (no class fits), ambiguous with "drop"


def reviewed_labels(source_run_dir: str | Path, ambiguous: str = "drop") -> pd.DataFrame:
    """The source run's review decisions as a label table, one row per decided sample.

    Columns: sample_id, given_label (the dataset's label, before any review), decision
    (keep / relabel / remove / none / ambiguous), final_label (-1: left out of training),
    held_clean, decided_at (Unix time).

    "remove" and "none" (the image belongs to none of the classes) are left out. "ambiguous"
    (it could be more than one class) follows `ambiguous`: "drop" leaves it out, "keep"
    trains it with its given label, not held clean (nobody vouched for that label, so
    cleansing may still drop it). Keep and relabel are held clean. Decisions made on an
    earlier run of a retrain chain are included, overridden by later ones; an inherited
    "ambiguous" follows this call's choice too.
    """
    if ambiguous not in AMBIGUOUS_CHOICES:
        raise ValueError(f"ambiguous must be one of {', '.join(AMBIGUOUS_CHOICES)}, got {ambiguous!r}")
    folder = RunFolder(source_run_dir)
    if not folder.exists():
        raise FileNotFoundError(f"{source_run_dir} is not a run folder (no config.json)")
    if not folder.has_samples():
        raise ValueError(f"run {folder.name} has not loaded its data yet; retrain from a finished run")
    samples = folder.samples()
    train = samples[samples["split"] == "train"]
    given = dict(zip(train["sample_id"].astype(str), train["given_label"].astype(np.int64)))
    inherited = pd.DataFrame(columns=COLUMNS)
    if (folder.path / REVIEWED_LABELS).exists():
        inherited = pd.read_parquet(folder.path / REVIEWED_LABELS)
    original = dict(zip(inherited["sample_id"].astype(str), inherited["given_label"].astype(np.int64)))
    rows = []
    for d in ReviewStore(folder.review_db).current_rows() if folder.review_db.exists() else []:
        sid = d["sample_id"]
        if sid not in given:
            raise ValueError(f"run {folder.name}: a review decision names sample {sid!r}, which is not in its "
                             "training set; the review database does not belong to this run")
        action, label = d["action"], d["label"]
        final = _final_label(action, label, int(given[sid]), ambiguous)
        rows.append({"sample_id": sid, "given_label": int(original.get(sid, given[sid])), "decision": action,
                     "final_label": final, "held_clean": action in ("keep", "relabel"),
                     "decided_at": float(d["time"])})
    decided = pd.DataFrame(rows, columns=COLUMNS)
    earlier = inherited[~inherited["sample_id"].astype(str).isin(decided["sample_id"])].copy()  # not decided again
    again = (earlier["decision"] == "ambiguous").to_numpy()
    if again.any():  # an earlier ambiguous decision follows this retrain's choice
        earlier.loc[again, "final_label"] = earlier.loc[again, "given_label"] if ambiguous == "keep" else -1
        earlier.loc[again, "held_clean"] = False
    frames = [df for df in (earlier, decided) if len(df)]
    table = pd.concat(frames, ignore_index=True) if frames else decided
    return table.astype({"sample_id": str, "given_label": np.int64, "decision": str, "final_label": np.int64,
                         "held_clean": bool, "decided_at": np.float64})[COLUMNS].reset_index(drop=True)


@dataclass
class ReviewedData:
    """A run's dataset with its reviewed labels applied."""

    bundle: DatasetBundle  # relabelled; removed, "none" and dropped "ambiguous" samples absent
    full_train: ImageSet  # the training set before removal (its feature cache is reused)
    kept: np.ndarray  # (N_kept,) rows of full_train in bundle.train
    held_clean: np.ndarray  # (N_kept,) bool: cleansing never drops these

    def reuse_cached_features(self, feature_path) -> None:
        """Slice the full training set's cached features for the reduced set, so that removing
        samples costs no new feature extraction. `feature_path(images, split)` names a cache file."""
        full, reduced = Path(feature_path(self.full_train, "train")), Path(feature_path(self.bundle.train, "train"))
        if reduced.exists() or not full.exists():
            return
        sliced = np.asarray(np.load(full, mmap_mode="r")[self.kept])
        tmp = reduced.with_name(f".{reduced.stem}.{os.getpid()}.tmp.npy")  # per process: several may race
        np.save(tmp, sliced)
        os.replace(tmp, reduced)


def apply_reviewed_labels(bundle: DatasetBundle, run_dir: str | Path) -> ReviewedData | None:
    """The run's reviewed labels applied to its freshly loaded dataset; None without a snapshot."""
    path = Path(run_dir) / REVIEWED_LABELS
    if not path.exists():
        return None
    table = pd.read_parquet(path)
    train = bundle.train
    position = {sid: i for i, sid in enumerate(train.ids)}
    missing = [s for s in table["sample_id"] if s not in position]
    if missing:
        raise DatasetError(f"{len(missing)} reviewed sample(s) are no longer in the dataset (e.g. {missing[0]!r}); "
                           "the data changed since the review, so these decisions cannot be applied")
    rows = table["sample_id"].map(position).to_numpy(dtype=np.int64)
    changed = train.labels[rows] != table["given_label"].to_numpy()
    if changed.any():
        raise DatasetError(f"{int(changed.sum())} reviewed sample(s) have another label in the dataset than when "
                           f"they were reviewed (e.g. {table['sample_id'].iloc[int(np.argmax(changed))]!r}); "
                           "the data changed since the review")
    labels = train.labels.copy()
    final = table["final_label"].to_numpy(dtype=np.int64)
    if final.max(initial=-1) >= train.num_classes:
        raise DatasetError(f"a reviewed label is outside the {train.num_classes} classes of the dataset")
    relabelled = final >= 0
    labels[rows[relabelled]] = final[relabelled]
    held = np.zeros(len(train), dtype=bool)
    held[rows[table["held_clean"].to_numpy(dtype=bool)]] = True
    keep = np.ones(len(train), dtype=bool)
    keep[rows[~relabelled]] = False
    kept = np.flatnonzero(keep)
    if not len(kept):
        raise DatasetError("every training sample was removed in review; nothing is left to train on")
    new_train = train.with_labels(labels, train.true_labels).subset(kept)
    new_bundle = DatasetBundle(name=bundle.name, train=new_train, test=bundle.test, skipped=bundle.skipped,
                               info={**bundle.info, "reviewed": int(len(table))})
    return ReviewedData(new_bundle, train, kept, held[kept])
