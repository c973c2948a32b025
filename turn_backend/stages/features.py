"""Stage "features": the frozen pre-trained extractor's features of both splits, from the
shared cache where any run on the same images, model and preprocessing made them."""

from __future__ import annotations

import time

import numpy as np

from turn_backend.engine import extract_features
from turn_backend.stages.context import RunContext
from turn_backend.stages.given import read_features


def extract(ctx: RunContext) -> None:
    if ctx.config.features:
        return read_features(ctx)
    train, test = ctx.train, ctx.test
    if ctx.reviewed is not None:  # the reduced set's features are a slice of the full set's
        ctx.reviewed.reuse_cached_features(ctx.feature_path)
    t0 = time.time()
    # every run and method on the same images and model shares the cache (turn demo's four do)
    from_cache = all(ctx.feature_path(s, split).exists() for s, split in ((train, "train"), (test, "test"))
                     if s is not None)
    feats = _extract_split(ctx, train, "train")
    test_feats = None if test is None else _extract_split(ctx, test, "test")
    bad = {split: (images, nonfinite_rows(z))
           for images, split, z in ((train, "train", feats), (test, "test", test_feats)) if z is not None}
    bad = {split: v for split, v in bad.items() if v[1]}
    if bad:
        if ctx.rt.is_main:  # never reuse them from the cache
            for split, (images, _) in bad.items():
                ctx.feature_path(images, split).unlink(missing_ok=True)
        counts = " and ".join(f"{n} {split}" for split, (_, n) in bad.items())
        raise ValueError(f"the model produced NaN or infinite features for {counts} image(s); "
                         "check the model, its weights and its preprocessing (nothing was cached)")
    ctx.add_time("features", t0)
    if "features" not in ctx.folder.completed():
        ctx.log("features", f"features ready: {feats.shape[0]} train x {feats.shape[1]} dims"
                + (" (from the cache)" if from_cache else ""), seconds=round(time.time() - t0, 2),
                from_cache=from_cache, summary=True, n_train=int(feats.shape[0]), n_dims=int(feats.shape[1]))
        if ctx.rt.is_main:
            ctx.folder.mark_completed("features")
    ctx.feats, ctx.test_feats = feats, test_feats


def nonfinite_rows(features: np.ndarray, chunk: int = 65_536) -> int:
    """Rows holding a NaN or an infinity, counted chunk by chunk: a million rows' mask at once
    would cost 1.3 GB."""
    return sum(int((~np.isfinite(np.asarray(features[start:start + chunk]))).any(axis=1).sum())
               for start in range(0, len(features), chunk))


def _extract_split(ctx: RunContext, images, split: str):
    return extract_features(ctx.loaded.extractor, images, ctx.pre, ctx.feature_path(images, split), ctx.rt,
                            ctx.config.batch_size, ctx.workers,
                            ctx.progress("features", f"Extracting {split} features"), notify=ctx.notice("features"))
