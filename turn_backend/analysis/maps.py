"""The Embeddings page's maps: a projection joined with each sample's labels and flags,
the colourings a user can pick, and the rows a lasso selected."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

COLOUR_OPTIONS = {
    "given": "Given label",
    "pred": "Predicted label",
    "clean_prob": "Clean probability",
    "flagged": "Flagged (p ≤ τ)",
    "true": "True label",
}
# Above this many samples a map is drawn as a density (the flagged samples on top): one
# WebGL point per sample stays fluid in the browser up to about this many per map.
MAX_MAP_POINTS = 100_000


def projection_frame(coords: np.ndarray, subset: np.ndarray, split_samples: pd.DataFrame,
                     class_names: Sequence[str], final: Mapping | None = None,
                     tau: float | None = None) -> pd.DataFrame:
    """One row per projected sample: x, y, index (in its split), sample_id, labels and scores.

    `split_samples` holds the rows of the projected split in order (samples.parquet filtered
    to the split, index reset). `final` (the run's final clean probabilities and predictions)
    belongs to the training split: pass it only for a train-split projection; then the frame
    also has pred, pred_prob, clean_prob and flagged (clean_prob <= tau).
    """
    coords = np.asarray(coords, dtype=np.float64)
    subset = np.asarray(subset, dtype=np.int64)
    if len(coords) != len(subset):
        raise ValueError(f"{len(coords)} projected points for a subset of {len(subset)} samples; "
                         "the projection is stale: recompute it")
    if len(subset) and subset.max() >= len(split_samples):
        raise ValueError("the projection subset points past the end of its split")
    names = np.asarray(list(class_names), dtype=object)
    rows = split_samples.iloc[subset]
    given = rows["given_label"].to_numpy(dtype=np.int64)
    true = rows["true_label"].to_numpy(dtype=np.int64)
    df = pd.DataFrame({
        "x": coords[:, 0] if len(coords) else [],
        "y": coords[:, 1] if len(coords) else [],
        "index": subset,
        "sample_id": rows["sample_id"].astype(str).to_numpy(),
        "given": names[given] if len(given) else [],
        "true": np.append(names, "unknown")[true],  # true label -1 (not known) -> "unknown"
        "has_true": true >= 0,
        "mislabelled": (true >= 0) & (true != given),
    })
    if final is not None:
        pred = np.asarray(final["pred"])[subset]
        df["pred"] = names[pred] if len(pred) else []
        df["pred_prob"] = np.asarray(final["pred_prob"], dtype=np.float64)[subset]
        df["clean_prob"] = np.asarray(final["clean_prob"], dtype=np.float64)[subset]
        df["flagged"] = df["clean_prob"] <= (0.5 if tau is None else float(tau))
    return df


def colour_options(frame: pd.DataFrame) -> dict[str, str]:
    """The colourings a projection frame supports (key -> label)."""
    out = {"given": COLOUR_OPTIONS["given"]}
    if "pred" in frame:
        out["pred"] = COLOUR_OPTIONS["pred"]
    if "clean_prob" in frame:
        out["clean_prob"] = COLOUR_OPTIONS["clean_prob"]
        out["flagged"] = COLOUR_OPTIONS["flagged"]
    if len(frame) and bool(frame["has_true"].any()):
        out["true"] = COLOUR_OPTIONS["true"]
    return out


def coords_by_index(coords: np.ndarray, subset: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Another run's map coordinates of the samples `index` (positions in the split), NaN where
    that run's map lacks a sample: maps of two runs line up by sample, not by row."""
    coords = np.asarray(coords, dtype=np.float32)
    subset = np.asarray(subset, dtype=np.int64)
    if len(coords) != len(subset):
        raise ValueError(f"{len(coords)} projected points for a subset of {len(subset)} samples; "
                         "the projection is stale: recompute it")
    out = np.full((len(index), 2), np.nan, dtype=np.float32)
    if len(subset):
        order = np.argsort(subset, kind="stable")
        ids = subset[order]
        pos = np.minimum(np.searchsorted(ids, index), len(ids) - 1)
        found = ids[pos] == index
        out[found] = coords[order[pos[found]]]
    return out


def selected_rows(selection: Mapping | None) -> list[int]:
    """Frame row positions picked by a plotly lasso / box selection.

    Every trace of the Embeddings figures carries the frame row in `customdata[0]`, so the
    rows are right whatever trace (class, flagged marker) a point belongs to.
    """
    if not selection:
        return []
    if isinstance(selection, Mapping):
        sel = selection.get("selection", selection)
    else:
        sel = getattr(selection, "selection", None)
    points = (sel or {}).get("points", []) if isinstance(sel, Mapping) else getattr(sel, "points", [])
    out: list[int] = []
    seen = set()
    for pt in points or []:
        cd = pt.get("customdata") if isinstance(pt, Mapping) else None
        if cd is None:
            continue
        row = int(cd[0] if isinstance(cd, (list, tuple)) else cd)
        if row not in seen:
            seen.add(row)
            out.append(row)
    return out
