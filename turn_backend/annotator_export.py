"""What the exports of a run with several annotators per image add: each sample's consensus
label and annotator agreement as columns of the label file, and the table of annotators
(annotator, quality, n_labels, agreement_with_consensus) as a file of its own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from turn_backend.runfolder import RunFolder

ANNOTATOR_TABLE_COLUMNS = ["annotator", "quality", "n_labels", "agreement_with_consensus"]


class NoAnnotatorsError(ValueError):
    """The run has one label per image; the message says what the annotator table needs."""


def consensus_columns(folder: RunFolder, class_names: list[str], n_train: int) -> dict:
    """consensus_label (class name) and annotator_agreement (share of an image's annotators who
    gave it) for the label file; {} for a run with one label per image."""
    annotators = folder.annotators()
    if annotators is None or len(annotators["consensus"]) != n_train:
        return {}
    consensus = annotators["consensus"]
    names = np.asarray(class_names, dtype=object)
    return {"consensus_label": names[consensus["consensus_label"].to_numpy()],
            "annotator_agreement": np.round(consensus["agreement"].to_numpy(float), 6)}


def annotator_table(run_dir: str | Path) -> pd.DataFrame:
    """One row per annotator, best estimated quality first."""
    folder = RunFolder(run_dir)
    annotators = folder.annotators()
    if annotators is None:
        raise NoAnnotatorsError(f"run {folder.name} has one label per image, no annotators; the annotators format "
                                "needs a manifest with several annotators per image (README: Several annotators)")
    table = annotators["quality"][ANNOTATOR_TABLE_COLUMNS].copy()
    table["quality"] = table["quality"].round(6)
    table["agreement_with_consensus"] = table["agreement_with_consensus"].round(6)
    return table


def beside(label_file: str | Path) -> Path:
    """Where the annotator table goes beside a label file: cleaned.csv -> cleaned_annotators.csv
    (never a bare annotators.csv, which could be the user's own manifest)."""
    path = Path(label_file)
    return path.with_name(f"{path.stem}_annotators.csv")
