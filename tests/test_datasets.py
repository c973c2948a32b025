"""Dataset loaders, path safety and the synthetic noise generators, on tiny fake data."""

from __future__ import annotations

import csv
import gzip
import io
import os
import pickle
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from turn_backend.data import DatasetError, apply_label_noise, load_dataset
from turn_backend.data.common import check_image_file
from turn_backend.noise import (
    FASHION_MNIST_CLASSES,
    apply_noise,
    asymmetric_noise,
    cifar100_pairs,
    instance_noise,
    symmetric_noise,
)
from turn_backend.paths import PathOutsideRoot, resolve_inside

# ------------------------------------------------------------------------------ helpers


def png(path: Path, value: int = 0, size=(8, 8), mode: str = "RGB", fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, format=fmt)
    return path


def png_bytes(value: int = 0, size=(8, 8), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


def reasons(bundle) -> dict[str, str]:
    return {s.source: s.reason for s in bundle.skipped}


def class_tree(root: Path, classes=("cat", "dog"), per_class=3, size=(8, 8)) -> Path:
    for c in classes:
        for k in range(per_class):
            png(root / c / f"{k}.png", value=hash((c, k)) % 1000, size=size)
    return root


def write_manifest(path: Path, rows: list[list[str]], delimiter=",", bom=False, encoding="utf-8") -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, lineterminator="\r\n")
    for r in rows:
        w.writerow(r)
    data = buf.getvalue().encode(encoding)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


# ------------------------------------------------------------------------------ path safety


def test_resolve_inside(tmp_path):
    root = tmp_path / "data"
    png(root / "a" / "x.png")
    outside = png(tmp_path / "secret.png")
    assert resolve_inside(root, "a/x.png") == root / "a" / "x.png"
    assert resolve_inside(root, "a/../a/x.png").name == "x.png"
    assert resolve_inside(root, str(root / "a" / "x.png")) == root / "a" / "x.png"
    assert resolve_inside(root, "not/yet/there.png") == root / "not" / "yet" / "there.png"
    for bad in ("../secret.png", "../../secret", "a/../../secret.png", str(outside), "/etc/passwd"):
        with pytest.raises(PathOutsideRoot):
            resolve_inside(root, bad)
    os.symlink(outside, root / "a" / "link.png")
    os.symlink(root / "a" / "x.png", root / "a" / "inner.png")
    with pytest.raises(PathOutsideRoot, match="outside the data root"):
        resolve_inside(root, "a/link.png")
    assert resolve_inside(root, "a/inner.png") == root / "a" / "inner.png"
    with pytest.raises(DatasetError):
        resolve_inside(root, "a/\x00.png")
    # a folder link leading out, and a root that is itself a link
    os.symlink(tmp_path, root / "up")
    with pytest.raises(PathOutsideRoot):
        resolve_inside(root, "up/secret.png")
    os.symlink(root, tmp_path / "alias")
    assert resolve_inside(tmp_path / "alias", "a/x.png") == tmp_path / "alias" / "a" / "x.png"
    with pytest.raises(PathOutsideRoot):
        resolve_inside(tmp_path / "alias", "../secret.png")


def test_check_image_file_reasons(tmp_path):
    good = png(tmp_path / "good.png")
    data = good.read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello, I am not a JPEG")
    assert check_image_file(good) is None
    assert "truncated" in check_image_file(tmp_path / "trunc.png")
    assert "empty" in check_image_file(tmp_path / "zero.png")
    assert "not an image" in check_image_file(tmp_path / "text.jpg")
    assert check_image_file(tmp_path / "missing.png") == "file not found"
    assert check_image_file(tmp_path / "text.jpg", "exists") is None
    # a JPEG cut short passes verify() but not a full decode
    jpg = png_bytes(3, size=(64, 64), fmt="JPEG")
    (tmp_path / "cut.jpg").write_bytes(jpg[: len(jpg) * 2 // 3])
    assert check_image_file(tmp_path / "cut.jpg", "decode") is not None


# ------------------------------------------------------------------------------ folder


def test_folder_classes_and_ids(tmp_path):
    root = class_tree(tmp_path / "ds", classes=("dog", "cat", "bird"), per_class=2)
    png(root / "cat" / "nested" / "deep.png", 7)
    b = load_dataset({"kind": "folder", "path": str(root)})
    assert b.class_names == ["bird", "cat", "dog"]
    assert b.test is None and b.skipped == []
    assert len(b.train) == 7
    assert "cat/nested/deep.png" in b.train.ids
    k = b.train.ids.index("cat/0.png")
    assert b.class_names[b.train.labels[k]] == "cat"
    assert b.train.true_labels is None
    img = b.train.load_image(k)
    assert img.mode == "RGB" and img.size == (8, 8)
    assert b.info["kind"] == "folder"


@pytest.mark.parametrize("test_name", ["test", "val"])
def test_folder_splits(tmp_path, test_name):
    root = tmp_path / "ds"
    class_tree(root / "train", classes=("a", "b"), per_class=3)
    class_tree(root / test_name, classes=("a", "b", "c"), per_class=1)
    b = load_dataset({"kind": "folder", "path": str(root)})
    assert b.class_names == ["a", "b", "c"]
    assert len(b.train) == 6 and len(b.test) == 3
    assert b.info["empty_classes"] == ["c"]
    assert any("no training samples" in w for w in b.info["warnings"])


def test_folder_bad_files_skipped(tmp_path):
    root = class_tree(tmp_path / "ds", per_class=2)
    data = (root / "cat" / "0.png").read_bytes()
    (root / "cat" / "trunc.png").write_bytes(data[: len(data) // 2])
    (root / "cat" / "zero.png").write_bytes(b"")
    (root / "dog" / "text.jpg").write_text("not an image")
    (root / "dog" / "notes.txt").write_text("notes")
    (root / "dog" / ".DS_Store").write_bytes(b"\x00\x01")
    png(root / "loose.png")
    secret = png(tmp_path / "secret.png")
    os.symlink(secret, root / "dog" / "link.png")
    b = load_dataset({"kind": "folder", "path": str(root)})
    assert len(b.train) == 4
    r = reasons(b)
    assert "truncated" in r["cat/trunc.png"]
    assert "empty file" in r["cat/zero.png"]
    assert "not an image" in r["dog/text.jpg"]
    assert "extension" in r["dog/notes.txt"]
    assert "class folder" in r["loose.png"]
    assert "outside the data root" in r["dog/link.png"]
    assert ".DS_Store" not in " ".join(r)
    assert b.info["skipped_count"] == 6


def test_folder_symlinked_dir_out_of_root(tmp_path):
    root = class_tree(tmp_path / "ds")
    class_tree(tmp_path / "elsewhere", classes=("x",))
    os.symlink(tmp_path / "elsewhere" / "x", root / "cat" / "sub")
    os.symlink(tmp_path / "elsewhere" / "x", root / "fish")
    os.symlink(root / "cat", root / "cat" / "loop")  # a loop back inside the root
    b = load_dataset({"kind": "folder", "path": str(root)})
    assert len(b.train) == 6
    r = reasons(b)
    assert "outside the data root" in r["cat/sub/"]
    assert "outside the data root" in r["fish/"]
    assert b.info["empty_classes"] == ["fish"]


@pytest.mark.parametrize(
    "mode,fmt",
    [("L", "PNG"), ("LA", "PNG"), ("RGBA", "PNG"), ("P", "PNG"), ("1", "PNG"), ("CMYK", "JPEG"),
     ("I;16", "PNG"), ("RGB", "BMP"), ("RGB", "GIF"), ("RGB", "WEBP"), ("RGB", "TIFF")],
)
def test_image_modes_load_as_rgb(tmp_path, mode, fmt):
    root = class_tree(tmp_path / "ds")
    ext = {"PNG": "png", "JPEG": "jpg", "BMP": "bmp", "GIF": "gif", "WEBP": "webp", "TIFF": "tif"}[fmt]
    target = root / "cat" / f"odd.{ext}"
    if mode == "I;16":
        Image.fromarray(np.arange(80, dtype=np.uint16).reshape(8, 10) * 800).save(target)
    else:
        png(target, 5, size=(10, 8), mode=mode, fmt=fmt)
    if mode == "P":  # a palette image with a transparent colour
        img = Image.open(target)
        img.info["transparency"] = 0
        img.save(target, transparency=0)
    b = load_dataset({"kind": "folder", "path": str(root)})
    img = b.train.load_image(b.train.ids.index(f"cat/odd.{ext}"))
    assert img.mode == "RGB" and img.size == (10, 8)
    if mode == "I;16":
        arr = np.asarray(img)
        assert arr.min() == 0 and arr.max() == 255  # rescaled, not clipped


def test_folder_errors(tmp_path):
    single = class_tree(tmp_path / "one", classes=("only",))
    with pytest.raises(DatasetError, match="at least two classes"):
        load_dataset({"kind": "folder", "path": str(single)})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no class folders"):
        load_dataset({"kind": "folder", "path": str(empty)})
    (empty / "a").mkdir()
    (empty / "b").mkdir()
    (empty / "b" / "x.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match="no usable training images"):
        load_dataset({"kind": "folder", "path": str(empty)})
    with pytest.raises(DatasetError, match="no such folder"):
        load_dataset({"kind": "folder", "path": str(tmp_path / "nope")})


# ------------------------------------------------------------------------------ manifest


def test_manifest_bom_semicolons_quotes_unicode(tmp_path):
    root = tmp_path / "ds"
    names = ["a, b.png", "ça va été.png", "  lead space.png", "日本 語/猫 1.png", 'quote"d.png']
    for k, n in enumerate(names):
        png(root / n, k)
    rows = [["path", "label", "split", "id"]]
    rows += [[n, lab, sp, f"id{k}"] for k, (n, lab, sp) in
             enumerate(zip(names, ["cat", "dog", "cat", "dog", "cat"], ["train", "train", "TEST", "", "val"]))]
    rows.insert(3, [])
    rows.insert(4, ["", "", "", ""])
    m = write_manifest(root / "labels.csv", rows, delimiter=";", bom=True)
    b = load_dataset({"kind": "manifest", "path": str(m)})
    assert b.class_names == ["cat", "dog"]
    assert b.train.ids == ["id0", "id1", "id3"]
    assert b.test.ids == ["id2"]  # the val row is left out: test rows exist
    assert b.train.paths[0] == str(root / "a, b.png")
    assert b.test.paths[0] == str(root / "  lead space.png")
    assert [b.class_names[k] for k in b.train.labels] == ["cat", "dog", "dog"]
    assert "val row not used" in reasons(b)['quote"d.png']
    assert b.info["blank_rows"] == 2


def test_manifest_missing_unknown_outside(tmp_path):
    root = tmp_path / "ds"
    for k in range(4):
        png(root / f"{k}.png", k)
    secret = png(tmp_path / "secret.png")
    os.symlink(secret, root / "link.png")
    m = write_manifest(root / "m.csv", [
        ["path", "label", "true_label"],
        ["0.png", "cat", "cat"], ["1.png", "dog", "cat"], ["2.png", "0", ""], ["3.png", "bird", "dog"],
        ["missing.png", "cat", ""], ["../../secret", "dog", ""], ["../secret.png", "dog", ""],
        ["link.png", "cat", ""], [str(secret), "cat", ""],
    ])
    b = load_dataset({"kind": "manifest", "path": str(m), "classes": ["cat", "dog"]})
    assert b.train.ids == ["0.png", "1.png", "2.png"]
    assert list(b.train.labels) == [0, 1, 0]  # "0" is an index into the given classes
    assert b.train.true_labels is None  # one row has no true label
    assert list(b.info["partial_true_labels"]["train"]) == [0, 0, -1]
    r = reasons(b)
    assert "not one of the 2 classes" in r["3.png"]
    assert "file not found" in r["missing.png"]
    for bad in ("../../secret", "../secret.png", "link.png", str(secret)):
        assert "outside the data root" in r[bad], bad


def test_manifest_all_rows_bad(tmp_path):
    png(tmp_path / "a.png")
    m = write_manifest(tmp_path / "m.csv", [["path", "label"], ["a.png", "x"], ["a2.png", "y"]])
    with pytest.raises(DatasetError, match="no usable training images"):
        load_dataset({"kind": "manifest", "path": str(m), "classes": ["cat", "dog"]})


def test_manifest_duplicates_named(tmp_path):
    for k in range(3):
        png(tmp_path / f"{k}.png", k)
    m = write_manifest(tmp_path / "m.csv", [["id", "path", "label"], ["x7", "0.png", "a"], ["x7", "1.png", "b"],
                                            ["x8", "2.png", "b"]])
    with pytest.raises(DatasetError, match="duplicate ids.*'x7'"):
        load_dataset({"kind": "manifest", "path": str(m)})
    m = write_manifest(tmp_path / "m2.csv", [["path", "label"], ["0.png", "a"], ["0.png", "b"], ["1.png", "b"]])
    with pytest.raises(DatasetError, match="duplicate paths.*0.png"):
        load_dataset({"kind": "manifest", "path": str(m)})


def test_manifest_single_class_and_empty(tmp_path):
    for k in range(3):
        png(tmp_path / f"{k}.png", k)
    m = write_manifest(tmp_path / "m.csv", [["path", "label"]] + [[f"{k}.png", "cat"] for k in range(3)])
    with pytest.raises(DatasetError, match="at least two classes"):
        load_dataset({"kind": "manifest", "path": str(m)})
    m = write_manifest(tmp_path / "e.csv", [["path", "label"], [], []])
    with pytest.raises(DatasetError, match="no usable rows"):
        load_dataset({"kind": "manifest", "path": str(m)})
    (tmp_path / "z.csv").write_bytes(b"")
    with pytest.raises(DatasetError, match="empty"):
        load_dataset({"kind": "manifest", "path": str(tmp_path / "z.csv")})
    m = write_manifest(tmp_path / "h.csv", [["file_name", "kind"], ["0.png", "a"]])
    with pytest.raises(DatasetError, match="header row"):
        load_dataset({"kind": "manifest", "path": str(m)})


def test_manifest_variants(tmp_path):
    root = tmp_path / "imgs"
    for k in range(4):
        png(root / "sub" / f"{k}.png", k)
    rows = [[f"sub/{k}.png", str(k % 2)] for k in range(4)]
    # header-less, tab separated, UTF-16 (Excel's "Unicode text")
    m = write_manifest(tmp_path / "m.tsv", rows, delimiter="\t", encoding="utf-16")
    b = load_dataset({"kind": "manifest", "path": str(m), "root": str(root)})
    assert b.class_names == ["0", "1"] and list(b.train.labels) == [0, 1, 0, 1]
    assert any("no header" in w for w in b.info["warnings"])
    # Windows separators, pipes, integer labels sorted numerically
    rows = [["Path", "Label"]] + [[f"sub\\{k}.png", str([2, 10, 2, 10][k])] for k in range(4)]
    m = write_manifest(root / "m.csv", rows, delimiter="|")
    b = load_dataset({"kind": "manifest", "path": str(m)})
    assert b.class_names == ["2", "10"]
    # Parquet
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pa.table({"path": [f"sub/{k}.png" for k in range(4)], "label": [3, 1, 3, 1],
                  "split": ["train", "train", "test", "test"]})
    pq.write_table(t, root / "m.parquet")
    b = load_dataset({"kind": "manifest", "path": str(root / "m.parquet"), "classes": ["w", "x", "y", "z"]})
    assert len(b.train) == 2 and len(b.test) == 2
    assert [b.class_names[k] for k in b.train.labels] == ["z", "x"]
    assert b.info["empty_classes"] == ["w", "y"]


def test_manifest_unquoted_delimiter_row(tmp_path):
    for k in range(3):
        png(tmp_path / f"{k}.png", k)
    (tmp_path / "m.csv").write_text("path,label\n0.png,a\n1.png,b\nmy, file.png,a\n2.png,b\n")
    b = load_dataset({"kind": "manifest", "path": str(tmp_path / "m.csv")})
    assert len(b.train) == 3
    assert "quote fields" in reasons(b)["my"]


_SAFE_CHARS = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\\x00")
_name = st.text(_SAFE_CHARS, min_size=1, max_size=12).filter(
    lambda s: s == s.strip() and not s.startswith(".") and len(s.encode()) < 100
)
_label = st.text(_SAFE_CHARS, min_size=1, max_size=8).filter(lambda s: s == s.strip())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(st.tuples(_name, _label, st.sampled_from(["train", "test", ""])), min_size=1, max_size=12,
                  unique_by=lambda r: r[0]),
    delimiter=st.sampled_from([",", ";", "\t"]),
    bom=st.booleans(),
    extra_labels=st.lists(_label, min_size=2, max_size=2, unique=True),
)
def test_manifest_round_trip_property(rows, delimiter, bom, extra_labels):
    """Any valid manifest, written by csv.writer, loads back with the same paths, labels and splits."""
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        img = png_bytes(0)
        # two anchor rows in the train split with distinct labels: always at least two classes
        anchors = [("anchor_a.png", extra_labels[0], "train"), ("anchor_b.png", extra_labels[1], "train")]
        rows = anchors + [(f"{n}.png", lab, sp) for n, lab, sp in rows]
        for n, _, _ in rows:
            (root / n).write_bytes(img)
        m = write_manifest(root / "m.csv", [["path", "label", "split"]] + [list(r) for r in rows],
                           delimiter=delimiter, bom=bom)
        b = load_dataset({"kind": "manifest", "path": str(m), "verify": "exists"})
        assert b.skipped == []
        for split, ds in (("train", b.train), ("test", b.test)):
            want = [r for r in rows if (r[2] or "train") == split]
            if not want:
                assert ds is None
                continue
            assert ds.ids == [r[0] for r in want]
            assert ds.paths == [str(root / r[0]) for r in want]
            assert [b.class_names[k] for k in ds.labels] == [r[1] for r in want]


# ------------------------------------------------------------------------------ idx


def write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)


@pytest.mark.parametrize("gz", [True, False])
def test_idx(tmp_path, gz):
    rng = np.random.default_rng(0)
    root = tmp_path / "FashionMNIST" / "raw"
    root.mkdir(parents=True)
    sfx = ".gz" if gz else ""
    xtr, ytr = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), np.arange(20) % 10
    xte, yte = rng.integers(0, 256, (10, 28, 28), dtype=np.uint8), np.arange(10)
    write_idx(root / f"train-images-idx3-ubyte{sfx}", xtr)
    write_idx(root / f"train-labels-idx1-ubyte{sfx}", ytr)
    write_idx(root / f"t10k-images-idx3-ubyte{sfx}", xte)
    write_idx(root / f"t10k-labels-idx1-ubyte{sfx}", yte)
    if not gz:  # the files are what torchvision's MNIST reader expects
        from torchvision.datasets.mnist import read_image_file, read_label_file

        assert np.array_equal(read_image_file(str(root / "train-images-idx3-ubyte")).numpy(), xtr)
        assert np.array_equal(read_label_file(str(root / "train-labels-idx1-ubyte")).numpy(), ytr)
    b = load_dataset({"kind": "idx", "path": str(tmp_path), "variant": "fashion-mnist"})
    assert b.class_names == FASHION_MNIST_CLASSES
    assert np.array_equal(b.train.arrays, xtr) and np.array_equal(b.train.labels, ytr)
    assert np.array_equal(b.train.true_labels, ytr) and len(b.test) == 10
    assert b.train.load_image(0).mode == "RGB"
    b = load_dataset({"kind": "idx", "path": str(root), "variant": "mnist", "max_train": 7})
    assert b.class_names == [str(i) for i in range(10)] and len(b.train) == 7
    assert load_dataset({"kind": "idx", "path": str(tmp_path)}).class_names == FASHION_MNIST_CLASSES  # guessed


def test_debian_idx_files_are_inflated_once_into_the_cache(tmp_path, monkeypatch):
    from turn_backend.data import demo

    debian, cache = tmp_path / "debian", tmp_path / "cache"
    debian.mkdir()
    images = np.random.default_rng(0).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    write_idx(debian / "train-images-idx3-ubyte.gz", images)
    monkeypatch.setattr(demo, "DEBIAN_DIR", debian)
    monkeypatch.setenv("TURN_CACHE_DIR", str(cache))
    assert np.array_equal(demo.read_debian_idx("train-images-idx3-ubyte.gz"), images)
    [copy] = (cache / "fashion-mnist").glob("train-images-idx3-ubyte-*.npy")
    calls = []
    real_reader = demo.read_idx_gz
    monkeypatch.setattr(demo, "read_idx_gz", lambda path: calls.append(path) or real_reader(path))
    assert np.array_equal(demo.read_debian_idx("train-images-idx3-ubyte.gz"), images) and calls == []  # the copy
    copy.write_bytes(b"not an npy file")  # damaged: the gzip is read again and the copy rewritten
    assert np.array_equal(demo.read_debian_idx("train-images-idx3-ubyte.gz"), images) and len(calls) == 1
    assert np.array_equal(np.load(copy), images)
    write_idx(debian / "train-images-idx3-ubyte.gz", images[:3])  # a new file: a new copy, not the old one
    assert np.array_equal(demo.read_debian_idx("train-images-idx3-ubyte.gz"), images[:3])
    assert len(list((cache / "fashion-mnist").glob("train-images-idx3-ubyte-*.npy"))) == 2
    (tmp_path / "a-file").write_text("")  # a cache folder that cannot be made costs speed, not the data
    monkeypatch.setenv("TURN_CACHE_DIR", str(tmp_path / "a-file" / "cache"))
    assert np.array_equal(demo.read_debian_idx("train-images-idx3-ubyte.gz"), images[:3])


def test_idx_truncated(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((4, 5, 5), np.uint8))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 4, 1, 2]))
    with pytest.raises(DatasetError, match="truncated"):
        load_dataset({"kind": "idx", "path": str(tmp_path), "variant": "mnist"})


# ------------------------------------------------------------------------------ CIFAR


def _pickle(path: Path, obj) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def test_cifar10(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (30, 3072), dtype=np.uint8)
    labels = [k % 10 for k in range(30)]
    # the official layout: bytes keys, data rows are 1024 R, 1024 G, 1024 B values
    _pickle(folder / "data_batch_1", {b"batch_label": b"training batch 1 of 5", b"labels": labels[:20],
                                      b"data": data[:20], b"filenames": [b"x.png"] * 20})
    _pickle(folder / "test_batch", {b"labels": labels[20:], b"data": data[20:]})
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _pickle(folder / "batches.meta", {b"label_names": [n.encode() for n in names], b"num_vis": 3072})
    b = load_dataset({"kind": "cifar10", "path": str(tmp_path)})
    assert b.class_names == names
    assert b.train.arrays.shape == (20, 32, 32, 3) and len(b.test) == 10
    assert b.train.arrays[3, 1, 2, 0] == data[3, 32 + 2]  # red plane
    assert b.train.arrays[3, 1, 2, 2] == data[3, 2048 + 32 + 2]  # blue plane
    assert any("training batches" in w for w in b.info["warnings"])
    noisy, rate = apply_label_noise(b, "asymmetric", 0.5, seed=1)  # built-in CIFAR-10 pairs
    assert rate > 0 and set(zip(noisy.train.true_labels[noisy.train.labels != noisy.train.true_labels],
                                noisy.train.labels[noisy.train.labels != noisy.train.true_labels])) <= {
        (9, 1), (2, 0), (4, 7), (3, 5), (5, 3)}


def test_cifar100_coarse_and_pairs(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    fine = np.repeat(np.arange(6), 10)
    coarse_of_fine = np.array([0, 1, 0, 1, 0, 1])
    data = rng.integers(0, 256, (60, 3072), dtype=np.uint8)
    _pickle(folder / "train", {"fine_labels": fine.tolist(), "coarse_labels": coarse_of_fine[fine].tolist(),
                               "data": data})
    _pickle(folder / "test", {"fine_labels": [0, 1], "coarse_labels": [0, 1], "data": data[:2]})
    _pickle(folder / "meta", {"fine_label_names": [f"f{i}" for i in range(6)],
                              "coarse_label_names": ["c0", "c1"]})
    b = load_dataset({"kind": "cifar100", "path": str(folder)})
    assert list(b.info["coarse_of_fine"]) == list(coarse_of_fine)
    assert b.info["coarse_names"] == ["c0", "c1"]
    noisy, rate = apply_label_noise(b, "asymmetric", 0.4, seed=0)
    assert rate == pytest.approx(0.4)
    pairs = cifar100_pairs(coarse_of_fine)
    t, y = noisy.train.true_labels, noisy.train.labels
    assert all(pairs[a] == c for a, c in zip(t[t != y], y[t != y]))
    assert all(coarse_of_fine[a] == coarse_of_fine[c] for a, c in zip(t, y))
    assert noisy.info["noise"]["pairs"]["f0"] == "f2"


def test_cifar10_from_tarball(tmp_path):
    import tarfile

    src = tmp_path / "src" / "cifar-10-batches-py"
    src.mkdir(parents=True)
    data = np.random.default_rng(0).integers(0, 256, (4, 3072), dtype=np.uint8)
    _pickle(src / "data_batch_1", {b"labels": [0, 1, 2, 3], b"data": data})
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-py")
    b = load_dataset({"kind": "cifar10", "path": str(tmp_path)})
    assert len(b.train) == 4 and b.test is None and b.class_names[0] == "airplane"
    assert (tmp_path / "cifar-10-batches-py" / "data_batch_1").is_file()


def test_cifar_refuses_malicious_pickle(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    _pickle(folder / "data_batch_1", {b"data": Evil(), b"labels": [0]})
    with pytest.raises(DatasetError, match="refusing"):
        load_dataset({"kind": "cifar10", "path": str(tmp_path)})
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(DatasetError, match="no cifar-100-python"):
        load_dataset({"kind": "cifar100", "path": str(tmp_path)})


# ------------------------------------------------------------------------------ Hugging Face / Parquet


def _hf_dataset(n, names, sizes=None, grey=False):
    import datasets

    imgs = []
    for k in range(n):
        size = sizes[k % len(sizes)] if sizes else (8, 8)
        img = Image.fromarray(np.random.default_rng(k).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
        imgs.append(img.convert("L") if grey else img)
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    return datasets.Dataset.from_dict({"image": imgs, "label": [k % len(names) for k in range(n)]}, features=feats)


def test_hf_save_to_disk_arrays(tmp_path):
    import datasets

    dd = datasets.DatasetDict({"train": _hf_dataset(6, ["ant", "bee"]), "test": _hf_dataset(4, ["ant", "bee"])})
    dd.save_to_disk(str(tmp_path / "hfds"))
    b = load_dataset({"kind": "hf", "path": str(tmp_path / "hfds")})
    assert b.class_names == ["ant", "bee"]
    assert b.info["storage"] == "arrays" and b.train.arrays.shape == (6, 8, 8, 3)
    assert list(b.train.labels) == [0, 1, 0, 1, 0, 1] and len(b.test) == 4
    want = np.asarray(Image.fromarray(np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8)))
    assert np.array_equal(b.train.arrays[2], want)
    # a single Dataset, grey
    _hf_dataset(4, ["x", "y"], grey=True).save_to_disk(str(tmp_path / "single"))
    b = load_dataset({"kind": "hf", "path": str(tmp_path / "single")})
    assert b.test is None and b.train.arrays.shape == (4, 8, 8)


def test_hf_mixed_sizes_to_files(tmp_path):
    _hf_dataset(5, ["ant", "bee"], sizes=[(8, 8), (10, 6)]).save_to_disk(str(tmp_path / "hfds"))
    b = load_dataset({"kind": "hf", "path": str(tmp_path / "hfds"), "cache_dir": str(tmp_path / "cache")})
    assert b.info["storage"] == "files"
    assert all(Path(p).is_file() and str(tmp_path / "cache") in p for p in b.train.paths)
    assert b.train.load_image(1).size == (10, 6)
    again = load_dataset({"kind": "hf", "path": str(tmp_path / "hfds"), "cache_dir": str(tmp_path / "cache")})
    assert again.train.paths == b.train.paths


def test_parquet_hf_metadata_and_plain(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "data").mkdir()
    _hf_dataset(6, ["ant", "bee", "cow"]).to_parquet(str(tmp_path / "data" / "train-00000-of-00001.parquet"))
    _hf_dataset(3, ["ant", "bee", "cow"]).to_parquet(str(tmp_path / "data" / "test-00000-of-00001.parquet"))
    b = load_dataset({"kind": "parquet", "path": str(tmp_path / "data")})
    assert b.class_names == ["ant", "bee", "cow"] and len(b.train) == 6 and len(b.test) == 3
    # plain Parquet: binary images under "img", fine + coarse labels, one corrupt image
    imgs = [png_bytes(k) for k in range(8)]
    imgs[5] = imgs[5][: len(imgs[5]) // 2]
    t = pa.table({"img": imgs, "fine_label": [0, 1, 2, 3, 0, 1, 2, 3], "coarse_label": [0, 0, 1, 1, 0, 0, 1, 1]})
    pq.write_table(t, tmp_path / "plain.parquet")
    b = load_dataset({"kind": "parquet", "path": str(tmp_path / "plain.parquet")})
    assert b.class_names == ["0", "1", "2", "3"] and len(b.train) == 7
    assert "truncated" in reasons(b)["train[5]"]
    assert list(b.info["coarse_of_fine"]) == [0, 0, 1, 1]
    # string labels, explicit columns, path images relative to the file, one escaping
    png(tmp_path / "p" / "a.png", 1)
    png(tmp_path / "p" / "b.png", 2)
    t = pa.table({"picture_file": ["p/a.png", "p/b.png", "../x.png"], "kind": ["cat", "dog", "dog"]})
    pq.write_table(t, tmp_path / "paths.parquet")
    b = load_dataset({"kind": "parquet", "path": str(tmp_path / "paths.parquet"),
                      "image_column": "picture_file", "label_column": "kind"})
    assert b.class_names == ["cat", "dog"] and len(b.train) == 2
    assert "outside the data root" in reasons(b)["../x.png"]
    with pytest.raises(DatasetError, match="no image column"):
        pq.write_table(pa.table({"a": [1, 2], "label": [0, 1]}), tmp_path / "noimg.parquet")
        load_dataset({"kind": "parquet", "path": str(tmp_path / "noimg.parquet")})


# ------------------------------------------------------------------------------ Clothing1M, WebVision


def test_clothing1m(tmp_path):
    root = tmp_path / "clothing1m"
    names = ["T-Shirt", "Shirt", "Knitwear"]
    keys = [f"images/{k % 3}/{k:03d}.jpg" for k in range(12)]
    for k, key in enumerate(keys):
        png(root / key, k, fmt="JPEG")
    (root / "category_names_eng.txt").write_text("\n".join(names) + "\n")
    (root / "noisy_label_kv.txt").write_text("".join(f"{key} {k % 3}\n" for k, key in enumerate(keys[:8]))
                                             + "../../etc/passwd 1\n")
    (root / "clean_label_kv.txt").write_text("".join(f"{key} {(k + 1) % 3}\n" for k, key in enumerate(keys[4:]))
                                             + "bad line\n")
    (root / "noisy_train_key_list.txt").write_text("\n".join(keys[:8] + ["images/9/none.jpg", "../../etc/passwd"]))
    (root / "clean_test_key_list.txt").write_text("\n".join(keys[8:]) + "\n")
    b = load_dataset({"kind": "clothing1m", "path": str(root)})
    assert b.class_names == names
    assert b.train.ids == keys[:8] and list(b.train.labels) == [k % 3 for k in range(8)]
    assert b.train.true_labels is None
    assert list(b.info["partial_true_labels"]["train"]) == [-1, -1, -1, -1, 1, 2, 0, 1]
    assert b.test.ids == keys[8:] and np.array_equal(b.test.labels, b.test.true_labels)
    r = reasons(b)
    assert "no label in noisy_label_kv" in r["images/9/none.jpg"]
    assert "outside the data root" in r["../../etc/passwd"]
    assert "path label" in r["clean_label_kv.txt:9"]
    with pytest.raises(DatasetError, match="missing the Clothing1M annotation"):
        load_dataset({"kind": "clothing1m", "path": str(root / "images")})


def test_webvision(tmp_path):
    root = tmp_path / "webvision"
    (root / "info").mkdir(parents=True)
    train = [(f"google/q{c:04d}/{k}.jpg", c) for c in range(4) for k in range(2)]
    flickr = [(f"flickr/q{c:04d}/{k}.jpg", c) for c in range(4) for k in range(1)]
    val = [(f"val{c}.jpg", c) for c in range(4)]
    for k, (p, _) in enumerate(train + flickr):
        png(root / p, k, fmt="JPEG")
    for k, (p, _) in enumerate(val):
        png(root / "val_images_256" / p, k, fmt="JPEG")
    (root / "info" / "train_filelist_google.txt").write_text("".join(f"{p} {c}\n" for p, c in train))
    (root / "info" / "train_filelist_flickr.txt").write_text("".join(f"{p} {c}\n" for p, c in flickr))
    (root / "info" / "val_filelist.txt").write_text("".join(f"{p} {c}\n" for p, c in val))
    (root / "info" / "synsets.txt").write_text(
        "n01440764 tench, Tinca tinca\nn01443537 goldfish\nn02012849 crane\nn03126707 crane\n")
    b = load_dataset({"kind": "webvision", "path": str(root)})
    assert b.class_names == ["tench", "goldfish", "crane (n02012849)", "crane (n03126707)"]
    assert len(b.train) == 12 and len(b.test) == 4 and b.train.true_labels is None
    assert np.array_equal(b.test.labels, b.test.true_labels)
    b = load_dataset({"kind": "webvision", "path": str(root), "num_classes": 2, "sources": ["google"]})
    assert b.class_names == ["tench", "goldfish"] and len(b.train) == 4 and len(b.test) == 2
    assert set(b.train.labels) == {0, 1}
    b = load_dataset({"kind": "webvision", "path": str(root), "variant": "mini", "num_classes": 3})
    assert b.info["sources"] == ["google"] and b.num_classes == 3


# ------------------------------------------------------------------------------ arrays, spec, noise on bundles


def test_arrays_and_spec_validation():
    x = np.zeros((6, 4, 4), np.uint8)
    b = load_dataset({"kind": "arrays", "images": x, "labels": [0, 1, 0, 1, 2, 2], "class_names": ["a", "b", "c"]})
    assert len(b.train) == 6 and "images" not in b.info["spec"]
    with pytest.raises(DatasetError, match="at least two classes"):
        load_dataset({"kind": "arrays", "images": x, "labels": [0] * 6, "class_names": ["a", "b"]})
    with pytest.raises(DatasetError, match="unknown dataset kind"):
        load_dataset({"kind": "zip"})
    with pytest.raises(DatasetError, match="unknown key"):
        load_dataset({"kind": "folder", "path": "/x", "image_col": "img"})
    with pytest.raises(DatasetError, match="needs 'path'"):
        load_dataset({"kind": "manifest"})
    with pytest.raises(DatasetError, match="verify"):
        load_dataset({"kind": "demo", "verify": "thorough"})
    with pytest.raises(DatasetError, match="max_train"):
        load_dataset({"kind": "demo", "max_train": 0})


def test_apply_label_noise_on_demo():
    b = load_dataset({"kind": "demo", "n_train": 1000, "n_test": 100})
    noisy, rate = apply_label_noise(b, "symmetric", 0.4, seed=3)
    assert rate == pytest.approx(0.4, abs=0.01)
    assert np.array_equal(noisy.train.true_labels, b.train.labels)
    assert np.mean(noisy.train.labels != b.train.labels) == pytest.approx(rate)
    assert noisy.test is b.test and b.train.labels is not noisy.train.labels
    assert noisy.info["noise"]["actual_rate"] == rate
    noisy, rate = apply_label_noise(b, "asymmetric", 0.3, seed=0, pairs={"Trouser": "Dress"})
    t, y = noisy.train.true_labels, noisy.train.labels
    assert set(zip(t[t != y], y[t != y])) == {(1, 3)}
    noisy, _ = apply_label_noise(b, "asymmetric", 0.3, seed=0)  # built-in Fashion-MNIST map
    t, y = noisy.train.true_labels, noisy.train.labels
    assert set(zip(t[t != y], y[t != y])) <= {(0, 6), (6, 0), (2, 4), (4, 2), (7, 9), (9, 7)}
    noisy, rate = apply_label_noise(b, "instance", 0.3, seed=0)
    assert 0.2 < rate < 0.4
    assert b.train.pixel_matrix(None).shape == (1000, 784)
    assert b.train.pixel_matrix(16).shape == (1000, 16 * 16 * 3)
    with pytest.raises(DatasetError, match="not a class"):
        apply_label_noise(b, "asymmetric", 0.3, seed=0, pairs={"Trousers": "Dress"})


def test_apply_label_noise_on_files(tmp_path):
    root = class_tree(tmp_path / "ds", classes=("a", "b", "c"), per_class=10, size=(12, 9))
    b = load_dataset({"kind": "folder", "path": str(root)})
    assert b.train.pixel_matrix(16).shape == (30, 16 * 16 * 3)
    noisy, rate = apply_label_noise(b, "instance", 0.5, seed=1, pixel_size=8)
    assert noisy.train.paths == b.train.paths and 0 < rate < 1
    with pytest.raises(DatasetError, match="class map"):
        apply_label_noise(b, "asymmetric", 0.3, seed=0)
    sub = load_dataset({"kind": "folder", "path": str(root), "max_train": 12, "subset_seed": 4})
    assert len(sub.train) == 12 and set(sub.train.ids) <= set(b.train.ids)


# ------------------------------------------------------------------------------ noise generators


def test_symmetric_noise_rate_and_flips():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 10_000)
    for rate in (0.2, 0.4, 0.6, 0.9):
        r = symmetric_noise(y, 10, rate, seed=5)
        assert abs(r.actual_rate - rate) <= 0.01
        assert np.array_equal(r.true, y)
        flipped = r.noisy != y
        assert flipped.mean() == pytest.approx(r.actual_rate)
        assert (r.noisy[flipped] != y[flipped]).all() and r.noisy.min() >= 0 and r.noisy.max() <= 9
        # the new label is uniform over the other classes
        counts = np.bincount((r.noisy[flipped] - y[flipped]) % 10, minlength=10)
        assert counts[0] == 0 and counts[1:].min() > 0.8 * counts[1:].mean()


def test_asymmetric_noise_only_to_partners():
    y = np.repeat(np.arange(10), 1000)
    pairs = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
    r = asymmetric_noise(y, 10, 0.4, seed=2, pairs=pairs)
    moved = r.noisy != y
    assert set(zip(y[moved], r.noisy[moved])) == set(pairs.items())
    for src in pairs:
        assert np.mean(r.noisy[y == src] != src) == pytest.approx(0.4, abs=0.01)
    for other in set(range(10)) - set(pairs):
        assert (r.noisy[y == other] == other).all()


def test_instance_noise_mean_rate():
    rng = np.random.default_rng(0)
    n = 5000
    y = rng.integers(0, 10, n)
    x = rng.integers(0, 256, (n, 8, 8), dtype=np.uint8)
    for rate in (0.2, 0.4):
        r = instance_noise(y, x, 10, rate, seed=1)
        assert abs(r.actual_rate - rate) < 0.03
        assert r.noisy.min() >= 0 and r.noisy.max() <= 9


@pytest.mark.parametrize("kind", ["symmetric", "asymmetric", "instance"])
def test_noise_deterministic_per_seed(kind):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 2000)
    x = rng.integers(0, 256, (2000, 6, 6), dtype=np.uint8)
    kw = dict(class_names=FASHION_MNIST_CLASSES, images=x)
    a = apply_noise(y, 10, kind, 0.4, 11, **kw)
    b = apply_noise(y, 10, kind, 0.4, 11, **kw)
    c = apply_noise(y, 10, kind, 0.4, 12, **kw)
    assert np.array_equal(a.noisy, b.noisy)
    assert not np.array_equal(a.noisy, c.noisy)


def test_noise_rejects_bad_input():
    with pytest.raises(DatasetError):
        symmetric_noise(np.zeros(5, int), 10, 1.5, seed=0)
    with pytest.raises(DatasetError):
        apply_noise(np.zeros(5, int), 10, "gaussian", 0.2, 0)
    with pytest.raises(DatasetError):
        apply_noise(np.zeros(5, int), 10, "instance", 0.2, 0)
