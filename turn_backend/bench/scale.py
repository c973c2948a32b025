"""`turn bench --scale`: the app at 60,000 images, timed in a real headless Chromium.

Builds (or reuses) one large run (`turn run --data demo --n-train 60000 --n-test 10000
--method lp-gce --image-size 48 --noise asymmetric`; the features are cached, so a rebuild
skips extraction), starts `streamlit run app/main.py` on it and drives the pages as a user
would: open Runs and every audit page (Embeddings, Threshold, Classes, Noise matrix, Review,
Export) from the sidebar (first render),
move tau by one arrow-key step, and on Review go to the next page, Keep a sample and Undo.
Prints the times and the app's peak RSS, and writes them to docs/benchmarks.md ("Scale").

An interaction is timed from the key press or click until the page is idle: Streamlit's
script (or fragment) run has finished, nothing is stale or spinning, every chart has drawn
and every image has loaded, and that has held for `SETTLE_MS` (a rerun that follows at once
counts). The time reported is when that idle period began. A benchmark, not a test.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from turn_backend.bench.detection import replace_section
from turn_backend.bench.machine import machine_info, progress_log
from turn_backend.runfolder import RunFolder

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DOCS = REPO / "docs" / "benchmarks.md"
CHROMIUM = os.environ.get("TURN_E2E_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 1000}
PAGES = ("Runs", "Embeddings", "Threshold", "Classes", "Noise matrix", "Review", "Export")
GOAL_FIRST_RENDER_S = 2.0
GOAL_INTERACTION_S = 0.3
SETTLE_MS = 400  # idle must hold this long: a rerun that follows at once is part of the interaction
START_GRACE_MS = 1500  # how long an action may take to start a rerun before it counts as "none"
TAU_STEPS = 5
SECTION_TITLE = "## Scale: the app at 60,000 images"

# Installed once per page load: notes when Streamlit starts and finishes a script or
# fragment run, even a run too short for polling to see.
OBSERVE_JS = """() => {
  if (window.__scaleObserver) return;
  window.__scale = {t0: 0, busySeen: false};
  const app = document.querySelector('[data-testid="stApp"]');
  window.__scaleObserver = new MutationObserver(() => {
    if (app.getAttribute('data-test-script-state') === 'running') window.__scale.busySeen = true;
  });
  window.__scaleObserver.observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
}"""
START_JS = ("() => { window.__scale.t0 = performance.now(); window.__scale.busySeen = false; "
            "window.__scale.idleAt = 0; }")
# Polled every animation frame after an action; returns the timing once idle has held.
IDLE_JS = """([settle, grace]) => {
  const s = window.__scale, now = performance.now();
  const app = document.querySelector('[data-testid="stApp"]');
  const main = document.querySelector('[data-testid="stMain"]');
  const charts = main ? [...main.querySelectorAll('[data-testid="stPlotlyChart"]')] : [];
  const imgs = main ? [...main.querySelectorAll('img')] : [];
  const busy = !app || app.getAttribute('data-test-script-state') === 'running'
    || document.querySelector('[data-testid="stStatusWidget"]')
    || (main && main.querySelector('[data-stale="true"], [data-testid="stSpinner"], [data-testid="stSkeleton"]'))
    || !charts.every(c => c.querySelector('.main-svg'))
    || !imgs.every(i => i.complete);
  if (busy) { s.busySeen = true; s.idleAt = 0; return false; }
  if (!s.busySeen && now - s.t0 < grace) return false;
  if (!s.idleAt) s.idleAt = now;
  return now - s.idleAt >= settle ? {ms: s.idleAt - s.t0, rerun: s.busySeen} : false;
}"""


# Page position and sample of point i of trace t of the first map (Embeddings).
POINT_JS = """([t, i]) => {
  const gd = document.querySelector('[data-testid="stPlotlyChart"] .js-plotly-plot');
  const fl = gd._fullLayout, tr = gd._fullData[t], box = gd.getBoundingClientRect();
  return {x: box.left + fl._size.l + fl.xaxis.d2p(tr.x[i]), y: box.top + fl._size.t + fl.yaxis.d2p(tr.y[i])};
}"""
# The plot area of the first map, in page pixels.
PLOT_AREA_JS = """() => {
  const gd = document.querySelector('[data-testid="stPlotlyChart"] .js-plotly-plot');
  const fl = gd._fullLayout, box = gd.getBoundingClientRect();
  return {left: box.left + fl._size.l, top: box.top + fl._size.t, width: fl._size.w, height: fl._size.h};
}"""
LASSO_STEPS = 24  # mouse moves along the lasso: plotly closes the polygon on mouse up
THUMB_JS = """(before) => {
  const tip = document.getElementById('turn-hover-thumb'), img = tip && tip.querySelector('img');
  return !!(tip && tip.style.display === 'block' && tip.dataset.row !== before && img && img.complete);
}"""


@dataclass
class Timing:
    page: str
    what: str
    seconds: list[float]
    goal: float
    note: str = ""

    @property
    def worst(self) -> float:
        return max(self.seconds)

    def row(self) -> list[str]:
        shown = (f"{statistics.median(self.seconds):.2f} (median of {len(self.seconds)}, max {self.worst:.2f})"
                 if len(self.seconds) > 1 else f"{self.seconds[0]:.2f}")
        met = "yes" if self.worst <= self.goal else "**no**"
        return [self.page, self.what, shown, f"<= {self.goal:g}", met + (f" ({self.note})" if self.note else "")]


# ------------------------------------------------------------------------------- the run


def build_run(run_dir: Path, n_train: int, n_test: int, image_size: int, log) -> None:
    """The large run, unless a finished one is already there."""
    if RunFolder(run_dir).exists() and RunFolder(run_dir).status().get("state") == "done":
        log(f"reusing the finished run {run_dir}")
        return
    cmd = [sys.executable, "-m", "turn_backend.cli", "run", "--data", "demo", "--n-train", str(n_train),
           "--n-test", str(n_test), "--method", "lp-gce", "--image-size", str(image_size), "--noise", "asymmetric",
           "--out", str(run_dir)]
    if RunFolder(run_dir).exists():
        cmd = [sys.executable, "-m", "turn_backend.cli", "resume", str(run_dir)]
    log("building the run: " + " ".join(cmd[2:]))
    t0 = time.time()
    subprocess.run(cmd, check=True, cwd=REPO)
    log(f"run ready in {time.time() - t0:.0f} s")


# ---------------------------------------------------------------------------- the server


class Server:
    """`streamlit run app/main.py` on a free loopback port, in its own process group."""

    def __init__(self, runs_root: Path, log_path: Path) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = {**os.environ, "TURN_RUNS_DIR": str(runs_root), "HF_HUB_OFFLINE": "1"}
        cmd = [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.headless", "true",
               "--server.port", str(self.port), "--server.address", "127.0.0.1",
               "--browser.gatherUsageStats", "false"]
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        end = time.time() + 180
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}; see {log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"streamlit did not answer; see {log_path}")

    def peak_rss_mb(self) -> float:
        """The server process's peak resident memory (Linux VmHWM)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise OSError("no VmHWM in /proc (not Linux?)")

    def stop(self) -> None:
        import signal

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()


# --------------------------------------------------------------------------- the browser


def full_page_screenshot(page, path: Path) -> None:
    """The whole main area (Streamlit scrolls inside it, so the viewport is stretched to its
    height for the shot), then the viewport as it was, redrawn, before the next timing."""
    height = page.evaluate("() => (document.querySelector('[data-testid=\"stMain\"]') || document.body).scrollHeight")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": int(min(max(height, VIEWPORT["height"]), 8000))})
    try:
        page.wait_for_timeout(1000)  # Plotly redraws its charts at the new size
        page.screenshot(path=str(path))
    finally:
        page.set_viewport_size(VIEWPORT)
        page.wait_for_timeout(1000)


def timed(page, action, timeout_s: float = 300) -> tuple[float, bool]:
    """(seconds from the action until the page was idle, whether a script run was seen)."""
    page.evaluate(OBSERVE_JS)
    page.evaluate(START_JS)
    action()
    result = page.wait_for_function(IDLE_JS, arg=[SETTLE_MS, START_GRACE_MS], polling="raf",
                                    timeout=timeout_s * 1000).json_value()
    return result["ms"] / 1000, bool(result["rerun"])


def hover_seconds(page, trace: int, i: int, timeout_s: float = 300) -> float:
    """Seconds from moving the mouse onto a map point until its thumbnail is shown."""
    before = page.evaluate("() => { const t = document.getElementById('turn-hover-thumb'); "
                           "return t ? String(t.dataset.row) : ''; }")
    point = page.evaluate(POINT_JS, [trace, i])
    page.mouse.move(point["x"] - 30, point["y"] - 30)
    t0 = time.perf_counter()
    page.mouse.move(point["x"], point["y"])
    page.wait_for_function(THUMB_JS, arg=before, polling="raf", timeout=timeout_s * 1000)
    return time.perf_counter() - t0


def lasso_seconds(page, timeout_s: float = 300) -> float:
    """Seconds from releasing a lasso drawn around the middle of the first map (a quarter of its
    width and height) until the page is idle: the selection found and highlighted on every map,
    its images listed."""
    area = page.evaluate(PLOT_AREA_JS)
    cx, cy = area["left"] + area["width"] / 2, area["top"] + area["height"] / 2
    rx, ry = area["width"] / 8, area["height"] / 8
    page.mouse.move(cx + rx, cy)
    page.mouse.down()
    for k in range(1, LASSO_STEPS + 1):
        turn = 1j ** (4 * k / LASSO_STEPS)  # k / LASSO_STEPS of the way round the unit circle
        page.mouse.move(cx + rx * turn.real, cy + ry * turn.imag)
    seconds, _ = timed(page, page.mouse.up, timeout_s)
    return seconds


def drive(url: str, shots: Path | None, log) -> list[Timing]:
    """Every page's first render and the listed interactions, in one browser session."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise SystemExit("turn bench --scale needs Playwright: pip install -r requirements-dev.txt") from exc
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"turn bench --scale needs Chromium at {CHROMIUM} (Debian package chromium)")
    timings: list[Timing] = []

    def record(page_name: str, what: str, seconds: list[float], goal: float, note: str = "") -> None:
        timings.append(Timing(page_name, what, seconds, goal, note))
        log(f"{page_name:<11} {what:<34} " + ", ".join(f"{s:.2f}" for s in seconds) + " s")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(url)
            page.wait_for_selector('[data-testid="stMain"] h1', timeout=300_000)
            page.evaluate(OBSERVE_JS)
            # performance.now() counts from the navigation: t0 = 0 times the whole page load
            page.evaluate("() => { Object.assign(window.__scale, {t0: 0, busySeen: true, idleAt: 0}); }")
            result = page.wait_for_function(IDLE_JS, arg=[SETTLE_MS, START_GRACE_MS], polling="raf",
                                            timeout=300_000).json_value()
            record("Runs", "first render (page load)", [result["ms"] / 1000], GOAL_FIRST_RENDER_S)
            for name in PAGES[1:]:
                link = page.locator('[data-testid="stSidebarNav"] a', has_text=name).first
                seconds, _ = timed(page, link.click)
                record(name, "first render", [seconds], GOAL_FIRST_RENDER_S)
                if shots is not None:
                    full_page_screenshot(page, shots / f"scale-{name.lower().replace(' ', '-')}.png")
                if name == "Embeddings":
                    record(name, "hover: first thumbnail", [hover_seconds(page, 0, 0)], GOAL_INTERACTION_S,
                           "loads the run's images")
                    record(name, "hover: next thumbnails", [hover_seconds(page, t, 1) for t in (1, 2, 3)],
                           GOAL_INTERACTION_S)
                    record(name, "lasso (selection listed)", [lasso_seconds(page)], GOAL_INTERACTION_S)
                    if shots is not None:
                        full_page_screenshot(page, shots / "scale-embeddings-lasso.png")
                if name == "Threshold":
                    slider = page.get_by_role("slider").first
                    slider.focus()
                    steps = [timed(page, lambda: slider.press("ArrowRight")) for _ in range(TAU_STEPS)]
                    note = "" if all(r for _, r in steps) else "no rerun seen for some steps"
                    record(name, "tau one step (arrow key)", [s for s, _ in steps], GOAL_INTERACTION_S, note)
                if name == "Review":
                    for what, selector in (("next page", ".st-key-next_page button"),
                                           ("Keep (first card)", '[class*="st-key-keep_"] button'),
                                           ("Undo", ".st-key-undo button"),
                                           ("More like this (first card)", ".st-key-similar_0 button"),
                                           ("More like this: close", ".st-key-close_similar button")):
                        button = page.locator(selector).first
                        seconds, rerun = timed(page, button.click)
                        record(name, what, [seconds], GOAL_INTERACTION_S, "" if rerun else "no rerun seen")
        finally:
            browser.close()
    return timings


# ------------------------------------------------------------------------------- report


def table(timings: list[Timing], rss_mb: float) -> str:
    rows = [["page", "what", "seconds", "goal (s)", "met"]] + [t.row() for t in timings]
    rows.append(["app", "peak RSS of the Streamlit process", f"{rss_mb:,.0f} MB", "< 2048 MB",
                 "yes" if rss_mb < 2048 else "**no**"])
    lines = ["| " + " | ".join(r) + " |" for r in rows]
    lines.insert(1, "| " + " | ".join("---" for _ in rows[0]) + " |")
    return "\n".join(lines)


def section(text_table: str, command: str, machine: str, n_train: int, when: str) -> str:
    return (f"{SECTION_TITLE}\n\n"
            f"Generated by `{command}` on {when} ({machine}). One run of {n_train:,} training images "
            "(Fashion-MNIST, asymmetric noise, LP-GCE) opened in `streamlit run app/main.py` and driven in headless "
            "Chromium. Times run from the click or key press until the page is idle (Streamlit's run finished, "
            f"nothing stale, every chart drawn and image loaded, held for {SETTLE_MS} ms); first renders are the "
            "first visit of each page in a new server, so they include loading the run's arrays.\n\n"
            f"{text_table}\n")


def main(args) -> int:
    import datetime as dt

    n_train = args.n_train or 60_000
    n_test = args.n_test or 10_000
    out = Path(args.out or "runs/bench-scale").resolve()
    runs_root = out / "runs"
    runs_root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    log = progress_log(args.quiet)

    build_run(runs_root / f"lp-gce-{n_train}", n_train, n_test, args.image_size or 48, log)
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    server = Server(runs_root, out / "streamlit.log")
    try:
        timings = drive(server.url, out, log)
        rss = server.peak_rss_mb()
    finally:
        server.stop()
    info = machine_info("cpu")
    load = info.get("load_average", [float("nan")])[0]
    machine = (f"{info['cpu']}, {info['cores']} cores, load average {load_start:.1f} at the start and {load:.1f} "
               "at the end")
    text = table(timings, rss)
    print(text)
    command = "turn bench --scale" + (f" --n-train {n_train}" if n_train != 60_000 else "")
    if not args.no_docs:
        docs = Path(args.docs) if args.docs else DEFAULT_DOCS
        replace_section(docs, SECTION_TITLE, section(text, command, machine, n_train, dt.date.today().isoformat()))
        log(f"wrote the Scale section of {docs}")
    return 0
