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
from turn_backend.paths import OUTSIDE_ROOT, PathOutsideRoot, RootGuard

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


def _class_files(guard: RootGuard, class_dir: Path, skipped: list[SkippedItem]) -> list[tuple[str, Path]]:
    """(id, path) of the image files under `class_dir`, recursively, in sorted order.

    Links (to files or folders) are followed only where they lead inside the root; plain
    files in a folder already known to be inside need no further checks.
    """
    root = Path(guard.root)
    rel_dir = class_dir.relative_to(root).as_posix()
    try:
        guard.resolve(rel_dir)
    except PathOutsideRoot:
        skipped.append(SkippedItem(rel_dir + "/", f"class folder is a link to a place {OUTSIDE_ROOT}"))
        return []
    out: list[tuple[str, Path]] = []
    start = os.path.realpath(class_dir)
    seen = {start}
    stack = [(str(class_dir), rel_dir, start)]
    while stack:
        folder, rel_here, folder_real = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            skipped.append(SkippedItem(rel_here + "/", f"cannot list folder ({exc.strerror or exc})"))
            continue
        subdirs = []
        for e in entries:
            if e.name.startswith("."):
                continue
            rel = f"{rel_here}/{e.name}"
            link = e.is_symlink()
            if link:
                try:
                    guard.resolve(rel)
                except PathOutsideRoot:
                    what = "folder" if e.is_dir() else "file"
                    skipped.append(SkippedItem(rel + ("/" if what == "folder" else ""),
                                               f"link to a {what} {OUTSIDE_ROOT}"))
                    continue
                except DatasetError as exc:
                    skipped.append(SkippedItem(rel, str(exc)))
                    continue
            try:
                is_dir = e.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                real = os.path.realpath(e.path) if link else os.path.join(folder_real, e.name)
                if real in seen:  # a link loop, or a second way to the same folder
                    continue
                seen.add(real)
                subdirs.append((e.path, rel, real))
            elif not is_image_name(e.name):
                skipped.append(SkippedItem(rel, f"not an image file extension ({', '.join(IMAGE_EXTENSIONS)})"))
            else:
                out.append((rel, Path(e.path)))
        stack.extend(reversed(subdirs))
    out.sort(key=lambda item: item[0])
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
    guard = RootGuard(root)
    built = {}
    for split, folder in splits.items():
        _loose_images(folder, root, skipped, f"{split} split" if split_layout else "top level")
        candidates = []
        for c in _visible_dirs(folder):
            for rel, path in _class_files(guard, folder / c, skipped):
                candidates.append(Candidate(id=rel, path=path, label=index[c], source=rel))
        built[split] = build_split(candidates, class_names, skipped, opts, split=split, info=info)
    if "test" in splits and built.get("test") is None:
        warn(info, "the test folder has no usable images; the dataset has no test split")
    name = spec.get("name") or root.name
    return finish_bundle(name, built["train"], built.get("test"), skipped, info, what=f"folder {str(root)!r}")
