"""`turn bench --scale --n N`: the augmented set it builds and how its stage table judges growth."""

from __future__ import annotations

import numpy as np

from turn_backend.bench import scale, scale_data
from turn_backend.data.loaders import load_dataset


def _tiny_source(monkeypatch):
    rng = np.random.default_rng(0)
    # smooth images (7 x 7 random blocks of 4 px), so that a 2-px shift stays close to its source
    smooth = np.kron(rng.integers(0, 256, (30, 7, 7)), np.ones((1, 4, 4))).astype(np.uint8)
    arrays = {
        "train-images-idx3-ubyte.gz": smooth,
        "train-labels-idx1-ubyte.gz": np.arange(30, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": np.arange(10, dtype=np.uint8),
    }
    monkeypatch.setattr(scale_data, "read_debian_idx", lambda name: arrays[name])
    return arrays


def test_the_scale_set_keeps_the_originals_then_adds_labelled_augmented_copies(monkeypatch, tmp_path):
    source = _tiny_source(monkeypatch)
    monkeypatch.setattr(scale_data, "CHUNK", 16)  # several chunks
    folder = scale_data.build_scale_set(100, tmp_path)
    bundle = load_dataset({"kind": "idx", "path": str(folder), "variant": "fashion-mnist"})
    train = bundle.train
    assert len(train) == 100 and len(bundle.test) == 10
    assert isinstance(train.arrays.base, np.memmap) or isinstance(train.arrays, np.memmap)  # never read whole
    images, labels = source["train-images-idx3-ubyte.gz"], source["train-labels-idx1-ubyte.gz"]
    np.testing.assert_array_equal(train.arrays[:30], images)
    np.testing.assert_array_equal(train.labels[:30], labels)
    # each copy is closest to a source image (or its mirror image) of its own label, and is not that image
    copies = train.arrays[30:].reshape(70, -1).astype(np.float32)
    sources = np.concatenate([images, images[:, :, ::-1]]).reshape(60, -1).astype(np.float32)
    distance = ((copies[:, None, :] - sources[None]) ** 2).sum(2)
    nearest = distance.argmin(1) % 30
    assert (labels[nearest] == train.labels[30:]).mean() > 0.9
    assert (distance.min(1) > 0).all()
    # built once: a second call reuses the folder
    stamp = (folder / "train-images-idx3-ubyte").stat().st_mtime_ns
    assert scale_data.build_scale_set(100, tmp_path) == folder
    assert (folder / "train-images-idx3-ubyte").stat().st_mtime_ns == stamp


def test_the_stage_table_marks_a_stage_that_grows_faster_than_n_log_n():
    sizes = [60_000, 1_000_000]
    bound = scale.n_log_n_ratio(*sizes)
    assert 20 < bound < 21.5  # 16.7x the samples, times log(1M) / log(60k)
    figures = {"stage_s.detect@60000": 10.0, "stage_s.detect": 10.0 * bound * 0.9, "peak_mb.detect": 3000.0,
               "stage_s.audit@60000": 10.0, "stage_s.audit": 10.0 * bound * 1.5, "peak_mb.audit": 2000.0}
    rows = {line.split(" | ")[0].strip("| "): line for line in scale.stage_table(figures, sizes).splitlines()}
    assert rows["detect"].rstrip(" |").endswith("yes")
    assert rows["audit"].rstrip(" |").endswith("**no**")
    assert "projection" not in rows  # not measured: no row
