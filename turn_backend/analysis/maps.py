"""The Embeddings page's maps: a projection joined with each sample's labels and flags,
the colourings a user can pick, and the rows a lasso selected."""

from __future__ import annotations

import os
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
# Above this many samples a map is a picture of all of them (below): one WebGL point per
# sample stays fluid in the browser up to about this many per map. TURN_MAP_PICTURE_ABOVE
# lowers it for a slow browser (or a test).
MAX_MAP_POINTS = int(os.environ.get("TURN_MAP_PICTURE_ABOVE", 100_000))


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


# ------------------------------------------------------------------- million-point maps
# Above MAX_MAP_POINTS a map is a picture: every point counted into its pixel per category,
# the categories' colours mixed by their counts, opacity rising with the log of the count
# (one sample stays visible beside a thousand). A bounded random subsample is drawn on top
# as WebGL points for hover; a lasso or box selects by its geometry over all points.
RASTER_SHAPE = (540, 800)  # (height, width) pixels of a map picture: about its size on screen
RASTER_MIN_ALPHA = 0.35
OVERLAY_POINTS = 5_000


def map_extent(x: np.ndarray, y: np.ndarray, pad: float = 0.02) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) around the finite points, padded by `pad` of each side's span."""
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return (0.0, 1.0, 0.0, 1.0)
    x0, x1, y0, y1 = float(x[ok].min()), float(x[ok].max()), float(y[ok].min()), float(y[ok].max())
    dx, dy = max(x1 - x0, 1e-9) * pad, max(y1 - y0, 1e-9) * pad
    return (x0 - dx, x1 + dx, y0 - dy, y1 + dy)


def _pixels(x: np.ndarray, y: np.ndarray, extent, shape) -> tuple[np.ndarray, np.ndarray]:
    """(flat pixel of each drawable point, which points are drawable); row 0 is the top."""
    h, w = shape
    x0, x1, y0, y1 = extent
    col = np.floor((np.asarray(x, np.float64) - x0) / (x1 - x0) * w)
    row = np.floor((y1 - np.asarray(y, np.float64)) / (y1 - y0) * h)
    ok = np.isfinite(col) & np.isfinite(row) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
    return (row[ok].astype(np.int64) * w + col[ok].astype(np.int64)), ok


def _alpha(total: np.ndarray) -> np.ndarray:
    peak = np.log1p(total.max()) if total.size and total.max() > 0 else 1.0
    return RASTER_MIN_ALPHA + (1 - RASTER_MIN_ALPHA) * np.log1p(total) / peak


def _rgba(pixels: np.ndarray, rgb: np.ndarray, total: np.ndarray, shape) -> np.ndarray:
    """(H, W, 4) uint8: `rgb` (P, 3) and the opacity of `total` (P,) points at flat `pixels` (P,);
    every other pixel transparent. Only the drawn pixels are computed (a lasso's picture)."""
    h, w = shape
    out = np.zeros((h * w, 4), dtype=np.uint8)
    out[pixels, :3] = np.rint(rgb)
    out[pixels, 3] = np.rint(255 * _alpha(total))
    return out.reshape(h, w, 4)


def category_raster(x: np.ndarray, y: np.ndarray, codes: np.ndarray, colours: np.ndarray, extent,
                    shape=RASTER_SHAPE) -> np.ndarray:
    """(H, W, 4) uint8 RGBA picture of points coloured by category.

    codes: (N,) category of each point, 0..K-1 (a negative code is not drawn). colours:
    (K, 3) RGB 0..255. Each pixel mixes its categories' colours by their counts.
    """
    h, w = shape
    colours = np.asarray(colours, dtype=np.float64).reshape(-1, 3)
    pix, ok = _pixels(x, y, extent, shape)
    codes = np.asarray(codes, dtype=np.int64)[ok]
    keep = (codes >= 0) & (codes < len(colours))
    pix, point_rgb = pix[keep], colours[codes[keep]]
    # per-channel sums weighted by each point's colour: a mix by counts, with no (K, H*W) table
    total = np.bincount(pix, minlength=h * w)
    drawn = np.flatnonzero(total)
    rgb = np.stack([np.bincount(pix, weights=point_rgb[:, c], minlength=h * w)[drawn] for c in range(3)], axis=1)
    return _rgba(drawn, rgb / total[drawn, None], total[drawn], shape)


def value_raster(x: np.ndarray, y: np.ndarray, values: np.ndarray, lut: np.ndarray, extent,
                 shape=RASTER_SHAPE, vmin: float = 0.0, vmax: float = 1.0) -> np.ndarray:
    """(H, W, 4) uint8 RGBA picture of points coloured by a continuous value: each pixel
    shows its points' mean value through `lut` ((L, 3) RGB 0..255, low to high)."""
    h, w = shape
    lut = np.asarray(lut, dtype=np.float64).reshape(-1, 3)
    pix, ok = _pixels(x, y, extent, shape)
    values = np.asarray(values, dtype=np.float64)[ok]
    keep = np.isfinite(values)
    total = np.bincount(pix[keep], minlength=h * w)
    drawn = np.flatnonzero(total)
    mean = np.bincount(pix[keep], weights=values[keep], minlength=h * w)[drawn] / total[drawn]
    level = np.clip((mean - vmin) / max(vmax - vmin, 1e-12), 0, 1) * (len(lut) - 1)
    return _rgba(drawn, lut[np.rint(level).astype(np.int64)], total[drawn], shape)


def overlay_rows(n: int, limit: int = OVERLAY_POINTS, seed: int = 0) -> np.ndarray:
    """Sorted rows of an even random subsample of at most `limit` of `n` points: the points
    drawn one by one over a map's picture, which carry hover. The same rows every time."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def in_selection(x: np.ndarray, y: np.ndarray, selection: Mapping | None) -> np.ndarray:
    """Which points lie inside a plotly lasso or box selection (as Streamlit's
    `st.plotly_chart(on_select=...)` returns it: `selection["lasso"]` polygons and
    `selection["box"]` rectangles in data coordinates), over all points, drawn or not."""
    x, y = np.asarray(x), np.asarray(y)  # as stored (float32 at a million points: no float64 copy)
    inside = np.zeros(len(x), dtype=bool)
    sel = (selection or {}).get("selection", selection) or {}
    for box in sel.get("box") or []:
        bx, by = box.get("x") or [], box.get("y") or []
        if len(bx) == 2 and len(by) == 2:
            inside |= ((x >= min(bx)) & (x <= max(bx)) & (y >= min(by)) & (y <= max(by)))
    for lasso in sel.get("lasso") or []:
        lx, ly = np.asarray(lasso.get("x") or [], float), np.asarray(lasso.get("y") or [], float)
        if len(lx) < 3 or len(lx) != len(ly):
            continue
        from matplotlib.path import Path  # deferred: only a lasso on a large map needs it (warm_lasso)

        # the exact test only for the points inside the polygon's bounding box
        near = np.flatnonzero((x >= lx.min()) & (x <= lx.max()) & (y >= ly.min()) & (y <= ly.max()))
        if len(near):
            hit = Path(np.column_stack([lx, ly])).contains_points(np.column_stack([x[near], y[near]]).astype(float))
            inside[near[hit]] = True
    return inside


def warm_lasso() -> None:
    """Import what `in_selection` needs for a lasso (matplotlib's Path: 0.1 s the first time),
    ahead of the first lasso."""
    import matplotlib.path  # noqa: F401


def selection_geometry(selection: Mapping | None) -> tuple:
    """A hashable summary of a selection's shapes, to tell a new lasso or box from the last one."""
    sel = (selection or {}).get("selection", selection) or {}
    return tuple((kind, tuple(map(float, s.get("x") or [])), tuple(map(float, s.get("y") or [])))
                 for kind in ("box", "lasso") for s in sel.get(kind) or [])
