"""`./studio.sh` from a fresh clone: the README's first command, as a newcomer types it.

The clone gets this checkout's virtual environment as a symlink, and its requirement files
the stamp's age, so that scripts/setup.sh finds everything in place and installs nothing
(it would otherwise reinstall the packages, a few minutes, and repoint the editable install).
"""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.request

import pytest

from helpers.cli import REPO
from helpers.server import free_port
from helpers.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def health(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://localhost:{port}/_stcore/health", timeout=2) as r:
            return r.read().decode()
    except OSError:
        return ""


def test_studio_sh_from_a_fresh_clone_answers(tmp_path):
    venv = (REPO / ".venv").resolve()
    stamp = venv / ".turn-setup-stamp"
    if not (venv / "bin" / "streamlit").exists() or not stamp.exists():
        pytest.skip("needs the set-up .venv (run scripts/setup.sh)")
    clone = tmp_path / "TURN Studio"  # a space in the path, as in many home folders
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    (clone / ".venv").symlink_to(venv)
    old = stamp.stat().st_mtime - 60
    for name in ("requirements.txt", "requirements-dev.txt", "pyproject.toml"):
        os.utime(clone / name, (old, old))

    port = free_port()
    env = {**os.environ, "PORT": str(port), "TURN_RUNS_DIR": str(tmp_path / "runs"), "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)  # the clone's own code, as for a user
    log = tmp_path / "studio.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["./studio.sh", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
                                cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        assert wait_for(lambda: health(port) == "ok" or proc.poll() is not None, timeout=180, interval=0.5)
        assert health(port) == "ok", log.read_text()
        with urllib.request.urlopen(f"http://localhost:{port}/", timeout=10) as r:
            assert r.status == 200 and "<title>" in r.read().decode()
        text = log.read_text()
        assert "installing" not in text, text  # nothing was (re)installed
        assert "setup: ready" in text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
