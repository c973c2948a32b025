"""The training DivideMix-LP and UNICON-LP share (turn_backend.methods.dividemix_lp,
unicon_lp): two linear heads on the cached features; after a CE warm-up, each epoch a
division of the training set into labeled (clean) and unlabeled samples for each head, then
label refinement and co-guessing with sharpening, and MixUp *in feature space* (there are no
images in LP mode: the two "augmented views" of a sample are two dropout masks over its
cached feature vector). The methods differ only in how they divide."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from turn_backend.engine import accuracy_from_logits, make_optimizer
from turn_backend.stages.context import stage_seed
from turn_backend.stages.standalone import StandaloneRun

if TYPE_CHECKING:  # a type only: config imports the methods registry, whose methods run these stages
    from turn_backend.config import RunConfig

FEATURE_DROPOUT = 0.2  # the feature-space "augmentation" of the two views
MIX_ALPHA, SHARPEN_T, LAMBDA_U = 4.0, 0.5, 25.0  # DivideMix's CIFAR settings (lambda_u of its 50% setting)

# (run, both heads' probabilities on the training set, labels, epoch, head k) ->
# (clean mask, per-sample weight of the given label in refinement) for head k
Division = Callable[[StandaloneRun, list, torch.Tensor, int, int], tuple[np.ndarray, np.ndarray]]


def _view(x: torch.Tensor) -> torch.Tensor:
    return F.dropout(x, FEATURE_DROPOUT, training=True)


def _sharpen(p: torch.Tensor) -> torch.Tensor:
    p = p ** (1.0 / SHARPEN_T)
    return p / p.sum(1, keepdim=True)


def _mixmatch_epoch(net, net2, opt, x, y, lab, w, unl, num_classes, rampup, batch_size, gen):
    """One epoch of DivideMix's training of `net` on a labeled / unlabeled division."""
    lab = lab[torch.randperm(len(lab), generator=gen)]
    unl = unl[torch.randperm(len(unl), generator=gen)] if len(unl) else unl
    for it in range(math.ceil(len(lab) / batch_size)):
        bl = lab[it * batch_size:(it + 1) * batch_size]
        bu = unl[(torch.arange(len(bl)) + it * batch_size) % len(unl)] if len(unl) else unl
        xl, xu = x[bl], x[bu]
        with torch.no_grad():
            xl1, xl2, xu1, xu2 = _view(xl), _view(xl), _view(xu), _view(xu)
            wl = w[bl][:, None]
            px = (net(xl1).softmax(1) + net(xl2).softmax(1)) / 2  # label refinement
            tx = _sharpen(wl * F.one_hot(y[bl], num_classes).float() + (1 - wl) * px)
            pu = sum(h(v).softmax(1) for h in (net, net2) for v in (xu1, xu2)) / 4  # co-guessing
            tu = _sharpen(pu) if len(bu) else pu
        lam = float(np.random.default_rng(int(torch.randint(2**31, (1,), generator=gen))).beta(MIX_ALPHA, MIX_ALPHA))
        lam = max(lam, 1 - lam)
        inputs, targets = torch.cat([xl1, xl2, xu1, xu2]), torch.cat([tx, tx, tu, tu])
        perm = torch.randperm(len(inputs), generator=gen)
        logits = net(lam * inputs + (1 - lam) * inputs[perm])  # MixUp in feature space
        mixed = lam * targets + (1 - lam) * targets[perm]
        nx = 2 * len(bl)
        loss = -(F.log_softmax(logits[:nx], 1) * mixed[:nx]).sum(1).mean()
        if len(bu):
            loss = loss + LAMBDA_U * rampup * ((logits[nx:].softmax(1) - mixed[nx:]) ** 2).mean()
        prior = torch.full((num_classes,), 1.0 / num_classes)
        loss = loss + (prior * (prior / logits.softmax(1).mean(0)).log()).sum()  # DivideMix's uniform prior
        opt.zero_grad()
        loss.backward()
        opt.step()


def train_two_heads(config: RunConfig, run_dir: Path, divide: Division) -> dict:
    """`lp_epochs` epochs (a quarter of them CE warm-up) of two heads trained on `divide`'s
    divisions; metrics (and config.json) written into `run_dir`."""
    run = StandaloneRun(config, run_dir)
    cfg, train = run.cfg, run.train
    C, n = train.num_classes, len(train)
    t0 = time.time()
    torch.manual_seed(stage_seed(cfg, run.method))
    gen = torch.Generator().manual_seed(stage_seed(cfg, run.method, "order"))
    x = torch.from_numpy(run.feats.astype(np.float32))
    y = torch.from_numpy(train.labels.astype(np.int64))
    heads = [nn.Linear(x.shape[1], C) for _ in range(2)]
    opts = [make_optimizer(h.parameters(), run.lp_hp) for h in heads]
    warmup = max(1, cfg.lp_epochs // 4)
    accs, purity, detection, n_clean, sel_seconds = [], [], [], [], 0.0
    for epoch in range(1, cfg.lp_epochs + 1):
        if epoch <= warmup:  # CE on everything
            for h, opt in zip(heads, opts):
                order = torch.randperm(n, generator=gen)
                for s in range(0, n, cfg.batch_size):
                    idx = order[s:s + cfg.batch_size]
                    loss = F.cross_entropy(h(_view(x[idx])), y[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
        else:
            rampup = min(1.0, (epoch - warmup) / 5)
            for k in (0, 1):
                ts = time.time()
                with torch.no_grad():
                    probs = [h(x).softmax(1) for h in heads]
                clean, weight = divide(run, probs, y, epoch, k)
                sel_seconds += time.time() - ts
                if k == 0:
                    p, d = run.selection_stats(clean)
                    purity.append(p)
                    detection.append(d)
                    n_clean.append(int(clean.sum()))
                _mixmatch_epoch(heads[k], heads[1 - k], opts[k], x, y, torch.from_numpy(np.flatnonzero(clean)),
                                torch.from_numpy(np.asarray(weight, dtype=np.float32)),
                                torch.from_numpy(np.flatnonzero(~clean)), C, rampup, cfg.batch_size, gen)
        with torch.no_grad():
            xt = torch.from_numpy(run.test_feats.astype(np.float32))
            test_p = sum(h(xt).softmax(1) for h in heads)
        accs.append(accuracy_from_logits(test_p.numpy(), run.test.labels))
    run.timings["lp"] = time.time() - t0 - sel_seconds
    run.timings["gmm"] = sel_seconds
    with torch.no_grad():
        final = ((heads[0](x).softmax(1) + heads[1](x).softmax(1)) / 2).clamp_min(1e-12).log().double().numpy()
    return run.finish(accs, final, {"n_clean": n_clean[0] if n_clean else None,
                                    "clean_purity": purity[0] if purity else None, "clean_per_round": n_clean,
                                    "purity_per_round": purity, "detection_per_round": detection,
                                    "warmup_epochs": warmup})
