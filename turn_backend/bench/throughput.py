"""Feature-extraction throughput: the engine's pipeline against the bare forward pass."""

from __future__ import annotations

import shutil
import time

import numpy as np

from turn_backend.bench.grid import Plan, cell_config


def measure_throughput(plan: Plan, log) -> dict:
    """Feature extraction (the engine's function, data pipeline included) vs the bare forward
    pass on the same preprocessed batches; fills the feature cache the runs then share."""
    import torch

    from turn_backend.data.loaders import load_dataset
    from turn_backend.engine import Runtime, extract_features
    from turn_backend.models.core import Preprocess
    from turn_backend.models.registry import load_model
    from turn_backend.features import feature_cache_path
    from turn_backend.pipeline import ImageTensorDataset, make_loader

    cfg = cell_config(plan, "lp-ce", {}, plan.settings[0], 0)
    rt = Runtime(plan.device)
    bundle = load_dataset(cfg.dataset)
    loaded = load_model(plan.model)
    p = loaded.preprocess
    pre = Preprocess(plan.image_size, p.mean, p.std, p.interpolation)
    tmp = plan.out / "throughput"
    tmp.mkdir(parents=True, exist_ok=True)
    out: dict = {"device": str(rt.device), "image_size": plan.image_size}
    total, seconds = 0, 0.0
    for split, images in (("train", bundle.train), ("test", bundle.test)):
        path = tmp / f"{split}.npy"
        if path.exists():
            path.unlink()
        t0 = time.time()
        extract_features(loaded.extractor, images, pre, path, rt, plan.batch_size, 0)
        seconds += time.time() - t0
        total += len(images)
        cache = feature_cache_path(images, loaded.name, cfg.checkpoint, cfg.pretrained, pre, split)
        if not cache.exists():
            cache.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), cache)
        else:
            path.unlink()
    out["features_images"] = total
    out["features_seconds"] = seconds
    out["features_images_per_s"] = total / seconds
    # the same first batches, preprocessed once, then the forward pass alone
    n = min(len(bundle.train), 1024)
    loader = make_loader(ImageTensorDataset(bundle.train, pre, train=False, index=np.arange(n)), plan.batch_size,
                         False, 0, 0)
    t0 = time.time()
    batches = [x for x, _, _ in loader]
    pipeline_s = time.time() - t0
    ext = loaded.extractor.to(rt.device).eval()
    with torch.inference_mode():
        ext(batches[0][:8].to(rt.device))  # warm-up
        if rt.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.time()
        for x in batches:
            ext(x.to(rt.device))
        if rt.device.type == "cuda":
            torch.cuda.synchronize()
        forward_s = time.time() - t0
    out.update(bare_images=n, bare_forward_seconds=forward_s, bare_images_per_s=n / forward_s,
               pipeline_only_seconds=pipeline_s, pipeline_images_per_s=n / pipeline_s,
               ratio_bare_to_extract=(n / forward_s) / out["features_images_per_s"])
    log(f"throughput: features {out['features_images_per_s']:.0f} img/s with the data pipeline, "
        f"bare forward {out['bare_images_per_s']:.0f} img/s")
    return out
