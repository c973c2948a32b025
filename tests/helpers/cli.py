"""The `turn` command as a user runs it: a subprocess, with this checkout's code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def turn_env(cache: str | os.PathLike | None = None, **extra: str) -> dict:
    """The environment of a `turn` subprocess: this checkout first on PYTHONPATH, no model hub,
    `cache` as the feature cache (TURN_CACHE_DIR) where given."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "HF_HUB_OFFLINE": "1", **extra}
    if cache is not None:
        env["TURN_CACHE_DIR"] = str(cache)
    return env


def turn(*args, cache: str | os.PathLike | None = None, cwd: str | os.PathLike = REPO, timeout: float = 600,
         env: dict | None = None) -> subprocess.CompletedProcess:
    """`turn ARGS...` (as `python -m turn_backend.cli`) in `cwd`; output captured as text."""
    return subprocess.run([sys.executable, "-m", "turn_backend.cli", *map(str, args)], capture_output=True,
                          text=True, env={**turn_env(cache), **(env or {})}, timeout=timeout, cwd=cwd)


def write_image_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 20,
                       size: int = 16, seed: int = 0) -> list[tuple[str, str]]:
    """One subfolder of small PNGs per class under `root` (each class its own mean brightness);
    returns (path relative to `root`, class) for every image."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    rows = []
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            base = 60 + 120 * c
            pixels = np.clip(rng.normal(base, 30, (size, size, 3)), 0, 255).astype(np.uint8)
            rel = f"{name}/{k:03d}.png"
            Image.fromarray(pixels).save(root / rel)
            rows.append((rel, name))
    return rows
