"""Seeded synthetic label noise: symmetric, asymmetric (pair flips) and instance-dependent.

Every generator returns a `NoisyLabels` with the noisy labels, the true ones and the
fraction that actually changed, so purity, precision and recall can be measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from turn_backend.errors import DatasetError

NOISE_TYPES = ("none", "symmetric", "asymmetric", "instance")

# Built-in asymmetric maps: class index -> partner class index.
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]
# T-shirt/top <-> Shirt, Pullover <-> Coat, Sneaker <-> Ankle boot
FASHION_MNIST_PAIRS = {0: 6, 6: 0, 2: 4, 4: 2, 7: 9, 9: 7}
# truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog
CIFAR10_PAIRS = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}


@dataclass
class NoisyLabels:
    noisy: np.ndarray
    true: np.ndarray
    actual_rate: float


def _result(noisy: np.ndarray, true: np.ndarray) -> NoisyLabels:
    return NoisyLabels(noisy=noisy, true=true, actual_rate=float(np.mean(noisy != true)) if len(true) else 0.0)


def _check_rate(rate: float) -> None:
    if not 0.0 <= rate <= 1.0:
        raise DatasetError(f"noise rate must be between 0 and 1, got {rate}")


def symmetric_noise(labels: np.ndarray, num_classes: int, rate: float, seed: int) -> NoisyLabels:
    """A fraction `rate` of samples gets a label drawn uniformly from the other C-1 classes."""
    _check_rate(rate)
    if num_classes < 2:
        raise DatasetError("symmetric noise needs at least two classes")
    true = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    n_flip = int(round(rate * len(true)))
    flip = rng.choice(len(true), size=n_flip, replace=False)
    # an offset in 1..C-1 added modulo C is uniform over the other classes
    offsets = rng.integers(1, num_classes, size=n_flip)
    noisy = true.copy()
    noisy[flip] = (true[flip] + offsets) % num_classes
    return _result(noisy, true)


def asymmetric_noise(
    labels: np.ndarray, num_classes: int, rate: float, seed: int, pairs: dict[int, int]
) -> NoisyLabels:
    """A fraction `rate` of each class in `pairs` flips to its partner class."""
    _check_rate(rate)
    for src, dst in pairs.items():
        if not (0 <= src < num_classes and 0 <= dst < num_classes) or src == dst:
            raise DatasetError(f"asymmetric map entry {src} -> {dst} is not a pair of two distinct classes")
    true = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    noisy = true.copy()
    for src, dst in sorted(pairs.items()):
        members = np.flatnonzero(true == src)
        n_flip = int(round(rate * len(members)))
        noisy[rng.choice(members, size=n_flip, replace=False)] = dst
    return _result(noisy, true)


def cifar100_pairs(coarse_of_fine: np.ndarray) -> dict[int, int]:
    """CIFAR-100: each class flips to the next class of its superclass (circularly)."""
    pairs = {}
    for coarse in np.unique(coarse_of_fine):
        members = np.flatnonzero(coarse_of_fine == coarse)
        for k, fine in enumerate(members):
            pairs[int(fine)] = int(members[(k + 1) % len(members)])
    return pairs


def default_pairs(class_names: list[str]) -> dict[int, int]:
    """The built-in asymmetric map for a known class list, or an error asking for one."""
    if list(class_names) == FASHION_MNIST_CLASSES:
        return dict(FASHION_MNIST_PAIRS)
    if [c.lower() for c in class_names] == CIFAR10_CLASSES:
        return dict(CIFAR10_PAIRS)
    raise DatasetError(
        "asymmetric noise needs a class map for this dataset: pass pairs such as "
        "{'cat': 'dog', 'dog': 'cat'} (built-in maps exist for Fashion-MNIST and CIFAR-10)"
    )


def instance_noise(
    labels: np.ndarray, images: np.ndarray, num_classes: int, rate: float, seed: int
) -> NoisyLabels:
    """Instance-dependent noise (Xia et al. 2020, as used by Cheng et al. 2021).

    Per-sample flip rate q_i ~ N(rate, 0.1^2) truncated to [0, 1]; W ~ N(0, 1) of shape
    (L, C) with L the flattened input length; scores x_i W with the true class masked out,
    softmax, scaled by q_i; the true class keeps probability 1 - q_i.
    """
    _check_rate(rate)
    true = np.asarray(labels, dtype=np.int64)
    n = len(true)
    rng = np.random.default_rng(seed)
    pixels = np.asarray(images).reshape(n, -1)
    from scipy import stats

    sd = 0.1
    if rate in (0.0, 1.0):
        flip_rate = np.full(n, rate)
    else:
        a, b = (0.0 - rate) / sd, (1.0 - rate) / sd
        flip_rate = stats.truncnorm.rvs(a, b, loc=rate, scale=sd, size=n, random_state=rng)
    w = rng.standard_normal((pixels.shape[1], num_classes))
    # x W in chunks: a float copy of a large image set would not fit in memory at once
    scores = np.concatenate([
        (pixels[i:i + 4096].astype(np.float64) / 255.0) @ w for i in range(0, n, 4096)
    ]) if n else np.zeros((0, num_classes))
    scores[np.arange(n), true] = -np.inf
    scores -= scores.max(axis=1, keepdims=True)
    p = np.exp(scores)
    p /= p.sum(axis=1, keepdims=True)
    p *= flip_rate[:, None]
    p[np.arange(n), true] = 1.0 - flip_rate
    # inverse-CDF sampling, one uniform draw per sample
    cdf = np.cumsum(p, axis=1)
    u = rng.random(n)[:, None] * cdf[:, -1:]
    noisy = np.minimum((u > cdf).sum(axis=1), num_classes - 1).astype(np.int64)
    return _result(noisy, true)


def apply_noise(
    labels: np.ndarray,
    num_classes: int,
    kind: str,
    rate: float,
    seed: int,
    *,
    class_names: list[str] | None = None,
    images: np.ndarray | None = None,
    pairs: dict[int, int] | None = None,
) -> NoisyLabels:
    """Dispatch on `kind` (one of NOISE_TYPES)."""
    if kind == "none" or rate == 0:
        true = np.asarray(labels, dtype=np.int64)
        return _result(true.copy(), true)
    if kind == "symmetric":
        return symmetric_noise(labels, num_classes, rate, seed)
    if kind == "asymmetric":
        if pairs is None:
            pairs = default_pairs(class_names or [])
        return asymmetric_noise(labels, num_classes, rate, seed, pairs)
    if kind == "instance":
        if images is None:
            raise DatasetError("instance-dependent noise needs the images (pixel arrays)")
        return instance_noise(labels, images, num_classes, rate, seed)
    raise DatasetError(f"unknown noise type {kind!r}; choose one of {', '.join(NOISE_TYPES)}")
