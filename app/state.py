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


def runs_root() -> Path:
    root = Path(os.environ.get("TURN_RUNS_DIR", Path.cwd() / "runs")).resolve()
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
