"""UNICON (Karim et al. 2022) in LP mode, a baseline of the paper: two linear heads on the
cached features trained as DivideMix-LP is (turn_backend.stages.two_head_lp), on UNICON's
uniform selection: the same number of samples from every class, those whose prediction
(both heads' mean) is closest to the label in Jensen-Shannon divergence. Its contrastive
term needs image augmentations and is left out. torch is imported where used: the registry
must load without it."""

from __future__ import annotations

import numpy as np

from turn_backend.methods.dividemix_lp import register_two_head_method

UNICON_D_U, UNICON_TAU = 0.7, 5.0  # UNICON's selection settings (CIFAR-10)


def jsd_to_label(p, y):
    """Jensen-Shannon divergence (base 2, in [0, 1]) between predictions and one-hot labels (torch tensors)."""
    import torch.nn.functional as F

    q = F.one_hot(y, p.shape[1]).float()
    m = (p + q) / 2

    def kl(a, b):
        return (a * ((a + 1e-10) / (b + 1e-10)).log2()).sum(1)

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def uniform_select(jsd: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """UNICON's uniform selection: the same number of lowest-JSD samples from every class."""
    threshold = jsd.mean()
    if threshold > UNICON_D_U:
        threshold = threshold - (threshold - jsd.min()) / UNICON_TAU
    per_class = int((jsd < threshold).mean() * len(labels) / num_classes)
    mask = np.zeros(len(labels), dtype=bool)
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        mask[members[np.argsort(jsd[members], kind="stable")[:max(1, per_class)]]] = True
    return mask


def divide(run, probs: list, y, epoch: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Both heads' division: uniform selection on the mean prediction, weighted by 1 - JSD."""
    jsd = jsd_to_label((probs[0] + probs[1]) / 2, y).numpy()
    return uniform_select(jsd, run.train.labels, run.train.num_classes), 1.0 - jsd


register_two_head_method("unicon-lp", "UNICON in LP mode: class-uniform JSD selection, MixMatch in feature space "
                                      "(no contrastive term)", divide)
