"""A folder of JPEG files made from the embedded demo data, for benchmarks on real files.

Fashion-MNIST's 28-px grey images are upscaled (bicubic) to `size` pixels and tinted with a
random colour per image, so the files are ordinary colour JPEGs (chroma planes included) of
the size users' photos are usually brought to. Layout, one subfolder per given label:

    root/train/<class>/<id>.jpg     given (noisy) label = folder
    root/test/<class>/<id>.jpg      true label
    root/manifest.csv               path, label, split, true_label (for scoring the flags)
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from turn_backend.data.demo import load_demo
from turn_backend.io import atomic_write_bytes, read_json
from turn_backend.noise import apply_noise

MANIFEST = "manifest.csv"
_SETTINGS = ".settings.json"


def _folder_name(class_name: str) -> str:
    return class_name.replace("/", "-")  # "T-shirt/top"


def _jpeg(gray: np.ndarray, size: int, tint: np.ndarray) -> bytes:
    big = np.asarray(Image.fromarray(gray).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
    rgb = np.clip(big[..., None] * tint, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def write_photo_folder(root: Path, n_train: int, n_test: int, size: int, noise: str = "none",
                       rate: float = 0.0, seed: int = 0) -> Path:
    """Write (or keep, when one with the same settings is there) the folder; returns the manifest.

    `noise` / `rate` as in `noise.apply_noise` (symmetric, asymmetric, instance), on the
    training split only; `seed` draws the noise and the tints.
    """
    root = Path(root)
    settings = {"n_train": n_train, "n_test": n_test, "size": size, "noise": noise, "rate": rate, "seed": seed}
    manifest = root / MANIFEST
    if manifest.exists() and read_json(root / _SETTINGS) == settings:
        return manifest
    bundle = load_demo(n_train, n_test)
    train, test = bundle.train, bundle.test
    noisy = apply_noise(train.labels, train.num_classes, noise, rate, seed, class_names=train.class_names,
                        images=train.pixel_matrix(None))
    tints = np.random.default_rng(seed).uniform(0.55, 1.0, size=(n_train + n_test, 3)).astype(np.float32)
    names = [_folder_name(c) for c in train.class_names]
    rows = []
    k = 0
    for split, images, labels in (("train", train, noisy.noisy), ("test", test, test.labels)):
        for i in range(len(images)):
            rel = f"{split}/{names[labels[i]]}/{images.ids[i]}.jpg"
            atomic_write_bytes(root / rel, _jpeg(images.arrays[i], size, tints[k]))
            rows.append((rel, names[labels[i]], split, names[images.true_labels[i]]))
            k += 1
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["path", "label", "split", "true_label"])
    writer.writerows(rows)
    atomic_write_bytes(manifest, buf.getvalue().encode())
    atomic_write_bytes(root / _SETTINGS, json.dumps(settings).encode())
    return manifest
