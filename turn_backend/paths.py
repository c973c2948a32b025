"""Path safety: resolve a path a dataset file names, refusing anything outside the data root.

Manifests, folder trees and annotation files name images by paths relative to a data root.
Those paths are user data and must not reach outside that root: `../../etc/passwd`, an
absolute path elsewhere, or a symlink inside the root that points out of it.
"""

from __future__ import annotations

import os
from pathlib import Path

from turn_backend.data.core import DatasetError

OUTSIDE_ROOT = "outside the data root"


class PathOutsideRoot(DatasetError):
    """A path that resolves (after `..` and symlinks) to a place outside the data root."""


def resolve_inside(root: str | os.PathLike, relative: str | os.PathLike) -> Path:
    """`root / relative` as an absolute path, if it stays inside `root`.

    `relative` may use `..` as long as the result stays inside; absolute paths are accepted
    only when they lie inside `root`. Symlinks are followed (the file system decides where
    a path leads) and the real target must be inside the real root. The file need not exist.

    Raises `PathOutsideRoot` (a `DatasetError`) for an escape, `DatasetError` for a path the
    operating system cannot represent (e.g. one with a NUL byte).
    """
    text = os.fspath(relative)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if "\x00" in text:
        raise DatasetError(f"invalid path {text!r}: it contains a NUL byte")
    base = Path(os.path.abspath(os.fspath(root)))
    try:
        real_root = base.resolve()
        joined = base / text
        real = joined.resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # symlink loops, overlong names
        raise DatasetError(f"cannot resolve path {text!r}: {exc}") from exc
    if real != real_root and not real.is_relative_to(real_root):
        raise PathOutsideRoot(f"{text!r} is {OUTSIDE_ROOT} {str(base)!r}")
    # Keep the user's spelling of the root (it may itself be a symlink) when the path is
    # plain; with `..` components return the real path, which is what the kernel opens.
    if ".." in Path(text).parts:
        return real
    return Path(os.path.normpath(joined))


def is_inside(root: str | os.PathLike, relative: str | os.PathLike) -> bool:
    """Whether `resolve_inside(root, relative)` would succeed."""
    try:
        resolve_inside(root, relative)
    except DatasetError:
        return False
    return True
