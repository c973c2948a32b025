"""Where a fine-tuning step's time goes on this machine: EfficientNet-Lite0 at 48 px.

    python scripts/gpu_step_profile.py OUT.json [--engine-only]

1. The bare model (timm, random weights) in each weights-and-input layout (channels-last,
   NCHW) x precision (bf16 autocast, fp32) x cudnn.benchmark (off, on): a forward at batch
   128 and 1,024 and a training step (AdamW) at batch 128, in ms.
2. The engine's own path on Fashion-MNIST demo images: `fft_epoch` three times, each on a
   training set of another size as rounds are (the first pays the warm-up), the loader with
   and without the augmentation, and a scoring pass at batch 128 and 1,024, in s, in
   whatever layout `engine.to_device` chooses, with cuDNN's benchmark mode as `Runtime`
   sets it (TURN_CUDNN_BENCHMARK). --engine-only: part 2 only.
docs/benchmarks.md ("GPU check") reads the numbers of one such run. On a CPU it runs
part 2 only, on 600 images, as a smoke test.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch

from turn_backend.data.demo import load_demo
from turn_backend.engine import Runtime, compute_logits, fft_epoch, make_optimizer, to_device
from turn_backend.losses import make_loss
from turn_backend.models.core import Classifier, Preprocess
from turn_backend.models.registry import load_model
from turn_backend.pipeline import ImageTensorDataset, batch_preprocess, make_loader

SIZE = 48
CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")


def sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def mean_seconds(fn, n: int = 20, warm: int = 5) -> float:
    for _ in range(warm):
        fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    sync()
    return (time.perf_counter() - t0) / n


def bare_model(channels_last: bool, dtype: torch.dtype) -> dict:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = timm.create_model("efficientnet_lite0", num_classes=10).to(DEVICE).to(memory_format=fmt)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-4)
    autocast = lambda: torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32)  # noqa: E731
    out = {}
    model.eval()
    for batch in (128, 1024):
        x = torch.randn(batch, 3, SIZE, SIZE, device=DEVICE).contiguous(memory_format=fmt)

        def forward():
            with torch.inference_mode(), autocast():
                model(x)

        out[f"forward_{batch}_ms"] = 1000 * mean_seconds(forward)
    x = torch.randn(128, 3, SIZE, SIZE, device=DEVICE).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (128,), device=DEVICE)
    model.train()

    def step():
        with autocast():
            loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    out["train_step_128_ms"] = 1000 * mean_seconds(step)
    return out


def engine_path(n_images: int) -> dict:
    rt = Runtime(DEVICE.type)
    train = load_demo(n_images, 1000).train
    loaded = load_model("efficientnet_lite0")
    pre = Preprocess(SIZE, loaded.preprocess.mean, loaded.preprocess.std, loaded.preprocess.interpolation)
    model = Classifier(loaded.extractor, train.num_classes)
    optimizer = make_optimizer(model.parameters(), loaded.hparams.fft)
    criterion = make_loss("ce", len(train), train.num_classes, 0.7)
    to_device(model, rt, SIZE)
    ddp_model, optimizer = rt.accelerator.prepare(model, optimizer)
    index = np.arange(len(train))
    out = {"images": n_images, "cudnn_benchmark": torch.backends.cudnn.benchmark}
    for k in range(3):  # as rounds do, each epoch on a training set of another size (a new last batch)
        sync()
        t0 = time.perf_counter()
        fft_epoch(ddp_model, optimizer, train, index[:len(index) - 37 * k], train.labels, pre, rt, criterion, 128,
                  k, 0)
        sync()
        out[f"fft_epoch_{k + 1}_s"] = time.perf_counter() - t0
        print(f"fft_epoch_{k + 1}_s", round(out[f"fft_epoch_{k + 1}_s"], 2), flush=True)
    dataset = ImageTensorDataset(train, pre, train=True, index=index, labels=train.labels)
    augment = batch_preprocess(train, pre, True, seed=0)
    sync()
    t0 = time.perf_counter()
    for x, _, _ in rt.accelerator.prepare(make_loader(dataset, 128, True, 0, 0)):
        augment(x)
    sync()
    out["loader_and_augmentation_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in make_loader(dataset, 128, True, 0, 0):
        pass
    out["loader_only_s"] = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        for batch in (128, 1024):
            sync()
            t0 = time.perf_counter()
            compute_logits(model, train, pre, Path(tmp) / f"logits{batch}.npy", rt, batch, 0)
            sync()
            out[f"scoring_batch_{batch}_s"] = time.perf_counter() - t0
    return out


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    out_path = Path(args[0]) if args else Path("step_profile.json")
    results: dict = {"device": torch.cuda.get_device_name(0) if CUDA else "cpu", "torch": torch.__version__}
    engine_only = "--engine-only" in sys.argv
    for channels_last in ((True, False) if CUDA and not engine_only else ()):
        for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
            for benchmark in (False, True):
                torch.backends.cudnn.benchmark = benchmark
                key = f"{'channels-last' if channels_last else 'NCHW'} {name} cudnn.benchmark={benchmark}"
                results[key] = bare_model(channels_last, dtype)
                print(key, {k: round(v, 2) for k, v in results[key].items()}, flush=True)
    results["engine"] = engine_path(10_000 if CUDA else 600)
    print("engine", {k: round(v, 2) for k, v in results["engine"].items()}, flush=True)
    out_path.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
