"""`load_dataset(spec)`: one entry point from a dataset description (a dict) to a `DatasetBundle`.

spec["kind"] picks the loader:

=============  =================================================================================
kind           keys (besides the common ones below)
=============  =================================================================================
demo           n_train (3000), n_test (1000): the embedded Fashion-MNIST subset
folder         path: one subfolder per class, optionally under train/ and test/ (or val/)
manifest       path (CSV / TSV / Parquet: path, label [, split, true_label, id]); root (default:
               the manifest's folder); classes; path_column, label_column, split_column,
               true_label_column, id_column; delimiter; header (True / False / "auto");
               several annotators per image (turn_backend.data.annotated): annotator_columns,
               aggregator ("dawid-skene"); info["annotators"] holds their labels and consensus
idx            path (MNIST-format files); variant ("mnist", "fashion-mnist", "kmnist"); classes
cifar10        path (holding cifar-10-batches-py/ or its .tar.gz); download (False)
cifar100       path (holding cifar-100-python/); download. info["coarse_of_fine"] gives the
               superclass of each class (asymmetric noise: turn_backend.noise.cifar100_pairs)
hf             path (a `datasets` save_to_disk folder); train_split, test_split; image_column,
               label_column, true_label_column, id_column; classes; root; cache_dir; max_array_mb
parquet        path (a .parquet file or a folder of them); test_path; the column keys as for hf
clothing1m     path (the Clothing1M root with its annotation .txt files)
webvision      path (the WebVision 1.0 root); sources (["google", "flickr"]); num_classes;
               variant ("mini": google, 50 classes); val_dir (val_images_256)
arrays         images, labels, class_names; true_labels, test_images, test_labels
=============  =================================================================================

Common keys: name (the bundle's name); verify ("exists", "verify" (default: PIL open +
verify), "decode"): how image files are checked at load time; max_train, max_test: keep a
seeded random subset (subset_seed, default 0) of that many samples per split, drawn before
files are checked.

Every skipped input item is in `bundle.skipped` with its reason; warnings (classes without
samples, guesses made) are in `bundle.info["warnings"]`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np

from turn_backend.data.common import VERIFY_LEVELS, LoadOptions, Progress, finish_bundle, limit_arrays
from turn_backend.data.core import DatasetBundle, DatasetError, from_arrays
from turn_backend.data.demo import load_demo
from turn_backend.data.folder import load_folder
from turn_backend.data.hf import load_hf, load_parquet
from turn_backend.data.manifest import load_manifest
from turn_backend.data.standard import load_cifar, load_idx
from turn_backend.data.webly import load_clothing1m, load_webvision
from turn_backend.noise import apply_noise, cifar100_pairs

COMMON_KEYS = {"kind", "name", "verify", "max_train", "max_test", "subset_seed"}
COLUMN_KEYS = {"image_column", "label_column", "true_label_column", "id_column", "classes", "root",
               "cache_dir", "max_array_mb"}
KIND_KEYS: dict[str, set[str]] = {
    "demo": {"n_train", "n_test", "classes"},
    "folder": {"path"},
    "manifest": {"path", "root", "classes", "path_column", "label_column", "split_column",
                 "true_label_column", "id_column", "delimiter", "header", "annotator_columns", "aggregator"},
    "idx": {"path", "variant", "classes"},
    "cifar10": {"path", "download"},
    "cifar100": {"path", "download"},
    "hf": {"path", "train_split", "test_split"} | COLUMN_KEYS,
    "parquet": {"path", "test_path"} | COLUMN_KEYS,
    "clothing1m": {"path"},
    "webvision": {"path", "sources", "num_classes", "variant", "val_dir"},
    "arrays": {"images", "labels", "class_names", "true_labels", "test_images", "test_labels"},
}
KINDS = tuple(KIND_KEYS)


def _options(spec: Mapping, progress: Progress | None) -> LoadOptions:
    verify = spec.get("verify", "verify")
    if verify not in VERIFY_LEVELS:
        raise DatasetError(f"verify must be one of {', '.join(VERIFY_LEVELS)}, got {verify!r}")
    limits = {}
    for key in ("max_train", "max_test"):
        v = spec.get(key)
        if v is not None and (not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0):
            raise DatasetError(f"{key} must be a positive integer, got {v!r}")
        limits[key] = None if v is None else int(v)
    return LoadOptions(verify=verify, seed=int(spec.get("subset_seed", 0)), progress=progress, **limits)


def _load_demo(spec: dict, opts: LoadOptions) -> DatasetBundle:
    b = load_demo(int(spec.get("n_train", 3000)), int(spec.get("n_test", 1000)), spec.get("classes"))
    train = limit_arrays(b.train, opts.max_train, opts.seed)
    test = limit_arrays(b.test, opts.max_test, opts.seed)
    return finish_bundle(spec.get("name") or b.name, train, test, [], {}, what="the demo set")


def _load_arrays(spec: dict, opts: LoadOptions) -> DatasetBundle:
    for key in ("images", "labels", "class_names"):
        if spec.get(key) is None:
            raise DatasetError(f"an arrays dataset needs {key!r}")
    b = from_arrays(spec["images"], spec["labels"], list(spec["class_names"]),
                    true_labels=spec.get("true_labels"), test_images=spec.get("test_images"),
                    test_labels=spec.get("test_labels"), name=spec.get("name") or "arrays")
    train = limit_arrays(b.train, opts.max_train, opts.seed)
    test = limit_arrays(b.test, opts.max_test, opts.seed)
    return finish_bundle(b.name, train, test, [], {}, what="the arrays")


def _loader(kind: str) -> Callable[[dict, LoadOptions], DatasetBundle]:
    if kind == "demo":
        return _load_demo
    if kind == "arrays":
        return _load_arrays
    if kind == "folder":
        return load_folder
    if kind == "manifest":
        return load_manifest
    if kind == "idx":
        return load_idx
    if kind in ("cifar10", "cifar100"):
        return load_cifar
    if kind == "hf":
        return load_hf
    if kind == "parquet":
        return load_parquet
    if kind == "clothing1m":
        return load_clothing1m
    return load_webvision


def _jsonable_spec(spec: Mapping) -> dict:
    return {k: v for k, v in spec.items() if isinstance(v, (str, int, float, bool, list, tuple, type(None)))
            and not (isinstance(v, (list, tuple)) and len(v) > 1000)}


def load_dataset(spec: Mapping, *, progress: Progress | None = None) -> DatasetBundle:
    """The dataset `spec` describes (see the module docstring for the keys of each kind).

    `progress(stage, done, total)` is called while image files are checked or decoded.
    Raises `DatasetError` with a message saying what to fix.
    """
    if not isinstance(spec, Mapping):
        raise DatasetError(f"a dataset spec is a dict with a 'kind' key, got {type(spec).__name__}")
    kind = spec.get("kind")
    if kind not in KIND_KEYS:
        raise DatasetError(f"unknown dataset kind {kind!r}; choose one of {', '.join(KINDS)}")
    unknown = sorted(set(spec) - COMMON_KEYS - KIND_KEYS[kind])
    if unknown:
        allowed = sorted((COMMON_KEYS | KIND_KEYS[kind]) - {"kind"})
        raise DatasetError(f"unknown key(s) {unknown} for a {kind} dataset; its keys are {allowed}")
    if "path" in KIND_KEYS[kind] and not spec.get("path"):
        raise DatasetError(f"a {kind} dataset needs 'path'")
    opts = _options(spec, progress)
    bundle = _loader(kind)(dict(spec), opts)
    bundle.info["spec"] = _jsonable_spec(spec)
    bundle.info["kind"] = kind
    return bundle


# ------------------------------------------------------------------------------ synthetic noise


def _index_pairs(pairs: Mapping, class_names: list[str]) -> dict[int, int]:
    index = {c: i for i, c in enumerate(class_names)}
    out = {}
    for src, dst in pairs.items():
        ends = []
        for x in (src, dst):
            if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
                if not 0 <= int(x) < len(class_names):
                    raise DatasetError(f"class index {x} in the noise map is outside 0..{len(class_names) - 1}")
                ends.append(int(x))
            elif str(x) in index:
                ends.append(index[str(x)])
            else:
                raise DatasetError(f"the noise map names {x!r}, which is not a class; the classes are {class_names}")
        out[ends[0]] = ends[1]
    return out


def apply_label_noise(
    bundle: DatasetBundle,
    kind: str,
    rate: float,
    seed: int,
    pairs: Mapping | None = None,
    *,
    pixel_size: int | None = 32,
) -> tuple[DatasetBundle, float]:
    """The bundle with synthetic noise on its train labels, and the fraction actually changed.

    `kind`: "none", "symmetric", "asymmetric", "instance" (turn_backend.noise.apply_noise).
    Asymmetric `pairs` map class -> partner, by name or index; without them, CIFAR-100
    (info["coarse_of_fine"]) flips within superclasses and Fashion-MNIST / CIFAR-10 use
    their built-in maps. Instance noise reads pixels: array data as stored, image files
    resized to `pixel_size` (see ImageSet.pixel_matrix).

    The noisy labels become the train labels; the true labels are the train set's true
    labels where known, else its labels before the noise. The test split is unchanged.
    """
    train = bundle.train
    names = train.class_names
    index_pairs = None
    if kind == "asymmetric":
        if pairs is not None:
            index_pairs = _index_pairs(pairs, names)
        elif bundle.info.get("coarse_of_fine") is not None and len(bundle.info["coarse_of_fine"]) == len(names):
            index_pairs = cifar100_pairs(np.asarray(bundle.info["coarse_of_fine"]))
    images = None
    if kind == "instance" and rate > 0:
        images = train.pixel_matrix(None if train.arrays is not None else pixel_size)
    result = apply_noise(train.labels, train.num_classes, kind, rate, seed,
                         class_names=names, images=images, pairs=index_pairs)
    truth = train.true_labels if train.true_labels is not None else train.labels
    noisy_train = train.with_labels(result.noisy, truth)
    info = dict(bundle.info)
    info["noise"] = {"kind": kind, "rate": float(rate), "seed": int(seed), "actual_rate": result.actual_rate,
                     "pairs": {names[a]: names[b] for a, b in (index_pairs or {}).items()} or None}
    new = dataclasses.replace(bundle, train=noisy_train, skipped=list(bundle.skipped), info=info)
    return new, result.actual_rate
