"""Helpers for the reliability and security tests: a real `streamlit run app/main.py` server,
and a review writer for the two-tabs-in-two-processes test.

The server is started from the repository root, so the repository's `.streamlit/config.toml`
applies, in its own process group, so that a test can SIGKILL it the way a crash would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StreamlitServer:
    def __init__(self, runs_dir: Path, log: Path, port: int | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self.port = port or free_port()
        exe = Path(sys.executable).with_name("streamlit")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "streamlit"]
        env = {**os.environ, "TURN_RUNS_DIR": str(runs_dir), "PYTHONPATH": str(REPO)}
        self.log = log
        self.proc = subprocess.Popen(
            [*cmd, "run", "app/main.py", "--server.headless", "true", "--server.port", str(self.port), *extra_args],
            cwd=REPO, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}"

    def wait_healthy(self, timeout: float = 120) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"streamlit did not answer on port {self.port}:\n{self.log.read_text()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Kill the server's whole process group (what a crash of the machine's app does)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)

    def __enter__(self) -> StreamlitServer:
        return self

    def __exit__(self, *exc) -> None:
        self.kill()


def write_decisions(db: str, session: str, samples: list[str], n: int, undo_every: int, start, out) -> None:
    """One "browser tab" in its own process: `n` relabel decisions with labels unique to this
    writer (base + k), spread over `samples`, undoing its own last decision every
    `undo_every` decisions. Waits on `start` so that the writers really interleave; puts
    the labels it undid on `out`."""
    from turn_backend.review import ReviewStore

    store = ReviewStore(db)
    base = int(session.rsplit("-", 1)[1]) * 10_000
    start.wait()
    undone = []
    for k in range(n):
        store.record(samples[k % len(samples)], "relabel", base + k, session=session)
        if undo_every and k % undo_every == undo_every - 1:
            store.undo_last(session)
            undone.append(base + k)
    out.put((session, undone))
