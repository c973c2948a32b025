"""Where a model's frozen features of an image set are cached, shared by every run and method.

Two runs that read the same images with the same extractor and preprocessing share one
file, whatever their method, noise or seed: the key leaves the labels out.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from turn_backend.data.core import ImageSet
from turn_backend.models.core import Preprocess


def cache_root() -> Path:
    """`$TURN_CACHE_DIR`, or ~/.cache/turn-studio."""
    return Path(os.environ.get("TURN_CACHE_DIR", Path.home() / ".cache" / "turn-studio"))


def feature_cache_path(images: ImageSet, model_name: str, checkpoint: str | None, pretrained: bool,
                       preprocess: Preprocess, split: str) -> Path:
    """The `.npy` that holds (or will hold) the features of `images` (N x D float32).

    `model_name` is the loaded model's canonical name (`LoadedModel.name`); `checkpoint` and
    `pretrained` as in the run's config; `split` ("train" / "test") only names the file.
    """
    key = hashlib.sha256(
        f"{images.fingerprint(include_labels=False)}|{model_name}|{checkpoint}|{pretrained}|{preprocess.key()}".encode()
    ).hexdigest()[:20]
    return cache_root() / "features" / f"{split}-{key}.npy"
