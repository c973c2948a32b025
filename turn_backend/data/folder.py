"""Image folders: one subfolder per class, optionally under `train/` and `test/` (or `val/`).

    root/cat/001.png                root/train/cat/001.png
    root/dog/002.jpg       or       root/train/dog/002.jpg
                                    root/test/cat/101.png

Class names are the sorted class-folder names (over all splits). Files inside a class
folder are found recursively. Hidden files and folders (".name") are ignored; other
files without an image extension, images outside any class folder, and anything that
leads outside the root (symlinks) are reported as skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

from turn_backend.data.common import (
    IMAGE_EXTENSIONS,
    Candidate,
    LoadOptions,
    build_split,
    finish_bundle,
    is_image_name,
    warn,
)
from turn_backend.data.core import DatasetBundle, DatasetError, SkippedItem
from turn_backend.paths import OUTSIDE_ROOT, PathOutsideRoot, resolve_inside

TRAIN_NAMES = ("train", "training")
TEST_NAMES = ("test", "testing")
VAL_NAMES = ("val", "valid", "validation")
SPLIT_NAMES = TRAIN_NAMES + TEST_NAMES + VAL_NAMES


def _visible_dirs(folder: Path) -> list[str]:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        raise DatasetError(f"cannot list {folder}: {exc.strerror or exc}") from exc
    return [e.name for e in entries if not e.name.startswith(".") and e.is_dir(follow_symlinks=True)]


def _loose_images(folder: Path, root: Path, skipped: list[SkippedItem], where: str) -> None:
    for e in sorted(os.scandir(folder), key=lambda e: e.name):
        if not e.name.startswith(".") and e.is_file() and is_image_name(e.name):
            rel = Path(e.path).relative_to(root).as_posix()
            skipped.append(SkippedItem(rel, f"image not inside a class folder ({where})"))


def _class_files(
    root: Path, class_dir: Path, skipped: list[SkippedItem]
) -> list[tuple[str, Path]]:
    """(id, path) of the image files under `class_dir`, recursively, in sorted order."""
    rel_dir = class_dir.relative_to(root).as_posix()
    try:
        start = resolve_inside(root, rel_dir)
    except PathOutsideRoot:
        skipped.append(SkippedItem(rel_dir + "/", f"class folder is a link to a place {OUTSIDE_ROOT}"))
        return []
    out: list[tuple[str, Path]] = []
    seen_dirs = {os.path.realpath(start)}
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        rel_here = Path(dirpath).relative_to(root)
        keep = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            rel = (rel_here / d).as_posix()
            full = Path(dirpath) / d
            if full.is_symlink():
                try:
                    resolve_inside(root, rel)
                except PathOutsideRoot:
                    skipped.append(SkippedItem(rel + "/", f"folder is a link to a place {OUTSIDE_ROOT}"))
                    continue
            real = os.path.realpath(full)
            if real in seen_dirs:  # a link loop or a second way to the same folder
                continue
            seen_dirs.add(real)
            keep.append(d)
        dirnames[:] = keep
        for f in sorted(filenames):
            if f.startswith("."):
                continue
            rel = (rel_here / f).as_posix()
            if not is_image_name(f):
                skipped.append(SkippedItem(rel, f"not an image file extension ({', '.join(IMAGE_EXTENSIONS)})"))
                continue
            try:
                path = resolve_inside(root, rel)
            except PathOutsideRoot:
                skipped.append(SkippedItem(rel, f"link to a file {OUTSIDE_ROOT}"))
                continue
            except DatasetError as exc:
                skipped.append(SkippedItem(rel, str(exc)))
                continue
            out.append((rel, path))
    return out


def load_folder(spec: dict, opts: LoadOptions) -> DatasetBundle:
    root = Path(spec["path"]).expanduser()
    if not root.is_dir():
        raise DatasetError(f"no such folder: {str(root)!r} (a folder dataset needs one subfolder per class)")
    root = Path(os.path.abspath(root))
    skipped: list[SkippedItem] = []
    info: dict = {}
    top = _visible_dirs(root)
    lower = {d.lower(): d for d in top}
    split_layout = any(t in lower for t in TRAIN_NAMES) and all(d.lower() in SPLIT_NAMES for d in top)
    splits: dict[str, Path] = {}
    if split_layout:
        splits["train"] = root / next(lower[t] for t in TRAIN_NAMES if t in lower)
        tests = [lower[t] for t in TEST_NAMES if t in lower]
        vals = [lower[t] for t in VAL_NAMES if t in lower]
        if tests:
            splits["test"] = root / tests[0]
            if vals:
                warn(info, f"folder {vals[0]!r} is not used: {tests[0]!r} is the test split")
        elif vals:
            splits["test"] = root / vals[0]
        _loose_images(root, root, skipped, "top level")
        class_names = sorted({c for folder in splits.values() for c in _visible_dirs(folder)})
    else:
        splits["train"] = root
        class_names = top
    if not class_names:
        raise DatasetError(
            f"{str(root)!r} has no class folders: put each class's images in a subfolder named "
            f"after the class (optionally under train/ and test/)"
        )
    index = {c: i for i, c in enumerate(class_names)}
    built = {}
    for split, folder in splits.items():
        _loose_images(folder, root, skipped, f"{split} split" if split_layout else "top level")
        candidates = []
        for c in _visible_dirs(folder):
            for rel, path in _class_files(root, folder / c, skipped):
                candidates.append(Candidate(id=rel, path=path, label=index[c], source=rel))
        built[split] = build_split(candidates, class_names, skipped, opts, split=split, info=info)
    if "test" in splits and built.get("test") is None:
        warn(info, "the test folder has no usable images; the dataset has no test split")
    name = spec.get("name") or root.name
    return finish_bundle(name, built["train"], built.get("test"), skipped, info, what=f"folder {str(root)!r}")
