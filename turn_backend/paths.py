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


class RootGuard:
    """`resolve_inside` for many paths under one root: the root's real path is found once."""

    def __init__(self, root: str | os.PathLike):
        self.root = os.path.abspath(os.fspath(root))
        try:
            self.real_root = os.path.realpath(self.root)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"cannot resolve the data root {self.root!r}: {exc}") from exc
        self._prefix = self.real_root.rstrip(os.sep) + os.sep
        self._real_dirs: dict[str, str] = {}  # folder -> its real path, for this guard's lifetime

    def contains_real(self, real: str) -> bool:
        return real == self.real_root or real.startswith(self._prefix)

    def resolve(self, relative: str | os.PathLike) -> Path:
        """See `resolve_inside`."""
        text = os.fspath(relative)
        if isinstance(text, bytes):
            text = os.fsdecode(text)
        if "\x00" in text:
            raise DatasetError(f"invalid path {text!r}: it contains a NUL byte")
        joined = os.path.join(self.root, text)
        dotdot = ".." in Path(text).parts
        try:
            if dotdot:
                real = os.path.realpath(joined)
            else:
                # realpath(dir/name) is realpath(dir)/name unless name is itself a link:
                # one lstat per file instead of one per path component
                norm = os.path.normpath(joined)
                head, tail = os.path.split(norm)
                real_head = self._real_dirs.get(head)
                if real_head is None:
                    real_head = self._real_dirs.setdefault(head, os.path.realpath(head))
                real = os.path.realpath(norm) if os.path.islink(norm) else os.path.join(real_head, tail)
        except (OSError, RuntimeError, ValueError) as exc:  # symlink loops, overlong names
            raise DatasetError(f"cannot resolve path {text!r}: {exc}") from exc
        if not self.contains_real(real):
            raise PathOutsideRoot(f"{text!r} is {OUTSIDE_ROOT} {self.root!r}")
        # Keep the user's spelling of the root (it may itself be a symlink) when the path is
        # plain; with `..` components return the real path, which is what the kernel opens.
        if dotdot:
            return Path(real)
        return Path(os.path.normpath(joined))


def resolve_inside(root: str | os.PathLike, relative: str | os.PathLike) -> Path:
    """`root / relative` as an absolute path, if it stays inside `root`.

    `relative` may use `..` as long as the result stays inside; absolute paths are accepted
    only when they lie inside `root`. Symlinks are followed (the file system decides where
    a path leads) and the real target must be inside the real root. The file need not exist.

    Raises `PathOutsideRoot` (a `DatasetError`) for an escape, `DatasetError` for a path the
    operating system cannot represent (e.g. one with a NUL byte). For many paths under one
    root, `RootGuard(root).resolve(relative)` does the same with less work.
    """
    return RootGuard(root).resolve(relative)


def is_inside(root: str | os.PathLike, relative: str | os.PathLike) -> bool:
    """Whether `resolve_inside(root, relative)` would succeed."""
    try:
        resolve_inside(root, relative)
    except DatasetError:
        return False
    return True
