"""The dataset model every loader produces: labelled image sets with optional ground truth.

An `ImageSet` is one split. Images come either from files (`paths`) or from an in-memory
uint8 array (`arrays`, shape (N, H, W) or (N, H, W, C)); both are read through
`load_image(i)`, which always returns an RGB PIL image. A `DatasetBundle` holds the train
split, an optional test split and the items a loader skipped (with the reason).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from turn_backend.data.digests import file_digests
from turn_backend.errors import DatasetError


@dataclass(frozen=True)
class SkippedItem:
    """An input item a loader left out, and why."""

    source: str
    reason: str


@dataclass
class ImageSet:
    """One split: images, given labels and (where known) true labels."""

    ids: list[str]
    labels: np.ndarray
    class_names: list[str]
    true_labels: np.ndarray | None = None
    paths: list[str] | None = None
    arrays: np.ndarray | None = None
    # `content_key`, once computed: a run asks for it at every stage that names a cache file,
    # and it hashes every pixel (arrays) or looks up every file's digest (files)
    _content_key: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        n = len(self.labels)
        if (self.paths is None) == (self.arrays is None):
            raise DatasetError("an ImageSet needs exactly one of `paths` or `arrays`")
        if len(self.ids) != n:
            raise DatasetError(f"{len(self.ids)} ids for {n} labels: give one id per sample")
        if self.paths is not None and len(self.paths) != n:
            raise DatasetError(f"{len(self.paths)} paths for {n} labels: give one path per sample")
        if self.arrays is not None:
            self.arrays = np.asarray(self.arrays)
            if self.arrays.dtype != np.uint8:
                raise DatasetError(f"image arrays must be uint8 (0-255), got {self.arrays.dtype}")
            if self.arrays.ndim not in (3, 4) or len(self.arrays) != n:
                raise DatasetError(
                    f"image arrays must have shape (N, H, W) or (N, H, W, C) with N = {n}, "
                    f"got {self.arrays.shape}"
                )
        if self.true_labels is not None:
            self.true_labels = np.asarray(self.true_labels, dtype=np.int64)
            if len(self.true_labels) != n:
                raise DatasetError(f"{len(self.true_labels)} true labels for {n} samples")
        c = len(self.class_names)
        for name, arr in (("label", self.labels), ("true label", self.true_labels)):
            if arr is not None and n and (arr.min() < 0 or arr.max() >= c):
                raise DatasetError(
                    f"a {name} is outside 0..{c - 1}: every label must index the class list "
                    f"{self.class_names}"
                )
        if len(set(self.ids)) != n:
            raise DatasetError("sample ids must be unique; found duplicates")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def load_image(self, i: int) -> Image.Image:
        """Sample `i` as an RGB PIL image."""
        if self.arrays is not None:
            return Image.fromarray(self.arrays[i]).convert("RGB")
        with Image.open(self.paths[i]) as img:
            return to_rgb(img)

    def subset(self, index: np.ndarray) -> ImageSet:
        index = np.asarray(index, dtype=np.int64)
        return ImageSet(
            ids=[self.ids[i] for i in index],
            labels=self.labels[index],
            class_names=list(self.class_names),
            true_labels=None if self.true_labels is None else self.true_labels[index],
            paths=None if self.paths is None else [self.paths[i] for i in index],
            arrays=None if self.arrays is None else self.arrays[index],
        )

    def with_labels(self, labels: np.ndarray, true_labels: np.ndarray | None) -> ImageSet:
        """The same images with other given (and true) labels, e.g. after synthetic noise."""
        return ImageSet(
            ids=list(self.ids),
            labels=labels,
            class_names=list(self.class_names),
            true_labels=true_labels,
            paths=self.paths,
            arrays=self.arrays,
        )

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.num_classes)

    def fingerprint(self) -> str:
        """A hash of the images (bytes, or file path + size + mtime), ids and labels."""
        h = hashlib.sha256()
        h.update("\x1f".join(self.ids).encode())
        h.update("\x1f".join(self.class_names).encode())
        h.update(self.labels.tobytes())
        if self.arrays is not None:
            h.update(str(self.arrays.shape).encode())
            h.update(np.ascontiguousarray(self.arrays).tobytes())
        else:
            for p in self.paths:
                st = Path(p).stat()
                h.update(f"{p}\x1f{st.st_size}\x1f{st.st_mtime_ns}".encode())
        return h.hexdigest()[:16]

    def content_key(self) -> str:
        """A hash of the pixels' sources in row order, labels, ids and locations left out:
        the key of the feature cache. For files, the digests of their bytes
        (`data.digests`), so a dataset renamed, moved or copied keeps its features and a
        file whose bytes change gets new ones. Computed once per ImageSet."""
        if self._content_key is None:
            h = hashlib.sha256()
            if self.arrays is not None:
                h.update(str(self.arrays.shape).encode())
                h.update(np.ascontiguousarray(self.arrays).tobytes())
            else:
                h.update("\n".join(file_digests(self.paths)).encode())
            self._content_key = h.hexdigest()[:16]
        return self._content_key

    def source(self, i: int) -> str:
        """Where sample `i` comes from, for exports: its path, or its id for array data."""
        return self.paths[i] if self.paths is not None else self.ids[i]

    def pixel_matrix(self, size: int | None = 32) -> np.ndarray:
        """Every image as one flattened uint8 row, shape (N, L): input for instance noise.

        `size` resizes each image to size x size RGB (L = size * size * 3). `size=None`
        keeps array data as stored (e.g. 28x28 grey: L = 784); file data then needs
        images that all share one size. Memory is N * L bytes.
        """
        n = len(self)
        if size is None:
            if self.arrays is not None:
                return np.ascontiguousarray(self.arrays.reshape(n, -1))
            rows = [np.asarray(self.load_image(i), dtype=np.uint8).reshape(-1) for i in range(n)]
            if len({r.size for r in rows}) > 1:
                raise DatasetError("images differ in size: give pixel_matrix a size to resize them to")
            return np.stack(rows) if rows else np.zeros((0, 0), dtype=np.uint8)
        if size <= 0:
            raise DatasetError(f"pixel_matrix size must be positive, got {size}")
        out = np.empty((n, size * size * 3), dtype=np.uint8)
        for i in range(n):
            if self.arrays is not None:
                img = Image.fromarray(self.arrays[i]).convert("RGB")
            else:
                with Image.open(self.paths[i]) as raw:
                    if raw.format == "JPEG":
                        raw.draft("RGB", (size, size))  # decode JPEGs at reduced scale: faster
                    img = to_rgb(raw)
            if img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            out[i] = np.asarray(img, dtype=np.uint8).reshape(-1)
        return out


@dataclass
class DatasetBundle:
    """A dataset as loaded: train split, optional test split, skipped items."""

    name: str
    train: ImageSet
    test: ImageSet | None = None
    skipped: list[SkippedItem] = field(default_factory=list)
    # What a loader records beside the splits: "warnings" (list of str), "empty_classes",
    # "coarse_of_fine" / "coarse_names" (CIFAR-100), "partial_true_labels", "noise", ...
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        return self.train.class_names

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    def fingerprint(self) -> str:
        parts = [self.train.fingerprint()]
        if self.test is not None:
            parts.append(self.test.fingerprint())
        return hashlib.sha256("/".join(parts).encode()).hexdigest()[:16]


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode (grey, 16-bit, palette, RGBA, CMYK) as 8-bit RGB.

    16-bit greyscale ("I;16", "I") is rescaled to 0-255 rather than clipped, and transparent
    pixels are composited onto white so that RGBA cut-outs keep their shape.
    """
    img.load()
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(scaled.astype(np.uint8)).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img.convert("RGBA")).convert("RGB")
    return img.convert("RGB")


def from_arrays(
    images: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    *,
    true_labels: np.ndarray | None = None,
    test_images: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
    name: str = "arrays",
) -> DatasetBundle:
    """A dataset from numpy arrays (the Python API's entry point)."""
    train = ImageSet(
        ids=[f"train-{i}" for i in range(len(labels))],
        labels=labels,
        class_names=list(class_names),
        true_labels=true_labels,
        arrays=images,
    )
    test = None
    if test_images is not None:
        if test_labels is None:
            raise DatasetError("test_images were given without test_labels")
        test = ImageSet(
            ids=[f"test-{i}" for i in range(len(test_labels))],
            labels=test_labels,
            class_names=list(class_names),
            true_labels=test_labels,
            arrays=test_images,
        )
    return DatasetBundle(name=name, train=train, test=test)
