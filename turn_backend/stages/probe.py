"""Stage "probe": a linear head trained on the cached pre-trained features (TURN's step 1,
and the linear-probing baselines), with the method's probe loss."""

from __future__ import annotations

import os
import time

import torch

from turn_backend.engine import train_linear_probe
from turn_backend.io import atomic_write_json
from turn_backend.stages.context import RunContext, stage_seed


def linear_probe(ctx: RunContext) -> None:
    cfg, folder, train, test = ctx.config, ctx.folder, ctx.train, ctx.test
    if cfg.pred_probs:  # the given probabilities are the classifier (stages/given.py)
        return
    head_path = folder.lp_dir / folder.LP_HEAD
    if ctx.stage_done("lp") and head_path.exists():
        ctx.head = torch.load(head_path, weights_only=True)
        return
    t0 = time.time()
    report = ctx.progress("lp", "Linear probing")
    report(0, cfg.lp_epochs)

    def on_epoch(row: dict) -> None:
        report(row["epoch"], cfg.lp_epochs)
        ctx.log("lp", f"LP epoch {row['epoch']}/{cfg.lp_epochs}", **row)

    head, history = train_linear_probe(
        ctx.feats, train.labels, train.num_classes, ctx.lp_hp, ctx.method.probe_loss, cfg.lp_epochs, cfg.batch_size,
        stage_seed(cfg, "lp"), ctx.test_feats, None if test is None else test.labels, on_epoch, q=cfg.gce_q,
    )
    if ctx.rt.is_main:
        head_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = head_path.with_suffix(".tmp")
        torch.save(head, tmp)
        os.replace(tmp, head_path)
        atomic_write_json(folder.lp_dir / folder.LP_HISTORY, history)
        folder.mark_completed("lp")
    ctx.add_time("lp", t0)
    ctx.head = head
