"""Hugging Face `datasets` folders (`save_to_disk`) and Parquet files with an image column.

The image column holds encoded images (the `datasets` Image feature: a struct of `bytes`
and `path`; or plain binary), or paths to files. The label column holds class indices
(`ClassLabel` names, where present, become the class names) or class names.

Images are read in two passes over the table, streaming record batches:
1. every image's header is read and checked (`verify`), bad ones are skipped with a reason;
2. if every good image has the same size and they fit in `max_array_mb` (default 1024 MB)
   decoded, they are decoded into one uint8 array (grey (N, H, W) when all are 8-bit grey,
   else RGB (N, H, W, 3)); otherwise the encoded bytes are written, unchanged, as files
   into a cache folder (spec "cache_dir", else $TURN_CACHE_DIR, else
   ~/.cache/turn-studio, under images/<name>-<hash of the source>) and the split uses paths.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from turn_backend.data.common import (
    LabelMapper,
    LoadOptions,
    _show,
    check_image_bytes_reason,
    check_image_file,
    classes_from_labels,
    finish_bundle,
    label_text,
    limit_indices,
    warn,
)
from turn_backend.data.core import DatasetBundle, DatasetError, ImageSet, SkippedItem, to_rgb
from turn_backend.io import cache_root
from turn_backend.paths import OUTSIDE_ROOT, PathOutsideRoot, RootGuard

IMAGE_COLUMNS = ("image", "img", "picture", "photo", "pixel_values_raw")
LABEL_COLUMNS = ("label", "labels", "fine_label", "class", "target")
TRUE_COLUMNS = ("true_label", "clean_label")
TEST_SPLITS = ("test", "validation", "valid", "val")
FORMAT_EXT = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "GIF": ".gif", "WEBP": ".webp", "TIFF": ".tif"}


@dataclass
class Source:
    """One split's table: a way to stream its record batches, and its length."""

    batches: Callable[[], Iterator]
    num_rows: int


@dataclass
class Schema:
    columns: list[str]
    arrow_types: dict
    image_features: set = field(default_factory=set)  # columns with the datasets Image feature
    class_labels: dict = field(default_factory=dict)  # column -> ClassLabel names


# ------------------------------------------------------------------------------ columns


def _pick(columns: list[str], preferred: tuple[str, ...], override: str | None, role: str) -> str | None:
    if override is not None:
        if override not in columns:
            raise DatasetError(f"no {role} column {override!r}; the columns are {columns}")
        return override
    lower = {c.lower(): c for c in columns}
    for name in preferred:
        if name in lower:
            return lower[name]
    return None


def _image_column(schema: Schema, override: str | None) -> str:
    if override is not None:
        return _pick(schema.columns, (), override, "image")
    for c in schema.columns:
        if c in schema.image_features:
            return c
    found = _pick(schema.columns, IMAGE_COLUMNS, None, "image")
    if found:
        return found
    import pyarrow as pa

    for c in schema.columns:
        t = schema.arrow_types[c]
        if pa.types.is_struct(t) and t.get_field_index("bytes") >= 0:
            return c
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            return c
    raise DatasetError(
        f"no image column found among {schema.columns}: name it with image_column "
        f"(auto-detected: the datasets Image feature or a column called {', '.join(IMAGE_COLUMNS[:2])})"
    )


def _label_column(schema: Schema, override: str | None) -> str:
    found = _pick(schema.columns, LABEL_COLUMNS, override, "label")
    if found is None:
        cls = [c for c in schema.columns if c in schema.class_labels]
        if len(cls) == 1:
            return cls[0]
        raise DatasetError(
            f"no label column found among {schema.columns}: name it with label_column "
            f"(auto-detected: {', '.join(LABEL_COLUMNS[:3])} or a single ClassLabel column)"
        )
    return found


def _meta_features(schema) -> tuple[set, dict]:
    """Image / ClassLabel columns from the `huggingface` metadata `datasets` writes into Parquet."""
    images, names = set(), {}
    raw = (schema.metadata or {}).get(b"huggingface")
    if not raw:
        return images, names
    try:
        feats = json.loads(raw).get("info", {}).get("features", {}) or {}
    except (ValueError, AttributeError):
        return images, names
    for col, f in feats.items():
        if isinstance(f, dict) and f.get("_type") == "Image":
            images.add(col)
        elif isinstance(f, dict) and f.get("_type") == "ClassLabel" and f.get("names"):
            names[col] = [str(n) for n in f["names"]]
    return images, names


# ------------------------------------------------------------------------------ reading


@dataclass
class Row:
    index: int
    id: str
    label: int
    true_label: int | None
    size: tuple[int, int]
    mode: str
    fmt: str | None
    path: Path | None  # for images stored as file paths


def _image_ref(value) -> tuple[bytes | None, str | None]:
    if value is None:
        return None, None
    if isinstance(value, dict):
        return value.get("bytes"), value.get("path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), None
    if isinstance(value, str):
        return None, value
    return None, None


def _probe(opener: Callable[[], Image.Image], level: str) -> tuple[str | None, tuple[int, int], str, str | None]:
    reason = check_image_bytes_reason(opener, "decode" if level == "decode" else "verify")
    if reason:
        return reason, (0, 0), "", None
    with opener() as img:
        return None, img.size, img.mode, img.format


def _read_split(
    split: str, src: Source, cols: dict, mapper_or_none, schema: Schema, data_root: Path,
    opts: LoadOptions, skipped: list[SkippedItem], raw_labels: list | None,
) -> list[Row]:
    """Pass 1: check every image; the rows to keep. With `raw_labels` given, only collect label texts."""
    rows: list[Row] = []
    guard = RootGuard(data_root)
    offset = 0
    label_names = schema.class_labels.get(cols["label"])
    true_names = schema.class_labels.get(cols["true"]) if cols["true"] else None
    wanted = [c for c in (cols["image"], cols["label"], cols["true"], cols["id"]) if c]
    for batch in src.batches():
        data = {c: batch.column(batch.schema.get_field_index(c)).to_pylist() for c in wanted if c}
        n = batch.num_rows
        for j in range(n):
            i = offset + j

            def text(col: str | None, names: list[str] | None) -> str:
                if not col:
                    return ""
                v = data[col][j]
                if names is not None and isinstance(v, (int, np.integer)):
                    return names[v] if 0 <= v < len(names) else ""  # -1: no label
                return label_text(v)

            lab = text(cols["label"], label_names)
            true = text(cols["true"], true_names)
            if raw_labels is not None:
                raw_labels.extend([lab, true])
                continue
            src_name = f"{split}[{i}]"
            if lab == "":
                skipped.append(SkippedItem(src_name, f"missing label [{split}]"))
                continue
            k = mapper_or_none(lab)
            if k is None:
                skipped.append(SkippedItem(src_name, f"label {lab!r} is not one of the classes [{split}]"))
                continue
            t = mapper_or_none(true) if true else None
            b, p = _image_ref(data[cols["image"]][j])
            path = None
            if b:
                reason, size, mode, fmt = _probe(lambda b=b: Image.open(io.BytesIO(b)), opts.verify)
            elif p:
                try:
                    path = guard.resolve(p)
                except PathOutsideRoot:
                    skipped.append(SkippedItem(p, f"image path is {OUTSIDE_ROOT} [{split}]"))
                    continue
                except DatasetError as exc:
                    skipped.append(SkippedItem(p, f"{exc} [{split}]"))
                    continue
                reason = check_image_file(path, "exists")
                if reason is None:
                    reason, size, mode, fmt = _probe(lambda path=path: Image.open(path), opts.verify)
                src_name = p
            else:
                reason = "no image data"
            if reason:
                skipped.append(SkippedItem(src_name, f"{reason} [{split}]"))
                continue
            sid = (text(cols["id"], None) if cols["id"] else "") or f"{split}-{i:06d}"
            rows.append(Row(i, sid, k, t, size, mode, fmt, path))
        offset += n
        if opts.progress:
            opts.progress(f"checking {split} images", offset, src.num_rows)
    return rows


def _cache_dir(spec: dict, name: str, key: str) -> Path:
    base = spec.get("cache_dir") or cache_root()
    return Path(base).expanduser() / "images" / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}-{key}"


def _materialise(
    split: str, src: Source, rows: list[Row], cols: dict, class_names: list[str],
    as_array: tuple | None, cache: Path | None, opts: LoadOptions, info: dict,
) -> ImageSet:
    """Pass 2: decode the kept rows into one array, or write their bytes as files."""
    by_index = {r.index: r for r in rows}
    ids = [r.id for r in rows]
    if len(set(ids)) != len(ids):
        dupes = sorted(k for k, v in Counter(ids).items() if v > 1)
        raise DatasetError(f"duplicate ids in the {split} split: {_show(dupes)}")
    arrays = paths = None
    if as_array is not None:
        shape = (len(rows),) + as_array
        arrays = np.empty(shape, dtype=np.uint8)
        grey = len(as_array) == 2
    else:
        paths = [None] * len(rows)
        (cache / split).mkdir(parents=True, exist_ok=True)
    pos = {r.index: k for k, r in enumerate(rows)}
    offset = 0
    for batch in src.batches():
        col = batch.column(batch.schema.get_field_index(cols["image"])).to_pylist()
        for j, value in enumerate(col):
            i = offset + j
            r = by_index.get(i)
            if r is None:
                continue
            k = pos[i]
            b, _ = _image_ref(value)
            if arrays is not None:
                with (Image.open(r.path) if r.path is not None else Image.open(io.BytesIO(b))) as img:
                    arrays[k] = np.asarray(img.convert("L") if grey else to_rgb(img), dtype=np.uint8)
            elif r.path is not None:
                paths[k] = str(r.path)
            else:
                ext = FORMAT_EXT.get(r.fmt or "")
                target = cache / split / f"{i:07d}{ext or '.png'}"
                if ext is None:  # a format with no image extension we accept: store as PNG
                    buf = io.BytesIO()
                    with Image.open(io.BytesIO(b)) as img:
                        to_rgb(img).save(buf, "PNG")
                    b = buf.getvalue()
                if not (target.is_file() and target.stat().st_size == len(b)):
                    tmp = target.with_suffix(target.suffix + ".part")
                    tmp.write_bytes(b)
                    os.replace(tmp, target)
                paths[k] = str(target)
        offset += batch.num_rows
        if opts.progress:
            opts.progress(f"{'decoding' if arrays is not None else 'extracting'} {split} images", offset, src.num_rows)
    trues = [r.true_label for r in rows]
    known = sum(t is not None for t in trues)
    true_labels = np.asarray(trues, dtype=np.int64) if known == len(rows) else None
    if 0 < known < len(rows):
        info.setdefault("partial_true_labels", {})[split] = np.asarray([-1 if t is None else t for t in trues])
    return ImageSet(ids=ids, labels=np.asarray([r.label for r in rows], dtype=np.int64),
                    class_names=list(class_names), true_labels=true_labels, paths=paths, arrays=arrays)


def _load_tables(
    sources: dict[str, Source], schema: Schema, spec: dict, opts: LoadOptions,
    data_root: Path, name: str, cache_key: str, what: str,
) -> DatasetBundle:
    info: dict = {}
    skipped: list[SkippedItem] = []
    cols = {
        "image": _image_column(schema, spec.get("image_column")),
        "label": _label_column(schema, spec.get("label_column")),
        "true": _pick(schema.columns, TRUE_COLUMNS, spec.get("true_label_column"), "true label"),
        "id": _pick(schema.columns, ("id",), spec.get("id_column"), "id"),
    }
    info["columns"] = {k: v for k, v in cols.items() if v}
    if spec.get("classes") is not None:
        class_names = [str(c) for c in spec["classes"]]
    elif cols["label"] in schema.class_labels:
        class_names = schema.class_labels[cols["label"]]
    else:
        texts: list[str] = []
        for split, src in sources.items():
            _read_split(split, src, cols, None, schema, data_root, opts, skipped, texts)
        class_names = classes_from_labels(texts)
        if not class_names:
            raise DatasetError(f"{what} has no labels in its column {cols['label']!r}")
    mapper = LabelMapper(class_names)
    rows = {}
    for split, src in sources.items():
        kept = _read_split(split, src, cols, mapper, schema, data_root, opts, skipped, None)
        limit = opts.limit(split)
        if limit is not None and limit < len(kept):
            kept = [kept[i] for i in limit_indices(len(kept), limit, opts.seed)]
        rows[split] = kept
    everything = [r for rs in rows.values() for r in rs]
    sizes = {r.size for r in everything}
    grey = all(r.mode == "L" for r in everything)
    as_array = None
    if len(sizes) == 1:
        w, h = sizes.pop()
        shape = (h, w) if grey else (h, w, 3)
        budget = float(spec.get("max_array_mb", 1024)) * 2**20
        if len(everything) * int(np.prod(shape)) <= budget:
            as_array = shape
    info["storage"] = "arrays" if as_array is not None else "files"
    cache = None if as_array is not None else _cache_dir(spec, name, cache_key)
    if cache is not None and any(r.path is None for r in everything):
        info["cache_dir"] = str(cache)
    sets = {
        split: _materialise(split, sources[split], rs, cols, class_names, as_array, cache, opts, info)
        for split, rs in rows.items() if rs
    }
    # CIFAR-100 style: fine labels with a coarse-label column give the superclass map
    coarse_col = _pick(schema.columns, ("coarse_label",), None, "coarse label")
    if coarse_col and coarse_col != cols["label"]:
        _coarse_map(sources, cols["label"], coarse_col, schema, class_names, info)
    if "test" in sources and "test" not in sets:
        warn(info, "the test split has no usable images; the dataset has no test split")
    return finish_bundle(name, sets.get("train"), sets.get("test"), skipped, info, what=what)


def _coarse_map(sources, label_col, coarse_col, schema, class_names, info) -> None:
    mapper = LabelMapper(class_names)
    fine_names = schema.class_labels.get(label_col)
    pairs = set()
    for src in sources.values():
        for batch in src.batches():
            f = batch.column(batch.schema.get_field_index(label_col)).to_pylist()
            c = batch.column(batch.schema.get_field_index(coarse_col)).to_pylist()
            for a, b in zip(f, c):
                if a is None or b is None:
                    continue
                fine = fine_names and isinstance(a, int) and 0 <= a < len(fine_names)
                k = mapper(fine_names[a] if fine else label_text(a))
                if k is not None and isinstance(b, (int, np.integer)):
                    pairs.add((k, int(b)))
    cof = np.full(len(class_names), -1, dtype=np.int64)
    for k, b in pairs:
        if cof[k] not in (-1, b):
            return  # not a consistent class -> superclass map
        cof[k] = b
    info["coarse_of_fine"] = cof
    if coarse_col in schema.class_labels:
        info["coarse_names"] = schema.class_labels[coarse_col]


def _fingerprint_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        st = p.stat()
        h.update(f"{p.resolve()}\x1f{st.st_size}\x1f{st.st_mtime_ns}\x1e".encode())
    return h.hexdigest()[:12]


# ------------------------------------------------------------------------------ entry points


def load_hf(spec: dict, opts: LoadOptions) -> DatasetBundle:
    """A folder written by `datasets`' `save_to_disk` (a DatasetDict or a single Dataset)."""
    import datasets

    root = Path(spec["path"]).expanduser()
    if not root.is_dir():
        raise DatasetError(f"no such folder: {str(root)!r} (expected a datasets save_to_disk folder)")
    try:
        loaded = datasets.load_from_disk(str(root))
    except FileNotFoundError as exc:
        raise DatasetError(f"{str(root)!r} is not a datasets save_to_disk folder: {exc}") from exc
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded.keys())
        only = names[0] if len(names) == 1 else None
        train_name = spec.get("train_split") or ("train" if "train" in loaded else only)
        if train_name not in loaded:
            raise DatasetError(f"no train split in {str(root)!r}: its splits are {names}; name one with train_split")
        test_name = spec.get("test_split", next((s for s in TEST_SPLITS if s in loaded), None))
        if test_name and test_name not in loaded:
            raise DatasetError(f"no split {test_name!r} in {str(root)!r}: its splits are {names}")
        parts = {"train": loaded[train_name]}
        if test_name:
            parts["test"] = loaded[test_name]
    else:
        parts = {"train": loaded}
    sources = {}
    for split, ds in parts.items():
        if getattr(ds, "_indices", None) is not None:
            ds = ds.flatten_indices(keep_in_memory=True)
        table = ds.data.table
        sources[split] = Source(batches=lambda t=table: iter(t.to_batches(max_chunksize=256)), num_rows=table.num_rows)
    feats = parts["train"].features
    schema = Schema(
        columns=list(feats.keys()),
        arrow_types={c: parts["train"].data.table.schema.field(c).type for c in feats},
        image_features={c for c, f in feats.items() if isinstance(f, datasets.Image)},
        class_labels={c: list(f.names) for c, f in feats.items() if isinstance(f, datasets.ClassLabel)},
    )
    files = [p for p in root.rglob("*") if p.is_file()]
    data_root = Path(spec["root"]).expanduser() if spec.get("root") else root
    name = spec.get("name") or root.name
    return _load_tables(sources, schema, spec, opts, data_root, name, _fingerprint_files(files),
                        f"the datasets folder {str(root)!r}")


def _split_of(rel: str) -> str | None:
    tokens = set(re.split(r"[-_./\\ ]+", rel.lower()))
    for split, names in (("train", ("train", "training")), ("test", ("test", "testing")),
                         ("val", ("validation", "valid", "val", "dev"))):
        if tokens & set(names):
            return split
    return None


def load_parquet(spec: dict, opts: LoadOptions) -> DatasetBundle:
    """Parquet file(s): spec "path" a file or a folder (files grouped by train/test/val in
    their names, e.g. data/train-00000-of-00001.parquet), optional "test_path"."""
    import pyarrow.parquet as pq

    path = Path(spec["path"]).expanduser()
    if not path.exists():
        raise DatasetError(f"no such file or folder: {str(path)!r}")
    groups: dict[str, list[Path]] = {}
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in (".parquet", ".pq", ".parq"))
        if not files:
            raise DatasetError(f"{str(path)!r} holds no .parquet files")
        for f in files:
            groups.setdefault(_split_of(f.relative_to(path).as_posix()) or "", []).append(f)
        if set(groups) <= {""}:
            groups = {"train": files}
        else:
            unnamed = groups.pop("", [])
            if "train" not in groups:
                raise DatasetError(f"{str(path)!r}: no Parquet file has 'train' in its name "
                                   f"(found {[f.name for f in files]})")
            groups["train"] += unnamed
            if "test" not in groups and "val" in groups:
                groups["test"] = groups.pop("val")
            groups.pop("val", None)
        data_root = path
    else:
        groups["train"] = [path]
        if spec.get("test_path"):
            groups["test"] = [Path(spec["test_path"]).expanduser()]
        data_root = path.parent
    if spec.get("root"):
        data_root = Path(spec["root"]).expanduser()
    try:
        first = pq.ParquetFile(groups["train"][0])
    except Exception as exc:
        raise DatasetError(f"cannot read Parquet file {str(groups['train'][0])!r}: {exc}") from exc
    arrow_schema = first.schema_arrow
    images, names = _meta_features(arrow_schema)
    schema = Schema(columns=list(arrow_schema.names),
                    arrow_types={f.name: f.type for f in arrow_schema}, image_features=images, class_labels=names)

    def streamer(files: list[Path]):
        def batches():
            for f in files:
                try:
                    yield from pq.ParquetFile(f).iter_batches(batch_size=256)
                except OSError as exc:
                    raise DatasetError(f"cannot read Parquet file {str(f)!r}: {exc}") from exc
        return batches

    sources = {
        split: Source(batches=streamer(files), num_rows=sum(pq.ParquetFile(f).metadata.num_rows for f in files))
        for split, files in groups.items()
    }
    name = spec.get("name") or (path.stem if path.is_file() else path.name)
    key = _fingerprint_files([f for fs in groups.values() for f in fs])
    return _load_tables(sources, schema, spec, opts, data_root, name, key, f"the Parquet data {str(path)!r}")
