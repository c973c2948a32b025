"""The large sets of `turn bench --scale --n N`: Fashion-MNIST grown to N training images by
augmentation, stored as one uncompressed IDX folder that the product memory-maps.

The first 60,000 training images are Fashion-MNIST's own; every further one is a copy of a
randomly drawn training image, shifted by up to 2 pixels (a crop of the zero-padded image),
mirrored half the time, its brightness scaled by 0.8-1.2 and Gaussian pixel noise (sd 8)
added. Labels are the source image's, so they are true labels: `turn run --noise` adds the
noise of each type on top. The test split is Fashion-MNIST's 10,000 test images, as they are.
The folder is written once per (N, seed) and reused; a million images take 784 MB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from turn_backend.data.demo import read_debian_idx

SHIFT = 2  # pixels a copy may move in each direction
BRIGHTNESS = (0.8, 1.2)
PIXEL_NOISE_SD = 8.0
CHUNK = 65_536
IMAGE_MAGIC, LABEL_MAGIC = 0x00000803, 0x00000801


def _header(magic: int, dims: tuple[int, ...]) -> bytes:
    return b"".join(int(v).to_bytes(4, "big") for v in (magic, *dims))


def _idx_memmap(path: Path, shape: tuple[int, ...]) -> np.memmap:
    """A new uncompressed IDX file of `shape` (uint8), its data open for writing."""
    header = _header(IMAGE_MAGIC if len(shape) == 3 else LABEL_MAGIC, shape)
    with open(path, "wb") as fh:
        fh.write(header)
        fh.truncate(len(header) + int(np.prod(shape)))
    return np.memmap(path, dtype=np.uint8, mode="r+", offset=len(header), shape=shape)


def augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shifted, mirrored, brightness-scaled, noised copies of (n, H, W) uint8 images."""
    n, h, w = images.shape
    padded = np.pad(images, ((0, 0), (SHIFT, SHIFT), (SHIFT, SHIFT)))
    dy = rng.integers(0, 2 * SHIFT + 1, n)
    dx = rng.integers(0, 2 * SHIFT + 1, n)
    rows = dy[:, None] + np.arange(h)[None, :]  # (n, H)
    cols = dx[:, None] + np.arange(w)[None, :]  # (n, W)
    out = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]].astype(np.float32)
    flip = rng.random(n) < 0.5
    out[flip] = out[flip, :, ::-1]
    out *= rng.uniform(*BRIGHTNESS, n).astype(np.float32)[:, None, None]
    out += rng.normal(0.0, PIXEL_NOISE_SD, out.shape).astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def build_scale_set(n: int, root: Path, seed: int = 0, log=print) -> Path:
    """The IDX folder of an n-image training set (and the 10,000 test images), built once."""
    folder = Path(root) / f"fashion-mnist-{n}-seed{seed}"
    done = folder / "COMPLETE"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    source = read_debian_idx("train-images-idx3-ubyte.gz")
    source_labels = read_debian_idx("train-labels-idx1-ubyte.gz")
    images = _idx_memmap(folder / "train-images-idx3-ubyte", (n, *source.shape[1:]))
    labels = _idx_memmap(folder / "train-labels-idx1-ubyte", (n,))
    own = min(n, len(source))
    images[:own], labels[:own] = source[:own], source_labels[:own]
    rng = np.random.default_rng(seed)
    for start in range(own, n, CHUNK):
        stop = min(n, start + CHUNK)
        pick = rng.integers(0, len(source), stop - start)
        images[start:stop] = augment(np.asarray(source[pick]), rng)
        labels[start:stop] = source_labels[pick]
        log(f"augmented {stop:,} / {n:,} training images")
    images.flush()
    labels.flush()
    del images, labels
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        array = read_debian_idx(name + ".gz")
        out = _idx_memmap(folder / name, array.shape)
        out[:] = array
        out.flush()
        del out
    done.write_text(f"{n} training images, seed {seed}\n")
    return folder
