"""The Threshold page's per-tau numbers: the clean probabilities sorted once per class
(`ThresholdIndex`), so a slider step costs microseconds, not a refit; the sizes TURN and TURN+
would train on (`selection_sizes`); and, with ground truth, precision / recall / F1 / purity
over a tau grid (`tau_sweep`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from turn_backend.detect.estimates import default_tau_grid

# turn_backend.cleansing is imported where it is used: it imports scikit-learn (about 1 s),
# which no audit page needs on its first render.

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


def flagged_share(clean_prob: Sequence[float], tau: float) -> float:
    """Share of the samples flagged at tau (clean probability at or below it); not an estimate
    of the noise rate, which is `detect.estimates.estimate_noise_rate`."""
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
