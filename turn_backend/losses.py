"""Training losses: cross-entropy, Generalized Cross Entropy and Early-Learning Regularization."""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("ce", "gce", "elr")


def gce_loss(logits: torch.Tensor, targets: torch.Tensor, q: float = 0.7) -> torch.Tensor:
    """Generalized Cross Entropy (Zhang & Sabuncu 2018): mean of (1 - p_y^q) / q."""
    p_y = F.softmax(logits.float(), dim=1).gather(1, targets[:, None]).squeeze(1)
    return ((1.0 - p_y.clamp_min(1e-12) ** q) / q).mean()


class ELRLoss:
    """Early-Learning Regularization (Liu et al. 2020).

    loss = CE + lambda * mean(log(1 - <p_i, t_i>)), with t_i a running average of the
    model's (clipped, normalised) predictions for sample i: t_i <- beta t_i + (1 - beta) p_i.
    Defaults are ELR's CIFAR-10 settings (lambda = 3, beta = 0.7).
    """

    def __init__(self, num_samples: int, num_classes: int, lam: float = 3.0, beta: float = 0.7) -> None:
        self.targets = torch.zeros(num_samples, num_classes)
        self.lam = lam
        self.beta = beta

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        p = F.softmax(logits.float(), dim=1).clamp(1e-4, 1.0 - 1e-4)
        with torch.no_grad():
            p_norm = (p / p.sum(dim=1, keepdim=True)).cpu()
            idx = index.cpu()
            self.targets[idx] = self.beta * self.targets[idx] + (1.0 - self.beta) * p_norm
        t = self.targets[idx].to(p.device)
        ce = F.cross_entropy(logits.float(), labels)
        reg = torch.log(1.0 - (t * p).sum(dim=1)).mean()
        return ce + self.lam * reg


def make_loss(name: str, num_samples: int, num_classes: int, q: float = 0.7):
    """A callable (logits, labels, index) -> scalar loss for a loss name in LOSSES."""
    if name == "ce":
        return lambda logits, labels, index: F.cross_entropy(logits.float(), labels)
    if name == "gce":
        return lambda logits, labels, index: gce_loss(logits, labels, q)
    if name == "elr":
        return ELRLoss(num_samples, num_classes)
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")


def per_sample_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each sample against its given label (no reduction)."""
    return F.cross_entropy(logits.float(), labels, reduction="none")
