"""Where the app keeps things: the runs root and the run being looked at.

The current run lives in `st.session_state["run_dir"]` and in the URL (`?run=NAME`), so a
refresh or a second tab opens the same run; with neither, the newest run reopens by itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from turn_backend.runfolder import RunFolder, list_runs

RUN_KEY = "run_dir"


def start_dir() -> Path:
    """The folder that relative paths typed in the app are read from: where `./studio.sh` was
    started (it sets TURN_START_DIR before it moves to the repository), else the server's
    working directory."""
    return Path(os.environ.get("TURN_START_DIR") or Path.cwd()).resolve()


def user_path(text: str) -> str:
    """A path as typed in the app, made absolute: `~` expanded, a relative path taken from
    `start_dir()`; "" stays "". Runs get absolute paths, since the worker runs elsewhere."""
    text = text.strip()
    if not text:
        return ""
    return os.path.normpath(start_dir() / Path(text).expanduser())


def user_path_if_exists(text: str) -> str:
    """`user_path(text)` where that file or folder exists, else `text` as typed (a hub id
    such as google/vit-base-patch16-224 is a name, not a path)."""
    path = user_path(text)
    return path if path and os.path.exists(path) else text.strip()


def runs_root() -> Path:
    """TURN_RUNS_DIR (a relative one taken from `start_dir()`), else runs/ in the server's
    working directory (the repository, for `./studio.sh`)."""
    env = os.environ.get("TURN_RUNS_DIR")
    root = (start_dir() / env if env else Path.cwd() / "runs").resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def set_current_run(folder: RunFolder | Path | str) -> None:
    path = folder.path if isinstance(folder, RunFolder) else Path(folder)
    st.session_state[RUN_KEY] = str(path)
    st.query_params["run"] = path.name


def current_run() -> RunFolder | None:
    """The selected run; else the one named in the URL; else the newest under the runs root."""
    root = runs_root()
    path = st.session_state.get(RUN_KEY)
    if path and RunFolder(path).exists():
        return RunFolder(path)
    name = st.query_params.get("run")
    if name and RunFolder(root / name).exists() and Path(name).name == name:
        set_current_run(root / name)
        return RunFolder(root / name)
    runs = list_runs(root)
    if runs:
        set_current_run(runs[0])
        return runs[0]
    return None
