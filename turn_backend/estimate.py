"""A run's time and memory, known before they are spent.

`probe(config)` loads the run's data and model in a fresh process and times the real code
paths on a few of the run's own images: passes of one and of three batches of frozen feature
extraction (`engine.extract_features`) and fine-tuning steps of two sizes (`engine.fft_epoch`:
forward, backward, optimiser) at the run's image size, whose differences give the rates without
each pass's fixed cost; one linear-probe epoch on features of the run's size;
and the peak memory of each (the process's resident set on a CPU, sampled with psutil;
`torch.cuda.max_memory_allocated` on a GPU). `extrapolate(config, measurement)` turns that
into seconds per step of the run's plan (`plan.plan_stages`) and a peak memory; `summary_line`
says it in one line. A fresh process measures what the worker will use (the CLI process
would otherwise keep the probe's memory while the run trains), and its cost is reported.

`progress(folder)` reads a run's saved estimate beside the seconds each step actually took
and gives the whole run's time left: the remaining steps' estimates, scaled by how the
finished steps compared with theirs.

Torch is imported inside the functions that measure: the app and `turn status` read
estimates without loading it.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from turn_backend.config import RunConfig
from turn_backend.plan import plan_stages
from turn_backend.projection import MAP_FIT_POINTS
from turn_backend.runfolder import ACTIVE_STATES, RunFolder

# The feature-space work (no images read), as (fixed seconds, seconds per training sample),
# measured on 2 CPU cores on 2026-12-05 with random 1,280-d features of 600 and 2,400 samples:
# detect_label_issues 0.4 s at 2,400 (once warm), a t-SNE map 1.3 s at 600 and 4.6 s at 2,400.
# The audit (content hashes, neighbours on the features) took 0.03 s on 400 JPEGs: a small guess.
DETECT_SECONDS = (1.0, 2e-4)
TSNE_SECONDS = (0.5, 1.7e-3)  # per map; runs that fine-tune draw two (before and after)
# per point placed on a map beyond its fitted sample (PCA, neighbour search, median): 1M
# images' map took 172 s against about 115 s for its 100,000-point fit (docs/benchmarks.md)
PLACE_SECONDS = 6e-5
AUDIT_SECONDS = (0.1, 2e-4)
# the share of the training set a fine-tuning round trains on: TURN+ keeps every clean
# candidate and adds the relabelled ones (about all of it); TURN as published draws
# min_c |D_c| per class (60% measured on the demo at 40% noise); plain fine-tuning all
CLEAN_SHARE = {"mean": 1.0, "min": 0.6, None: 1.0}
# the probe's training batch at 224 px, scaled by pixels for other sizes (about 2 s of steps on 2 cores)
PROBE_BATCH_AT_224 = 16
# the default run picks the scan on a CPU when its fine-tuning would take longer than this
LONG_FINE_TUNING_SECONDS = 5 * 60
# an automatic batch keeps the estimated peak under this share of the available memory
MEMORY_SHARE = 0.5
# time left scales the remaining estimate by (actual + this) / (estimate + this) of the
# finished steps: seconds-long steps (data, cached features) move it little, minutes do
RATIO_PRIOR_SECONDS = 30.0
SCAN_METHOD = "lp-gce"  # what "the scan" is: features, the LP-GCE probe, detection, audit, maps


@dataclass
class Measurement:
    """What the probe measured on this machine, on this run's data and model."""

    device: str  # "cpu" or "cuda..."
    image_size: int
    n_train: int
    n_test: int
    num_classes: int
    feature_dim: int
    features_cached: bool  # both splits' features are in the shared cache already
    data_seconds: float  # loading the dataset and the model
    eval_rate: float  # images per second, frozen forward (reading and decoding included)
    train_rate: float  # images per second, fine-tuning steps (augmentation and optimiser included)
    lp_seconds_per_sample: float  # one linear-probe epoch, per training sample
    base_memory: float  # bytes: the process with data and model loaded, before any batch
    train_memory_per_sample: float  # bytes more per sample of a fine-tuning batch
    eval_memory_per_sample: float  # bytes more per sample of an inference batch
    memory_kind: str  # "resident set" (CPU) or "GPU"
    available_memory: float  # bytes free for the run (psutil's available memory, or the GPU's free memory)
    seconds: float = 0.0  # the probe's own cost, the process start included


def _status_mb(field: str, pid: int | str = "self") -> float | None:
    """A memory field of /proc/PID/status (VmHWM, RssAnon, ...) in MB; None where /proc does not tell."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb(pid: int | str = "self") -> float | None:
    """A process's peak resident set since it started or since `reset_peak_rss` (Linux's
    VmHWM), in MB; None where /proc does not tell."""
    return _status_mb("VmHWM", pid)


def reset_peak_rss() -> None:
    """Start this process's peak resident set afresh from its current size (Linux), so that
    `peak_rss_mb` then gives the peak of what follows; elsewhere nothing happens."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


class StagePeakMemory:
    """The peak memory of a block of this process (Linux), in MB: `resident`, the resident
    set's high-water mark (reset at the start), and `anonymous`, the peak of its anonymous
    part (sampled every 0.2 s). They differ by the pages of memory-mapped files (a million
    images' cached features are 5 GB of them), which the kernel drops and reads again under
    pressure: `anonymous` is what the block needs, `resident` what it held. None off Linux."""

    INTERVAL_S = 0.2

    def __init__(self) -> None:
        self.resident: float | None = None
        self.anonymous: float | None = None

    def __enter__(self) -> StagePeakMemory:
        reset_peak_rss()
        self._sampler = PeakSampler(lambda: _status_mb("RssAnon") or 0.0, self.INTERVAL_S).__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._sampler.__exit__(*exc)
        self.resident = peak_rss_mb()
        self.anonymous = None if self.resident is None else self._sampler.peak


class PeakSampler:
    """The peak of a memory figure of this process while the block runs, sampled every
    `interval` seconds: by default its resident set in bytes, every 5 ms."""

    def __init__(self, read: Callable[[], float] | None = None, interval: float = 0.005) -> None:
        if read is None:
            import psutil

            process = psutil.Process()

            def read() -> float:
                return process.memory_info().rss
        self._read, self._interval = read, interval
        self.peak = read()
        self._stop = threading.Event()

    def __enter__(self) -> PeakSampler:
        self.peak = self._read()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._read())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._read())


class PeakMemory:
    """The peak memory of a block: the GPU allocator's statistics on a GPU, else the
    process's sampled resident set (PeakSampler)."""

    def __init__(self, device) -> None:
        self.device = device
        self.on_gpu = device.type == "cuda"
        self.peak = 0.0

    def now(self) -> float:
        import psutil
        import torch

        return torch.cuda.memory_allocated(self.device) if self.on_gpu else psutil.Process().memory_info().rss

    def __enter__(self) -> PeakMemory:
        import torch

        if self.on_gpu:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._sampler = PeakSampler().__enter__()
        return self

    def __exit__(self, *exc) -> None:
        import torch

        if self.on_gpu:
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._sampler.__exit__(*exc)
            self.peak = self._sampler.peak


def probe_batches(image_size: int, batch_size: int) -> tuple[int, int]:
    """The probe's warm-up and measured training batches (the second also sizes the feature
    batches): 8 and 16 images at 224 px, more for small images, at most the run's batch."""
    large = max(2, min(batch_size, int(PROBE_BATCH_AT_224 * (224 / image_size) ** 2)))
    return max(1, large // 2), large


def marginal_rate(n1: int, seconds1: float, n2: int, seconds2: float) -> float:
    """Images per second of what grows with the images, (n2 - n1) / (seconds2 - seconds1): free
    of a pass's fixed cost (a loader worker's start, the first batch's latency), which a run
    pays once per pass over thousands of images. On 2 cores at 224 px the plain rate of the
    probe's few images was about half the run's. Where the difference says nothing (too few
    images, noise), the plain rate n2 / seconds2; at most 4x that."""
    plain = n2 / max(seconds2, 1e-6)
    if n2 <= n1 or seconds2 <= seconds1:
        return plain
    return min((n2 - n1) / (seconds2 - seconds1), 4 * plain)


def _measure(config: RunConfig) -> Measurement:
    """The probe itself, in this process (`probe` runs it in a fresh one)."""
    import numpy as np
    import psutil
    import torch

    from turn_backend.engine import Runtime, extract_features, fft_epoch, make_optimizer, to_device, train_linear_probe
    from turn_backend.features import feature_cache_path
    from turn_backend.losses import make_loss
    from turn_backend.models.core import Classifier
    from turn_backend.models.registry import load_model
    from turn_backend.pipeline import default_workers
    from turn_backend.rundata import load_run_data
    from turn_backend.stages.data import resolve_hparams, resolve_preprocess

    t0 = time.time()
    rt = Runtime(config.device, config.mixed_precision)
    on_gpu = rt.device.type == "cuda"
    bundle = load_run_data(config)
    train, test = bundle.train, bundle.test
    loaded = load_model(config.model, config.checkpoint, pretrained=config.pretrained)
    pre = resolve_preprocess(config, loaded)
    _, fft_hp = resolve_hparams(config, loaded.hparams)
    data_seconds = time.time() - t0
    cached = all(feature_cache_path(s, loaded.name, config.checkpoint, config.pretrained, pre, split).exists()
                 for s, split in ((train, "train"), (test, "test")) if s is not None)

    workers = default_workers(train) if config.num_workers is None else config.num_workers  # as the run's
    small, large = probe_batches(pre.image_size, config.batch_size)
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(train), min(len(train), 3 * large), replace=False))  # fewer in a tiny set
    model = Classifier(loaded.extractor, train.num_classes)
    to_device(model, rt, pre.image_size)
    base = PeakMemory(rt.device).now()
    with tempfile.TemporaryDirectory() as tmp:

        def extract(index: np.ndarray, name: str) -> float:
            start = time.perf_counter()
            extract_features(model.extractor, train.subset(index), pre, Path(tmp) / name, rt, large, workers)
            return time.perf_counter() - start

        # inference: a warm-up batch, then passes over one batch and three (their difference is the rate)
        one, three = pick[:large], pick
        extract(one, "warm.npy")
        one_seconds = extract(one, "one.npy")
        with PeakMemory(rt.device) as eval_peak:
            three_seconds = extract(three, "three.npy")
    # fine-tuning: a warm-up step of `small` images (first-step allocations, optimiser state),
    # then a timed one of `small` and a timed and measured one of `large`. Memory per sample is
    # measured from the loaded model up, so it carries the gradients and optimiser state too
    # (conservative): on 2 CPU cores at 224 px the peak grew by 85 MB per sample between
    # batches 16, 32 and 64 (6.4 GB at 64) and this gave 90 MB; the warm-up step alone is not
    # linear (8 -> 16 images: 113 MB each).
    optimizer = make_optimizer(model.parameters(), fft_hp)
    criterion = make_loss("ce", len(train), train.num_classes, config.gce_q)
    step_seconds, (small, large) = [], (len(pick[:small]), len(pick[:large]))
    for size in (small, small, large):
        with PeakMemory(rt.device) as train_peak:
            start = time.perf_counter()
            fft_epoch(model, optimizer, train, pick[:size], train.labels, pre, rt, criterion, size, 0, workers,
                      config.freeze_bn_stats)
            step_seconds.append(time.perf_counter() - start)
    # the linear probe: one epoch on random features of the run's width, as many as the run has (up to 2,048)
    n_lp = min(len(train), 2048)
    feats = np.random.default_rng(1).normal(size=(n_lp, loaded.extractor.feature_dim)).astype(np.float32)
    lp_hp, _ = resolve_hparams(config, loaded.hparams)
    start = time.perf_counter()
    train_linear_probe(feats, train.labels[:n_lp], train.num_classes, lp_hp, "gce", 1, config.batch_size, 0)
    lp_seconds = (time.perf_counter() - start) / n_lp
    if on_gpu:
        free, _ = torch.cuda.mem_get_info(rt.device)
        available = free + torch.cuda.memory_allocated(rt.device)  # what the run may use once the probe is gone
    else:
        available = psutil.virtual_memory().available
    return Measurement(
        device=str(rt.device), image_size=pre.image_size, n_train=len(train), n_test=len(test) if test else 0,
        num_classes=train.num_classes, feature_dim=loaded.extractor.feature_dim, features_cached=cached,
        data_seconds=data_seconds, eval_rate=marginal_rate(len(one), one_seconds, len(three), three_seconds),
        train_rate=marginal_rate(small, step_seconds[1], large, step_seconds[2]),
        lp_seconds_per_sample=lp_seconds, base_memory=float(base),
        train_memory_per_sample=float(max(0.0, train_peak.peak - base) / large),
        eval_memory_per_sample=float(max(0.0, eval_peak.peak - base) / large),
        memory_kind="GPU" if on_gpu else "resident set", available_memory=float(available),
    )


def _measure_in_child(config_dict: dict) -> dict:
    import multiprocessing

    # a spawned child inherits "spawn" as its start method; the run's worker process has the
    # platform's default (fork on Linux), and its data-loader workers start that way: as here
    multiprocessing.set_start_method(None, force=True)
    return asdict(_measure(RunConfig.from_dict(config_dict)))


def probe(config: RunConfig) -> Measurement:
    """Measure `config`'s run on this machine in a fresh process (a few seconds; its cost,
    the process start included, is `Measurement.seconds`)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    t0 = time.time()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        result = pool.submit(_measure_in_child, asdict(config)).result()
    measurement = Measurement(**result)
    measurement.seconds = time.time() - t0
    return measurement


# --- from a measurement to an estimate ----------------------------------------------------

def _linear(cost: tuple[float, float], n: int) -> float:
    return cost[0] + cost[1] * n


def fine_tunes(config: RunConfig) -> bool:
    """Whether `config`'s method fine-tunes the extractor (a scan or linear probe does not)."""
    return "rounds" in config.method_spec.stages and config.rounds > 0


def peak_memory(m: Measurement, batch_size: int, trains: bool) -> float:
    """Bytes at the run's peak: a fine-tuning batch where the method fine-tunes, else an
    inference batch."""
    per_sample = max(m.train_memory_per_sample if trains else 0.0, m.eval_memory_per_sample)
    return m.base_memory + per_sample * batch_size


def fitting_batch(m: Measurement, config: RunConfig) -> int:
    """The largest batch (at most the config's) whose estimated peak stays under MEMORY_SHARE
    of the available memory; 1 at least."""
    limit = config.batch_size
    budget = MEMORY_SHARE * m.available_memory
    per_sample = max(m.train_memory_per_sample if fine_tunes(config) else 0.0, m.eval_memory_per_sample)
    if per_sample <= 0 or peak_memory(m, limit, fine_tunes(config)) <= budget:
        return limit
    batch = int((budget - m.base_memory) // per_sample)
    if batch >= 8:
        batch -= batch % 8  # a multiple of 8, as batches usually are
    return max(1, min(limit, batch))


def extrapolate(config: RunConfig, m: Measurement, reused: tuple[str, ...] = ()) -> dict:
    """Seconds per step of `config`'s plan and the peak memory, from a measurement. `reused`:
    plan steps another run already did (`turn finetune` reuses the scan's probe): 0 s."""
    method, n, n_test = config.method_spec, m.n_train, m.n_test
    trains = fine_tunes(config)
    eval_pass = n / m.eval_rate
    test_pass = n_test / m.eval_rate
    detect = _linear(DETECT_SECONDS, n)
    seconds: dict[str, float] = {
        "data": m.data_seconds,
        "features": (0.0 if m.features_cached else (n + n_test) / m.eval_rate)
        + (_linear(AUDIT_SECONDS, n) if "audit" in method.stages else 0.0),
        "lp": m.lp_seconds_per_sample * n * config.lp_epochs,
    }
    share = CLEAN_SHARE.get(config.turn_option("balance"), 1.0)
    ensemble = config.turn_option("scoring") == "ensemble"
    for r in range(1, config.rounds + 1):
        cleanses = method.kind == "turn"
        # round 1 scores with the probe's logits on the cached features; later rounds need a pass
        scoring = ((eval_pass if r > 1 else 0.0) + (detect if ensemble else 0.5)) if cleanses else 0.0
        seconds[f"round-{r}"] = scoring + share * n / m.train_rate + test_pass
    seconds["choice"] = m.lp_seconds_per_sample * n * config.lp_epochs
    seconds["final"] = (eval_pass if trains else 0.0) + detect
    maps = 2 if trains else 1
    mapped = min(n, config.projection_max_samples)
    fitted = min(mapped, MAP_FIT_POINTS)  # a larger map places the rest by their neighbours
    seconds["projections"] = maps * (_linear(TSNE_SECONDS, fitted) + PLACE_SECONDS * (mapped - fitted))
    steps = []
    for key, title in plan_stages(config):
        step = {"key": key, "title": title, "seconds": 0.0 if key in reused else round(seconds[key], 3)}
        steps.append({**step, "reused": True} if key in reused else step)
    groups = {"features": 0.0, "scan": 0.0, "fine-tuning": 0.0}
    for step in steps:
        groups[step_group(step["key"], trains)] += step["seconds"]
    return {
        "method": config.method, "batch_size": config.batch_size, "image_size": m.image_size, "device": m.device,
        "rounds": config.rounds if trains else 0, "steps": steps,
        "total_seconds": round(sum(s["seconds"] for s in steps), 3),
        "groups": {k: round(v, 1) for k, v in groups.items()},
        "peak_memory_bytes": round(peak_memory(m, config.batch_size, trains)),
        "memory_kind": m.memory_kind, "available_memory_bytes": round(m.available_memory),
        "probe_seconds": round(m.seconds, 1), "created": time.time(), "measurement": asdict(m),
    }


def step_group(key: str, trains: bool) -> str:
    """Which part of the one-line summary a plan step belongs to."""
    if key in ("data", "features"):
        return "features"
    if key.startswith("round-") or key == "choice" or (key == "final" and trains):
        return "fine-tuning"
    return "scan"


def fmt_seconds(seconds: float) -> str:
    """'<1 s', '~45 s', '~3 min', '~1.5 h': an estimate's precision."""
    if seconds < 0.5:
        return "<1 s"
    if seconds < 90:
        return f"~{round(seconds)} s"
    if seconds < 90 * 60:
        return f"~{round(seconds / 60)} min"
    return f"~{seconds / 3600:.1f} h"


def fmt_bytes(n: float) -> str:
    return f"~{n / 2**30:.1f} GB" if n >= 2**30 else f"~{n / 2**20:.0f} MB"


def summary_line(estimate: dict) -> str:
    """'features ~50 s, scan ~1 min, fine-tuning ~17 min (5 rounds), peak memory ~3.1 GB'."""
    g = estimate["groups"]
    parts = [f"features {fmt_seconds(g['features'])}", f"scan {fmt_seconds(g['scan'])}"]
    if estimate["rounds"]:
        rounds = estimate["rounds"]
        parts.append(f"fine-tuning {fmt_seconds(g['fine-tuning'])} ({rounds} round{'s' if rounds > 1 else ''})")
    parts.append(f"peak memory {fmt_bytes(estimate['peak_memory_bytes'])}")
    return ", ".join(parts)


def default_method(on_gpu: bool, image_size: int, fine_tuning_seconds: float) -> str:
    """The method a run gets when none is asked for: TURN+ on a GPU, and on a CPU for small
    images or where fine-tuning is quick; else the scan (fine-tuning can follow from it)."""
    from turn_backend.config import DEFAULT_METHOD

    if on_gpu or image_size < 128 or fine_tuning_seconds <= LONG_FINE_TUNING_SECONDS:
        return DEFAULT_METHOD
    return SCAN_METHOD


# --- a run's estimate beside what it took ---------------------------------------------------

def actual_seconds(folder: RunFolder, key: str, timings: dict) -> float | None:
    """Seconds a finished plan step of the run took (None where the run does not say)."""
    if key.startswith("round-"):
        return folder.round_info(int(key.split("-")[1])).get("seconds")
    names = {"data": ("data",), "features": ("features", "audit"), "lp": ("lp",), "choice": ("choice",),
             "final": ("final",), "projections": ("projection",)}[key]
    if not any(name in timings for name in names):
        return None
    return sum(timings.get(name, 0.0) for name in names)


def progress(folder: RunFolder, now: float | None = None) -> dict | None:
    """The run's estimate beside what each step took, and the whole run's time left; None
    where the run has no estimate. {"steps": [{key, title, estimated, actual}], "ratio":
    actual / estimate over the finished steps, "time_left_seconds" (None unless running)}."""
    estimate = folder.estimate()
    if not estimate:
        return None
    now = time.time() if now is None else now
    timings = folder.timings()
    status = folder.status()
    done = set(folder.completed()) | ({"data"} if folder.has_samples() else set())
    finished_run = status.get("state") == "done"
    rows, spent, planned = [], 0.0, 0.0
    for step in estimate["steps"]:
        actual = actual_seconds(folder, step["key"], timings) if step["key"] in done or finished_run else None
        rows.append({"key": step["key"], "title": step["title"], "estimated": step["seconds"],
                     "actual": None if actual is None else round(actual, 1), "reused": step.get("reused", False)})
        if actual is not None and step["seconds"] > 0:
            spent, planned = spent + actual, planned + step["seconds"]
    # a few seconds of finished steps say little about the machine: shrink the ratio towards 1
    ratio = (spent + RATIO_PRIOR_SECONDS) / (planned + RATIO_PRIOR_SECONDS)
    left = None
    if status.get("state") in ACTIVE_STATES:
        remaining = [r for r in rows if r["key"] not in done]
        left = ratio * sum(r["estimated"] for r in remaining)
        if remaining:  # the current step has been running since the last one finished
            since = folder.last_completed_time() or now
            left -= min(max(0.0, now - since), ratio * remaining[0]["estimated"])
        left = round(max(0.0, left), 1)
    peaks = [p["resident_mb"] for p in folder.peak_memory().values()]
    return {"steps": rows, "ratio": round(ratio, 3), "time_left_seconds": left,
            "total_estimated": estimate["total_seconds"], "summary": summary_line(estimate),
            "memory": memory_text(estimate, max(peaks) * 2**20 if peaks else None)}


def memory_text(estimate: dict, measured_bytes: float | None) -> str | None:
    """'peak memory: estimated ~3.1 GB, measured 2.8 GB (resident set)'; None before a stage
    has measured it (or off Linux). On a GPU the estimate is the GPU's, the measure the
    process's resident set: not comparable, so only the measure is said."""
    if measured_bytes is None:
        return None
    if estimate.get("memory_kind", "resident set") != "resident set":
        return f"peak resident memory: measured {fmt_bytes(measured_bytes).lstrip('~')}"
    return (f"peak memory: estimated {fmt_bytes(estimate['peak_memory_bytes'])}, measured "
            f"{fmt_bytes(measured_bytes).lstrip('~')} (resident set)")


def step_text(row: dict) -> str:
    """'estimated ~2 min, took 67 s', 'estimated ~2 min, not yet', or 'reused from the scan'."""
    if row.get("reused"):
        return "reused from the scan"
    took = "not yet" if row["actual"] is None else f"took {fmt_seconds(row['actual']).lstrip('~')}"
    return f"estimated {fmt_seconds(row['estimated'])}, {took}"


def progress_lines(view: dict) -> list[str]:
    """`progress`'s view in words, for `turn status`."""
    lines = [f"estimate before the run: {view['summary']}"]
    for row in view["steps"]:
        lines.append(f"  {row['title']}: {step_text(row)}")
    if view["memory"]:
        lines.append(view["memory"])
    if view["time_left_seconds"] is not None:
        lines.append(f"time left for the whole run: {fmt_seconds(view['time_left_seconds'])} "
                     f"(the estimate x {view['ratio']:.2f}, as the finished steps ran)")
    return lines
