"""What the browser and fault tests share: a real `streamlit run app/main.py` server, the
headless Chromium settings, and waits.

The server starts from the repository root, so the repository's `.streamlit/config.toml`
applies (tests that need another address pass it in `extra_args`), in its own process
group, so that a test can SIGKILL it the way a crash would.
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

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("TURN_E2E_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    """`streamlit run app/main.py` in its own process group, logging to `log`."""

    def __init__(self, runs_dir: Path, log: Path, cache_dir: Path | None = None, port: int | None = None,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.runs_dir, self.cache_dir, self.log = runs_dir, cache_dir, log
        self.port = port or free_port()
        self.extra_args = extra_args
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180) -> AppServer:
        env = {**os.environ, "TURN_RUNS_DIR": str(self.runs_dir), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
        if self.cache_dir is not None:
            env["TURN_CACHE_DIR"] = str(self.cache_dir)
        cmd = [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.headless", "true",
               "--server.port", str(self.port), "--browser.gatherUsageStats", "false", *self.extra_args]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        return self.wait_healthy("streamlit", "/_stcore/health", timeout, poll=0.25)

    def wait_healthy(self, name: str, health_path: str, timeout: float, poll: float) -> AppServer:
        """Until the server answers 200 on `health_path`; a clear error with its log's end when
        it exits first or does not answer in `timeout` seconds (then it is stopped)."""
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {self.proc.returncode}; its log ends:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}{health_path}", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(poll)
        self.stop()
        raise TimeoutError(f"{name} did not answer {self.url}{health_path} in {timeout:.0f} s; its log ends:\n"
                           f"{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else "(no log)"

    def stop(self, timeout: float = 30) -> None:
        """Terminate the server (SIGTERM, then SIGKILL) and wait until it is gone."""
        self._signal(((signal.SIGTERM, timeout), (signal.SIGKILL, 10)))

    def kill(self) -> None:
        """SIGKILL the whole process group at once: what a crash does."""
        self._signal(((signal.SIGKILL, 30),))

    def _signal(self, steps) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in steps:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> AppServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# Idle: the script is not running, no status widget ("Running..."), no stale element left
# from the last run, no spinner, and that has held for 600 ms (reruns come back to back).
IDLE_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  const busy = !app || app.getAttribute('data-test-script-state') !== 'notRunning'
    || document.querySelector('[data-testid="stStatusWidget"]')
    || document.querySelector('[data-testid="stMain"] [data-stale="true"]')
    || document.querySelector('[data-testid="stMain"] [data-testid="stSpinner"]');
  const now = Date.now();
  if (busy) { window.__e2eIdleSince = 0; return false; }
  if (!window.__e2eIdleSince) window.__e2eIdleSince = now;
  return now - window.__e2eIdleSince >= 600;
}"""


def wait_idle(page, timeout: int = 120_000) -> None:
    """Until Streamlit has finished the current script run (and no rerun follows at once)."""
    page.evaluate("() => { window.__e2eIdleSince = 0; }")
    page.wait_for_function(IDLE_JS, timeout=timeout, polling=100)


def save_failure(page, main, stem: Path) -> None:
    """A full-page screenshot (`stem`.png) and the main area's text (`stem`-page.txt) of a
    browser test that failed; best effort, since the original failure matters more."""
    try:
        page.screenshot(path=str(stem.parent / f"{stem.name}.png"), full_page=True)
        (stem.parent / f"{stem.name}-page.txt").write_text(main.inner_text(timeout=5_000))
    except Exception:  # noqa: BLE001 - the original failure matters more
        pass
