"""TURN's per-class GMM in loss units, for the Threshold page's histograms: the two fitted
components, the clean posterior, and the loss at which the posterior crosses tau."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


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
