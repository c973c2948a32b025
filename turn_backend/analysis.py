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
- `ReviewIndex` (the queue sorted once per tau; filters, decisions, pages), `paginate`,
  `bulk_accept`: Review.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from turn_backend.config import RunConfig
from turn_backend.runfolder import list_runs

# turn_backend.cleansing is imported where it is used: it imports scikit-learn (about 1 s),
# which no audit page needs on its first render.

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
    if floored:
        from turn_backend.cleansing import floor_size  # scikit-learn: imported only where a class is floored
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

# Why a sample is in the review queue. A sample can be flagged for several reasons; the
# queue keeps one bit per reason. "label": clean probability <= tau; "duplicate": a
# training duplicate with another given label; "outlier": far from every class; "leak": the
# same image is in the test set (audit/train.parquet).
FLAG_KINDS = {"label": "Label error", "duplicate": "Duplicate, other label", "outlier": "Outlier",
              "leak": "Test leak"}
KIND_BITS = {kind: 1 << i for i, kind in enumerate(FLAG_KINDS)}
ACTION_CODES = {"": 0, "keep": 1, "relabel": 2, "remove": 3, "none": 4, "ambiguous": 5}
ACTIONS_BY_CODE = {code: action for action, code in ACTION_CODES.items()}


@dataclass(eq=False)
class ReviewIndex:
    """The review queue of one run at one tau, sorted once; filters and pages are array slices.

    Built once per (run, tau) and cached by the page, so that a click (next page, keep,
    undo) costs a few array lookups, not a pass over a DataFrame of every sample. All
    arrays are in training order except `order` / `kinds`, which are in review order:
    lowest clean probability first, ties by the most confident suggestion, then sample order.
    """

    ids: np.ndarray  # (n,) str
    given: np.ndarray  # (n,) int64
    suggested: np.ndarray  # (n,) int64, the most likely true class
    confidence: np.ndarray  # (n,) float, its probability
    clean_prob: np.ndarray  # (n,) float
    order: np.ndarray  # (q,) training positions of the flagged samples, in review order
    kinds: np.ndarray  # (q,) uint8, KIND_BITS of each
    positions: pd.Index  # sample id -> training position
    _views: dict = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, sample_ids: Sequence[str], clean_prob: Sequence[float], given: Sequence[int],
              suggested: Sequence[int], confidence: Sequence[float], tau: float, *,
              duplicate_conflict: Sequence[bool] | None = None, outlier: Sequence[bool] | None = None,
              leak: Sequence[bool] | None = None) -> ReviewIndex:
        ids = np.asarray(list(sample_ids), dtype=object).astype(str)
        p = np.asarray(clean_prob, dtype=np.float64).ravel()
        given = np.asarray(given, dtype=np.int64).ravel()
        suggested = np.asarray(suggested, dtype=np.int64).ravel()
        confidence = np.asarray(confidence, dtype=np.float64).ravel()
        extra = {"duplicate": duplicate_conflict, "outlier": outlier, "leak": leak}
        lengths = {len(ids), len(p), len(given), len(suggested), len(confidence)}
        lengths |= {len(v) for v in extra.values() if v is not None}
        if len(lengths) != 1:
            raise ValueError("sample ids, clean probabilities, labels, suggestions and audit flags must have one "
                             "entry per training sample")
        bits = np.where(p <= tau, KIND_BITS["label"], 0).astype(np.uint8)
        for kind, flags in extra.items():
            if flags is not None:
                bits |= np.where(np.asarray(flags, dtype=bool), KIND_BITS[kind], 0).astype(np.uint8)
        queued = np.flatnonzero(bits)
        queued = queued[np.lexsort((-confidence[queued], p[queued]))]
        return cls(ids, given, suggested, confidence, p, queued, bits[queued], pd.Index(ids))

    @classmethod
    def for_run(cls, inputs: Mapping, tau: float) -> ReviewIndex:
        """The queue of a run from `review_inputs(folder)`: label errors at tau, and the audit's
        duplicates with another label, test leaks and outliers where the run has an audit."""
        audit = inputs["audit"]
        flags = {}
        if audit is not None:
            flags = {"duplicate_conflict": audit["duplicate_label_conflict"].fillna(False).to_numpy(dtype=bool),
                     "outlier": audit["outlier"].fillna(False).to_numpy(dtype=bool),
                     "leak": audit["test_duplicate"].fillna("").astype(str).to_numpy() != ""}
        return cls.build(inputs["ids"], inputs["clean_prob"], inputs["given"], inputs["suggested"],
                         inputs["confidence"], tau, **flags)

    def __len__(self) -> int:
        return len(self.order)

    def kind_counts(self) -> dict[str, int]:
        return {kind: int((self.kinds & bit).astype(bool).sum()) for kind, bit in KIND_BITS.items()}

    def view(self, given_classes: Iterable[int] = (), suggested_classes: Iterable[int] = (),
             kinds: Iterable[str] = (), pair: tuple[int, int] | None = None) -> np.ndarray:
        """Positions in `order` of the samples matching every filter (an empty filter: all).

        `pair` = (given, suggested) picks one cell of the noise matrix. Cached per filter.
        """
        key = (tuple(sorted(set(given_classes))), tuple(sorted(set(suggested_classes))),
               tuple(sorted(set(kinds))), None if pair is None else (int(pair[0]), int(pair[1])))
        if key not in self._views:
            g, s = self.given[self.order], self.suggested[self.order]
            mask = np.ones(len(self.order), dtype=bool)
            if key[0]:
                mask &= np.isin(g, key[0])
            if key[1]:
                mask &= np.isin(s, key[1])
            if key[2]:
                unknown = set(key[2]) - set(KIND_BITS)
                if unknown:
                    raise ValueError(f"unknown flag kind(s) {', '.join(sorted(unknown))}; use {', '.join(KIND_BITS)}")
                mask &= (self.kinds & sum(KIND_BITS[k] for k in key[2])).astype(bool)
            if key[3] is not None:
                mask &= (g == key[3][0]) & (s == key[3][1])
            self._views[key] = np.flatnonzero(mask)
        return self._views[key]

    def decision_arrays(self, decisions: Mapping[str, tuple[str, int | None]] | None) -> tuple[np.ndarray, np.ndarray]:
        """(action code per training sample (ACTION_CODES), new label per sample or -1)."""
        codes = np.zeros(len(self.ids), dtype=np.int8)
        labels = np.full(len(self.ids), -1, dtype=np.int64)
        if decisions:
            keys = list(decisions)
            pos = self.positions.get_indexer(keys)
            known = pos >= 0  # decisions about samples this run no longer has are ignored
            vals = [decisions[k] for k, ok in zip(keys, known) if ok]
            codes[pos[known]] = [ACTION_CODES.get(a or "", 0) for a, _ in vals]
            labels[pos[known]] = [-1 if lab is None else int(lab) for _, lab in vals]
        return codes, labels

    def undecided(self, view: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """The positions of `view` whose sample has no decision."""
        return view[codes[self.order[view]] == 0]

    def decided_as(self, view: np.ndarray, codes: np.ndarray, actions: Iterable[str]) -> np.ndarray:
        """The positions of `view` whose sample's standing decision is one of `actions`
        (ACTION_CODES keys; "" is undecided). No actions: `view` as it is."""
        actions = list(actions)
        if not actions:
            return view
        unknown = set(actions) - set(ACTION_CODES)
        if unknown:
            raise ValueError(f"unknown decision(s) {', '.join(sorted(unknown))}; use "
                             f"{', '.join(a for a in ACTION_CODES if a)}")
        return view[np.isin(codes[self.order[view]], [ACTION_CODES[a] for a in actions])]

    def progress(self, codes: np.ndarray) -> tuple[int, int]:
        """(queued samples without a decision, queued samples)."""
        return int((codes[self.order] == 0).sum()), len(self.order)

    def rows(self, view_positions: np.ndarray, codes: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
        """One row per queued sample at these positions of `order` (a page of cards).

        Columns: index (training position), sample_id, given, pred (the suggestion),
        pred_prob, clean_prob, kinds (list of FLAG_KINDS keys), decision ('' when
        undecided), decision_label (-1 unless relabelled).
        """
        idx = self.order[view_positions]
        bits = self.kinds[view_positions]
        return pd.DataFrame({
            "index": idx,
            "sample_id": self.ids[idx],
            "given": self.given[idx],
            "pred": self.suggested[idx],
            "pred_prob": self.confidence[idx],
            "clean_prob": self.clean_prob[idx],
            "kinds": [[k for k, bit in KIND_BITS.items() if b & bit] for b in bits],
            "decision": [ACTIONS_BY_CODE[int(c)] for c in codes[idx]],
            "decision_label": labels[idx],
        })


# Each detection signal's short name on a Review card (turn_backend.detect.result.SIGNAL_DESCRIPTIONS).
SIGNAL_LABELS = {"combined": "combined", "gmm_lp": "GMM", "oof_probe": "OOF probe", "oof_gmm": "OOF GMM",
                 "knn": "kNN"}


def review_inputs(folder) -> dict:
    """What Review shows per training sample, from a finished run folder.

    names, ids, given, clean_prob (the final model's, as Threshold and Export use),
    suggested / confidence / source (the detection layer's suggested label where the run
    has one, else the final model's prediction), signals (name -> (n,) clean score, or
    None) and audit (audit/train.parquet as a DataFrame, or None). Detection or audit
    files written for another training set (a stale folder) are ignored.
    """
    final = folder.final()
    if final is None:
        raise ValueError(f"run {folder.name} has no final results yet")
    samples = folder.samples()
    train = samples[samples["split"] == "train"].reset_index(drop=True)
    names = folder.class_names() or [str(c) for c in range(int(train["given_label"].max()) + 1)]
    detection = folder.detection()
    signals = None if detection is None else detection["signals"]
    audit = folder.audit()
    signals = signals if signals is not None and len(signals) == len(train) else None
    out = {
        "names": list(names),
        "ids": train["sample_id"].astype(str).to_numpy(),
        "given": train["given_label"].to_numpy(dtype=np.int64),
        "clean_prob": np.asarray(final["clean_prob"], dtype=np.float64),
        "suggested": np.asarray(final["pred"], dtype=np.int64),
        "confidence": np.asarray(final["pred_prob"], dtype=np.float64),
        "source": "final model",
        "clean_source": clean_prob_source(folder),
        "signals": None,
        "audit": audit["train"] if audit is not None and len(audit["train"]) == len(train) else None,
    }
    if signals is not None:
        out["suggested"] = signals["suggested_label"].to_numpy(dtype=np.int64)
        out["confidence"] = signals["suggested_confidence"].to_numpy(dtype=np.float64)
        out["source"] = str(signals["suggested_source"].iloc[0]) if len(signals) else "ensemble"
        out["signals"] = {k: signals[k].to_numpy(dtype=np.float32) for k in SIGNAL_LABELS if k in signals}
    return out


def clean_prob_source(folder) -> str:
    """What the run's final clean probability is: "combined" (the detection layer's) or "GMM"
    (TURN's per-class GMM on the final model's losses), as the final stage recorded it; for
    a run folder older than that record, "combined" only where TURN+ scoring chose it."""
    recorded = folder.gmm_info().get("clean_prob_source")
    if recorded in ("combined", "GMM"):
        return recorded
    try:
        config = RunConfig.from_json(folder.config_path)
    except (OSError, ValueError):
        return "GMM"
    return "combined" if config.turn_option("scoring") == "ensemble" else "GMM"


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
    """'Undecided', 'Kept', 'Relabelled to X', 'Removed', 'None of these classes', 'Ambiguous'."""
    if not action:
        return "Undecided"
    if action == "keep":
        return "Kept"
    if action == "remove":
        return "Removed"
    if action == "none":
        return "None of these classes"
    if action == "ambiguous":
        return "Ambiguous"
    if action == "relabel":
        name = class_names[label] if label is not None and 0 <= label < len(class_names) else str(label)
        return f"Relabelled to {name}"
    return str(action)


def unique_run_name(name: str, existing: Iterable[str]) -> str:
    """`name`, or `name-2`, `name-3`, ... where the name is taken."""
    taken = set(existing)
    if name not in taken:
        return name
    k = 2
    while f"{name}-{k}" in taken:
        k += 1
    return f"{name}-{k}"


def retrain_run_name(base: str, tau: float, existing: Iterable[str]) -> str:
    """A new run folder name for retraining `base` at tau: base-tau0.45, then -2, -3, ..."""
    # do not grow names like run-tau0.45-tau0.50
    stem = re.sub(r"-tau\d+(\.\d+)?(-\d+)?$", "", base)
    return unique_run_name(f"{stem}-tau{tau:.2f}", existing)


# ------------------------------------------------------------------ noise matrix, classes


def noise_rates(counts: Sequence[Sequence[float]]) -> np.ndarray:
    """Row-normalised noise matrix: P(likely true class = j | given class = i); a row
    without samples stays zero."""
    m = np.asarray(counts, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"a noise matrix is square (classes x classes), got shape {m.shape}")
    totals = m.sum(axis=1, keepdims=True)
    return np.divide(m, totals, out=np.zeros_like(m), where=totals > 0)


def confused_partners(counts: Sequence[Sequence[float]], class_names: Sequence[str], top: int = 2,
                      min_share: float = 0.01) -> list[str]:
    """Per given class, its most likely true classes other than itself: 'Shirt 23%, Coat 4%'
    (shares of the class's samples, at least `min_share`); '' when none."""
    rates = noise_rates(counts)
    out = []
    for c in range(len(rates)):
        row = rates[c].copy()
        row[c] = 0.0
        best = [j for j in np.argsort(-row, kind="stable")[:top] if row[j] >= min_share]
        out.append(", ".join(f"{class_names[j]} {row[j]:.0%}" for j in best))
    return out


def class_health(given: Sequence[int], clean_prob: Sequence[float], tau: float, class_names: Sequence[str],
                 noise_counts: Sequence[Sequence[float]] | None = None,
                 audit_train: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per class: the dataset-health table of the Classes page.

    Columns: class_id, class, size, flagged (clean probability <= tau), expected_wrong (wrong
    labels the model expects in the class: the noise matrix row's off-diagonal counts where
    there is one, else the sum of 1 - clean probability), noise_rate (the noise matrix's
    off-diagonal share of the class's row where there is one, else the flagged fraction),
    mean_clean_prob, confused_with (see `confused_partners`; needs the
    noise matrix), and from the audit (None without one) duplicates (training samples with
    a near-duplicate), label_conflicts (those whose duplicate has another label), outliers
    and test_leaks.
    """
    y = np.asarray(given, dtype=np.int64).ravel()
    p = np.asarray(clean_prob, dtype=np.float64).ravel()
    if len(y) != len(p):
        raise ValueError(f"{len(p)} clean probabilities for {len(y)} labels: give one per sample")
    k = len(class_names)
    size = np.bincount(y, minlength=k)
    flagged = np.bincount(y[p <= tau], minlength=k)
    mean_p = np.divide(np.bincount(y, weights=p, minlength=k), size, out=np.full(k, np.nan), where=size > 0)
    frame = pd.DataFrame({"class_id": np.arange(k), "class": list(class_names), "size": size, "flagged": flagged})
    if noise_counts is not None:
        rates = noise_rates(noise_counts)
        counts = np.asarray(noise_counts, dtype=np.float64)
        frame["expected_wrong"] = counts.sum(1) - np.diag(counts)
        frame["noise_rate"] = 1.0 - np.diag(rates)
        frame.loc[size == 0, "noise_rate"] = np.nan
        frame["confused_with"] = confused_partners(noise_counts, class_names)
    else:
        frame["expected_wrong"] = np.bincount(y, weights=1.0 - p, minlength=k)
        frame["noise_rate"] = np.divide(flagged, size, out=np.full(k, np.nan), where=size > 0)
        frame["confused_with"] = ""
    frame["mean_clean_prob"] = mean_p
    if audit_train is not None:
        if len(audit_train) != len(y):
            raise ValueError(f"the audit has {len(audit_train)} rows for {len(y)} training samples; it is stale")

        def per_class(mask) -> np.ndarray:
            return np.bincount(y[np.asarray(mask, dtype=bool)], minlength=k)

        frame["duplicates"] = per_class(audit_train["duplicate_of"].astype(str) != "")
        frame["label_conflicts"] = per_class(audit_train["duplicate_label_conflict"].fillna(False))
        frame["outliers"] = per_class(audit_train["outlier"].fillna(False))
        frame["test_leaks"] = per_class(audit_train["test_duplicate"].astype(str) != "")
    return frame
