"""DivideMix (Li et al. 2020) in LP mode, a baseline of the paper: two linear heads on the
cached features, each trained on the division the *other* head's per-sample losses give
(co-divide: a GMM on the min-max normalised losses of the whole set), with MixMatch in
feature space (turn_backend.stages.two_head_lp). torch and scikit-learn are imported where
used: the registry must load without them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from turn_backend.methods.registry import NO_RUN_FOLDER, Method, register_method


def gmm_clean_prob(losses: np.ndarray, seed: int) -> np.ndarray:
    """DivideMix's division: each sample's posterior of the low-loss component of a GMM on
    the min-max normalised losses of the whole set."""
    from sklearn.mixture import GaussianMixture

    from turn_backend.cleansing import GMM_MAX_ITER, GMM_REG_COVAR, GMM_TOL

    z = ((losses - losses.min()) / max(1e-12, losses.max() - losses.min())).reshape(-1, 1)
    gmm = GaussianMixture(2, max_iter=GMM_MAX_ITER, tol=GMM_TOL, reg_covar=GMM_REG_COVAR, random_state=seed).fit(z)
    return gmm.predict_proba(z)[:, int(np.argmin(gmm.means_.ravel()))]


def co_divide(run, probs: list, y, epoch: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Head k's division from the other head's losses: clean where the posterior > 0.5 (at
    least the 5% most confident), weighted by that posterior in label refinement."""
    import torch.nn.functional as F

    from turn_backend.stages.context import stage_seed

    other = probs[1 - k].clamp_min(1e-12)
    weight = gmm_clean_prob(F.nll_loss(other.log(), y, reduction="none").numpy(),
                            stage_seed(run.cfg, run.method, epoch, k))
    clean = weight > 0.5
    if not clean.any():
        clean[np.argsort(-weight)[:max(1, len(weight) // 20)]] = True
    return clean, weight


def register_two_head_method(name: str, description: str, divide) -> Method:
    """Register a method trained as DivideMix-LP is (turn_backend.stages.two_head_lp), on
    the divisions `divide(run, probs, labels, epoch, k)` makes."""

    def run(config, run_dir: Path) -> dict:
        from turn_backend.stages.two_head_lp import train_two_heads

        return train_two_heads(config, run_dir, divide)

    return register_method(Method(name=name, description=description, kind="lp", loss="ce", run_standalone=run,
                                  bench_only=NO_RUN_FOLDER))


register_two_head_method("dividemix-lp", "DivideMix in LP mode: two linear heads, GMM co-division, MixMatch in "
                                         "feature space", co_divide)
