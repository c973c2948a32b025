"""A tiny dataset labelled by four simulated annotators (the profiles of `turn bench
--annotators`): demo images as PNG files and the manifest of their labels, long or wide."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from turn_backend.bench.annotators import simulate_annotators
from turn_backend.data.demo import load_demo
from turn_backend.noise import default_pairs


def annotated_images(root: Path, n_train: int = 60, n_test: int = 20, seed: int = 0) -> pd.DataFrame:
    """Demo images saved under root/images/ and the simulated annotators' labels: a long-form
    manifest frame (path, label, annotator, split, true_label; class names as labels).
    Test images get one label, the true one, from annotator "careful"."""
    bundle = load_demo(n_train, n_test)
    names = bundle.class_names
    (root / "images").mkdir(parents=True, exist_ok=True)
    frames = []
    for split, images in (("train", bundle.train), ("test", bundle.test)):
        paths = [f"images/{split}-{i}.png" for i in range(len(images))]
        for i, p in enumerate(paths):
            Image.fromarray(images.arrays[i]).save(root / p)
        true = images.labels
        if split == "train":
            long = simulate_annotators(true, len(names), default_pairs(names), seed)
        else:
            long = pd.DataFrame({"item": np.arange(len(true)), "annotator": "careful", "label": true})
        frames.append(pd.DataFrame({"path": np.asarray(paths)[long["item"]], "label": np.asarray(names)[long["label"]],
                                    "annotator": long["annotator"].to_numpy(), "split": split,
                                    "true_label": np.asarray(names)[true[long["item"]]]}))
    return pd.concat(frames, ignore_index=True)


def wide_form(long: pd.DataFrame) -> pd.DataFrame:
    """The same labels with one column `annotator_NAME` per annotator (empty: not labelled)."""
    wide = long.pivot(index="path", columns="annotator", values="label").add_prefix("annotator_")
    first = long.drop_duplicates("path").set_index("path")[["split", "true_label"]]
    return first.join(wide).reset_index().fillna("")


def write_annotated_manifest(root: Path, n_train: int = 60, n_test: int = 20, layout: str = "long") -> Path:
    """root/labels.csv over root/images/, in the `layout` "long" or "wide"."""
    long = annotated_images(root, n_train, n_test)
    path = root / "labels.csv"
    (long if layout == "long" else wide_form(long)).to_csv(path, index=False)
    return path
