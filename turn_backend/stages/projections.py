"""Stage "projections": 2-D maps (t-SNE, UMAP) of a class-limited subset's features before
and after tuning, what the Embeddings page draws."""

from __future__ import annotations

import time

import numpy as np
import torch

from turn_backend.data.core import ImageSet
from turn_backend.features import before_map_files, copy_files, shared_maps_dir
from turn_backend.models.core import Classifier
from turn_backend.pipeline import preprocessed_batches
from turn_backend.projection import compute_projections
from turn_backend.stages.context import RunContext, stage_seed


def project(ctx: RunContext) -> None:
    folder, cfg, model = ctx.folder, ctx.config, ctx.model
    if not cfg.projection_methods or ctx.stage_done("projections"):
        return
    use_test = cfg.projection_split == "test" and ctx.test is not None
    images, split = (ctx.test, "test") if use_test else (ctx.train, "train")
    t0 = time.time()
    if ctx.rt.is_main:
        rng = np.random.default_rng(stage_seed(cfg, "projection"))
        classes = np.arange(images.num_classes)
        if len(classes) > cfg.projection_classes:
            classes = np.sort(rng.choice(classes, cfg.projection_classes, replace=False))
        pool = np.flatnonzero(np.isin(images.labels, classes))
        subset = np.sort(rng.choice(pool, min(len(pool), cfg.projection_max_samples), replace=False))
        # "before": the pre-trained features, already cached by the features stage
        # the whole split's features, memory-mapped: the maps read the subset's rows in chunks
        # (the training features are the run's own map: a second map of the same file would
        # count its pages twice in the resident set)
        features = {"before": ctx.feats if split == "train" and ctx.feats is not None
                    else np.load(ctx.feature_path(images, split), mmap_mode="r")}
        if model is not None:  # a linear probe leaves the features as they were
            # the final stage may have stored the tuned features of the whole training set
            tuned = folder.final_dir / folder.FEATURES
            if split == "train" and tuned.exists():
                features["after"] = np.load(tuned, mmap_mode="r")
            else:
                features["after"] = _model_features(ctx, model, images.subset(subset))
        # the "before" maps are the same for every run on these features (turn demo's four)
        # (given features live in the run folder: no cache key to share their maps by)
        shared = None if cfg.features else shared_maps_dir(ctx.feature_path(images, split), subset, cfg.seed)
        before = before_map_files(split, cfg.projection_methods)
        reused = shared is not None and copy_files(before, shared, folder.projections_dir)
        if reused:
            del features["before"]
        compute_projections(folder.projections_dir, split, subset, features, cfg.projection_methods,
                            seed=cfg.seed, progress=ctx.progress("projection", "Embedding projections"))
        if shared is not None and not reused:
            copy_files(before, folder.projections_dir, shared)
        folder.mark_completed("projections")
        ctx.log("projection", f"projections of {len(subset)} {split} samples ready"
                + (" (pre-trained maps from the cache)" if reused else ""), seconds=round(time.time() - t0, 2),
                maps_from_cache=reused, summary=True, n_samples=len(subset), split=split)
    ctx.add_time("projection", t0)
    ctx.rt.barrier()


def _model_features(ctx: RunContext, model: Classifier, images: ImageSet) -> np.ndarray:
    out = []
    model.eval()
    with torch.inference_mode():
        for x, _ in preprocessed_batches(images, ctx.pre, ctx.config.batch_size, ctx.rt.device):
            with ctx.rt.autocast():
                out.append(model.extractor(x).float().cpu().numpy())
    return np.concatenate(out)
