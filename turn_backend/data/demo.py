"""The embedded default dataset: a class-balanced Fashion-MNIST subset.

It ships in `assets/fashion_mnist_demo.npz` (600 train and 200 test images per class,
the first ones of each class in the official files). Where the Debian package
`dataset-fashion-mnist` is installed, larger subsets are read from its IDX files.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np

from turn_backend.data.core import DatasetBundle, DatasetError, ImageSet
from turn_backend.io import atomic_write_bytes, cache_root
from turn_backend.noise import FASHION_MNIST_CLASSES

ASSET = Path(__file__).resolve().parents[2] / "assets" / "fashion_mnist_demo.npz"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


def read_idx_gz(path: Path) -> np.ndarray:
    """An IDX file (the MNIST file format) as a numpy array. A gzipped file is inflated into
    memory; an uncompressed one is memory-mapped, so a million images cost no memory until
    they are read."""
    path = Path(path)
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as fh:
            data = fh.read()
        header = data[:4 + 4 * 255]
    else:
        with open(path, "rb") as fh:
            header = fh.read(4 + 4 * 255)
    if len(header) < 4 or header[0] != 0 or header[1] != 0 or header[2] != 0x08:
        raise DatasetError(f"{path} is not an unsigned-byte IDX file")
    ndim = header[3]
    dims = [int.from_bytes(header[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    size = len(data) if path.suffix == ".gz" else path.stat().st_size
    if size - offset != expected:
        raise DatasetError(f"{path} is truncated: expected {expected} bytes of data, found {size - offset}")
    if path.suffix == ".gz":
        return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)
    return np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=tuple(dims))


def read_debian_idx(name: str) -> np.ndarray:
    """The Debian package's IDX file `name` as an array, decompressed once into the cache
    folder (TURN_CACHE_DIR): the 26 MB gzip of the training images takes 0.5-0.8 s to
    inflate in every process, the uncompressed copy opens memory-mapped at once. Where the
    cache cannot be written, or its copy is damaged, the gzip is read as before."""
    source = DEBIAN_DIR / name
    stat = source.stat()
    cached = cache_root() / "fashion-mnist" / f"{name.removesuffix('.gz')}-{stat.st_size}-{int(stat.st_mtime)}.npy"
    if cached.exists():
        try:
            return np.load(cached, mmap_mode="r")
        except (OSError, ValueError):
            pass  # damaged: written again below
    array = read_idx_gz(source)
    buf = io.BytesIO()
    np.save(buf, array)
    try:
        atomic_write_bytes(cached, buf.getvalue())  # a temporary file of its own: concurrent loaders are safe
    except OSError:
        pass
    return array


def _first_per_class(labels: np.ndarray, per_class: int, classes: list[int]) -> np.ndarray:
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in classes]))


def load_demo(n_train: int = 3000, n_test: int = 1000, classes: list[int] | None = None) -> DatasetBundle:
    """Fashion-MNIST, `n_train` / `n_test` images, balanced across the 10 classes, or across
    `classes` (Fashion-MNIST class indices, e.g. [0, 6] for T-shirt/top vs Shirt), which are
    then renumbered 0..len(classes)-1 in that order."""
    chosen = list(range(10)) if classes is None else [int(c) for c in classes]
    k = len(chosen)
    if k < 2 or len(set(chosen)) != k or not all(0 <= c < 10 for c in chosen):
        raise DatasetError(f"demo classes must be at least two distinct Fashion-MNIST classes 0-9, got {classes}")
    if n_train % k or n_test % k or n_train <= 0 or n_test <= 0:
        raise DatasetError(f"demo sizes must be positive multiples of {k} (one share per class)")
    per_train, per_test = n_train // k, n_test // k
    if per_train <= 600 and per_test <= 200:
        with np.load(ASSET) as z:
            xtr, ytr = z["train_images"], z["train_labels"].astype(np.int64)
            xte, yte = z["test_images"], z["test_labels"].astype(np.int64)
            origin_tr, origin_te = z["train_index"], z["test_index"]
    elif (DEBIAN_DIR / "train-images-idx3-ubyte.gz").exists():
        xtr = read_debian_idx("train-images-idx3-ubyte.gz")
        ytr = read_debian_idx("train-labels-idx1-ubyte.gz").astype(np.int64)
        xte = read_debian_idx("t10k-images-idx3-ubyte.gz")
        yte = read_debian_idx("t10k-labels-idx1-ubyte.gz").astype(np.int64)
        origin_tr, origin_te = np.arange(len(ytr)), np.arange(len(yte))
    else:
        raise DatasetError(
            "the embedded subset holds 6000 train / 2000 test images; for more, install the "
            "Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist)"
        )
    i, j = _first_per_class(ytr, per_train, chosen), _first_per_class(yte, per_test, chosen)
    if len(i) < n_train or len(j) < n_test:
        raise DatasetError(f"Fashion-MNIST has fewer images than asked for ({n_train} train, {n_test} test)")
    renumber = np.full(10, -1, dtype=np.int64)
    renumber[chosen] = np.arange(k)
    names = [FASHION_MNIST_CLASSES[c] for c in chosen]
    train = ImageSet(
        ids=[f"fmnist-train-{n:05d}" for n in origin_tr[i]],
        labels=renumber[ytr[i]], class_names=names, true_labels=renumber[ytr[i]], arrays=xtr[i],
    )
    test = ImageSet(
        ids=[f"fmnist-test-{n:05d}" for n in origin_te[j]],
        labels=renumber[yte[j]], class_names=names, true_labels=renumber[yte[j]], arrays=xte[j],
    )
    suffix = "" if classes is None else "-" + "-".join(map(str, chosen))
    return DatasetBundle(name=f"fashion-mnist-{n_train}{suffix}", train=train, test=test)
