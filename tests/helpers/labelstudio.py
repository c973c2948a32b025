"""A real Label Studio server for the round-trip test, from its own venv (scripts/labelstudio_env.sh):
Label Studio pins its own Django, pyarrow and pytz, so it never shares the product's .venv."""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest

from helpers.server import REPO, AppServer

VENV = Path(os.environ.get("LABELSTUDIO_VENV", REPO / ".venv-labelstudio"))
DRIVER = Path(__file__).with_name("labelstudio_driver.py")
USER, PASSWORD = "turn-test@example.org", "turn-test-password"


def labelstudio_python() -> Path:
    """The Label Studio venv's python, the venv made first where it is missing (a few minutes)."""
    setup = subprocess.run(["bash", str(REPO / "scripts" / "labelstudio_env.sh")], capture_output=True, text=True,
                           env={**os.environ, "LABELSTUDIO_VENV": str(VENV)}, timeout=1200)
    if setup.returncode != 0:
        pytest.fail(f"scripts/labelstudio_env.sh failed ({setup.returncode}):\n{setup.stdout[-3000:]}\n"
                    f"{setup.stderr[-3000:]}")
    return VENV / "bin" / "python"


class LabelStudioServer(AppServer):
    """`label-studio start` on 127.0.0.1 (a free port) in its own process group, its SQLite
    database in `data_dir`, serving local files under `document_root`, with one user whose API
    token is `token`. Nothing is fetched from outside (no version check, no analytics)."""

    def __init__(self, data_dir: Path, document_root: Path, log: Path) -> None:
        super().__init__(runs_dir=data_dir, log=log)
        self.data_dir, self.document_root = data_dir, document_root
        self.token = secrets.token_hex(20)

    def start(self, timeout: float = 300) -> LabelStudioServer:
        env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
               "LOCAL_FILES_SERVING_ENABLED": "true", "LOCAL_FILES_DOCUMENT_ROOT": str(self.document_root),
               "LATEST_VERSION_CHECK": "false", "COLLECT_ANALYTICS": "false", "PYTHONPATH": ""}
        cmd = [str(VENV / "bin" / "label-studio"), "start", "--no-browser", "--internal-host", "127.0.0.1",
               "--port", str(self.port), "--username", USER, "--password", PASSWORD, "--user-token", self.token,
               "--enable-legacy-api-token"]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=self.data_dir, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        # a fresh database migrates first: about a minute on 2 cores
        return self.wait_healthy("label-studio", "/health", timeout, poll=1)
