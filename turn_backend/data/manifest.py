"""Manifests: a CSV (or TSV) or Parquet table naming image files and their labels.

Columns (case-insensitive): `path` and `label` required; `split` (train / test / val),
`true_label` and `id` optional. Paths are relative to the data root (spec "root", default
the manifest's folder) and must stay inside it. Labels are class names or integer indices.

CSV reading is forgiving: a UTF-8 byte-order mark, UTF-16 (Excel's "Unicode text"), a
`;`, tab or `|` delimiter (found from the header), quoted fields with delimiters or
newlines, blank rows, and header-less two- or three-column files (path, label[, split]).
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from turn_backend.data.annotated import (
    DEFAULT_AGGREGATOR,
    aggregate_split,
    annotator_columns,
    collapse_annotations,
    standard_column_index,
)
from turn_backend.data.common import (
    Candidate,
    LabelMapper,
    LoadOptions,
    _show,
    build_split,
    classes_from_labels,
    finish_bundle,
    is_image_name,
    label_text,
    warn,
)
from turn_backend.data.core import DatasetBundle, DatasetError, SkippedItem
from turn_backend.paths import OUTSIDE_ROOT, PathOutsideRoot, RootGuard

COLUMN_ALIASES = {
    "path": ("path", "filepath", "file_path", "file", "filename", "image", "image_path"),
    "label": ("label", "class", "target", "given_label"),
    "split": ("split",),
    "true_label": ("true_label", "clean_label"),
    "id": ("id", "sample_id"),
}
SPLIT_VALUES = {
    "": "train", "train": "train", "training": "train",
    "test": "test", "testing": "test",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
}
DELIMITERS = (",", ";", "\t", "|")
PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")


@dataclass
class Table:
    """A manifest's header and rows, each row with the line (or row) number it came from."""

    columns: list[str]
    rows: list[tuple[int, list[object]]]
    header: bool = True


def _decode(data: bytes, info: dict) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        warn(info, "the manifest is not valid UTF-8; it was read as Windows-1252 (Latin-1)")
        return data.decode("cp1252", errors="replace")


def _find_column(columns: list[str], role: str, override: str | None) -> int | None:
    norm = [c.strip().lower() for c in columns]
    if override is not None:
        if override.strip().lower() not in norm:
            raise DatasetError(f"the manifest has no column {override!r}; its columns are {columns}")
        return norm.index(override.strip().lower())
    for alias in COLUMN_ALIASES[role]:
        if alias in norm:
            return norm.index(alias)
    return None


def _records(text: str, delimiter: str):
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar='"', doublequote=True,
                        strict=False)
    for row in reader:
        yield reader.line_num, row


def _blank(row: list[object]) -> bool:
    return all(label_text(v) == "" for v in row)


def read_csv(path: Path, spec: dict, info: dict) -> Table:
    text = _decode(path.read_bytes(), info)
    path_col = spec.get("path_column")
    delims = [spec["delimiter"]] if spec.get("delimiter") else list(DELIMITERS)
    if path.suffix.lower() == ".tsv" and not spec.get("delimiter"):
        delims = ["\t"] + [d for d in delims if d != "\t"]
    header_mode = spec.get("header", "auto")

    def first_rows(d: str, k: int):
        out = []
        for line, row in _records(text, d):
            if not _blank(row):
                out.append((line, row))
                if len(out) >= k:
                    break
        return out

    if header_mode is not False:
        for d in delims:
            first = first_rows(d, 1)
            if not first:
                raise DatasetError(f"the manifest {str(path)!r} is empty")
            cols = first[0][1]
            try:
                has_path = _find_column(cols, "path", path_col) is not None
            except DatasetError:
                has_path = False
            has_labels = _find_column(cols, "label", spec.get("label_column")) is not None
            if has_path and (has_labels or annotator_columns(cols, spec) is not None):
                rows = [(ln, r) for ln, r in _records(text, d)]
                start = next(i for i, (_, r) in enumerate(rows) if not _blank(r))
                return Table(columns=[c.strip() for c in cols], rows=rows[start + 1:])
    # no recognisable header: a header-less path,label[,split] file?
    if header_mode is not True:
        for d in delims:
            sample = first_rows(d, 50)
            counts = {len(r) for _, r in sample}
            if sample and len(counts) == 1 and counts.pop() in (2, 3) and (
                header_mode is False or is_image_name(label_text(sample[0][1][0]))
            ):
                ncol = len(sample[0][1])
                warn(info, "the manifest has no header row; its columns were read as path, label"
                     + (", split" if ncol == 3 else ""))
                return Table(columns=["path", "label", "split"][:ncol], rows=list(_records(text, d)), header=False)
    first = first_rows(delims[0], 1)
    found = first[0][1] if first else []
    raise DatasetError(
        f"the manifest {str(path)!r} needs a header row with the columns path and label "
        f"(optional: split, true_label, id), separated by one of , ; tab |; its first row is {found}"
    )


def read_parquet(path: Path) -> Table:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several kinds for a bad file
        raise DatasetError(f"cannot read the Parquet manifest {str(path)!r}: {exc}") from exc
    cols = table.column_names
    data = [table.column(c).to_pylist() for c in cols]
    rows = [(i + 1, [d[i] for d in data]) for i in range(table.num_rows)]
    return Table(columns=list(cols), rows=rows)


def read_manifest(path: Path, spec: dict, info: dict) -> Table:
    if path.suffix.lower() in PARQUET_SUFFIXES or path.is_dir():
        return read_parquet(path)
    return read_csv(path, spec, info)


def _locate(guard: RootGuard, raw: str) -> Path:
    """The file a manifest path names: as written, else stripped, else with `\\` as `/`."""
    tries = [raw]
    if raw.strip() != raw:
        tries.append(raw.strip())
    if "\\" in raw:
        tries.append(raw.strip().replace("\\", "/"))
    first = None
    for t in tries:
        p = guard.resolve(t)  # raises PathOutsideRoot for every spelling alike
        if first is None:
            first = p
        if p.is_file():
            return p
    return first


def load_manifest(spec: dict, opts: LoadOptions) -> DatasetBundle:
    mpath = Path(spec["path"]).expanduser()
    if not mpath.exists():
        raise DatasetError(f"no such manifest file: {str(mpath)!r}")
    root = Path(spec["root"]).expanduser() if spec.get("root") else mpath.parent if mpath.is_file() else mpath
    if not root.is_dir():
        raise DatasetError(f"the data root {str(root)!r} is not a folder")
    root = Path(os.path.abspath(root))
    info: dict = {}
    table = read_manifest(mpath, spec, info)
    cols = table.columns
    ci = {role: _find_column(cols, role, spec.get(f"{role}_column")) for role in COLUMN_ALIASES}
    where = mpath.name
    # several annotators per image: one row per image from here on, their labels aside
    annotated = collapse_annotations(table, ci, spec, where, info)
    annotations = None
    if annotated is not None:
        table, annotations = annotated
        cols, ci = table.columns, standard_column_index()
    if ci["path"] is None or ci["label"] is None:
        raise DatasetError(f"the manifest needs the columns path and label; its columns are {cols}")
    width = len(cols)
    skipped: list[SkippedItem] = []

    # Pass 1: parse the rows (no file access).
    parsed = []  # (line, raw_path, id, label_text, true_text, split)
    blank = 0
    for line, row in table.rows:
        if _blank(row):
            blank += 1
            continue
        row = list(row) + [None] * (width - len(row))
        value = row[ci["path"]]
        raw_path = "" if value is None else value.decode() if isinstance(value, bytes) else str(value)
        src = raw_path if raw_path.strip() else f"{where}:{line}"
        if len(row) > width:
            skipped.append(SkippedItem(src, f"{len(row)} fields where the header has {width}: quote fields "
                                            f"that contain the delimiter ({where} line {line})"))
            continue

        def cell(role: str) -> str:
            return "" if ci[role] is None else label_text(row[ci[role]])

        if not raw_path.strip():
            skipped.append(SkippedItem(src, f"empty path ({where} line {line})"))
            continue
        lab = cell("label")
        if lab == "":
            skipped.append(SkippedItem(src, f"missing label ({where} line {line})"))
            continue
        split = SPLIT_VALUES.get(cell("split").lower())
        if split is None:
            skipped.append(SkippedItem(src, f"unknown split {cell('split')!r}, use train, test or val "
                                            f"({where} line {line})"))
            continue
        sid = cell("id") or raw_path.strip()
        parsed.append((line, raw_path, sid, lab, cell("true_label"), split))
    if blank:
        info["blank_rows"] = blank

    ids = Counter(p[2] for p in parsed)
    dupes = sorted(k for k, v in ids.items() if v > 1)
    if dupes:
        what = "ids" if ci["id"] is not None else "paths (used as ids; add an id column to list an image twice)"
        raise DatasetError(f"the manifest has duplicate {what}: {_show(dupes)}")

    # Classes: the given list, or the sorted unique labels.
    if spec.get("classes") is not None:
        class_names = [str(c) for c in spec["classes"]]
    else:
        annotated_labels = [] if annotations is None else list(annotations["label"])
        class_names = classes_from_labels([p[3] for p in parsed] + [p[4] for p in parsed] + annotated_labels)
    if not class_names:
        raise DatasetError(f"the manifest {str(mpath)!r} has no usable rows ({len(skipped)} skipped, {blank} blank)")
    mapper = LabelMapper(class_names)

    guard = RootGuard(root)
    by_split: dict[str, list[Candidate]] = {"train": [], "test": [], "val": []}
    bad_true = 0
    for line, raw_path, sid, lab, true_text, split in parsed:
        k = mapper(lab)
        src = raw_path
        if k is None:
            skipped.append(SkippedItem(src, f"label {lab!r} is not one of the {len(class_names)} classes "
                                            f"({where} line {line})"))
            continue
        t = None
        if true_text != "":
            t = mapper(true_text)
            if t is None:
                bad_true += 1
        try:
            path = _locate(guard, raw_path)
        except PathOutsideRoot:
            skipped.append(SkippedItem(src, f"path is {OUTSIDE_ROOT} ({where} line {line})"))
            continue
        except DatasetError as exc:
            skipped.append(SkippedItem(src, f"{exc} ({where} line {line})"))
            continue
        by_split[split].append(Candidate(id=sid, path=path, label=k, true_label=t, source=src))
    if bad_true and annotations is not None:  # the ground truth the annotators are measured against
        raise DatasetError(f"{bad_true} true label(s) of {where} are not among the classes {class_names}; "
                           "fix them or leave the cells empty")
    if bad_true:
        warn(info, f"{bad_true} true labels are not among the classes; those samples have no known true label")

    if by_split["test"] and by_split["val"]:
        for c in by_split["val"]:
            skipped.append(SkippedItem(c.source, "val row not used: the manifest's test rows form the test split"))
        by_split["val"] = []
    test_rows = by_split["test"] or by_split["val"]
    train = build_split(by_split["train"], class_names, skipped, opts, split="train", info=info)
    test = build_split(test_rows, class_names, skipped, opts, split="test", info=info) if test_rows else None
    if test_rows and test is None:
        warn(info, "no test row has a usable image; the dataset has no test split")
    if annotations is not None and train is not None:
        method, seed = spec.get("aggregator") or DEFAULT_AGGREGATOR, int(spec.get("subset_seed", 0))
        train, info["annotators"] = aggregate_split(train, annotations, mapper, method, where, seed)
        if test is not None:
            test, _ = aggregate_split(test, annotations, mapper, method, where, seed)
    name = spec.get("name") or mpath.stem
    return finish_bundle(name, train, test, skipped, info, what=f"the manifest {str(mpath)!r}")
