"""From an ImageSet to batches of normalised tensors on the device.

The loader yields uint8 batches; `BatchPreprocess` turns a whole batch into the model's
normalised float input on the device, in a few tensor operations, so no per-sample Python
transform stands between the data and a GPU:

- array-backed sets (the demo, IDX, CIFAR, in-memory arrays): the loader gathers each batch
  with one numpy index (`__getitems__`) at the stored size, and resize / centre crop (eval)
  or random resized crop + flip (training), scaling and normalisation all run on the device;
- file-backed sets: images differ in size, so worker processes decode and bring each one to
  the model's size (uint8, in pinned memory on CUDA); the device scales and normalises.
  `decode_file` keeps decoding cheap: a JPEG much larger than the model's input is decoded
  at a reduced scale (libjpeg's DCT scaling, via PIL's `draft`).

Every method (TURN and its baselines) reads its images through this one module, so they
compare fairly.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate, get_worker_info
from torchvision.ops import roi_align
from torchvision.transforms import v2

from turn_backend.data.core import ImageSet, to_rgb
from turn_backend.models.core import Preprocess

_INTERPOLATION = {
    "bilinear": v2.InterpolationMode.BILINEAR,
    "bicubic": v2.InterpolationMode.BICUBIC,
    "nearest": v2.InterpolationMode.NEAREST,
}
# RandomResizedCrop's ranges for training: a mild crop (70-100% of the area) and a flip
CROP_SCALE = (0.7, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)


def file_geometry(pre: Preprocess, train: bool) -> v2.Compose:
    """Per-image geometry for file data, uint8 in and out (run in the loader's workers).

    Evaluation: resize the shorter side + centre crop. Training: random resized crop + flip.
    """
    interp = _INTERPOLATION.get(pre.interpolation, v2.InterpolationMode.BILINEAR)
    if train:
        return v2.Compose([
            v2.RandomResizedCrop(pre.image_size, scale=CROP_SCALE, ratio=CROP_RATIO, interpolation=interp,
                                 antialias=True),
            v2.RandomHorizontalFlip(),
        ])
    return v2.Compose([v2.Resize(pre.image_size, interpolation=interp, antialias=True), v2.CenterCrop(pre.image_size)])


def decode_file(path: str, size: int) -> torch.Tensor:
    """The image file at `path` as an RGB uint8 tensor (3 x H x W), decoded for a model input
    of `size` pixels: what `ImageSet.load_image` gives, except that a JPEG whose shorter side
    is at least twice `size` is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling via
    PIL's `draft`), never below `size`. A 4,000 x 3,000 photo (3.9 MB) then reaches a 224-px
    input in 23-48 ms instead of 142-249 ms (2 busy CPU cores), within 1.6 grey levels on average.

    PIL, not torchvision's decoder: as fast on small JPEGs here (0.16 against 0.18 ms for
    256 px), with draft mode, every format and mode, and torchvision 0.29 deprecates its own.
    """
    with Image.open(path) as img:
        if img.format == "JPEG":
            img.draft("RGB", (size, size))  # a no-op unless the image is at least twice as large
        return torch.from_numpy(np.array(to_rgb(img), dtype=np.uint8)).permute(2, 0, 1)


class ImageTensorDataset(Dataset):
    """Yields (uint8 image tensor C x H x W, label, sample index); batches via `__getitems__`.

    Array data comes at its stored size (C = 1 for grey images, expanded on the device);
    file data is decoded to RGB and brought to the model's size by `file_geometry`.
    """

    def __init__(self, images: ImageSet, pre: Preprocess, train: bool, index: np.ndarray | None = None,
                 labels: np.ndarray | None = None) -> None:
        self.images = images
        self.geometry = None if images.arrays is not None else file_geometry(pre, train)
        self.size = pre.image_size
        self.index = np.arange(len(images)) if index is None else np.asarray(index, dtype=np.int64)
        self.labels = images.labels if labels is None else np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.index)

    def _file_tensor(self, i: int) -> torch.Tensor:
        return self.geometry(decode_file(self.images.paths[i], self.size))

    def __getitem__(self, k: int):
        x, y, i = self.__getitems__([k])
        return x[0], int(y[0]), int(i[0])

    def __getitems__(self, ks: list[int]):
        """One batch as (uint8 images B x C x H x W, labels B, sample indices B)."""
        idx = self.index[np.asarray(ks, dtype=np.int64)]
        if self.images.arrays is not None:
            x = torch.from_numpy(np.ascontiguousarray(self.images.arrays[idx]))
            x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)[:, :3]  # (N,H,W[,C]) -> (B,C,H,W), alpha dropped
        elif get_worker_info() is None:
            # in the main process torch may use several threads: on tensors this small their
            # start-up costs more than the work (measured 2 threads: 2-16 ms per image, one: 0.4)
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                x = torch.stack([self._file_tensor(int(i)) for i in idx])
            finally:
                torch.set_num_threads(threads)
        else:
            x = torch.stack([self._file_tensor(int(i)) for i in idx])
        return x, torch.from_numpy(self.labels[idx]), torch.from_numpy(idx)


def _collate(batch):
    """`__getitems__` already returns a batch; anything else is collated as usual."""
    return batch if isinstance(batch, tuple) else default_collate(batch)


def random_crop_boxes(n: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """RandomResizedCrop's crop boxes for `n` images, vectorised: (n, 4) float x1, y1, x2, y2.

    As torchvision draws them: up to 10 tries of area in CROP_SCALE and log-uniform aspect
    ratio in CROP_RATIO, the first crop that fits wins; else the largest centred crop whose
    ratio is within bounds.
    """
    tries = 10
    area = height * width
    target = area * torch.empty(n, tries).uniform_(*CROP_SCALE, generator=generator)
    log_ratio = torch.empty(n, tries).uniform_(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]), generator=generator)
    ratio = torch.exp(log_ratio)
    w = torch.round(torch.sqrt(target * ratio))
    h = torch.round(torch.sqrt(target / ratio))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.full((n,), -1))
    # fallback (no try fits): the centred crop torchvision uses
    in_ratio = width / height
    if in_ratio < CROP_RATIO[0]:
        fw, fh = width, round(width / CROP_RATIO[0])
    elif in_ratio > CROP_RATIO[1]:
        fw, fh = round(height * CROP_RATIO[1]), height
    else:
        fw, fh = width, height
    rows = torch.arange(n)
    ok = first >= 0
    pick = first.clamp(min=0)
    cw = torch.where(ok, w[rows, pick], torch.full((n,), float(fw)))
    ch = torch.where(ok, h[rows, pick], torch.full((n,), float(fh)))
    u = torch.rand(n, 2, generator=generator)
    # torch.randint(0, H - h + 1) per sample, as floor(u * (H - h + 1))
    y1 = torch.where(ok, torch.floor(u[:, 0] * (height - ch + 1)), torch.tensor(float((height - fh) // 2)))
    x1 = torch.where(ok, torch.floor(u[:, 1] * (width - cw + 1)), torch.tensor(float((width - fw) // 2)))
    return torch.stack([x1, y1, x1 + cw, y1 + ch], dim=1)


def crop_resize(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Each image's box (x1, y1, x2, y2 in pixels) resized to size x size, bilinear, in one op.

    `roi_align` with aligned=True samples exactly where `F.interpolate(align_corners=False)`
    does; when a box is larger than the output it averages ceil(box / size) samples per pixel
    in each direction, an anti-aliased downscale. Unlike cropping first, the outermost half
    pixel interpolates with the pixels just outside the box (a training augmentation only).
    """
    rois = torch.cat([torch.arange(len(x), dtype=x.dtype, device=x.device)[:, None], boxes.to(x)], dim=1)
    return roi_align(x, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def resize_centre_crop(x: torch.Tensor, size: int, interpolation: str) -> torch.Tensor:
    """v2.Resize(size) (shorter side, anti-aliased) + v2.CenterCrop(size) on a float batch."""
    h, w = x.shape[-2:]
    short, long = (h, w) if h <= w else (w, h)
    new_long = int(size * long / short)
    out_h, out_w = (size, new_long) if h <= w else (new_long, size)
    if (out_h, out_w) != (h, w):
        mode = interpolation if interpolation in ("bilinear", "bicubic", "nearest") else "bilinear"
        if mode == "nearest":
            x = F.interpolate(x, size=(out_h, out_w), mode="nearest")  # what v2.Resize(NEAREST) uses
        elif mode == "bicubic":
            # torchvision resizes uint8 images in two passes, clamping the bicubic overshoot to
            # 0..255 between them (width first); doing the same keeps the result within a grey level
            x = F.interpolate(x, size=(h, out_w), mode=mode, align_corners=False, antialias=True).clamp_(0, 1)
            x = F.interpolate(x, size=(out_h, out_w), mode=mode, align_corners=False, antialias=True).clamp_(0, 1)
        else:
            x = F.interpolate(x, size=(out_h, out_w), mode=mode, align_corners=False, antialias=True)
    top, left = int(round((out_h - size) / 2.0)), int(round((out_w - size) / 2.0))
    return x[..., top:top + size, left:left + size]


class BatchPreprocess:
    """uint8 batch (B x C x H x W, on the device) -> the model's normalised float input.

    `geometry` says whether the batch still needs resizing / cropping (array data) or was
    brought to size per image already (file data). Training draws crops and flips from its
    own seeded generator, so a run is reproducible on any device.
    """

    def __init__(self, pre: Preprocess, train: bool, geometry: bool, seed: int = 0,
                 channels_last: bool = False) -> None:
        self.pre, self.train, self.geometry = pre, train, geometry
        self.generator = torch.Generator().manual_seed(seed)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self._stats: dict = {}

    def _mean_std(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._stats:
            mean = torch.tensor(self.pre.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
            std = torch.tensor(self.pre.std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
            self._stats[device] = (mean, std)
        return self._stats[device]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.geometry:  # file data, RGB at the model's size already
            # (x / 255 - mean) / std as one multiply-subtract in place on the new float tensor:
            # 2.6x faster than three passes with a new tensor each (1.6 -> 0.6 ms an image at
            # 224 px on one CPU core, a few % of the forward)
            mean, std = self._mean_std(x.device)
            x = x.float().mul_(1.0 / (255.0 * std)).sub_(mean / std)
            return x.contiguous(memory_format=self.memory_format)
        x = x.float().div_(255.0)
        size = self.pre.image_size
        if self.train:
            boxes = random_crop_boxes(len(x), x.shape[-2], x.shape[-1], self.generator)
            x = crop_resize(x, boxes, size)
            flip = (torch.rand(len(x), generator=self.generator) < 0.5).to(x.device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        else:
            x = resize_centre_crop(x, size, self.pre.interpolation)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        mean, std = self._mean_std(x.device)
        return ((x - mean) / std).contiguous(memory_format=self.memory_format)


def batch_preprocess(images: ImageSet, pre: Preprocess, train: bool, seed: int = 0) -> BatchPreprocess:
    """The device-side half of the pipeline for `images`. Its batches are NCHW: a model whose
    weights `engine.to_device` laid out channels-last runs channels-last on them anyway."""
    return BatchPreprocess(pre, train, geometry=images.arrays is not None, seed=seed)


def default_workers(images: ImageSet, device: torch.device | str = "cpu") -> int:
    """Loader worker processes: none for in-memory arrays; for files, none on a CPU and up to
    8 (one core left to the main process) on a GPU.

    On a CPU the forward pass already uses every core and a worker takes cores from it, to
    win back little: EfficientNet-Lite0 features of 256-px JPEGs at 224 px on 2 cores spent
    0.5 ms an image decoding and resizing and 0.3 ms normalising, against 15-40 ms in the
    forward, so 0 workers reach at least 95% of the bare forward (`turn bench --throughput`,
    docs/benchmarks.md). On a GPU the forward is fast and decoding must keep up in parallel.
    `--workers` overrides this (large photos on a many-core CPU).
    """
    if images.arrays is not None or torch.device(device).type == "cpu":
        return 0
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int) -> DataLoader:
    """Batches of `dataset`; each worker keeps two batches ready (a 224-px batch of 128 is
    19 MB of pinned memory). Workers do not persist: every pass builds its own loader, and
    `accelerator.prepare` keeps a reference to each one it wraps, so persistent workers would
    outlive their pass and pile up round after round."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        collate_fn=_collate,
        persistent_workers=False,
        prefetch_factor=2 if num_workers > 0 else None,
        pin_memory=torch.cuda.is_available(),
        drop_last=False,
    )


def preprocessed_batches(images: ImageSet, pre: Preprocess, batch_size: int, device: torch.device,
                         index: np.ndarray | None = None, num_workers: int = 0):
    """Evaluation batches ready for the model: yields (float input on `device`, sample indices)."""
    prep = batch_preprocess(images, pre, False)
    loader = make_loader(ImageTensorDataset(images, pre, train=False, index=index), batch_size, False, 0, num_workers)
    for x, _, idx in loader:
        yield prep(x.to(device, non_blocking=True)), idx
