"""Feature-extraction throughput: the engine's pipeline against the bare forward pass."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

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


def measure_file_throughput(manifest, model: str, image_size: int, batch_size: int, device: str,
                            n_images: int, workers: list[int], repeats: int, log) -> dict:
    """Feature extraction from image files (the engine's `extract_features`: decode, resize in
    the loader, device-side normalisation, forward, write) with each loader worker count in
    `workers`, against the bare forward on the same images already preprocessed and on the
    device. The measurements alternate `repeats` times and each keeps its fastest, so that a
    machine whose load changes meanwhile treats them alike. Also the decode + resize cost per
    image in this process, the share of a forward pass the loader has to hide."""
    import tempfile

    import torch

    from turn_backend.engine import Runtime, extract_features, to_device
    from turn_backend.models.core import Preprocess
    from turn_backend.models.registry import load_model
    from turn_backend.pipeline import ImageTensorDataset, preprocessed_batches

    rt = Runtime(device)
    images = load_dataset({"kind": "manifest", "path": str(manifest)}).train
    images = images.subset(np.arange(min(n_images, len(images))))
    n = len(images)
    loaded = load_model(model)
    p = loaded.preprocess
    pre = Preprocess(image_size, p.mean, p.std, p.interpolation)
    ext = to_device(loaded.extractor, rt, image_size).eval()

    def sync() -> None:
        if rt.device.type == "cuda":
            torch.cuda.synchronize()

    dataset = ImageTensorDataset(images, pre, train=False)
    t0 = time.perf_counter()
    dataset.__getitems__(list(range(n)))
    decode_ms = (time.perf_counter() - t0) / n * 1000
    batches = [x for x, _ in preprocessed_batches(images, pre, batch_size, rt.device)]
    best = {"bare": float("inf"), **{w: float("inf") for w in workers}}
    with tempfile.TemporaryDirectory() as tmp:
        with torch.inference_mode(), rt.autocast():
            ext(batches[0])  # warm-up (allocations, kernel choice), shared by every measurement
        for _ in range(repeats):
            with torch.inference_mode():
                sync()
                t0 = time.perf_counter()
                for x in batches:
                    with rt.autocast():
                        ext(x)
                sync()
                best["bare"] = min(best["bare"], time.perf_counter() - t0)
            for w in workers:
                path = Path(tmp) / f"w{w}.npy"
                path.unlink(missing_ok=True)
                t0 = time.perf_counter()
                extract_features(ext, images, pre, path, rt, batch_size, w)
                best[w] = min(best[w], time.perf_counter() - t0)
    out = {"device": str(rt.device), "image_size": image_size, "batch_size": batch_size, "images": n,
           "torch_threads": torch.get_num_threads(), "repeats": repeats, "decode_ms_per_image": decode_ms,
           "bare_images_per_s": n / best["bare"], "bare_ms_per_image": best["bare"] / n * 1000,
           "workers": {str(w): {"images_per_s": n / best[w], "share_of_bare": best["bare"] / best[w]}
                       for w in workers}}
    for w in workers:
        log(f"throughput from JPEG files, {w} loader worker(s): {n / best[w]:.1f} img/s = "
            f"{best['bare'] / best[w]:.0%} of the bare forward ({n / best['bare']:.1f} img/s)")
    log(f"decode + resize {decode_ms:.2f} ms per image in one process; forward {out['bare_ms_per_image']:.1f} ms")
    return out


FILE_SECTION = "## Throughput from JPEG files"


def file_throughput_section(r: dict, model: str, machine: dict, command: str, when: str) -> str:
    """The docs section of `turn bench --throughput`."""
    gpu = f" ({machine['gpu']})" if machine.get("gpu") and r["device"].startswith("cuda") else ""
    load = ", ".join(f"{x:.1f}" for x in machine.get("load_average", []))
    L = [FILE_SECTION, "",
         f"`{model}` features at {r['image_size']} px of {r['images']} JPEGs of 256 px (colour, "
         f"`turn_backend/bench/photo_folder.py`), batch {r['batch_size']}, on `{r['device']}`{gpu}: "
         f"{machine['cpu']}, {machine['cores']} cores, {r['torch_threads']} torch thread(s); load average "
         f"{load} at the start (other processes were running). Each measurement is the fastest of "
         f"{r['repeats']}, taken in turn. Command: `{command}`; {when}.", "",
         "| loader workers | images/s | share of the bare forward |", "|---|---|---|"]
    for w, v in r["workers"].items():
        L.append(f"| {w} | {v['images_per_s']:.1f} | **{v['share_of_bare']:.0%}** |")
    L += ["", f"- Bare forward (batches already decoded, resized and normalised, on the device): "
          f"{r['bare_images_per_s']:.1f} images/s, {r['bare_ms_per_image']:.1f} ms an image.",
          f"- Decoding and resizing in one process: {r['decode_ms_per_image']:.2f} ms an image, the cost the "
          "loader adds to each forward when it runs in the main process (0 workers).",
          "- Loader workers default to none on a CPU (`pipeline.default_workers`): there the forward already uses "
          "every core, and a worker takes cores from it; beside a GPU, up to 8 decode in parallel.", ""]
    return "\n".join(L)


def main(args) -> int:
    """`turn bench --throughput`: a folder of JPEGs, then `measure_file_throughput` on it."""
    import datetime as dt
    import os

    import torch

    from turn_backend.bench.detection import replace_section
    from turn_backend.bench.machine import choose_threads, machine_info
    from turn_backend.bench.photo_folder import write_photo_folder

    out = Path(args.out or "runs/bench-throughput")
    os.environ.setdefault("TURN_CACHE_DIR", str(out / "cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    threads, _ = choose_threads(getattr(args, "threads", None))
    torch.set_num_threads(threads)
    machine = machine_info(args.device)

    def log(msg: str) -> None:
        if not args.quiet:
            print(f"[{dt.datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)

    n = args.n_train or 512
    manifest = write_photo_folder(out / "photos", -(-n // 10) * 10, 10, 256)  # the demo: 10 classes alike
    workers = sorted({0, 1, 2, min(8, (os.cpu_count() or 1) - 1)})
    result = measure_file_throughput(manifest, args.model, args.image_size or 224, args.batch_size, args.device, n,
                                     workers, 2, log)
    (out / "throughput.json").write_text(json.dumps({"machine": machine, **result}, indent=2))
    command = "turn bench --throughput" + (f" --n-train {n}" if args.n_train else "")
    when = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    section = file_throughput_section(result, args.model, machine, command, when)
    (out / "throughput.md").write_text(section)
    if not args.no_docs:
        docs = Path(args.docs) if args.docs else Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"
        replace_section(docs, FILE_SECTION + "\n", section)
        log(f"wrote {docs}")
    return 0
