"""Where a model's frozen features of an image set are cached, shared by every run and method.

Two runs that read the same images with the same extractor and preprocessing share one
file, whatever their method, noise or seed: the key leaves the labels out, and for files it
hashes their bytes, not their paths, so a renamed or copied folder keeps its features. The 2-D maps of
those features ("before" tuning) are shared the same way (`shared_maps_dir`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np

from turn_backend import projection
from turn_backend.data.core import ImageSet
from turn_backend.io import cache_root
from turn_backend.models.core import Preprocess


def feature_cache_path(images: ImageSet, model_name: str, checkpoint: str | None, pretrained: bool,
                       preprocess: Preprocess, split: str) -> Path:
    """The `.npy` that holds (or will hold) the features of `images` (N x D float32).

    `model_name` is the loaded model's canonical name (`LoadedModel.name`); `checkpoint` and
    `pretrained` as in the run's config; `split` ("train" / "test") only names the file.
    """
    key = hashlib.sha256(
        f"{images.content_key()}|{model_name}|{checkpoint}|{pretrained}|{preprocess.key()}".encode()
    ).hexdigest()[:20]
    return cache_root() / "features" / f"{split}-{key}.npy"


def shared_maps_dir(feature_path: Path, subset: np.ndarray, seed: int) -> Path:
    """The cache of the maps of the pre-trained features in `feature_path`, rows `subset`.

    They depend on neither the method nor the labels, so every run on the same images, model,
    subset and seed (the four of `turn demo`) computes them once. The key includes the
    projection code itself, so a change there never serves an outdated map.
    """
    h = hashlib.sha256(f"{Path(feature_path).name}|{seed}|".encode())
    h.update(np.asarray(subset, dtype=np.int64).tobytes())
    h.update(Path(projection.__file__).read_bytes())
    return cache_root() / "maps" / h.hexdigest()[:20]


def before_map_files(split: str, methods) -> list[str]:
    """The files `projection.compute_projections` writes for the "before" stage."""
    return [f"{split}_pca_before.npy", *(f"{split}_before_{m}.npy" for m in methods)]


def copy_files(names: list[str], src: Path, dst: Path) -> bool:
    """Copy `names` from `src` to `dst` (each via a temporary file, then renamed); False, and
    nothing copied, when one of them is missing."""
    if not all((Path(src) / name).exists() for name in names):
        return False
    Path(dst).mkdir(parents=True, exist_ok=True)
    for name in names:
        tmp = Path(dst) / f".{name}.{os.getpid()}.tmp"
        shutil.copyfile(Path(src) / name, tmp)
        os.replace(tmp, Path(dst) / name)
    return True
