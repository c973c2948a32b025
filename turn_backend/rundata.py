"""The dataset of a run: its images and labels with the run's synthetic noise applied.

Kept apart from `runner` so that the app can load a run's images without importing torch
(importing `turn_backend.runner` costs the app process about 1 GB of resident memory).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from turn_backend.data.core import DatasetBundle
from turn_backend.data.loaders import apply_label_noise, load_dataset

if TYPE_CHECKING:  # a type only: config imports the methods registry, whose methods run these stages
    from turn_backend.config import RunConfig


def load_run_data(config: RunConfig) -> DatasetBundle:
    """The dataset of a run, with its synthetic noise applied (seeded, so always the same)."""
    bundle = load_dataset(config.dataset)
    noise = config.noise or {"kind": "none"}
    if noise.get("kind", "none") != "none" and noise.get("rate", 0) > 0:
        bundle, _ = apply_label_noise(
            bundle, noise["kind"], float(noise["rate"]), int(noise.get("seed", 0)), noise.get("pairs")
        )
    return bundle
