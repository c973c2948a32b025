"""The Classes and Noise matrix pages: per-class health and the row-normalised noise matrix."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from turn_backend.detect.estimates import expected_wrong_per_class


def noise_rates(counts: Sequence[Sequence[float]]) -> np.ndarray:
    """Row-normalised noise matrix: P(likely true class = j | given class = i); a row
    without samples stays zero."""
    m = np.asarray(counts, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"a noise matrix is square (classes x classes), got shape {m.shape}")
    totals = m.sum(axis=1, keepdims=True)
    return np.divide(m, totals, out=np.zeros_like(m), where=totals > 0)


def recount_noise_counts(counts: Sequence[Sequence[float]], given: Sequence[int],
                         clean_prob: Sequence[float]) -> np.ndarray:
    """The noise matrix's expected counts recounted with other clean probabilities (those
    recalibrated on Review decisions): each given class's diagonal becomes the sum of its
    samples' clean probabilities, and its off-diagonal the sum of 1 - them, shared among the
    other classes as the matrix shared it (evenly where the matrix expected no wrong label)."""
    m = np.array(counts, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"a noise matrix is square (classes x classes), got shape {m.shape}")
    k = len(m)
    y = np.asarray(given, dtype=np.int64).ravel()
    p = np.asarray(clean_prob, dtype=np.float64).ravel()
    if len(y) != len(p):
        raise ValueError(f"{len(p)} clean probabilities for {len(y)} labels: give one per sample")
    wrong = expected_wrong_per_class(p, y, k)
    off = m.copy()
    np.fill_diagonal(off, 0.0)
    totals = off.sum(axis=1, keepdims=True)
    shares = np.where(totals > 0, off / np.where(totals > 0, totals, 1.0), (1.0 - np.eye(k)) / max(k - 1, 1))
    out = shares * wrong[:, None]
    out[np.arange(k), np.arange(k)] = np.bincount(y, weights=p, minlength=k)
    return out


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
                 audit_train: pd.DataFrame | None = None,
                 calibrated: Sequence[float] | None = None) -> pd.DataFrame:
    """One row per class: the dataset-health table of the Classes page.

    Columns: class_id, class, size, flagged (clean probability <= tau), expected_wrong (wrong
    labels the model expects in the class: the noise matrix row's off-diagonal counts where
    there is one, else the sum of 1 - clean probability), noise_rate (the noise matrix's
    off-diagonal share of the class's row where there is one, else the flagged fraction),
    mean_clean_prob, confused_with (see `confused_partners`; needs the
    noise matrix), and from the audit (None without one) duplicates (training samples with
    a near-duplicate), label_conflicts (those whose duplicate has another label), outliers
    and test_leaks.

    calibrated: clean probabilities recalibrated on Review decisions, one per sample: the
    expected wrong labels, noise rates, mean clean probability and confusions are counted with
    them (`recount_noise_counts`); `clean_prob` still decides what is flagged at tau.
    """
    y = np.asarray(given, dtype=np.int64).ravel()
    p = np.asarray(clean_prob, dtype=np.float64).ravel()
    if len(y) != len(p):
        raise ValueError(f"{len(p)} clean probabilities for {len(y)} labels: give one per sample")
    k = len(class_names)
    size = np.bincount(y, minlength=k)
    flagged = np.bincount(y[p <= tau], minlength=k)
    if calibrated is not None:
        p = np.asarray(calibrated, dtype=np.float64).ravel()
        if len(p) != len(y):
            raise ValueError(f"{len(p)} calibrated probabilities for {len(y)} labels: give one per sample")
        if noise_counts is not None:
            noise_counts = recount_noise_counts(noise_counts, y, p)
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
        frame["expected_wrong"] = expected_wrong_per_class(p, y, k)
        share = flagged if calibrated is None else frame["expected_wrong"].to_numpy()
        frame["noise_rate"] = np.divide(share, size, out=np.full(k, np.nan), where=size > 0)
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
