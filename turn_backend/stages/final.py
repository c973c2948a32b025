"""Stage "final": the final model's losses and clean probabilities on the training set, what
Threshold, Review and Export read; and every detection signal beside them (Review shows
them for every run). Runs flag by their combination, except those that select by TURN's
GMM (`RunConfig.clean_source`)."""

from __future__ import annotations

import time

import numpy as np
import torch

from turn_backend.cleansing import fit_clean_probability
from turn_backend.engine import head_logits
from turn_backend.io import atomic_save_npy, atomic_write_json
from turn_backend.losses import per_sample_ce
from turn_backend.run_features import ensure_search_matrix
from turn_backend.runfolder import RunFolder
from turn_backend.stages.context import RunContext, stage_seed
from turn_backend.stages.given import given_logits
from turn_backend.stages.scoring import detect, tuned_features_and_logits


def score_final_model(ctx: RunContext) -> None:
    folder, cfg, train = ctx.folder, ctx.config, ctx.train
    if ctx.stage_done("final"):
        return
    t0 = time.time()
    d = folder.final_dir
    if ctx.model is None:
        logits = (given_logits(ctx) if cfg.pred_probs else head_logits(ctx.head, ctx.feats)).astype(np.float32)
        if ctx.rt.is_main:
            d.mkdir(parents=True, exist_ok=True)
            atomic_save_npy(d / RunFolder.LOGITS, logits)
        final_feats = ctx.feats
    else:
        # the tuned features of the training set (kept: detection, maps and More like this read them)
        final_feats, logits = tuned_features_and_logits(ctx, ctx.model, d / RunFolder.FEATURES, "final",
                                                        "Scoring the training set")
        if ctx.rt.is_main:
            atomic_save_npy(d / RunFolder.LOGITS, logits.astype(np.float32))
    losses = per_sample_ce(torch.from_numpy(np.asarray(logits, dtype=np.float64)),
                           torch.from_numpy(train.labels)).numpy()
    fit = fit_clean_probability(losses, train.labels, train.num_classes, seed=stage_seed(cfg, "gmm", "final"))
    # flags from the fine-tuned model's probabilities, even where TURN+ predicts with its ensemble
    # (stages/choice.py): with the ensemble's (whose probe saw the cleaned labels of these very
    # samples) final F1 fell 82.7 -> 81.6 at sym20 and was unchanged at asym40 (1,000 images, 3 seeds)
    detection = detect(ctx, final_feats, logits, d, "final", fit.clean_prob)
    source = cfg.clean_source
    clean_prob = fit.clean_prob if source == "GMM" else detection.clean_prob.astype(np.float64)
    if ctx.held_clean is not None:  # decisions a person made stay made: never flagged again
        clean_prob = np.where(ctx.held_clean, 1.0, clean_prob)
    if ctx.rt.is_main:
        atomic_save_npy(d / RunFolder.LOSSES, losses.astype(np.float32))
        atomic_save_npy(d / RunFolder.CLEAN_PROB, np.asarray(clean_prob, dtype=np.float32))
        atomic_write_json(d / RunFolder.GMM, {"fits": fit.fits_as_dicts(), "notes": fit.notes,
                                           "clean_prob_source": source})
        ensure_search_matrix(folder.path, final_feats)  # a large run's "More like this" index (None: small)
        folder.mark_completed("final")
    ctx.add_time("final", t0)
    ctx.rt.barrier()
