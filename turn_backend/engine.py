"""The compute stages, each callable alone: feature extraction, logits over a set, linear
probing, one full fine-tuning epoch, evaluation.

Devices, mixed precision and multi-process data parallelism come from Hugging Face
Accelerate (`Runtime` wraps one `Accelerator`). Inference stages shard samples across
processes and write rows straight into a shared memory-mapped `.npy`, so the result is
the same array whatever the number of processes, and a million samples need not fit in RAM.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn

from turn_backend.data.core import ImageSet
from turn_backend.losses import make_loss
from turn_backend.models.core import Classifier, FeatureExtractor, Preprocess, StageHParams
from turn_backend.pipeline import BatchPreprocess, ImageTensorDataset, batch_preprocess, make_loader

Progress = Callable[[int, int], None]  # (done, total)
Notify = Callable[[str], None]  # a message for the run's event log

logger = logging.getLogger(__name__)


class BatchTooLargeError(RuntimeError):
    """The GPU ran out of memory at this batch size; the message says what to lower."""


def _free_gpu_memory() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _no_progress(done: int, total: int) -> None:
    pass


# (model class, parameter count, image size, precision, device) -> its faster memory format
_MEMORY_FORMATS: dict[tuple, torch.memory_format] = {}


def fastest_memory_format(model: nn.Module, rt: Runtime, image_size: int, batch_size: int = 64,
                          repeats: int = 3, measure: bool | None = None) -> torch.memory_format:
    """Channels-last or contiguous (NCHW) weights, whichever runs `model` faster here.

    On the CPU channels-last (EfficientNet-Lite0 at 48 px, 1 thread: forward 1.5x and
    training step 1.8x faster). On a GPU it depends on the model and the precision: on an
    H200 under bf16 autocast, channels-last made EfficientNet-Lite0's forward 7x and its
    training step 2.7x slower than NCHW (30 against 4.4 ms, 43 against 16 ms at batch 128,
    48 px), while it is the fast layout for dense convolutions on tensor cores. So on a GPU
    (or with measure=True) a few forwards of a random (batch_size, 3, image_size,
    image_size) batch are timed in each layout, once per process and model, in eval mode
    without gradients (the model's state and modes are restored). Within 10%, channels-last.
    Under several processes every one of them calls this at the same point, and all take the
    main process's choice.
    """
    if not (rt.device.type == "cuda" if measure is None else measure):
        return torch.channels_last
    key = (type(model).__name__, sum(p.numel() for p in model.parameters()), image_size, rt.mixed_precision,
           str(rt.device))
    if key not in _MEMORY_FORMATS:
        try:
            seconds = _time_layouts(model, rt, image_size, batch_size, repeats)
            faster = seconds[torch.contiguous_format] < 0.9 * seconds[torch.channels_last]
            logger.info("memory format for %s at %d px (%s): %s (channels-last %.1f ms, NCHW %.1f ms per batch)",
                        key[0], image_size, rt.mixed_precision, "NCHW" if faster else "channels-last",
                        1000 * seconds[torch.channels_last] / repeats,
                        1000 * seconds[torch.contiguous_format] / repeats)
        except RuntimeError as exc:  # out of memory at the probe's batch, a model that wants other input...
            _free_gpu_memory()
            logger.warning("could not time the memory formats of %s (%s); channels-last", key[0], exc)
            faster = False
        if rt.world > 1:  # DistributedDataParallel needs the same layout in every process: the main one's
            from accelerate.utils import broadcast_object_list

            faster = bool(broadcast_object_list([faster])[0])
        _MEMORY_FORMATS[key] = torch.contiguous_format if faster else torch.channels_last
    return _MEMORY_FORMATS[key]


def _time_layouts(model: nn.Module, rt: Runtime, image_size: int, batch_size: int,
                  repeats: int) -> dict[torch.memory_format, float]:
    """Seconds of `repeats` forwards of a random batch with the weights in each layout (after
    one warm-up), in eval mode without gradients; the modules' train / eval modes are restored."""
    modes = {m: m.training for m in model.modules()}  # parents first, so restoring ends right
    model.eval()
    x = torch.randn(batch_size, 3, image_size, image_size, device=rt.device)
    seconds = {}
    try:
        for fmt in (torch.channels_last, torch.contiguous_format):
            model.to(memory_format=fmt)
            xf = x.contiguous(memory_format=fmt)
            with torch.inference_mode(), rt.autocast():
                model(xf)  # warm-up: allocations and kernel choice
                _synchronise(rt.device)
                t0 = time.perf_counter()
                for _ in range(repeats):
                    model(xf)
                _synchronise(rt.device)
            seconds[fmt] = time.perf_counter() - t0
    finally:
        for module, training in modes.items():
            module.train(training)
    return seconds


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def to_device(model: nn.Module, rt: Runtime, image_size: int | None = None) -> nn.Module:
    """Move `model` to the run's device, its weights in the memory format that is faster
    there for inputs of `image_size` (`fastest_memory_format`; channels-last when no size
    is given). The pipeline hands over NCHW batches: a convolution with channels-last
    weights runs channels-last whatever its input's layout. Call it before
    `rt.accelerator.prepare`, so DistributedDataParallel sees the final layout."""
    model = model.to(rt.device)
    fmt = torch.channels_last if image_size is None else fastest_memory_format(model, rt, image_size)
    return model.to(memory_format=fmt)


class Runtime:
    """One process's view of the devices: rank, world size, device, mixed precision."""

    def __init__(self, device: str = "auto", mixed_precision: str = "auto") -> None:
        if device not in ("auto", "cpu") and not re.fullmatch(r"cuda(:\d+)?", device):
            raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
        cpu = device == "cpu" or not torch.cuda.is_available()
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} was asked for but no CUDA GPU is visible; use --device cpu")
        if device.startswith("cuda:") and "LOCAL_RANK" not in os.environ:
            index = int(device.split(":", 1)[1])
            if index >= torch.cuda.device_count():
                raise RuntimeError(f"there is no GPU {index}: this machine has {torch.cuda.device_count()}")
            torch.cuda.set_device(index)
        if mixed_precision == "auto":
            mixed_precision = "no" if cpu else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
        if cpu and mixed_precision == "fp16":
            # measured: EfficientNet-Lite0's forward at 48 px took 1183 ms instead of 72 on one core
            raise ValueError("fp16 mixed precision needs a CUDA GPU: on a CPU it runs about 16x slower than "
                             "full precision; use --precision no (or bf16)")
        if not cpu:
            # cuDNN's benchmark mode times every kernel for each new input shape, and a run makes
            # many (each round's training set ends in a batch of another size). Off unless
            # TURN_CUDNN_BENCHMARK=1: on an H100 it did not speed up EfficientNet-Lite0's step
            # (scripts/gpu_step_profile.py; docs/benchmarks.md, "GPU check").
            torch.backends.cudnn.benchmark = os.environ.get("TURN_CUDNN_BENCHMARK") == "1"
        self.accelerator = Accelerator(cpu=cpu, mixed_precision=mixed_precision)
        self.mixed_precision = mixed_precision

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()

    def autocast(self):
        return self.accelerator.autocast() if self.mixed_precision != "no" else contextlib.nullcontext()

    def shard(self, n: int) -> np.ndarray:
        """This process's share of sample indices 0..n-1."""
        return shard_indices(n, self.rank, self.world)

    def gpu_memory(self) -> dict | None:
        if self.device.type != "cuda":
            return None
        return {
            "allocated_mb": torch.cuda.memory_allocated(self.device) / 2**20,
            "peak_mb": torch.cuda.max_memory_allocated(self.device) / 2**20,
        }


def shard_indices(n: int, rank: int, world: int) -> np.ndarray:
    """Process `rank`'s share of sample indices 0..n-1 (strided, so shares are balanced)."""
    return np.arange(rank, n, world)


def _sharded_inference(
    fn: Callable[[torch.Tensor], torch.Tensor],
    images: ImageSet,
    pre: Preprocess,
    out_path: Path,
    width: int,
    rt: Runtime,
    batch_size: int,
    num_workers: int,
    progress: Progress,
    notify: Notify | None = None,
) -> np.ndarray:
    """Run `fn` on every image (eval transform) and store rows in `out_path` (.npy, float32).

    Each process writes its share to a shard file of its own; the main process joins them
    into a `.partial` file and renames it when all are done, so an interrupted run never
    leaves a file that looks complete. Separate shards keep processes on different machines
    off each other's pages of a shared file system (one file written in strided rows from
    two NFS clients can lose rows). When the GPU runs out of memory, the batch is split in
    halves (and later batches stay at the smaller size); each halving is logged and reported
    through `notify`.
    """
    out_path = Path(out_path)
    partial = out_path.with_suffix(".partial.npy")
    n = len(images)
    if rt.is_main:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    rt.barrier()
    shard = rt.shard(n)
    shard_path = _shard_path(out_path, rt.rank, rt.world)
    rows = np.lib.format.open_memmap(shard_path, mode="w+", dtype=np.float32, shape=(len(shard), width))
    loader = make_loader(ImageTensorDataset(images, pre, train=False, index=shard), batch_size, False, 0, num_workers)
    prep = batch_preprocess(images, pre, False)
    done = 0
    chunk = [inference_chunk(batch_size, pre.image_size, rt.device)]
    with torch.inference_mode():
        for x, _, idx in loader:
            rows[np.searchsorted(shard, idx.numpy())] = _forward_in_chunks(fn, x, prep, rt, chunk, notify)
            done += len(idx)
            progress(done * rt.world, n)
    rows.flush()
    del rows
    rt.barrier()
    if rt.is_main:
        joined = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=(n, width))
        for rank in range(rt.world):
            path = _shard_path(out_path, rank, rt.world)
            joined[shard_indices(n, rank, rt.world)] = np.load(path, mmap_mode="r")
            path.unlink()
        joined.flush()
        del joined
        os.replace(partial, out_path)
    rt.barrier()
    return np.load(out_path, mmap_mode="r")


# On a CPU the forward runs fastest in small pieces whose activations stay in the caches:
# EfficientNet-Lite0 at 224 px on 2 cores made 95-118 images/s in pieces of 16, 72 in
# pieces of 32 and 56 in one of 128. Pieces hold about this many pixels, so 48-px images
# still go 128 at a time.
CPU_INFERENCE_PIXELS = 16 * 224 * 224


def inference_chunk(batch_size: int, image_size: int, device: torch.device) -> int:
    """How many images one forward pass of inference takes: the loader's batch on a GPU, on a
    CPU at most `CPU_INFERENCE_PIXELS` worth of them."""
    if device.type != "cpu":
        return batch_size
    return max(1, min(batch_size, CPU_INFERENCE_PIXELS // (image_size * image_size)))


def _shard_path(out_path: Path, rank: int, world: int) -> Path:
    return out_path.with_suffix(f".shard{rank}-of-{world}.partial.npy")


def _forward_in_chunks(fn, x: torch.Tensor, prep: BatchPreprocess, rt: Runtime, chunk: list[int],
                       notify: Notify | None) -> np.ndarray:
    """`fn(prep(x))` as float32 rows (x: a uint8 batch from the loader), in pieces of at most
    `chunk[0]` images; halves the piece on CUDA out-of-memory and keeps the smaller size
    (in `chunk`) for the next batches."""
    out = []
    start = 0
    while start < len(x):
        size = chunk[0]
        try:
            inputs = prep(x[start:start + size].to(rt.device, non_blocking=True))
            with rt.autocast():
                y = fn(inputs)
            out.append(y.float().cpu().numpy())
            start += size
            continue
        except torch.cuda.OutOfMemoryError:
            pass  # handled below, once the exception (and the activations it holds) is gone
        _free_gpu_memory()
        if size <= 1:
            raise BatchTooLargeError("out of GPU memory even for a single image; use a smaller model or "
                                     "--image-size, or --device cpu")
        chunk[0] = max(1, size // 2)
        message = f"out of GPU memory at batch size {size}; retrying with batch size {chunk[0]}"
        logger.warning(message)
        if notify is not None:
            notify(message)
    return np.concatenate(out) if len(out) > 1 else out[0]


def extract_features(
    extractor: FeatureExtractor,
    images: ImageSet,
    pre: Preprocess,
    out_path: Path,
    rt: Runtime,
    batch_size: int = 128,
    num_workers: int = 0,
    progress: Progress = _no_progress,
    notify: Notify | None = None,
) -> np.ndarray:
    """Frozen-extractor features z_i = f(x_i), no augmentation; reused if already on disk."""
    out_path = Path(out_path)
    if out_path.exists():
        return np.load(out_path, mmap_mode="r")
    to_device(extractor, rt, pre.image_size).eval()
    return _sharded_inference(
        extractor, images, pre, out_path, extractor.feature_dim, rt, batch_size, num_workers, progress, notify
    )


def compute_logits(
    model: Classifier,
    images: ImageSet,
    pre: Preprocess,
    out_path: Path,
    rt: Runtime,
    batch_size: int = 128,
    num_workers: int = 0,
    progress: Progress = _no_progress,
    notify: Notify | None = None,
) -> np.ndarray:
    """Logits of the whole model on every image, eval mode, no augmentation."""
    to_device(model, rt, pre.image_size).eval()
    return _sharded_inference(
        model, images, pre, out_path, model.head.out_features, rt, batch_size, num_workers, progress, notify
    )


def make_optimizer(params, hp: StageHParams) -> torch.optim.Optimizer:
    if hp.optimizer == "sgd":
        return torch.optim.SGD(params, lr=hp.lr, momentum=0.9, weight_decay=hp.weight_decay)
    if hp.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
    raise ValueError(f"unknown optimizer {hp.optimizer!r}; use 'sgd' or 'adamw'")


def head_logits(head_state: dict, features: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """Logits of a linear head on cached features (float64 for stable losses), chunk by chunk:
    a float64 copy of a million 1,280-dim rows would take 10 GB."""
    w = head_state["weight"].double().numpy()
    b = head_state["bias"].double().numpy()
    out = np.empty((len(features), len(b)), dtype=np.float64)
    for start in range(0, len(features), chunk):
        out[start:start + chunk] = np.asarray(features[start:start + chunk], dtype=np.float64) @ w.T + b
    return out


def as_tensor_view(features: np.ndarray) -> torch.Tensor:
    """A float32 tensor over `features` without copying them where they are float32 already
    (a memory-mapped cache of a million rows stays on disk and in the page cache, not 5 GB
    more in RAM); other dtypes are converted. The tensor is only read."""
    array = np.asarray(features, dtype=np.float32)
    if array.flags.writeable:
        return torch.from_numpy(array)
    with warnings.catch_warnings():  # torch warns that it cannot protect a read-only array
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def train_linear_probe(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    hp: StageHParams,
    loss: str,
    epochs: int,
    batch_size: int,
    seed: int,
    eval_features: np.ndarray | None = None,
    eval_labels: np.ndarray | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    q: float = 0.7,
) -> tuple[dict, list[dict]]:
    """Step 1: a freshly initialised linear head trained on cached features.

    Runs on the CPU in every process identically (it is cheap and deterministic), so that
    all processes of a multi-GPU run start step 2 from the same head.
    Returns the head's state dict and one history row per epoch.
    """
    torch.manual_seed(seed)
    x = as_tensor_view(features)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    head = nn.Linear(x.shape[1], num_classes)
    opt = make_optimizer(head.parameters(), hp)
    criterion = make_loss(loss, len(y), num_classes, q)
    gen = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(y), generator=gen)
        total = 0.0
        for start in range(0, len(y), batch_size):
            idx = order[start:start + batch_size]
            value = criterion(head(x[idx]), y[idx], idx)
            opt.zero_grad()
            value.backward()
            opt.step()
            total += float(value.detach()) * len(idx)
        row = {"epoch": epoch, "train_loss": total / max(1, len(y))}
        if eval_features is not None and eval_labels is not None and len(eval_labels):
            logits = head_logits(head.state_dict(), eval_features)
            row["test_acc"] = float((logits.argmax(1) == eval_labels).mean())
        history.append(row)
        if on_epoch:
            on_epoch(row)
    return {k: v.detach().clone() for k, v in head.state_dict().items()}, history


def freeze_batchnorm_statistics(model: nn.Module) -> None:
    """Put normalisation layers with running statistics in eval mode (weights still train)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def fft_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: ImageSet,
    index: np.ndarray,
    labels: np.ndarray,
    pre: Preprocess,
    rt: Runtime,
    loss_fn,
    batch_size: int,
    seed: int,
    num_workers: int,
    freeze_bn: bool = True,
    progress: Progress = _no_progress,
) -> float:
    """Step 2-2: one epoch over `index` (repeats allowed), all parameters trainable.

    `model` and `optimizer` come from `rt.accelerator.prepare` (after `to_device`), so under
    several processes this is DistributedDataParallel and each process sees its share of
    every batch. The loader hands uint8 batches to the device, where `BatchPreprocess`
    augments (crop, flip) and normalises them. Returns the mean training loss.
    """
    torch.manual_seed(seed)
    dataset = ImageTensorDataset(images, pre, train=True, index=index, labels=labels)
    loader = rt.accelerator.prepare(make_loader(dataset, batch_size, True, seed, num_workers))
    # each process its own augmentation stream (their shares of a batch differ anyway)
    prep = batch_preprocess(images, pre, True, seed=seed + rt.rank)
    model.train()
    if freeze_bn:
        freeze_batchnorm_statistics(model)
    total, seen = 0.0, 0
    for step, (x, y, idx) in enumerate(loader, start=1):
        oom = False
        try:
            x = prep(x)
            with rt.autocast():
                logits = model(x)
            value = loss_fn(logits, y, idx)
            optimizer.zero_grad(set_to_none=True)
            rt.accelerator.backward(value)
        except torch.cuda.OutOfMemoryError:
            oom = True
        if oom:
            # Fine-tuning cannot split a batch without changing the optimisation: say what to do.
            optimizer.zero_grad(set_to_none=True)
            _free_gpu_memory()
            raise BatchTooLargeError(
                f"out of GPU memory while fine-tuning at batch size {batch_size}; lower --batch-size "
                f"(for example --batch-size {max(1, batch_size // 2)}) or use a smaller --image-size")
        optimizer.step()
        total += float(value.detach()) * len(y)
        seen += len(y)
        progress(min(step * batch_size, len(index)), len(index))
    return total / max(1, seen)


def accuracy_from_logits(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((np.asarray(logits).argmax(1) == np.asarray(labels)).mean()) if len(labels) else float("nan")
