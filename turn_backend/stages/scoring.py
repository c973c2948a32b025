"""How a model sees the training set, for the rounds and the final stage: the fine-tuned
features and logits, and the detection signals on them (turn_backend.detect)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from turn_backend.detect import DetectionResult, detect_label_issues
from turn_backend.detect.signals import softmax
from turn_backend.engine import extract_features, head_logits
from turn_backend.models.core import Classifier
from turn_backend.stages.context import RunContext, stage_seed
from turn_backend.stages.given import reliability_for_given_features


def detect(ctx: RunContext, features, logits: np.ndarray, out_dir: Path, stage: str,
           gmm_clean: np.ndarray) -> DetectionResult:
    """Every detection signal and the combined clean probability on `features` of the
    training set and the model's `logits`, saved in `out_dir`; `gmm_clean` is the stage's own
    per-class GMM fit on those logits' losses, stored as the "gmm_lp" signal. Given predicted
    probabilities (stages/given.py; the logits are their log) also take the out-of-fold
    probe's place: they are out-of-sample already. Computed by the main process; the others
    read it back, so all select the same samples."""
    train = ctx.train
    t0 = time.time()
    if ctx.rt.is_main:
        ctx.status(stage=stage, stage_label="Scoring the labels (probes, neighbours, noise model)",
                   stage_done=0, stage_total=1)
        probs = softmax(logits)
        # on the pre-trained features the audit's neighbour graph is the one to vote with
        graph = ctx.folder.neighbour_graph() if features is ctx.feats else None
        result = detect_label_issues(features, train.labels, train.num_classes, model_probs=probs,
                                     neighbours=None if graph is None or len(graph[0]) != len(train) else graph[0],
                                     gmm_clean=gmm_clean, oof_probs=probs if ctx.config.pred_probs else None,
                                     annotator_probs=ctx.annotator_probs,
                                     device=str(ctx.rt.device),
                                     seed=stage_seed(ctx.config, "detect", stage))
        if ctx.config.features:
            result.reliability = reliability_for_given_features(result.reliability)
        ctx.folder.save_detection(out_dir, result)
        for note in result.notes:
            ctx.log("detect", f"{stage}: {note}")
        ctx.log("detect", f"{stage}: estimated noise rate {result.noise_rate:.1%}",
                seconds=round(time.time() - t0, 2))
    ctx.rt.barrier()
    ctx.add_time("detect", t0)
    return ctx.folder.load_detection(out_dir)


def tuned_features_and_logits(ctx: RunContext, model: Classifier, path: Path, stage: str,
                              label: str) -> tuple[np.ndarray, np.ndarray]:
    """The fine-tuned extractor's features of the training set (saved at `path`) and the
    model's logits computed from them: one forward pass gives both."""
    path.unlink(missing_ok=True)  # extract_features reuses a file it finds; this model is new
    feats = extract_features(model.extractor, ctx.train, ctx.pre, path, ctx.rt, ctx.config.batch_size,
                             ctx.workers, ctx.progress(stage, label), notify=ctx.notice(stage))
    head = {k: v.detach().float().cpu() for k, v in model.head.state_dict().items()}
    return feats, head_logits(head, feats)
