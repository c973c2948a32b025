"""Content digests of image files, remembered by (absolute path, size, mtime).

The feature cache is keyed by what the files hold, not where they are: a folder renamed,
moved or copied keeps its features. Reading every byte of a large dataset on every run would
cost more than it saves, so each digest is remembered in a small SQLite index under the
cache root, keyed by the file's absolute path, size and modification time (nanoseconds): a
second run stats the files and reads only those that are new or changed.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

from turn_backend.io import cache_root

_CHUNK = 1 << 20


def file_digest(path: str | os.PathLike) -> str:
    """BLAKE2b (128-bit) of the file's bytes, as hex."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _index_path() -> Path:
    return cache_root() / "file-digests.sqlite"


def _connect() -> sqlite3.Connection:
    path = _index_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=30)
    con.execute("CREATE TABLE IF NOT EXISTS digests (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
                "digest TEXT)")
    return con


def file_digests(paths: list[str], workers: int | None = None) -> list[str]:
    """The content digest of each file in `paths`, in order.

    Files whose (absolute path, size, mtime_ns) the index knows are not read again; the
    others are hashed in `workers` threads (hashlib releases the GIL on large buffers; the
    default is the machine's core count, at most 8) and remembered.
    """
    absolute = [os.path.abspath(p) for p in paths]
    stats = [os.stat(p) for p in absolute]
    con = _connect()
    with closing(con), con:  # commits on success, closes either way
        known = {}
        for start in range(0, len(absolute), 900):  # SQLite's limit on parameters per statement
            part = absolute[start:start + 900]
            rows = con.execute(f"SELECT path, size, mtime_ns, digest FROM digests WHERE path IN "
                               f"({','.join('?' * len(part))})", part)
            known.update({p: (size, mtime, digest) for p, size, mtime, digest in rows})
        out: list[str | None] = []
        missing = []
        for i, (p, st) in enumerate(zip(absolute, stats)):
            hit = known.get(p)
            if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
                out.append(hit[2])
            else:
                out.append(None)
                missing.append(i)
        if missing:
            workers = workers or min(8, os.cpu_count() or 1)
            with ThreadPoolExecutor(workers) as pool:
                digests = list(pool.map(file_digest, [absolute[i] for i in missing]))
            for i, digest in zip(missing, digests):
                out[i] = digest
            con.executemany("INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?)",
                            [(absolute[i], stats[i].st_size, stats[i].st_mtime_ns, out[i]) for i in missing])
    return out
