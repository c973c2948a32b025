"""TURN step 2-1: per-class two-component GMM clean probabilities and class-balanced selection.

`fit_clean_probability` turns per-sample losses into clean probabilities (the posterior of
the lower-mean component of a 1-D, two-component Gaussian mixture fitted to the losses of
each class). `select_clean` applies tau and balances the classes. Both are pure functions
over arrays and report every edge case they handle in `notes`.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

# DivideMix's GMM settings (losses min-max normalised per class before the fit).
GMM_MAX_ITER = 10
GMM_TOL = 1e-2
GMM_REG_COVAR = 5e-4
# Components whose normalised means differ by less than this are treated as one.
MIN_SEPARATION = 1e-3


@dataclass
class ClassFit:
    """The mixture of one class, in loss units (for histograms), and how it was handled."""

    n: int
    status: str  # "fit", "empty", "too few samples", "not separated"
    means: list[float] = field(default_factory=list)  # [clean, noisy]
    stds: list[float] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)


@dataclass
class CleanProbability:
    clean_prob: np.ndarray
    fits: list[ClassFit]
    notes: list[str]

    def fits_as_dicts(self) -> list[dict]:
        return [asdict(f) for f in self.fits]


def sanitize_losses(losses: np.ndarray) -> tuple[np.ndarray, int]:
    """Replace NaN / infinite losses by the largest finite loss (such samples look noisy).

    Finite losses are bounded by 1e100 so that the per-class min-max normalisation cannot
    overflow; cross-entropy of float32 logits never comes near that bound.
    """
    losses = np.asarray(losses, dtype=np.float64)
    bad = ~np.isfinite(losses)
    finite = losses[~bad]
    fill = float(finite.max()) if finite.size else 0.0
    out = losses.copy()
    out[bad] = fill
    return np.clip(out, -1e100, 1e100), int(bad.sum())


def fit_clean_probability(losses: np.ndarray, labels: np.ndarray, num_classes: int, seed: int = 0) -> CleanProbability:
    """Per-class GMM posterior of the low-loss component.

    Classes with fewer than two distinct losses, or whose two components do not separate,
    cannot tell clean from noisy: their samples get clean probability 1 and a note says so.
    """
    losses, n_bad = sanitize_losses(losses)
    labels = np.asarray(labels, dtype=np.int64)
    clean_prob = np.zeros(len(losses), dtype=np.float64)
    fits: list[ClassFit] = []
    notes: list[str] = []
    if n_bad:
        notes.append(f"{n_bad} non-finite losses were set to the largest finite loss")
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        x = losses[members]
        if len(members) == 0:
            fits.append(ClassFit(n=0, status="empty"))
            continue
        lo, hi = float(x.min()), float(x.max())
        if len(members) < 2 or hi - lo <= 1e-12:
            clean_prob[members] = 1.0
            fits.append(ClassFit(n=len(members), status="too few samples", means=[lo, lo], stds=[0.0, 0.0],
                                 weights=[1.0, 0.0]))
            notes.append(f"class {c}: {len(members)} sample(s) with a single loss value; all kept as clean")
            continue
        z = ((x - lo) / (hi - lo)).reshape(-1, 1)
        gmm = GaussianMixture(
            n_components=2, max_iter=GMM_MAX_ITER, tol=GMM_TOL, reg_covar=GMM_REG_COVAR, random_state=seed
        )
        with warnings.catch_warnings():
            # max_iter=10 often stops before sklearn's tolerance; that is DivideMix's setting
            warnings.simplefilter("ignore", ConvergenceWarning)
            gmm.fit(z)
        mu = gmm.means_.ravel()
        clean_k, noisy_k = int(np.argmin(mu)), int(np.argmax(mu))
        scale = hi - lo
        stds = np.sqrt(gmm.covariances_.ravel())
        fit = ClassFit(
            n=len(members),
            status="fit",
            means=[lo + mu[clean_k] * scale, lo + mu[noisy_k] * scale],
            stds=[stds[clean_k] * scale, stds[noisy_k] * scale],
            weights=[float(gmm.weights_[clean_k]), float(gmm.weights_[noisy_k])],
        )
        if mu[noisy_k] - mu[clean_k] < MIN_SEPARATION:
            clean_prob[members] = 1.0
            fit.status = "not separated"
            notes.append(f"class {c}: the two mixture components did not separate; all kept as clean")
        else:
            clean_prob[members] = gmm.predict_proba(z)[:, clean_k]
        fits.append(fit)
    return CleanProbability(clean_prob=clean_prob, fits=fits, notes=notes)


@dataclass
class Selection:
    """The training set of one FFT round."""

    indices: np.ndarray  # sample indices, with repeats where classes were oversampled
    candidates_per_class: np.ndarray  # |D_clean^c| at tau
    per_class: int  # N: samples drawn per class
    notes: list[str]

    @property
    def unique(self) -> np.ndarray:
        return np.unique(self.indices)


BALANCE_MODES = ("min", "mean")


def floor_size(class_size: int, fraction: float = 0.05) -> int:
    """Samples kept for a class with no clean candidate: its most probably clean 5% (at least 1)."""
    return max(1, int(np.ceil(fraction * class_size)))


def select_clean(
    clean_prob: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    tau: float,
    rng: np.random.Generator,
    balance: str = "min",
) -> Selection:
    """D_clean^c = {i: y_i = c, p_i > tau}, balanced across classes.

    balance="min" (TURN as published): draw N = min_c |D_clean^c| uniformly from each class.
    balance="mean": keep every candidate and top classes up to the mean candidate count by
    drawing with replacement (fewer samples discarded, classes still weighted evenly).

    A class that has samples but no candidate above tau would make N = 0 and empty the whole
    clean set; instead its `floor_size` most probably clean samples become its candidates,
    and a note reports it.
    """
    if balance not in BALANCE_MODES:
        raise ValueError(f"balance must be one of {BALANCE_MODES}, got {balance!r}")
    clean_prob = np.asarray(clean_prob, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    notes: list[str] = []
    candidates: list[np.ndarray] = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        chosen = members[clean_prob[members] > tau]
        if len(members) and not len(chosen):
            k = floor_size(len(members))
            # stable sort so that ties resolve by index, deterministically
            chosen = np.sort(members[np.argsort(-clean_prob[members], kind="stable")[:k]])
            notes.append(
                f"class {c}: no sample above tau={tau:g}; kept its {k} most probably clean sample(s) (floor)"
            )
        candidates.append(chosen)
    counts = np.array([len(x) for x in candidates], dtype=np.int64)
    present = counts[counts > 0]
    if not len(present):
        return Selection(np.zeros(0, dtype=np.int64), counts, 0, notes + ["no samples to select"])
    parts = []
    if balance == "min":
        per_class = int(present.min())
        for chosen in candidates:
            if len(chosen):
                parts.append(np.sort(rng.choice(chosen, size=per_class, replace=False)))
    else:
        per_class = int(round(present.mean()))
        for chosen in candidates:
            if not len(chosen):
                continue
            extra = max(0, per_class - len(chosen))
            parts.append(np.sort(np.concatenate([chosen, rng.choice(chosen, size=extra, replace=True)])))
    return Selection(np.concatenate(parts).astype(np.int64), counts, per_class, notes)


def detection_metrics(flagged_noisy: np.ndarray, given: np.ndarray, true: np.ndarray) -> dict:
    """Precision, recall and F1 of flagging noisy labels, and purity of what is kept.

    `flagged_noisy` is a boolean mask of samples the method calls noisy; a sample is truly
    noisy where its given label differs from the true one.
    """
    flagged = np.asarray(flagged_noisy, dtype=bool)
    noisy = np.asarray(given) != np.asarray(true)
    tp = int((flagged & noisy).sum())
    fp = int((flagged & ~noisy).sum())
    fn = int((~flagged & noisy).sum())
    kept = ~flagged
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    purity = float((~noisy[kept]).mean()) if kept.any() else 0.0
    return {
        "precision": precision, "recall": recall, "f1": f1, "purity": purity,
        "n_flagged": int(flagged.sum()), "n_kept": int(kept.sum()), "n_noisy": int(noisy.sum()),
    }


def stratified_holdout(
    selected: np.ndarray,
    clean_prob: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    fraction: float,
    rng: np.random.Generator,
    min_clean: float = 0.9,
    max_per_class: int = 100,
    min_total: int = 10,
) -> np.ndarray:
    """Sorted indices of a validation set drawn from a clean set: from each class,
    floor(`fraction` x its selected samples with clean probability >= `min_clean`), at most
    `max_per_class`. Empty when that makes fewer than `min_total` (too few to compare two
    models on). The "holdout" option chooses the final model on it, on samples it did not train on.

    selected: indices of the clean set (duplicates allowed); clean_prob, labels: (N,).
    """
    selected = np.unique(np.asarray(selected, dtype=np.int64))
    confident = selected[np.asarray(clean_prob)[selected] >= min_clean]
    labels = np.asarray(labels)
    chosen = []
    for c in range(num_classes):
        members = confident[labels[confident] == c]
        take = min(int(fraction * len(members)), max_per_class)
        chosen.append(rng.choice(members, take, replace=False))
    held = np.sort(np.concatenate(chosen)).astype(np.int64) if chosen else np.zeros(0, dtype=np.int64)
    return held if len(held) >= min_total else held[:0]
