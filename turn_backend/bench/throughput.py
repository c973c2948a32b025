"""Feature-extraction throughput: the engine's pipeline against the bare forward pass."""

from __future__ import annotations

import shutil
import time

import numpy as np

from turn_backend.bench.grid import Plan, cell_config
from turn_backend.data.loaders import load_dataset


def measure_throughput(plan: Plan, log) -> dict:
    """Feature extraction (the engine's `extract_features`: loader, device-side preprocessing,
    forward, write to the cache) against the bare forward pass on batches already preprocessed
    and on the device, with the same mixed precision and memory layout; fills the feature
    cache the runs then share."""
    # torch and what imports it, on use: `turn bench --help` and the report stay light
    import torch

    from turn_backend.engine import Runtime, extract_features, to_device
    from turn_backend.features import feature_cache_path
    from turn_backend.models.core import Preprocess
    from turn_backend.models.registry import load_model
    from turn_backend.pipeline import preprocessed_batches

    cfg = cell_config(plan, "lp-ce", {}, plan.settings[0], 0)
    rt = Runtime(plan.device)
    bundle = load_dataset(cfg.dataset)
    loaded = load_model(plan.model)
    p = loaded.preprocess
    pre = Preprocess(plan.image_size, p.mean, p.std, p.interpolation)
    tmp = plan.out / "throughput"
    tmp.mkdir(parents=True, exist_ok=True)
    out: dict = {"device": str(rt.device), "image_size": plan.image_size, "batch_size": plan.batch_size}
    ext = to_device(loaded.extractor, rt, plan.image_size).eval()

    def sync() -> None:
        if rt.device.type == "cuda":
            torch.cuda.synchronize()

    # the first batches, preprocessed once and kept on the device
    n = min(len(bundle.train), 1024)
    t0 = time.time()
    batches = [x for x, _ in preprocessed_batches(bundle.train, pre, plan.batch_size, rt.device, np.arange(n))]
    sync()
    pipeline_s = time.time() - t0
    with torch.inference_mode():
        with rt.autocast():
            ext(batches[0])  # warm-up (allocations, kernel choice), shared by both measurements
        sync()
        t0 = time.time()
        for x in batches:
            with rt.autocast():
                ext(x)
        sync()
        forward_s = time.time() - t0
    del batches
    total, seconds = 0, 0.0
    for split, images in (("train", bundle.train), ("test", bundle.test)):
        path = tmp / f"{split}.npy"
        if path.exists():
            path.unlink()
        t0 = time.time()
        extract_features(ext, images, pre, path, rt, plan.batch_size, 0)
        seconds += time.time() - t0
        total += len(images)
        cache = feature_cache_path(images, loaded.name, cfg.checkpoint, cfg.pretrained, pre, split)
        if not cache.exists():
            cache.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), cache)
        else:
            path.unlink()
    out.update(features_images=total, features_seconds=seconds, features_images_per_s=total / seconds,
               bare_images=n, bare_forward_seconds=forward_s, bare_images_per_s=n / forward_s,
               pipeline_only_seconds=pipeline_s, pipeline_images_per_s=n / pipeline_s)
    out["ratio_bare_to_extract"] = out["bare_images_per_s"] / out["features_images_per_s"]
    out["extract_share_of_bare"] = out["features_images_per_s"] / out["bare_images_per_s"]
    log(f"throughput: features {out['features_images_per_s']:.0f} img/s with the data pipeline, "
        f"bare forward {out['bare_images_per_s']:.0f} img/s ({out['extract_share_of_bare']:.0%})")
    return out
