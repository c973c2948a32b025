"""Baselines that run beside the RunConfig engine (for `turn bench`):

- `dividemix-lp`: DivideMix (Li et al. 2020) in LP mode, on the cached features;
- `unicon-lp`: UNICON (Karim et al. 2022) in LP mode, on the cached features;
- `cleanlab-fft`: cleanlab's `find_label_issues` on 5-fold out-of-fold logistic-regression
  probabilities of the cached features, then FFT-CE on the samples it keeps.

They share the engine's code paths: data and noise (`load_run_data`), the model registry and
its hyperparameters (`resolve_hparams`), the feature cache (`extract_features`, same cache
key as a run), the FFT epoch (`fft_epoch`: same optimiser, learning rate, augmentation and
BatchNorm policy as FFT-CE), evaluation (`compute_logits` / `head_logits`), and the final
per-class GMM that every method's detection metrics come from.

The LP-mode methods are compact, faithful-in-spirit versions: two linear heads, co-division
(DivideMix: GMM on per-sample losses; UNICON: class-uniform selection by the Jensen-Shannon
divergence between prediction and label), label refinement and co-guessing with sharpening,
and MixUp *in feature space* (there are no images in LP mode: the two "augmented views" of a
sample are two dropout masks over its cached feature vector). UNICON's contrastive term
needs image augmentations and is left out.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.mixture import GaussianMixture
from torch import nn

from turn_backend.cleansing import GMM_MAX_ITER, GMM_REG_COVAR, GMM_TOL, detection_metrics, fit_clean_probability
from turn_backend.config import RunConfig
from turn_backend.engine import (Runtime, accuracy_from_logits, compute_logits, extract_features, fft_epoch,
                                 make_optimizer, to_device)
from turn_backend.features import feature_cache_path
from turn_backend.losses import make_loss, per_sample_ce
from turn_backend.models.core import Classifier, Preprocess
from turn_backend.models.registry import load_model
from turn_backend.pipeline import default_workers
from turn_backend.runner import _seed, load_run_data, resolve_hparams

EXTRA_METHODS = {
    "dividemix-lp": "DivideMix in LP mode: two linear heads, GMM co-division, MixMatch in feature space",
    "unicon-lp": "UNICON in LP mode: class-uniform JSD selection, MixMatch in feature space (no contrastive term)",
    "cleanlab-fft": "cleanlab find_label_issues on 5-fold LP probabilities, then FFT-CE on the kept samples",
}
FEATURE_DROPOUT = 0.2  # the feature-space "augmentation" of DivideMix / UNICON views
MIX_ALPHA, SHARPEN_T, LAMBDA_U = 4.0, 0.5, 25.0  # DivideMix's CIFAR settings (lambda_u of its 50% setting)
UNICON_D_U, UNICON_TAU = 0.7, 5.0  # UNICON's selection settings (CIFAR-10)


class _Run:
    """What every extra method needs: data, model, hyperparameters, cached features, timings."""

    def __init__(self, method: str, config: RunConfig, run_dir: Path) -> None:
        self.method, self.cfg, self.dir = method, config, Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "config.json").write_text(json.dumps({"method": method, **dataclasses.asdict(config)}, indent=2))
        self.rt = Runtime(config.device, config.mixed_precision)
        self.timings: dict[str, float] = {}
        t0 = time.time()
        self.bundle = load_run_data(config)
        self.loaded = load_model(config.model, config.checkpoint, pretrained=config.pretrained)
        pre = self.loaded.preprocess
        self.pre = Preprocess(config.image_size, pre.mean, pre.std, pre.interpolation) if config.image_size else pre
        self.lp_hp, self.fft_hp = resolve_hparams(config, self.loaded)
        self.train, self.test = self.bundle.train, self.bundle.test
        self.workers = default_workers(self.train) if config.num_workers is None else config.num_workers
        self.tick("data", t0)
        t0 = time.time()
        # the same cache file as a run of the engine, so features are shared
        self.feats = np.asarray(self._extract(self.train, "train"))
        self.test_feats = np.asarray(self._extract(self.test, "test"))
        self.tick("features", t0)

    def _extract(self, images, split: str):
        path = feature_cache_path(images, self.loaded.name, self.cfg.checkpoint, self.cfg.pretrained, self.pre, split)
        return extract_features(self.loaded.extractor, images, self.pre, path, self.rt, self.cfg.batch_size,
                                self.workers)

    def tick(self, stage: str, start: float) -> None:
        self.timings[stage] = self.timings.get(stage, 0.0) + time.time() - start

    def finish(self, accs: list[float], final_logits: np.ndarray, extra: dict) -> dict:
        """Metrics in the shape `run_turn` returns; the final detection from the engine's GMM."""
        t0 = time.time()
        train = self.train
        losses = per_sample_ce(torch.from_numpy(np.asarray(final_logits, dtype=np.float64)),
                               torch.from_numpy(train.labels)).numpy()
        fit = fit_clean_probability(losses, train.labels, train.num_classes, seed=_seed(self.cfg, "gmm", "final"))
        self.tick("final", t0)
        m = {"method": self.method, "model": self.cfg.model, "n_train": len(train), "n_test": len(self.test),
             "test_acc_best": max(accs), "test_acc_last": accs[-1], "test_acc_per_epoch": accs, **extra}
        if train.true_labels is not None:
            m["final_detection"] = detection_metrics(fit.clean_prob <= self.cfg.tau, train.labels, train.true_labels)
            m["noise_rate"] = float((train.labels != train.true_labels).mean())
        m["seconds"] = {k: round(v, 3) for k, v in self.timings.items()}
        m["seconds_total"] = round(sum(self.timings.values()), 3)
        (self.dir / "metrics.json").write_text(json.dumps(m, indent=2))
        return m

    def selection_stats(self, clean_mask: np.ndarray) -> tuple[float | None, dict | None]:
        t = self.train
        if t.true_labels is None:
            return None, None
        kept = np.flatnonzero(clean_mask)
        purity = float((t.labels[kept] == t.true_labels[kept]).mean()) if len(kept) else 0.0
        return purity, detection_metrics(~clean_mask, t.labels, t.true_labels)


# ----------------------------------------------------------------------------- DivideMix / UNICON


def _view(x: torch.Tensor) -> torch.Tensor:
    return F.dropout(x, FEATURE_DROPOUT, training=True)


def _sharpen(p: torch.Tensor) -> torch.Tensor:
    p = p ** (1.0 / SHARPEN_T)
    return p / p.sum(1, keepdim=True)


def _gmm_clean_prob(losses: np.ndarray, seed: int) -> np.ndarray:
    """DivideMix's division: a GMM on the min-max normalised losses of the whole set."""
    z = ((losses - losses.min()) / max(1e-12, losses.max() - losses.min())).reshape(-1, 1)
    gmm = GaussianMixture(2, max_iter=GMM_MAX_ITER, tol=GMM_TOL, reg_covar=GMM_REG_COVAR, random_state=seed).fit(z)
    return gmm.predict_proba(z)[:, int(np.argmin(gmm.means_.ravel()))]


def _jsd_to_label(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence (base 2, in [0, 1]) between predictions and one-hot labels."""
    q = F.one_hot(y, p.shape[1]).float()
    m = (p + q) / 2

    def kl(a, b):
        return (a * ((a + 1e-10) / (b + 1e-10)).log2()).sum(1)

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def _unicon_select(jsd: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
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


def run_two_head_lp(run: _Run, unicon: bool) -> dict:
    """DivideMix-LP (unicon=False) or UNICON-LP (unicon=True) for `lp_epochs` epochs."""
    cfg, train = run.cfg, run.train
    C, n = train.num_classes, len(train)
    t0 = time.time()
    torch.manual_seed(_seed(cfg, run.method))
    gen = torch.Generator().manual_seed(_seed(cfg, run.method, "order"))
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
                if unicon:  # both heads' mean prediction, class-uniform selection
                    jsd = _jsd_to_label((probs[0] + probs[1]) / 2, y).numpy()
                    clean, weight = _unicon_select(jsd, train.labels, C), 1.0 - jsd
                else:  # the *other* head divides the data for this one (co-divide)
                    other = probs[1 - k].clamp_min(1e-12)
                    weight = _gmm_clean_prob(F.nll_loss(other.log(), y, reduction="none").numpy(),
                                             _seed(cfg, run.method, epoch, k))
                    clean = weight > 0.5
                    if not clean.any():
                        clean[np.argsort(-weight)[:max(1, n // 20)]] = True
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


# ----------------------------------------------------------------------------- cleanlab + FFT-CE


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, seed: int, folds: int = 5) -> np.ndarray:
    """5-fold out-of-fold probabilities of a logistic regression on (standardised) features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from threadpoolctl import threadpool_limits

    counts = np.bincount(labels)
    folds = int(max(2, min(folds, counts[counts > 0].min())))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed % 2**31)
    # one BLAS thread: on a busy 2-core machine, multi-threaded OpenBLAS spins and runs ~40x slower
    with threadpool_limits(1, user_api="blas"):
        return cross_val_predict(model, np.asarray(features, dtype=np.float64), labels, cv=cv,
                                 method="predict_proba")


def run_cleanlab_fft(run: _Run) -> dict:
    from cleanlab.filter import find_label_issues

    cfg, train, rt = run.cfg, run.train, run.rt
    t0 = time.time()
    probs = out_of_fold_probabilities(run.feats, train.labels, _seed(cfg, "cleanlab"))
    issues = find_label_issues(train.labels, probs, n_jobs=1)  # its fork Pool can deadlock beside torch threads
    kept = np.flatnonzero(~issues)
    run.tick("lp", t0)  # the out-of-fold linear probes and cleanlab's filter
    purity, detection = run.selection_stats(~issues)
    # FFT-CE on the kept samples, exactly as the fft-ce baseline runs (fresh head, same epoch)
    model = Classifier(run.loaded.extractor, train.num_classes)
    torch.manual_seed(_seed(cfg, "head"))
    model.head.reset_parameters()
    optimizer = make_optimizer(model.parameters(), run.fft_hp)
    criterion = make_loss("ce", len(train), train.num_classes, cfg.gce_q)
    to_device(model, rt)
    ddp_model, optimizer = rt.accelerator.prepare(model, optimizer)
    accs = []
    for r in range(1, (cfg.fft_epochs or 5) + 1):
        t0 = time.time()
        fft_epoch(ddp_model, optimizer, train, kept, train.labels, run.pre, rt, criterion, cfg.batch_size,
                  _seed(cfg, "fft", r), run.workers, cfg.freeze_bn_stats)
        run.tick("fft", t0)
        t0 = time.time()
        logits = compute_logits(model, run.test, run.pre, run.dir / f"test_logits_{r}.npy", rt, cfg.batch_size,
                                run.workers)
        accs.append(accuracy_from_logits(logits, run.test.labels))
        run.tick("eval", t0)
    t0 = time.time()
    final = np.asarray(compute_logits(model, train, run.pre, run.dir / "train_logits.npy", rt, cfg.batch_size,
                                      run.workers))
    run.tick("final", t0)
    return run.finish(accs, final, {"n_clean": int(len(kept)), "clean_purity": purity,
                                    "clean_per_round": [int(len(kept))], "purity_per_round": [purity],
                                    "detection_per_round": [detection]})


def run_extra(method: str, config: RunConfig, run_dir: str | Path) -> dict:
    """Run one extra baseline; `config` gives data, noise, model, epochs, seed, device
    (its `method` is ignored). Writes config.json and metrics.json into `run_dir`."""
    if method not in EXTRA_METHODS:
        raise ValueError(f"unknown extra method {method!r}; choose one of {', '.join(EXTRA_METHODS)}")
    run = _Run(method, config, Path(run_dir))
    if method == "cleanlab-fft":
        return run_cleanlab_fft(run)
    return run_two_head_lp(run, unicon=method == "unicon-lp")
