"""The bottom layer: safe file writes, JSON reading and the cache folder. Imports nothing
from the project, so every other module (data loaders, compute, detection, the run folder)
can write through it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np


def cache_root() -> Path:
    """Where features, maps and inflated data files are cached: `$TURN_CACHE_DIR`, or
    ~/.cache/turn-studio."""
    return Path(os.environ.get("TURN_CACHE_DIR") or Path.home() / ".cache" / "turn-studio")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, default=json_default).encode())


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def json_default(o):
    """`json.dumps(default=...)` for numpy scalars and arrays."""
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def read_json(path: Path, default=None):
    """The JSON in `path`, or `default` where it is missing or cut short."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return default
