"""Standard benchmark sets from local files: MNIST-style IDX files and CIFAR-10 / CIFAR-100.

Both come with clean labels, so their splits carry `true_labels` equal to the labels:
synthetic noise (`apply_label_noise`) can then be measured.
"""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np

from turn_backend.data.common import LoadOptions, finish_bundle, limit_arrays, warn
from turn_backend.data.core import DatasetBundle, DatasetError, ImageSet
from turn_backend.data.demo import read_idx_gz
from turn_backend.noise import CIFAR10_CLASSES, FASHION_MNIST_CLASSES

# ------------------------------------------------------------------------------- IDX

IDX_CLASSES = {
    "mnist": [str(i) for i in range(10)],
    "fashion-mnist": list(FASHION_MNIST_CLASSES),
    "kmnist": ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
}
IDX_ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist"}


def _find_idx(root: Path, prefix: str, what: str) -> Path | None:
    """`{prefix}-{what}-idx?-ubyte[.gz]` (or `.idx?-ubyte`) in root, root/raw or root/*/raw."""
    dirs = [root, root / "raw"] + sorted(p for p in root.glob("*/raw") if p.is_dir())
    for d in dirs:
        hits = sorted(d.glob(f"{prefix}-{what}[-.]idx*-ubyte")) + sorted(d.glob(f"{prefix}-{what}[-.]idx*-ubyte.gz"))
        if hits:
            return hits[0]
    return None


def load_idx(spec: dict, opts: LoadOptions) -> DatasetBundle:
    root = Path(spec["path"]).expanduser()
    if not root.is_dir():
        raise DatasetError(f"no such folder: {str(root)!r} (an idx dataset is a folder of MNIST-format files)")
    info: dict = {}
    splits = {}
    found_at = root
    for split, prefix in (("train", "train"), ("test", "t10k")):
        img_p, lab_p = _find_idx(root, prefix, "images"), _find_idx(root, prefix, "labels")
        if img_p is None or lab_p is None:
            if split == "train":
                raise DatasetError(
                    f"{str(root)!r} has no train-images-idx3-ubyte[.gz] / train-labels-idx1-ubyte[.gz] pair "
                    f"(looked in it, raw/ and */raw/)"
                )
            warn(info, "no t10k-images / t10k-labels files: the dataset has no test split")
            continue
        images, labels = read_idx_gz(img_p), read_idx_gz(lab_p).astype(np.int64)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetError(
                f"{img_p.name} / {lab_p.name}: expected images (N, H, W) and N labels, "
                f"got {images.shape} and {labels.shape}"
            )
        splits[split] = (images, labels)
        found_at = img_p
    variant = spec.get("variant")
    if variant is None:
        low = str(found_at).lower()
        variant = "fashion-mnist" if "fashion" in low else "kmnist" if "kmnist" in low else "mnist"
        warn(info, f"no variant given; {variant!r} guessed from the folder name (class names follow it)")
    variant = IDX_ALIASES.get(str(variant).lower(), str(variant).lower())
    if spec.get("classes") is not None:
        class_names = [str(c) for c in spec["classes"]]
    elif variant in IDX_CLASSES:
        class_names = IDX_CLASSES[variant]
    else:
        k = int(max(int(lab.max()) for _, lab in splits.values() if len(lab)) + 1)
        class_names = [str(i) for i in range(k)]
    for split, (_, labels) in splits.items():
        if len(labels) and labels.max() >= len(class_names):
            raise DatasetError(f"the {split} labels go up to {labels.max()} but there are {len(class_names)} classes")
    sets = {
        split: limit_arrays(
            ImageSet(
                ids=[f"{variant}-{split}-{k:05d}" for k in range(len(labels))],
                labels=labels, class_names=list(class_names), true_labels=labels, arrays=images,
            ),
            opts.limit(split), opts.seed,
        )
        for split, (images, labels) in splits.items()
    }
    name = spec.get("name") or variant
    return finish_bundle(name, sets["train"], sets.get("test"), [], info, what=f"the {variant} files")


# ------------------------------------------------------------------------------- CIFAR

CIFAR = {
    "cifar10": {"folder": "cifar-10-batches-py", "tarball": "cifar-10-python.tar.gz",
                "train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"], "meta": "batches.meta"},
    "cifar100": {"folder": "cifar-100-python", "tarball": "cifar-100-python.tar.gz",
                 "train": ["train"], "test": ["test"], "meta": "meta"},
}


class _CifarUnpickler(pickle.Unpickler):
    """The official CIFAR "python version" files are pickles (dicts of lists and numpy
    arrays). Pickle can run arbitrary code, so only the numpy array constructors those
    files need are allowed; anything else is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.dtypes", "UInt8DType"),
        ("numpy.dtypes", "Int64DType"), ("numpy.dtypes", "Int32DType"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 spell bytes
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name} in a CIFAR file")
        if module == "_codecs":
            import codecs

            return codecs.encode
        if name == "_reconstruct":
            return np.zeros(1).__reduce__()[0]
        if name == "scalar":
            return np.float64(0).__reduce__()[0]
        if module == "numpy.dtypes":
            import numpy.dtypes

            return getattr(numpy.dtypes, name)
        return getattr(np, name)


def _text(x) -> str:
    return x.decode("latin1") if isinstance(x, bytes) else str(x)


def read_cifar_file(path: Path) -> dict:
    """One CIFAR batch / meta file as a dict with str keys (restricted unpickling)."""
    try:
        with open(path, "rb") as fh:
            obj = _CifarUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DatasetError(f"{str(path)!r} is not a CIFAR python-version file: {exc}") from exc
    if not isinstance(obj, dict):
        raise DatasetError(f"{str(path)!r} is not a CIFAR python-version file (no dict inside)")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _safe_extract(tarball: Path, root: Path) -> None:
    """Unpack a .tar.gz into root, refusing links, devices and paths leading outside root."""
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            members = tar.getmembers()
            for m in members:
                if not (m.isfile() or m.isdir()) or m.name.startswith("/") or ".." in Path(m.name).parts:
                    raise DatasetError(f"{str(tarball)!r} holds an unsafe entry {m.name!r}; unpack it by hand")
            try:
                tar.extractall(root, members=members, filter="data")
            except TypeError:  # Python before 3.10.12 / 3.11.4: no filters (entries checked above)
                tar.extractall(root, members=members)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(f"cannot unpack {str(tarball)!r}: {exc}") from exc


def _cifar_folder(root: Path, kind: str, download: bool) -> Path:
    meta = CIFAR[kind]
    if root.name == meta["folder"]:
        return root
    folder = root / meta["folder"]
    if folder.is_dir():
        return folder
    tarball = root / meta["tarball"]
    if tarball.is_file():
        _safe_extract(tarball, root)
        if folder.is_dir():
            return folder
    if download:
        import torchvision

        cls = torchvision.datasets.CIFAR10 if kind == "cifar10" else torchvision.datasets.CIFAR100
        try:
            cls(str(root), train=True, download=True)
        except Exception as exc:  # no network, checksum mismatch, ...
            raise DatasetError(f"downloading {kind} into {str(root)!r} failed: {exc}") from exc
        if folder.is_dir():
            return folder
    raise DatasetError(
        f"{str(root)!r} has no {meta['folder']}/ folder (nor {meta['tarball']}): put the official "
        f"CIFAR python-version files there" + ("" if download else ", or set download to true")
    )


def _cifar_split(folder: Path, names: list[str],
                 label_key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
    xs, ys, cs, found = [], [], [], 0
    for n in names:
        p = folder / n
        if not p.is_file():
            continue
        found += 1
        d = read_cifar_file(p)
        data = np.asarray(d["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072:
            raise DatasetError(f"{str(p)!r}: expected data of shape (N, 3072), got {data.shape}")
        xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(np.asarray(d[label_key], dtype=np.int64))
        if "coarse_labels" in d:
            cs.append(np.asarray(d["coarse_labels"], dtype=np.int64))
    if not found:
        return None, None, None, 0
    x, y = np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys)
    if len(x) != len(y):
        raise DatasetError(f"{folder}: {len(x)} images but {len(y)} labels")
    return x, y, (np.concatenate(cs) if cs else None), found


def load_cifar(spec: dict, opts: LoadOptions) -> DatasetBundle:
    kind = spec["kind"]
    root = Path(spec["path"]).expanduser()
    if not root.is_dir() and not spec.get("download"):
        raise DatasetError(f"no such folder: {str(root)!r}")
    if spec.get("download"):
        root.mkdir(parents=True, exist_ok=True)
    folder = _cifar_folder(root, kind, bool(spec.get("download")))
    meta = CIFAR[kind]
    info: dict = {}
    label_key = "labels" if kind == "cifar10" else "fine_labels"
    xtr, ytr, ctr, nfound = _cifar_split(folder, meta["train"], label_key)
    if xtr is None:
        raise DatasetError(f"{str(folder)!r} holds none of the training files {meta['train']}")
    if nfound < len(meta["train"]):
        warn(info, f"only {nfound} of the {len(meta['train'])} training batches were found")
    xte, yte, cte, _ = _cifar_split(folder, meta["test"], label_key)
    if xte is None:
        warn(info, f"no {meta['test'][0]} file: the dataset has no test split")
    m = read_cifar_file(folder / meta["meta"]) if (folder / meta["meta"]).is_file() else {}
    if kind == "cifar10":
        class_names = [_text(c) for c in m.get("label_names", CIFAR10_CLASSES)]
    else:
        if "fine_label_names" not in m:
            raise DatasetError(f"{str(folder / 'meta')!r} is missing: it holds the CIFAR-100 class names")
        class_names = [_text(c) for c in m["fine_label_names"]]
        coarse_names = [_text(c) for c in m.get("coarse_label_names", [])]
        pairs = [(y, c) for y, c in ((ytr, ctr), (yte, cte)) if y is not None and c is not None]
        if pairs:
            fine = np.concatenate([y for y, _ in pairs])
            coarse = np.concatenate([c for _, c in pairs])
            coarse_of_fine = np.full(len(class_names), -1, dtype=np.int64)
            coarse_of_fine[fine] = coarse
            if (coarse_of_fine[fine] != coarse).any():
                raise DatasetError(f"{str(folder)!r}: a CIFAR-100 class is filed under two superclasses")
            if (coarse_of_fine < 0).any():
                warn(info, "some CIFAR-100 classes have no samples, so their superclass is unknown")
            info["coarse_of_fine"] = coarse_of_fine
            info["coarse_names"] = coarse_names
    prefix = "cifar10" if kind == "cifar10" else "cifar100"
    train = ImageSet(ids=[f"{prefix}-train-{k:05d}" for k in range(len(ytr))], labels=ytr,
                     class_names=list(class_names), true_labels=ytr, arrays=xtr)
    test = None
    if xte is not None:
        test = ImageSet(ids=[f"{prefix}-test-{k:05d}" for k in range(len(yte))], labels=yte,
                        class_names=list(class_names), true_labels=yte, arrays=xte)
    train = limit_arrays(train, opts.max_train, opts.seed)
    test = limit_arrays(test, opts.max_test, opts.seed)
    name = spec.get("name") or ("cifar-10" if kind == "cifar10" else "cifar-100")
    return finish_bundle(name, train, test, [], info, what=f"the {kind} files in {str(folder)!r}")


__all__ = ["load_idx", "load_cifar", "read_cifar_file", "IDX_CLASSES"]
