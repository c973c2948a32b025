"""Features and predicted class probabilities a person brings instead of the image model.

Teams often have embeddings, or a classifier's probabilities, from a model this product
cannot load. A run can take them in its place (`RunConfig.features`, `test_features`,
`pred_probs`; `turn run --features F [--test-features T] [--pred-probs P]`).

The files, one row per image of a split:

- `.npy`, shape (N, D) (features) or (N, C) (probabilities): row i belongs to image i of the
  split, in the dataset's order (a manifest's row order; `turn export --format features`
  writes this order);
- `.parquet` or `.csv` keyed by image: a `path` column (the image's path as the manifest or
  folder names it, or its absolute path; an array dataset's sample id) and either one
  list-valued column (Parquet) or one numeric column per dimension, in file order. The rows
  may come in any order; an image without a row, a row naming no image, or a path given
  twice is an error. Probability columns named after the classes are read by name.

Probabilities must be probabilities: finite, non-negative, each row summing to 1. Logits
are refused (a softmax of them is one line, and guessing would hide a wrong file).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from turn_backend.data.core import ImageSet

SUFFIXES = (".npy", ".parquet", ".csv")
KEY_COLUMN = "path"
SHOW = 5  # how many missing / extra paths an error names
SUM_TOLERANCE = 1e-3  # how far a row of probabilities may sum from 1 (float32 files, rounding)


class GivenInputError(ValueError):
    """A given features or probabilities file that does not fit the dataset."""


def _first(items: list[str]) -> str:
    shown = ", ".join(repr(s) for s in items[:SHOW])
    return shown + (f" and {len(items) - SHOW:,} more" if len(items) > SHOW else "")


def _read_matrix(path: Path, images: ImageSet, split: str, what: str) -> tuple[np.ndarray, list[str] | None]:
    """The file's rows in the split's order, and the names of its value columns (None for .npy)."""
    if not path.is_file():
        raise GivenInputError(f"{what} file {path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise GivenInputError(f"{what} file {path.name}: use a .npy array or a .parquet / .csv table keyed by "
                              f"'{KEY_COLUMN}', not {suffix or 'a file without extension'}")
    n = len(images)
    if suffix == ".npy":
        try:
            values = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise GivenInputError(f"{what} file {path.name} is not a numeric .npy array: {exc}") from None
        if values.ndim != 2:
            raise GivenInputError(f"{what} file {path.name} has shape {values.shape}; give a 2-D array, "
                                  "one row per image")
        if len(values) != n:
            raise GivenInputError(
                f"{path.name} has {len(values):,} rows, the dataset's {split} split has {n:,} images: row i of the "
                f"file must be image i of the {split} split (the manifest's order), or give a .parquet / .csv "
                f"keyed by '{KEY_COLUMN}'")
        return values, None
    table = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path)
    if KEY_COLUMN not in table.columns:
        columns = _first([str(c) for c in table.columns])
        raise GivenInputError(f"{path.name} has no '{KEY_COLUMN}' column (it has {columns}): name each row's "
                              f"image in a '{KEY_COLUMN}' column")
    keys = table.pop(KEY_COLUMN).astype(str)
    doubled = keys[keys.duplicated()].unique().tolist()
    if doubled:
        raise GivenInputError(f"{path.name} names {len(doubled):,} image(s) twice: {_first(doubled)}")
    # an image is named by its id (the manifest's path, a folder-relative path) or its absolute path
    row_of = {sid: i for i, sid in enumerate(images.ids)}
    if images.paths is not None:
        row_of.update({p: i for i, p in enumerate(images.paths)})
    rows = keys.map(row_of)
    extra = keys[rows.isna()].tolist()
    found = np.zeros(n, dtype=bool)
    found[rows.dropna().astype(np.int64).to_numpy()] = True
    if extra or not found.all():
        missing = [images.ids[i] for i in np.flatnonzero(~found)]
        parts = []
        if missing:
            parts.append(f"{len(missing):,} image(s) of the {split} split have no row: {_first(missing)}")
        if extra:
            parts.append(f"{len(extra):,} row(s) name no image of the {split} split: {_first(extra)}")
        raise GivenInputError(f"{path.name} does not match the dataset: " + "; ".join(parts))
    if len(table.columns) == 1 and table.iloc[:, 0].map(lambda v: isinstance(v, (list, np.ndarray))).all():
        column = table.columns[0]
        lengths = table[column].map(len)
        if lengths.nunique() != 1:
            raise GivenInputError(f"{path.name}: the lists in column {column!r} differ in length "
                                  f"({lengths.min()} to {lengths.max()})")
        values, names = np.stack(table[column].to_numpy()), None
    else:
        text = [str(c) for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
        if text:
            raise GivenInputError(f"{path.name}: column(s) {_first(text)} are not numbers; besides "
                                  f"'{KEY_COLUMN}' give only numeric columns, or one list column")
        values, names = table.to_numpy(), [str(c) for c in table.columns]
    ordered = np.empty_like(values)
    ordered[rows.astype(np.int64).to_numpy()] = values
    return ordered, names


def load_features(path: str | Path, images: ImageSet, split: str) -> np.ndarray:
    """(N, D) float32 features of `images` from a given file, in the split's order."""
    path = Path(path)
    values, _ = _read_matrix(path, images, split, "features")
    if not np.issubdtype(values.dtype, np.number) or np.issubdtype(values.dtype, np.complexfloating):
        raise GivenInputError(f"features file {path.name} holds {values.dtype} values, not real numbers")
    values = values.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if len(bad):
        raise GivenInputError(f"{path.name}: {len(bad):,} row(s) hold NaN or infinite values "
                              f"(rows {', '.join(map(str, bad[:SHOW]))})")
    return values


def load_pred_probs(path: str | Path, images: ImageSet, split: str = "train") -> np.ndarray:
    """(N, C) float64 predicted class probabilities of `images`, C the dataset's classes in
    their order (columns named after the classes are read by name)."""
    path = Path(path)
    values, names = _read_matrix(path, images, split, "predicted probabilities")
    classes = list(images.class_names)
    if names is not None and set(names) == set(classes):
        values = values[:, [names.index(c) for c in classes]]
    if values.shape[1] != len(classes):
        raise GivenInputError(f"{path.name} has {values.shape[1]} columns of probabilities, the dataset has "
                              f"{len(classes)} classes ({_first(classes)}): one column per class, in that order")
    values = values.astype(np.float64)
    sums = values.sum(axis=1)
    wrong = np.flatnonzero(~np.isfinite(values).all(axis=1) | (values < 0).any(axis=1)
                           | (np.abs(sums - 1) > SUM_TOLERANCE))
    if len(wrong):
        i = int(wrong[0])
        raise GivenInputError(
            f"{path.name}: {len(wrong):,} row(s) are not probabilities (row {i} sums to {sums[i]:.4g}, "
            f"smallest value {values[i].min():.4g}); give each image's class probabilities, >= 0 and summing to 1. "
            "Logits? Apply a softmax first: scipy.special.softmax(logits, axis=1)")
    return values / sums[:, None]



def load_feature_pair(features: str | Path, test_features: str | Path | None, train: ImageSet,
                      test: ImageSet | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The training features and, where given, the test split's, checked to come from one model."""
    train_feats = load_features(features, train, "train")
    if not test_features:
        return train_feats, None
    if test is None:
        raise GivenInputError(f"test features were given ({Path(test_features).name}), but the dataset has no "
                              "test split")
    test_feats = load_features(test_features, test, "test")
    if test_feats.shape[1] != train_feats.shape[1]:
        raise GivenInputError(f"the test features have {test_feats.shape[1]} dims, the training features "
                              f"{train_feats.shape[1]}: give both from the same model")
    return train_feats, test_feats


def check_files(train: ImageSet, test: ImageSet | None, features: str | None = None,
                test_features: str | None = None, pred_probs: str | None = None) -> list[str]:
    """Check given files against a loaded dataset before a run starts (the app's Dataset page);
    what each holds, in words. GivenInputError names the first file that does not fit."""
    if test_features and not features:
        raise GivenInputError("test features go with the training set's features: give those too")
    found = []
    if features:
        train_feats, test_feats = load_feature_pair(features, test_features, train, test)
        found.append(f"features of {len(train):,} training images, {train_feats.shape[1]:,} dims")
        if test_feats is not None:
            found.append(f"features of {len(test_feats):,} test images")
    if pred_probs:
        load_pred_probs(pred_probs, train)
        found.append(f"class probabilities of {len(train):,} training images")
    return found
