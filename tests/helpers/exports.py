"""A finished run written by hand over a few image files, and how an exported ImageFolder reads back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from turn_backend.export import MARKER
from turn_backend.io import atomic_write_json
from turn_backend.review import ReviewStore

CLASSES = ["cat", "dog/wolf"]  # a "/" in a class name: its folder gets a safe name


def file_run(tmp_path: Path) -> Path:
    """A finished run over six image files, written by hand (no training needed)."""
    run, images = tmp_path / "run", tmp_path / "images"
    run.mkdir()
    images.mkdir()
    paths = []
    for i in range(6):
        p = images / f"img{i}.png"
        Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(p)
        paths.append(str(p))
    atomic_write_json(run / "config.json", {"dataset": {"kind": "folder", "path": str(images)}, "tau": 0.5})
    pd.DataFrame({"sample_id": [f"s{i}" for i in range(6)], "source": paths, "split": "train",
                  "given_label": [0, 0, 0, 1, 1, 1], "true_label": -1}).to_parquet(run / "samples.parquet")
    atomic_write_json(run / "classes.json", CLASSES)
    (run / "final").mkdir()
    np.save(run / "final" / "logits.npy", np.array([[2.0, 0]] * 3 + [[0, 2.0]] * 3, dtype=np.float32))
    np.save(run / "final" / "clean_prob.npy", np.array([0.9, 0.1, 0.8, 0.9, 0.2, 0.7], dtype=np.float32))
    np.save(run / "final" / "losses.npy", np.zeros(6, dtype=np.float32))
    atomic_write_json(run / "final" / "gmm.json", {"fits": []})
    store = ReviewStore(run / "review.sqlite")
    store.record("s1", "relabel", 1)  # cat -> dog/wolf
    store.record("s4", "remove")
    store.record("s5", "keep")
    return run


def imagefolder_labels(out: Path) -> dict[str, str]:
    """sample file stem -> class name, as torchvision.datasets.ImageFolder reads the tree."""
    from torchvision.datasets import ImageFolder

    folders = json.loads((out / MARKER).read_text())["folders"]
    ds = ImageFolder(str(out))
    return {Path(p).stem: folders[ds.classes[c]] for p, c in ds.samples}
