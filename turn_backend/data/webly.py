"""Real-world noisy-label benchmarks laid out as their authors ship them: Clothing1M, WebVision 1.0.

Clothing1M (Xiao et al. 2015), root (annotation files may also sit in root/annotations/):
    category_names_eng.txt     14 class names, one a line
    noisy_label_kv.txt         `images/0/xx.jpg 3`  (web labels, ~1M images)
    clean_label_kv.txt         `images/0/xx.jpg 3`  (human labels, ~72k images)
    noisy_train_key_list.txt   the training images (keys of noisy_label_kv)
    clean_test_key_list.txt    the test images (keys of clean_label_kv)
    images/...
Train = noisy_train keys with their noisy labels. Their true labels are kept only when every
one is in clean_label_kv (normally not); the known ones go to info["partial_true_labels"].
Test = clean_test keys with clean labels.

WebVision 1.0 (Li et al. 2017), root:
    info/train_filelist_google.txt   `google/q0001/xx.jpg 0`
    info/train_filelist_flickr.txt   `flickr/q0001/xx.jpg 0`
    info/val_filelist.txt            `xx.jpg 0`  (images under val_images_256/)
    info/synsets.txt                 `n01440764 tench, Tinca tinca` (optional: class names)
spec "sources" picks the train file lists (default: all present), "num_classes" keeps the
first classes; "variant": "mini" is mini-WebVision as in DivideMix (google, 50 classes).
"""

from __future__ import annotations

import os
from pathlib import Path

from turn_backend.data.common import (
    Candidate,
    LoadOptions,
    build_split,
    find_existing,
    finish_bundle,
    unique_names,
    warn,
)
from turn_backend.data.core import DatasetBundle, DatasetError, SkippedItem
from turn_backend.paths import OUTSIDE_ROOT, PathOutsideRoot, RootGuard


def _lines(path: Path) -> list[tuple[int, str]]:
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        return [(n, line.strip()) for n, line in enumerate(fh, 1) if line.strip()]


def read_kv(path: Path, skipped: list[SkippedItem]) -> dict[str, int]:
    """`key label` lines (the key may contain spaces; the label is the last field)."""
    out: dict[str, int] = {}
    for n, line in _lines(path):
        parts = line.rsplit(None, 1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            skipped.append(SkippedItem(f"{path.name}:{n}", f"not a `path label` line: {line[:80]!r}"))
            continue
        out[parts[0]] = int(parts[1])
    return out


def _candidate(guard: RootGuard, key: str, label: int, true: int | None, sid: str, skipped: list[SkippedItem],
               where: str) -> Candidate | None:
    try:
        path = guard.resolve(key)
    except PathOutsideRoot:
        skipped.append(SkippedItem(key, f"path is {OUTSIDE_ROOT} ({where})"))
        return None
    except DatasetError as exc:
        skipped.append(SkippedItem(key, f"{exc} ({where})"))
        return None
    return Candidate(id=sid, path=path, label=label, true_label=true, source=key)


def _root(spec: dict, what: str) -> Path:
    root = Path(spec["path"]).expanduser()
    if not root.is_dir():
        raise DatasetError(f"no such folder: {str(root)!r} (the {what} root)")
    return Path(os.path.abspath(root))


def load_clothing1m(spec: dict, opts: LoadOptions) -> DatasetBundle:
    root = _root(spec, "Clothing1M")
    ann = root / "annotations" if (root / "annotations" / "noisy_label_kv.txt").is_file() else root
    need = ["category_names_eng.txt", "noisy_label_kv.txt", "clean_label_kv.txt",
            "noisy_train_key_list.txt", "clean_test_key_list.txt"]
    missing = [n for n in need if not (ann / n).is_file()]
    if missing:
        raise DatasetError(f"{str(root)!r} is missing the Clothing1M annotation files {missing}")
    info: dict = {}
    skipped: list[SkippedItem] = []
    class_names = [line for _, line in _lines(ann / "category_names_eng.txt")]
    c = len(class_names)
    noisy = read_kv(ann / "noisy_label_kv.txt", skipped)
    clean = read_kv(ann / "clean_label_kv.txt", skipped)
    bad = [k for k, v in list(noisy.items()) + list(clean.items()) if not 0 <= v < c]
    if bad:
        raise DatasetError(f"Clothing1M labels must be 0..{c - 1} ({c} names in category_names_eng.txt); "
                           f"{len(bad)} are not, e.g. {bad[0]!r}")
    guard = RootGuard(root)
    train, test = [], []
    seen: set[str] = set()
    for _, key in _lines(ann / "noisy_train_key_list.txt"):
        if key in seen:
            skipped.append(SkippedItem(key, "listed twice in noisy_train_key_list.txt"))
            continue
        seen.add(key)
        if key not in noisy:
            skipped.append(SkippedItem(key, "no label in noisy_label_kv.txt (train)"))
            continue
        cand = _candidate(guard, key, noisy[key], clean.get(key), key, skipped, "train")
        if cand:
            train.append(cand)
    seen = set()
    for _, key in _lines(ann / "clean_test_key_list.txt"):
        if key in seen:
            skipped.append(SkippedItem(key, "listed twice in clean_test_key_list.txt"))
            continue
        seen.add(key)
        if key not in clean:
            skipped.append(SkippedItem(key, "no label in clean_label_kv.txt (test)"))
            continue
        cand = _candidate(guard, key, clean[key], clean[key], key, skipped, "test")
        if cand:
            test.append(cand)
    known = sum(x.true_label is not None for x in train)
    info["train_with_clean_label"] = known
    train_set = build_split(train, class_names, skipped, opts, split="train", info=info)
    test_set = build_split(test, class_names, skipped, opts, split="test", info=info) if test else None
    return finish_bundle(spec.get("name") or "clothing1m", train_set, test_set, skipped, info,
                         what=f"Clothing1M at {str(root)!r}")


def _synset_names(path: Path) -> list[str]:
    keys, names = [], []
    for _, line in _lines(path):
        parts = line.split(None, 1)
        keys.append(parts[0])
        names.append(parts[1].split(",")[0].strip() if len(parts) > 1 else parts[0])
    return unique_names(names, keys)


def load_webvision(spec: dict, opts: LoadOptions) -> DatasetBundle:
    root = _root(spec, "WebVision")
    info_dir = root / "info"
    if not info_dir.is_dir():
        raise DatasetError(f"{str(root)!r} has no info/ folder (WebVision's file lists live there)")
    variant = spec.get("variant")
    if variant not in (None, "mini", "full"):
        raise DatasetError(f"webvision variant must be 'mini' or 'full', got {variant!r}")
    num_classes = spec.get("num_classes", 50 if variant == "mini" else None)
    available = [s for s in ("google", "flickr") if (info_dir / f"train_filelist_{s}.txt").is_file()]
    sources = spec.get("sources") or (["google"] if variant == "mini" else available)
    for s in sources:
        if s not in available:
            raise DatasetError(f"no info/train_filelist_{s}.txt in {str(root)!r} (found lists for {available})")
    skipped: list[SkippedItem] = []
    info: dict = {"sources": list(sources)}
    train_items = []
    for s in sources:
        for key, lab in read_kv(info_dir / f"train_filelist_{s}.txt", skipped).items():
            train_items.append((key, lab))
    val_file = info_dir / "val_filelist.txt"
    val_items = list(read_kv(val_file, skipped).items()) if val_file.is_file() else []
    if not val_items:
        warn(info, "no info/val_filelist.txt: the dataset has no test split")
    synsets = find_existing(info_dir, ["synsets.txt"])
    max_label = max([lab for _, lab in train_items + val_items], default=-1)
    if synsets is not None:
        class_names = _synset_names(synsets)
    else:
        class_names = [str(i) for i in range(max_label + 1)]
    if num_classes is not None:
        num_classes = int(num_classes)
        if not 2 <= num_classes <= len(class_names):
            raise DatasetError(f"num_classes must be between 2 and {len(class_names)}, got {num_classes}")
        class_names = class_names[:num_classes]
        info["num_classes"] = num_classes
    c = len(class_names)
    if max_label >= c and num_classes is None:
        raise DatasetError(f"labels go up to {max_label} but synsets.txt names {c} classes")
    val_dir = spec.get("val_dir") or next(
        (d for d in ("val_images_256", "val_images") if (root / d).is_dir()), "val_images_256")
    guard = RootGuard(root)
    train, test = [], []
    for key, lab in train_items:
        if lab < c:
            cand = _candidate(guard, key, lab, None, key, skipped, "train")
            if cand:
                train.append(cand)
    for key, lab in val_items:
        if lab < c:
            rel = f"{val_dir}/{key}"
            cand = _candidate(guard, rel, lab, lab, f"val/{key}", skipped, "val")
            if cand:
                test.append(cand)
    train_set = build_split(train, class_names, skipped, opts, split="train", info=info)
    test_set = build_split(test, class_names, skipped, opts, split="test", info=info) if test else None
    default = "mini-webvision" if num_classes == 50 and sources == ["google"] else "webvision"
    return finish_bundle(spec.get("name") or default, train_set, test_set, skipped, info,
                         what=f"WebVision at {str(root)!r}")
