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
    and on the device, in the pieces the engine forwards (`engine.inference_chunk`), with the
    same mixed precision and memory layout; fills the feature cache the runs then share."""
    # torch and what imports it, on use: `turn bench --help` and the report stay light
    import torch

    from turn_backend.engine import Runtime, extract_features, inference_chunk, to_device
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
    piece = inference_chunk(plan.batch_size, plan.image_size, rt.device)  # the engine's forward takes these
    with torch.inference_mode():
        with rt.autocast():
            ext(batches[0][:piece])  # warm-up (allocations, kernel choice), shared by both measurements
        sync()
        t0 = time.time()
        for x in batches:
            with rt.autocast():
                for i in range(0, len(x), piece):
                    ext(x[i:i + piece])
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
    """Feature extraction from image files against the bare forward on the same images, in two
    ways that hold up on a machine whose load changes while they run:

    - the cost split: batch after batch, the loader's work in this process (decode + resize,
      what 0 workers add), the device-side preprocessing and the forward, each timed right
      after the other, so that they see the same load;
    - whole passes: the engine's `extract_features` (loader, preprocessing, forward, write)
      with each worker count in `workers`, each beside a bare forward pass over the same
      batches already preprocessed and on the device (before it, then after it, in turn);
      the median of `repeats` ratios, and of the share of each pass its forward calls took
      (busy: the same pass, so the same load; but a forward that workers slow down counts).
    """
    import tempfile

    import torch

    from turn_backend.engine import Runtime, extract_features, inference_chunk, to_device
    from turn_backend.models.core import Preprocess
    from turn_backend.models.registry import load_model
    from turn_backend.pipeline import ImageTensorDataset, batch_preprocess

    rt = Runtime(device)
    images = load_dataset({"kind": "manifest", "path": str(manifest)}).train
    images = images.subset(np.arange(min(n_images, len(images))))
    n = len(images)
    loaded = load_model(model)
    p = loaded.preprocess
    pre = Preprocess(image_size, p.mean, p.std, p.interpolation)
    ext = to_device(loaded.extractor, rt, image_size).eval()
    dataset, prep = ImageTensorDataset(images, pre, train=False), batch_preprocess(images, pre, False)

    def timed(fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        if rt.device.type == "cuda":
            torch.cuda.synchronize()
        return out, time.perf_counter() - t0

    piece = inference_chunk(batch_size, image_size, rt.device)  # the engine's forward takes these

    def forward(x):
        with rt.autocast():
            return [ext(x[i:i + piece]) for i in range(0, len(x), piece)]

    spent = {"load": 0.0, "preprocess": 0.0, "forward": 0.0}
    batches = []
    with torch.inference_mode():
        forward(prep(dataset.__getitems__(list(range(min(n, batch_size))))[0].to(rt.device)))  # warm-up
        for start in range(0, n, batch_size):
            (x, _, _), t_load = timed(dataset.__getitems__, list(range(start, min(n, start + batch_size))))
            x, t_prep = timed(lambda b: prep(b.to(rt.device)), x)
            _, t_fwd = timed(forward, x)
            spent["load"] += t_load
            spent["preprocess"] += t_prep
            spent["forward"] += t_fwd
            batches.append(x)

    def bare_pass() -> float:
        with torch.inference_mode():
            return sum(timed(forward, x)[1] for x in batches)

    class TimedExtractor(torch.nn.Module):
        """The extractor, adding the seconds its forward takes to `busy`."""

        def __init__(self) -> None:
            super().__init__()
            self.inner, self.feature_dim, self.busy = ext, ext.feature_dim, 0.0

        def forward(self, x):
            y, seconds = timed(self.inner, x)
            self.busy += seconds
            return y

    timed_ext = TimedExtractor()
    ratios: dict[int, list[float]] = {w: [] for w in workers}
    busy: dict[int, list[float]] = {w: [] for w in workers}
    rates: dict[int, list[float]] = {w: [] for w in workers}
    bare_rates = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(repeats):
            for w in workers:
                path = Path(tmp) / f"w{w}.npy"
                path.unlink(missing_ok=True)
                timed_ext.busy = 0.0
                # alternate which of the two goes first, so that a load that rises or falls
                # over the measurement favours neither
                bare = bare_pass() if k % 2 == 0 else None
                _, seconds = timed(extract_features, timed_ext, images, pre, path, rt, batch_size, w)
                bare = bare if bare is not None else bare_pass()
                ratios[w].append(bare / seconds)
                busy[w].append(timed_ext.busy / seconds)
                rates[w].append(n / seconds)
                bare_rates.append(n / bare)
    ms = {k: v / n * 1000 for k, v in spent.items()}
    out = {"device": str(rt.device), "image_size": image_size, "batch_size": batch_size, "images": n,
           "torch_threads": torch.get_num_threads(), "repeats": repeats,
           "load_ms_per_image": ms["load"], "preprocess_ms_per_image": ms["preprocess"],
           "forward_ms_per_image": ms["forward"],
           "zero_worker_bound": ms["forward"] / sum(ms.values()),
           "bare_images_per_s": float(np.median(bare_rates)),
           "workers": {str(w): {"images_per_s": float(np.median(rates[w])),
                                "share_of_bare": float(np.median(ratios[w])),
                                "share_range": [float(min(ratios[w])), float(max(ratios[w]))],
                                "forward_busy": float(np.median(busy[w]))} for w in workers}}
    log(f"per image, timed batch after batch: decode + resize {ms['load']:.2f} ms, preprocessing "
        f"{ms['preprocess']:.2f} ms, forward {ms['forward']:.1f} ms: 0 workers can reach "
        f"{out['zero_worker_bound']:.0%} of the bare forward")
    for w in workers:
        r = out["workers"][str(w)]
        log(f"features from JPEG files, {w} loader worker(s): {r['images_per_s']:.1f} img/s = "
            f"{r['share_of_bare']:.0%} of the bare forward (median of {repeats} pairs, "
            f"{r['share_range'][0]:.0%}-{r['share_range'][1]:.0%}); the forward ran {r['forward_busy']:.0%} "
            "of the pass")
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
         f"{load} at the start (other processes were running). Each figure is the median of "
         f"{r['repeats']} passes, each timed beside a bare forward pass (before it, then after it, in turn). "
         f"Command: `{command}`; {when}.", "",
         "| loader workers | images/s | against the bare forward: median (range) | forward's share of the pass |",
         "|---|---|---|---|"]
    for w, v in r["workers"].items():
        lo, hi = v["share_range"]
        L.append(f"| {w} | {v['images_per_s']:.1f} | **{v['share_of_bare']:.0%}** ({lo:.0%}–{hi:.0%}) | "
                 f"{v['forward_busy']:.0%} |")
    L += ["", f"- Per image, timed batch after batch in one process: decoding and resizing the JPEG "
          f"{r['load_ms_per_image']:.2f} ms, preprocessing on the device {r['preprocess_ms_per_image']:.2f} ms, the "
          f"forward {r['forward_ms_per_image']:.1f} ms. With 0 workers the loader's work adds to the forward's, so "
          f"feature extraction can reach at most **{r['zero_worker_bound']:.0%} of the bare forward** here.",
          "- Whole passes are timed seconds apart; where other processes come and go, their ratios spread (the "
          "range column), while the cost split, timed batch after batch, sees the same load in each part.",
          "- Loader workers default to none on a CPU (`pipeline.default_workers`): there the forward already uses "
          "every core, a worker takes cores from it, and it can win back at most the loader's share above; beside a "
          "GPU, up to 8 decode in parallel.", ""]
    return "\n".join(L)


def main(args) -> int:
    """`turn bench --throughput`: a folder of JPEGs, then `measure_file_throughput` on it."""
    import datetime as dt
    import os

    import torch

    from turn_backend.bench.detection import replace_section
    from turn_backend.bench.machine import choose_threads, machine_info, progress_log
    from turn_backend.bench.photo_folder import write_photo_folder

    out = Path(args.out or "runs/bench-throughput")
    os.environ.setdefault("TURN_CACHE_DIR", str(out / "cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    threads, _ = choose_threads(getattr(args, "threads", None))
    torch.set_num_threads(threads)
    machine = machine_info(args.device)

    log = progress_log(args.quiet)

    n = args.n_train or 512
    manifest = write_photo_folder(out / "photos", -(-n // 10) * 10, 10, 256)  # the demo: 10 classes alike
    workers = sorted({0, 1, 2, min(8, (os.cpu_count() or 1) - 1)})
    result = measure_file_throughput(manifest, args.model, args.image_size or 224, args.batch_size, args.device, n,
                                     workers, 3, log)
    (out / "throughput.json").write_text(json.dumps({"machine": machine, **result}, indent=2))
    command = "turn bench --throughput" + (f" --n-train {n}" if args.n_train else "") + (
        f" --threads {args.threads}" if getattr(args, "threads", None) else "")
    when = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    section = file_throughput_section(result, args.model, machine, command, when)
    (out / "throughput.md").write_text(section)
    if not args.no_docs:
        docs = Path(args.docs) if args.docs else Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"
        replace_section(docs, FILE_SECTION + "\n", section)
        log(f"wrote {docs}")
    return 0
