"""Pure helpers for the audit pages (Embeddings, Threshold, Review, Export).

Arrays in, arrays / DataFrames out; no Streamlit. The Threshold page calls these on every
slider move, so the per-tau functions work on precomputed sorted arrays (`ThresholdIndex`)
and cost microseconds, not a refit.

- `ThresholdIndex`: per-class sorted clean probabilities; `counts_at(tau)` = |D_clean^c|.
- `selection_sizes`: N = min_c |D_c| (TURN) and the mean-balanced size (TURN+), with the
  same floor `select_clean` applies to a class without any candidate.
- `estimated_noise_rate`, `tau_sweep` (precision / recall / F1 / purity over a tau grid).
- `component_densities`, `clean_posterior`, `posterior_crossing`: the per-class GMM in loss
  units, for histograms and the loss at which the posterior crosses tau.
- `projection_frame`, `colour_options`, `selected_rows`, `find_reference_run`: Embeddings.
- `review_queue`, `paginate`, `bulk_accept`, `review_progress`: Review.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from turn_backend.cleansing import floor_size

# ----------------------------------------------------------------------------- threshold


@dataclass
class ThresholdIndex:
    """Clean probabilities of the training set, sorted once per class for fast tau queries."""

    clean_prob: np.ndarray  # (n,) float
    labels: np.ndarray  # (n,) int, given labels
    num_classes: int
    sorted_all: np.ndarray  # clean_prob sorted ascending
    sorted_by_class: list[np.ndarray]  # clean_prob of class c, sorted ascending
    class_sizes: np.ndarray  # (C,) samples labelled c

    @classmethod
    def build(cls, clean_prob: Sequence[float], labels: Sequence[int], num_classes: int) -> ThresholdIndex:
        p = np.asarray(clean_prob, dtype=np.float64).ravel()
        y = np.asarray(labels, dtype=np.int64).ravel()
        if len(p) != len(y):
            raise ValueError(f"{len(p)} clean probabilities for {len(y)} labels: give one per sample")
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"labels must lie in 0..{num_classes - 1}")
        by_class = [np.sort(p[y == c]) for c in range(num_classes)]
        return cls(p, y, int(num_classes), np.sort(p), by_class,
                   np.array([len(b) for b in by_class], dtype=np.int64))

    def counts_at(self, tau: float) -> np.ndarray:
        """|D_clean^c| = #{i : y_i = c, p_i > tau} for every class (as `select_clean`)."""
        return np.array([len(b) - np.searchsorted(b, tau, side="right") for b in self.sorted_by_class],
                        dtype=np.int64)

    def flagged_at(self, tau: float) -> int:
        """Samples with clean probability <= tau (flagged as probably noisy)."""
        return int(np.searchsorted(self.sorted_all, tau, side="right"))

    def noise_rate_at(self, tau: float) -> float:
        n = len(self.sorted_all)
        return self.flagged_at(tau) / n if n else 0.0


def estimated_noise_rate(clean_prob: Sequence[float], tau: float) -> float:
    """Fraction of samples whose clean probability is at or below tau."""
    p = np.asarray(clean_prob, dtype=np.float64)
    return float((p <= tau).mean()) if p.size else 0.0


def selection_sizes(counts: Sequence[int], class_sizes: Sequence[int]) -> dict:
    """Sizes of the FFT training set that `select_clean` would draw from these candidate counts.

    Classes with samples but no candidate get `floor_size` candidates (as in select_clean).
    Returns N_min (TURN: per-class size N = min_c |D_c|), total_min (N times the classes
    present), N_mean (TURN+: the mean candidate count), total_mean (every candidate kept,
    smaller classes drawn up to N_mean), unique_mean (distinct samples TURN+ trains on) and
    floored (classes that fell back to the floor).
    """
    counts = np.asarray(counts, dtype=np.int64).copy()
    sizes = np.asarray(class_sizes, dtype=np.int64)
    floored = [int(c) for c in np.flatnonzero((sizes > 0) & (counts == 0))]
    for c in floored:
        counts[c] = min(floor_size(int(sizes[c])), int(sizes[c]))
    present = counts[sizes > 0]
    if not len(present) or not present.sum():
        return {"N_min": 0, "total_min": 0, "N_mean": 0, "total_mean": 0, "unique_mean": 0,
                "floored": floored, "counts": counts}
    n_min = int(present.min())
    n_mean = int(round(present.mean()))
    return {
        "N_min": n_min,
        "total_min": n_min * len(present),
        "N_mean": n_mean,
        "total_mean": int(np.maximum(present, n_mean).sum()),
        "unique_mean": int(present.sum()),
        "floored": floored,
        "counts": counts,
    }


def default_tau_grid(step: float = 0.01) -> np.ndarray:
    """0.01, 0.02, ..., 0.99."""
    return np.round(np.arange(step, 1.0 - step / 2, step), 6)


def tau_sweep(clean_prob: Sequence[float], given: Sequence[int], true: Sequence[int] | None = None,
              taus: Sequence[float] | None = None) -> pd.DataFrame:
    """Flagging quality for every tau of a grid (one sort, then cumulative sums).

    A sample is flagged at tau when clean_prob <= tau. Columns: tau, n_flagged, n_kept,
    noise_rate (fraction flagged) and, where true labels are given (samples with true < 0
    are left out of these), precision (flagged that are truly noisy), recall (truly noisy
    that are flagged), f1 and purity (kept samples whose given label is right). The
    definitions are those of `cleansing.detection_metrics`; an empty denominator gives 0.
    """
    p = np.asarray(clean_prob, dtype=np.float64).ravel()
    taus = default_tau_grid() if taus is None else np.asarray(taus, dtype=np.float64).ravel()
    order = np.argsort(p, kind="stable")
    ps = p[order]
    n_flag = np.searchsorted(ps, taus, side="right")
    out = pd.DataFrame({"tau": taus, "n_flagged": n_flag, "n_kept": len(p) - n_flag,
                        "noise_rate": n_flag / len(p) if len(p) else np.zeros(len(taus))})
    if true is None:
        return out
    given = np.asarray(given, dtype=np.int64).ravel()
    true = np.asarray(true, dtype=np.int64).ravel()
    known = true >= 0
    if not known.any():
        return out
    ps_k = p[known]
    noisy = (given[known] != true[known])[np.argsort(ps_k, kind="stable")]
    ps_k = np.sort(ps_k, kind="stable")
    k = np.searchsorted(ps_k, taus, side="right")  # flagged among the known
    cum_noisy = np.concatenate([[0], np.cumsum(noisy)])
    tp = cum_noisy[k]
    fp = k - tp
    n_noisy = int(noisy.sum())
    fn = n_noisy - tp
    kept = len(ps_k) - k
    kept_clean = kept - fn
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(k > 0, tp / np.maximum(k, 1), 0.0)
        recall = np.where(n_noisy > 0, tp / max(n_noisy, 1), 0.0)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1), 0.0)
        purity = np.where(kept > 0, kept_clean / np.maximum(kept, 1), 0.0)
    out["precision"] = precision
    out["recall"] = recall
    out["f1"] = f1
    out["purity"] = purity
    out["tp"] = tp
    out["fp"] = fp
    out["fn"] = fn
    return out


def true_noise_rate(given: Sequence[int], true: Sequence[int]) -> float | None:
    """Fraction of samples (with a known true label) whose given label is wrong."""
    given = np.asarray(given, dtype=np.int64)
    true = np.asarray(true, dtype=np.int64)
    known = true >= 0
    if not known.any():
        return None
    return float((given[known] != true[known]).mean())


# --------------------------------------------------------------------------- GMM curves


def _normal_pdf(x: np.ndarray, mu: float, sd: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - mu) / sd) ** 2) / (sd * np.sqrt(2 * np.pi))


def fit_is_usable(fit: Mapping | None) -> bool:
    """A fitted two-component mixture with positive standard deviations."""
    if not fit or fit.get("status") not in ("fit", "not separated"):
        return False
    stds = fit.get("stds") or []
    return len(stds) == 2 and len(fit.get("means") or []) == 2 and min(stds) > 0


def component_densities(fit: Mapping, x: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Weighted densities w_k N(x; mu_k, sd_k) of the clean and noisy components, in loss units.

    Multiply by (samples in the class) x (histogram bin width) to draw them over a count
    histogram.
    """
    x = np.asarray(x, dtype=np.float64)
    if not fit_is_usable(fit):
        return np.zeros_like(x), np.zeros_like(x)
    (m0, m1), (s0, s1), (w0, w1) = fit["means"], fit["stds"], fit["weights"]
    return w0 * _normal_pdf(x, m0, s0), w1 * _normal_pdf(x, m1, s1)


def clean_posterior(fit: Mapping, x: Sequence[float]) -> np.ndarray:
    """Posterior of the clean (lower-mean) component at loss x.

    The mixture was fitted on min-max normalised losses; a posterior does not change under
    that affine map, so the fit in loss units gives the stored clean probabilities back.
    """
    x = np.asarray(x, dtype=np.float64)
    if not fit_is_usable(fit):
        return np.ones_like(x)
    (m0, m1), (s0, s1), (w0, w1) = fit["means"], fit["stds"], fit["weights"]
    # log-space for stability far in the tails
    l0 = np.log(max(w0, 1e-300)) - np.log(s0) - 0.5 * ((x - m0) / s0) ** 2
    l1 = np.log(max(w1, 1e-300)) - np.log(s1) - 0.5 * ((x - m1) / s1) ** 2
    return 1.0 / (1.0 + np.exp(np.clip(l1 - l0, -700, 700)))


def posterior_crossing(fit: Mapping, tau: float, lo: float, hi: float, points: int = 4001) -> float | None:
    """The smallest loss in [lo, hi] where the clean posterior falls from above tau to tau or below.

    Found on a grid and refined by linear interpolation (the posterior is smooth). Samples
    of the class with a larger loss (up to a possible second crossing far in the tail, when
    the clean component is the wider one) are flagged. None where the posterior never
    crosses tau in the range (all clean, or all flagged) or the fit is unusable.
    """
    if not fit_is_usable(fit) or not np.isfinite([lo, hi]).all() or hi <= lo:
        return None
    grid = np.linspace(lo, hi, points)
    post = clean_posterior(fit, grid)
    above = post > tau
    down = np.flatnonzero(above[:-1] & ~above[1:])
    if not len(down):
        return None
    i = int(down[0])
    p0, p1 = post[i], post[i + 1]
    t = 0.0 if p0 == p1 else (p0 - tau) / (p0 - p1)
    return float(grid[i] + t * (grid[i + 1] - grid[i]))


def histogram_with_fit(losses: Sequence[float], fit: Mapping | None, bins: int = 30,
                       curve_points: int = 200) -> dict:
    """Histogram counts of one class's losses and the two component curves scaled to counts."""
    x = np.asarray(losses, dtype=np.float64)
    x = x[np.isfinite(x)]
    if not len(x):
        return {"edges": np.zeros(1), "counts": np.zeros(0), "x": np.zeros(0),
                "clean": np.zeros(0), "noisy": np.zeros(0), "lo": 0.0, "hi": 0.0}
    lo, hi = float(x.min()), float(x.max())
    if hi - lo < 1e-12:
        hi = lo + 1e-6
    counts, edges = np.histogram(x, bins=bins, range=(lo, hi))
    width = edges[1] - edges[0]
    grid = np.linspace(lo, hi, curve_points)
    clean, noisy = component_densities(fit or {}, grid)
    scale = len(x) * width
    return {"edges": edges, "counts": counts, "x": grid, "clean": clean * scale, "noisy": noisy * scale,
            "lo": lo, "hi": hi}


# --------------------------------------------------------------------------- embeddings

COLOUR_OPTIONS = {
    "given": "Given label",
    "pred": "Predicted label",
    "clean_prob": "Clean probability",
    "true": "True label",
}


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
        "true": [names[t] if t >= 0 else "unknown" for t in true],
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
    if len(frame) and bool(frame["has_true"].any()):
        out["true"] = COLOUR_OPTIONS["true"]
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


def _same_data(a: Mapping, b: Mapping) -> bool:
    def norm(spec):
        return {k: v for k, v in (spec or {}).items() if v is not None}

    return norm(a.get("dataset")) == norm(b.get("dataset")) and \
        norm(a.get("noise") or {"kind": "none"}) == norm(b.get("noise") or {"kind": "none"})


def find_reference_run(root: str | Path, config: Mapping, method: str = "fft-ce",
                       exclude: str | Path | None = None):
    """The newest finished run under `root` of `method` on the same data and noise, or None.

    "Finished" means status done with final results; the same data means equal dataset and
    noise dicts in config.json, and (for the projections to be comparable) the same
    projection split.
    """
    from turn_backend.runfolder import list_runs

    exclude = Path(exclude).resolve() if exclude else None
    for run in list_runs(root):
        if exclude is not None and run.path.resolve() == exclude:
            continue
        cfg = run.config()
        if cfg.get("method") != method or not _same_data(cfg, config):
            continue
        if cfg.get("projection_split", "test") != config.get("projection_split", "test"):
            continue
        if run.status().get("state") == "done":
            return run
    return None


# ------------------------------------------------------------------------------- review

DECISION_COLUMNS = ["decision", "decision_label"]


def review_queue(sample_ids: Sequence[str], clean_prob: Sequence[float], given: Sequence[int],
                 pred: Sequence[int], pred_prob: Sequence[float], tau: float,
                 decisions: Mapping[str, tuple[str, int | None]] | None = None, *,
                 given_classes: Iterable[int] | None = None, pred_classes: Iterable[int] | None = None,
                 only_undecided: bool = False) -> pd.DataFrame:
    """The flagged samples (clean_prob <= tau), lowest clean probability first.

    Ties keep the sample order. Filters: given label in `given_classes`, predicted label in
    `pred_classes` (None or empty: no filter), `only_undecided`. Columns: index (position in
    the training split), sample_id, given, pred, pred_prob, clean_prob, decision ('' when
    undecided) and decision_label (the new label of a relabel, else -1).
    """
    p = np.asarray(clean_prob, dtype=np.float64)
    ids = np.asarray(list(sample_ids), dtype=object).astype(str)
    given = np.asarray(given, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    pred_prob = np.asarray(pred_prob, dtype=np.float64)
    if not (len(p) == len(ids) == len(given) == len(pred) == len(pred_prob)):
        raise ValueError("sample ids, clean probabilities, labels and predictions must have one entry per sample")
    decisions = decisions or {}
    mask = p <= tau
    if given_classes:
        mask &= np.isin(given, np.fromiter(given_classes, dtype=np.int64))
    if pred_classes:
        mask &= np.isin(pred, np.fromiter(pred_classes, dtype=np.int64))
    idx = np.flatnonzero(mask)
    # least probably clean first; among ties (many flagged samples sit at ~0), the most
    # confident suggestions first
    idx = idx[np.lexsort((-pred_prob[idx], p[idx]))]
    dec = [decisions.get(s, ("", None)) for s in ids[idx]]
    df = pd.DataFrame({
        "index": idx,
        "sample_id": ids[idx],
        "given": given[idx],
        "pred": pred[idx],
        "pred_prob": pred_prob[idx],
        "clean_prob": p[idx],
        "decision": [d[0] or "" for d in dec],
        "decision_label": [-1 if d[1] is None else int(d[1]) for d in dec],
    })
    if only_undecided:
        df = df[df["decision"] == ""].reset_index(drop=True)
    return df


def review_progress(clean_prob: Sequence[float], sample_ids: Sequence[str], tau: float,
                    decisions: Mapping[str, tuple[str, int | None]] | None) -> tuple[int, int]:
    """(flagged samples without a decision, flagged samples) at tau."""
    p = np.asarray(clean_prob, dtype=np.float64)
    ids = np.asarray(list(sample_ids), dtype=object).astype(str)
    flagged = ids[p <= tau]
    decided = set((decisions or {}).keys())
    left = sum(1 for s in flagged if s not in decided)
    return left, len(flagged)


def paginate(n: int, page: int, per_page: int = 12) -> tuple[int, int, int, int]:
    """(page clamped to 0..pages-1, start, stop, pages) for n items."""
    per_page = max(1, int(per_page))
    pages = max(1, -(-int(n) // per_page))
    page = min(max(0, int(page)), pages - 1)
    start = page * per_page
    return page, start, min(n, start + per_page), pages


def bulk_accept(rows: pd.DataFrame) -> list[tuple[str, str, int | None]]:
    """Accept the model's suggestion for each row: relabel where it differs, else keep."""
    out: list[tuple[str, str, int | None]] = []
    for sid, g, p in zip(rows["sample_id"], rows["given"], rows["pred"]):
        if int(p) != int(g):
            out.append((str(sid), "relabel", int(p)))
        else:
            out.append((str(sid), "keep", None))
    return out


def decision_text(action: str | None, label: int | None, class_names: Sequence[str]) -> str:
    """'Undecided', 'Kept', 'Relabelled to X', 'Removed'."""
    if not action:
        return "Undecided"
    if action == "keep":
        return "Kept"
    if action == "remove":
        return "Removed"
    if action == "relabel":
        name = class_names[label] if label is not None and 0 <= label < len(class_names) else str(label)
        return f"Relabelled to {name}"
    return str(action)


def retrain_run_name(base: str, tau: float, existing: Iterable[str]) -> str:
    """A new run folder name for retraining `base` at tau: base-tau0.45, then -2, -3, ..."""
    # do not grow names like run-tau0.45-tau0.50
    stem = re.sub(r"-tau\d+(\.\d+)?(-\d+)?$", "", base)
    name = f"{stem}-tau{tau:.2f}"
    taken = set(existing)
    if name not in taken:
        return name
    k = 2
    while f"{name}-{k}" in taken:
        k += 1
    return f"{name}-{k}"
