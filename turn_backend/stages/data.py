"""Stage "data": the dataset (with the run's noise and any reviewed labels), the model, its
preprocessing and the hyperparameters of both training stages."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from turn_backend.data.core import DatasetBundle
from turn_backend.io import atomic_write_json
from turn_backend.models.core import HParams, LoadedModel, Preprocess, StageHParams
from turn_backend.models.hparams import PAPER_HPARAMS, family_of
from turn_backend.models.registry import load_model
from turn_backend.pipeline import default_workers
from turn_backend.reviewed import apply_reviewed_labels
from turn_backend.rundata import load_run_data
from turn_backend.stages.context import RunContext
from turn_backend.stages.given import store_pred_probs, without_unfeatured_test

if TYPE_CHECKING:  # a type only: config imports the methods registry, whose methods run these stages
    from turn_backend.config import RunConfig


def resolve_hparams(config: RunConfig, hparams: HParams) -> tuple[StageHParams, StageHParams]:
    """The model family's settings (`LoadedModel.hparams`), overridden by anything the config sets."""
    lp, fft = hparams.lp, hparams.fft
    lp = StageHParams(config.lp_optimizer or lp.optimizer, config.lp_lr or lp.lr,
                      lp.weight_decay if config.lp_weight_decay is None else config.lp_weight_decay)
    fft = StageHParams(config.fft_optimizer or fft.optimizer, config.fft_lr or fft.lr,
                       fft.weight_decay if config.fft_weight_decay is None else config.fft_weight_decay)
    return lp, fft


def resolve_preprocess(config: RunConfig, loaded: LoadedModel) -> Preprocess:
    """The model's preprocessing, at the config's image size where it sets one."""
    pre = loaded.preprocess
    return Preprocess(config.image_size, pre.mean, pre.std, pre.interpolation) if config.image_size else pre


def load_data(ctx: RunContext) -> None:
    cfg, folder = ctx.config, ctx.folder
    t0 = time.time()
    ctx.status(stage="data", stage_label="Loading the dataset")
    bundle = load_run_data(cfg)
    # "retrain with my decisions": reviewed labels applied, removed samples left out
    ctx.reviewed = apply_reviewed_labels(bundle, folder.path)
    if ctx.reviewed is not None:
        bundle = ctx.reviewed.bundle
        ctx.held_clean = ctx.reviewed.held_clean
    ctx.bundle = bundle = without_unfeatured_test(ctx, bundle)
    store_pred_probs(ctx)
    annotated = bundle.info.get("annotators")  # several annotators per image (turn_backend.data.annotated)
    if annotated is not None:
        if ctx.reviewed is not None:  # the samples trained on: removed ones left out
            annotated = annotated.subset(ctx.reviewed.kept)
        if ctx.rt.is_main and not folder.has_annotators():
            folder.save_annotators(annotated)
        # their posterior joins detection (turn_backend.detect.combine)
        ctx.annotator_probs = annotated.consensus.probs
    if ctx.rt.is_main and not folder.has_samples():
        _write_samples(ctx, bundle)
    if bundle.skipped:
        ctx.log("data", f"skipped {len(bundle.skipped)} unreadable item(s)",
                skipped=[s.__dict__ for s in bundle.skipped[:50]], summary=True, n_skipped=len(bundle.skipped))
    if cfg.features:  # given features: no image model to load; the probe takes its family's settings
        ctx.lp_hp, ctx.fft_hp = resolve_hparams(cfg, PAPER_HPARAMS[family_of(cfg.model)])
    else:
        ctx.loaded = load_model(cfg.model, cfg.checkpoint, pretrained=cfg.pretrained)
        ctx.pre = resolve_preprocess(cfg, ctx.loaded)
        ctx.lp_hp, ctx.fft_hp = resolve_hparams(cfg, ctx.loaded.hparams)
    ctx.workers = default_workers(bundle.train, ctx.rt.device) if cfg.num_workers is None else cfg.num_workers
    ctx.add_time("data", t0)


def _write_samples(ctx: RunContext, bundle: DatasetBundle) -> None:
    """samples.parquet (every sample's id, source, split, given and true label) and classes.json."""
    frames = []
    for split, s in (("train", bundle.train), ("test", bundle.test)):
        if s is None:
            continue
        frames.append(pd.DataFrame({
            "sample_id": s.ids,
            "source": [s.source(i) for i in range(len(s))],
            "split": split,
            "given_label": s.labels,
            "true_label": s.true_labels if s.true_labels is not None else np.full(len(s), -1),
        }))
    df = pd.concat(frames, ignore_index=True)
    tmp = ctx.folder.samples_path.with_name(f".{ctx.folder.samples_path.stem}.tmp.parquet")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, ctx.folder.samples_path)
    atomic_write_json(ctx.folder.classes_path, bundle.class_names)
