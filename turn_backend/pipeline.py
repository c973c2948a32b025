"""From an ImageSet to batches of normalised tensors, with or without augmentation."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from turn_backend.data.core import ImageSet
from turn_backend.models.core import Preprocess

_INTERPOLATION = {
    "bilinear": v2.InterpolationMode.BILINEAR,
    "bicubic": v2.InterpolationMode.BICUBIC,
    "nearest": v2.InterpolationMode.NEAREST,
}


def make_transform(pre: Preprocess, train: bool) -> v2.Compose:
    """Evaluation: resize + centre crop. Training: a mild random resized crop and flip.

    Every method (TURN and its baselines) uses this one transform, so they compare fairly.
    """
    interp = _INTERPOLATION.get(pre.interpolation, v2.InterpolationMode.BILINEAR)
    if train:
        geometry = [
            v2.RandomResizedCrop(pre.image_size, scale=(0.7, 1.0), interpolation=interp, antialias=True),
            v2.RandomHorizontalFlip(),
        ]
    else:
        geometry = [v2.Resize(pre.image_size, interpolation=interp, antialias=True), v2.CenterCrop(pre.image_size)]
    return v2.Compose([*geometry, v2.ToDtype(torch.float32, scale=True), v2.Normalize(pre.mean, pre.std)])


class ImageTensorDataset(Dataset):
    """Yields (image tensor, label, sample index). Array-backed sets skip PIL entirely."""

    def __init__(self, images: ImageSet, pre: Preprocess, train: bool, index: np.ndarray | None = None,
                 labels: np.ndarray | None = None) -> None:
        self.images = images
        self.transform = make_transform(pre, train)
        self.index = np.arange(len(images)) if index is None else np.asarray(index, dtype=np.int64)
        self.labels = images.labels if labels is None else np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.index)

    def _tensor(self, i: int) -> torch.Tensor:
        if self.images.arrays is not None:
            arr = torch.from_numpy(np.ascontiguousarray(self.images.arrays[i]))
            arr = arr[None].expand(3, -1, -1) if arr.ndim == 2 else arr.permute(2, 0, 1)[:3]
            if arr.shape[0] == 1:
                arr = arr.expand(3, -1, -1)
            return arr
        img = self.images.load_image(i)
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)

    def __getitem__(self, k: int):
        i = int(self.index[k])
        return self.transform(self._tensor(i)), int(self.labels[i]), i


def default_workers(images: ImageSet) -> int:
    """Worker processes for decoding: none for in-memory arrays, up to 8 for files."""
    if images.arrays is not None:
        return 0
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
        drop_last=False,
    )
