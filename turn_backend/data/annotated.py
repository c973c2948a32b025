"""Manifests with several annotators per image: their labels read, checked and aggregated into
one consensus label per image (turn_backend.annotators; Dawid-Skene by default).

Two layouts, both with the manifest's usual `path[, split, true_label, id]` columns:

- long: an `annotator` column (or `rater`, `worker`), one row per (image, annotator), the
  annotator's label in `label`; an image's rows repeat its path.
- wide: one label column per annotator, named `annotator_NAME` (the annotator is NAME), or
  the columns the spec's `annotator_columns` lists (`turn run --annotator-columns a,b,c`);
  an empty cell: that annotator did not label the image. A `label` column is not needed.

`collapse_annotations` turns either into one row per image (so that the manifest loader checks
paths, splits and files as for any manifest) plus the annotations; `aggregate_split` then
gives a split the consensus labels. A true_label column stays the ground truth.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from turn_backend.annotators import AGGREGATORS, AnnotatedLabels, AnnotationError, aggregate, label_matrix
from turn_backend.data.common import LabelMapper, label_text, warn
from turn_backend.data.core import DatasetError, ImageSet

LONG_COLUMNS = ("annotator", "rater", "worker")
WIDE_PREFIX = "annotator_"
STANDARD = ("path", "label", "split", "true_label", "id")  # the columns of a collapsed table
# CROWDLAB also needs a classifier's probabilities, which a manifest does not have
MANIFEST_AGGREGATORS = tuple(a for a in AGGREGATORS if a != "crowdlab")
DEFAULT_AGGREGATOR = "dawid-skene"  # the most accurate in `turn bench --annotators`


def annotator_columns(columns: list[str], spec: dict) -> tuple[str, list[int]] | None:
    """("long", [its annotator column]) or ("wide", [one column per annotator]) or None
    (one label per image)."""
    norm = [c.strip().lower() for c in columns]
    listed = spec.get("annotator_columns")
    if listed:
        missing = [c for c in listed if c.strip().lower() not in norm]
        if missing:
            raise DatasetError(f"annotator_columns names {missing}, which the manifest does not have; "
                               f"its columns are {columns}")
        return "wide", [norm.index(c.strip().lower()) for c in listed]
    for name in LONG_COLUMNS:
        if name in norm:
            return "long", [norm.index(name)]
    wide = [i for i, c in enumerate(norm) if c.startswith(WIDE_PREFIX) and len(c) > len(WIDE_PREFIX)]
    return ("wide", wide) if wide else None


def annotator_name(column: str, spec: dict) -> str:
    """The annotator a wide column holds: NAME of `annotator_NAME`, else the column's name."""
    column = column.strip()
    if not spec.get("annotator_columns") and column.lower().startswith(WIDE_PREFIX):
        return column[len(WIDE_PREFIX):]
    return column


def collapse_annotations(table, ci: dict, spec: dict, where: str, info: dict):
    """(one row per image with the columns STANDARD, the annotations: DataFrame of id, annotator,
    label text, line) for a manifest with annotators; None for one with one label per image.
    `table` is the manifest's Table, `ci` its column index per role; warnings go to `info`.
    Raises DatasetError on a row without a label or an annotator, an image without any label,
    or a label given twice."""
    layout = annotator_columns(table.columns, spec)
    if layout is None or ci["path"] is None:
        return None
    kind, columns = layout
    if kind == "long" and ci["label"] is None:
        raise DatasetError(f"a manifest with an annotator column needs a label column (each annotator's label); "
                           f"its columns are {table.columns}")
    if kind == "wide" and ci["label"] is not None:
        warn(info, f"the column {table.columns[ci['label']]!r} is not read: the consensus of the annotator columns "
                   "is each image's given label")
    width = len(table.columns)
    images: dict[str, tuple[int, list[str]]] = {}  # id -> (its first line, its row of STANDARD columns)
    notes: list[tuple[str, str, str, int]] = []  # (id, annotator, label text, line)

    def cell(row, role):
        return "" if ci[role] is None else label_text(row[ci[role]])

    for line, row in table.rows:
        if all(label_text(v) == "" for v in row):
            continue
        if len(row) > width:
            raise DatasetError(f"{where} line {line}: {len(row)} fields where the header has {width}; "
                               "quote fields that contain the delimiter")
        row = list(row) + [None] * (width - len(row))
        value = row[ci["path"]]
        path = "" if value is None else value.decode() if isinstance(value, bytes) else str(value)
        sid = cell(row, "id") or path.strip() or f"{where}:{line}"
        standard = [path, "", cell(row, "split"), cell(row, "true_label"), cell(row, "id")]
        if kind == "long":
            annotator, label = label_text(row[columns[0]]), cell(row, "label")
            if annotator == "":
                raise DatasetError(f"{where} line {line}: {path!r} has a label but no annotator; every row of a "
                                   "manifest with an annotator column names who gave its label")
            if label == "":
                raise DatasetError(f"{where} line {line}: annotator {annotator!r} has no label for {path!r}; "
                                   "fill in their label or delete the row")
            given = [(annotator, label)]
        else:
            given = [(annotator_name(table.columns[k], spec), label_text(row[k])) for k in columns]
            given = [(a, lab) for a, lab in given if lab != ""]
            if not given:
                names = ", ".join(table.columns[k] for k in columns)
                raise DatasetError(f"{where} line {line}: {path!r} has no label from any annotator (columns {names}); "
                                   "give it at least one label or delete the row")
        first = images.setdefault(sid, (line, standard))[1]
        if first[1] == "":
            first[1] = given[0][1]  # a stand-in until the consensus replaces it
        for role, k in (("split", 2), ("true_label", 3)):
            if standard[k] != "" and first[k] != "" and standard[k] != first[k]:
                raise DatasetError(f"{where} line {line}: {path!r} has {role} {standard[k]!r} here and "
                                   f"{first[k]!r} on an earlier row; give each image one {role}")
            first[k] = first[k] or standard[k]
        notes += [(sid, a, lab, line) for a, lab in given]
    annotations = pd.DataFrame(notes, columns=["id", "annotator", "label", "line"])
    twice = annotations[annotations.duplicated(["id", "annotator"], keep=False)]
    if len(twice):
        first = twice.iloc[0]
        lines = twice[(twice["id"] == first["id"]) & (twice["annotator"] == first["annotator"])]["line"].tolist()
        raise DatasetError(f"{where}: annotator {first['annotator']!r} labelled {first['id']!r} more than once "
                           f"(lines {', '.join(map(str, lines))}); keep one label per annotator and image")
    if kind == "wide":
        for k in columns:
            name = annotator_name(table.columns[k], spec)
            if not (annotations["annotator"] == name).any():
                raise DatasetError(f"the annotator column {table.columns[k]!r} of {where} has no label at all; "
                                   "fill it in or remove the column")
    rows = list(images.values())
    return dataclasses.replace(table, columns=list(STANDARD), rows=rows), annotations


def standard_column_index() -> dict[str, int]:
    """The column index per role of a table `collapse_annotations` made."""
    return {role: k for k, role in enumerate(STANDARD)}


def aggregate_split(images: ImageSet, annotations: pd.DataFrame, mapper: LabelMapper, method: str,
                    where: str, seed: int = 0) -> tuple[ImageSet, AnnotatedLabels]:
    """The split with each image's consensus label as its given label (true labels kept), and
    its annotations. `annotations` may hold other splits' images too: only this split's count."""
    if method not in MANIFEST_AGGREGATORS:
        raise DatasetError(f"unknown aggregator {method!r} for a manifest; choose one of "
                           f"{', '.join(MANIFEST_AGGREGATORS)}")
    label = annotations["label"].map(mapper)
    unknown = annotations[label.isna()]
    if len(unknown):
        bad = unknown.iloc[0]
        raise DatasetError(f"{where} line {bad['line']}: annotator {bad['annotator']!r} gave {bad['id']!r} the label "
                           f"{bad['label']!r}, which is not one of the classes {mapper.class_names}; "
                           f"fix the label ({len(unknown)} such label(s) in all)")
    position = {sid: i for i, sid in enumerate(images.ids)}
    long = pd.DataFrame({"item": annotations["id"].map(position), "annotator": annotations["annotator"],
                         "label": label})
    long = long[long["item"].notna()].astype({"item": np.int64, "label": np.int64}).reset_index(drop=True)
    try:
        consensus = aggregate(long, len(images), images.num_classes, method, seed=seed)
    except AnnotationError as exc:
        raise DatasetError(f"{where}: {exc}") from exc
    names, matrix = label_matrix(long, len(images))
    return images.with_labels(consensus.label, images.true_labels), AnnotatedLabels(names, matrix, consensus)
