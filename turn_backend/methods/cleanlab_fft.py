"""cleanlab + FFT-CE, a baseline: cleanlab's `find_label_issues` on 5-fold out-of-fold
logistic-regression probabilities of the cached features, then fine-tuning with CE on the
samples it keeps, exactly as the fft-ce baseline fine-tunes (fresh head, same epoch, same
seeds). torch, scikit-learn and cleanlab are imported where used: the registry must load
without them."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from turn_backend.methods.fine_tune import DEFAULT_ROUNDS
from turn_backend.methods.registry import NO_RUN_FOLDER, Method, register_method
from turn_backend.runfolder import RunFolder


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


def run(config, run_dir: Path) -> dict:
    import torch
    from cleanlab.filter import find_label_issues

    from turn_backend.engine import accuracy_from_logits, compute_logits, fft_epoch, make_optimizer, to_device
    from turn_backend.losses import make_loss
    from turn_backend.models.core import Classifier
    from turn_backend.stages.context import stage_seed
    from turn_backend.stages.standalone import StandaloneRun

    run = StandaloneRun(config, run_dir)
    cfg, train, rt = run.cfg, run.train, run.rt
    t0 = time.time()
    probs = out_of_fold_probabilities(run.feats, train.labels, stage_seed(cfg, "cleanlab"))
    issues = find_label_issues(train.labels, probs, n_jobs=1)  # its fork Pool can deadlock beside torch threads
    kept = np.flatnonzero(~issues)
    run.tick("lp", t0)  # the out-of-fold linear probes and cleanlab's filter
    purity, detection = run.selection_stats(~issues)
    # FFT-CE on the kept samples, exactly as the fft-ce baseline runs (fresh head, same epoch)
    model = Classifier(run.loaded.extractor, train.num_classes)
    torch.manual_seed(stage_seed(cfg, "head"))
    model.head.reset_parameters()
    optimizer = make_optimizer(model.parameters(), run.fft_hp)
    criterion = make_loss("ce", len(train), train.num_classes, cfg.gce_q)
    to_device(model, rt, run.pre.image_size)
    ddp_model, optimizer = rt.accelerator.prepare(model, optimizer)
    accs = []
    for r in range(1, cfg.rounds + 1):
        t0 = time.time()
        fft_epoch(ddp_model, optimizer, train, kept, train.labels, run.pre, rt, criterion, cfg.batch_size,
                  stage_seed(cfg, "fft", r), run.workers, cfg.freeze_bn_stats)
        run.tick("fft", t0)
        t0 = time.time()
        logits = compute_logits(model, run.test, run.pre, run.dir / f"test_logits_{r}.npy", rt, cfg.batch_size,
                                run.workers)
        accs.append(accuracy_from_logits(logits, run.test.labels))
        run.tick("eval", t0)
    t0 = time.time()
    final = np.asarray(compute_logits(model, train, run.pre, run.dir / RunFolder.TRAIN_LOGITS, rt, cfg.batch_size,
                                      run.workers))
    run.tick("final", t0)
    return run.finish(accs, final, {"n_clean": int(len(kept)), "clean_purity": purity,
                                    "clean_per_round": [int(len(kept))], "purity_per_round": [purity],
                                    "detection_per_round": [detection]})


register_method(Method(
    name="cleanlab-fft",
    description="cleanlab find_label_issues on 5-fold LP probabilities, then FFT-CE on the kept samples",
    kind="fft", loss="ce", default_rounds=DEFAULT_ROUNDS, run_standalone=run, bench_only=NO_RUN_FOLDER,
))
