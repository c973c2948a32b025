"""`turn bench --scale [--n N]`: each stage's time and peak memory from 60,000 images up to N,
and the app on the N-image run, timed in a real headless Chromium.

The sets are Fashion-MNIST grown by augmentation to 60,000, 250,000 and N training images
(those below N, then N; `scale_data`), each one memory-mapped IDX folder. On each the scan
runs as a user would start it (`turn run --data SET --method lp-gce --image-size 48 --noise
asymmetric`): the run folder's timings.json and peak_memory.json give each stage's seconds
and peak resident set, the detection and audit records their parts; `turn export` is timed
as a subprocess. Features are extracted once per set and cached (every later run reuses
them); the stage figures are all from cached features, and every run computes its own maps
(the runs get a cache folder in OUT that shares only the features: `fresh_cache`). Detection quality is measured at
60,000 and at N for the four noise types of `turn bench --detection` (one seed, the
product's own probe and `detect_label_issues`, on the run's neighbour graph).

The app: `streamlit run app/main.py` on the N-image run, driven as a user would: open Runs
and every audit page (Embeddings, Threshold, Classes, Noise matrix, Review, Export) from the
sidebar (first render), hover map points, move tau by one arrow-key step, and on Review go
to the next page, Keep a sample and Undo.

An interaction is timed from the key press or click until the page is idle: Streamlit's
script (or fragment) run has finished, nothing is stale or spinning, every chart has drawn
and every image has loaded, and that has held for `SETTLE_MS` (a rerun that follows at once
counts). The time reported is when that idle period began. A benchmark, not a test.

Every figure goes to OUT/scale.json, flat and keyed by kind (`stage_s.detect`,
`peak_mb.audit`, `first_render_s.Review`, `interaction_s.tau_step`, `app_rss_mb`,
`map_points`, ...; a figure at a smaller size carries it: `stage_s.detect@60000`), and the
tables to docs/benchmarks.md ("Scale").
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

import numpy as np

from turn_backend.bench.detection import replace_section
from turn_backend.bench.machine import machine_info, progress_log
from turn_backend.bench.scale_data import build_scale_set
from turn_backend.estimate import peak_rss_mb
from turn_backend.io import read_json
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
SECTION_TITLE = "## Scale: from 60,000 to a million images"
STEP_SIZES = (60_000, 250_000)  # the sizes below N at which each stage's growth is measured
NOISE = ("asymmetric", 0.4)
MODEL = "efficientnet_lite0"
# figure name -> the run's timings.json key, and -> its peak_memory.json (runner stage) key
TIMED_STAGES = {"features": "features", "probe": "lp", "detect": "detect", "audit": "audit",
                "projection": "projection"}
PEAK_STAGES = {"features": "features", "probe": "probe", "detect": "final", "audit": "audit",
               "projection": "projections"}
AUDIT_PARTS = {"hashes": "seconds_hashes", "graph": "seconds_graph", "duplicates_outliers": "seconds_neighbours",
               "leaks": "seconds_leaks"}
GOALS_S = {"detect": 600, "audit": 600, "projection": 900}
GOAL_PEAK_MB = 12 * 1024
GOAL_APP_RSS_MB = 4 * 1024

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
MAP_POINTS_JS = """() => {
  const gd = document.querySelector('[data-testid="stPlotlyChart"] .js-plotly-plot');
  return gd && gd.layout.meta ? gd.layout.meta.points : null;
}"""
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


def build_run(run_dir: Path, data_dir: Path, image_size: int, log) -> None:
    """The scan of one scale set, unless a finished one is already there."""
    folder = RunFolder(run_dir)
    if folder.exists() and folder.status().get("state") == "done":
        log(f"reusing the finished run {run_dir}")
        return
    cli = [sys.executable, "-m", "turn_backend.cli"]
    cmd = cli + ["run", "--data", str(data_dir), "--data-kind", "idx", "--method", "lp-gce", "--image-size",
                 str(image_size), "--noise", NOISE[0], "--noise-rate", str(NOISE[1]), "--yes", "--out", str(run_dir)]
    if folder.exists():
        cmd = cli + ["resume", str(run_dir)]
    log("building the run: turn " + " ".join(cmd[3:]))
    t0 = time.time()
    subprocess.run(cmd, check=True, cwd=REPO)
    log(f"run ready in {time.time() - t0:.0f} s")


def stage_figures(run_dir: Path) -> dict[str, float]:
    """Seconds and peak MB of each stage of a finished run, and the parts of detection and the audit."""
    folder = RunFolder(run_dir)
    seconds, peaks = folder.timings(), folder.peak_memory()
    figures = {f"stage_s.{name}": seconds[key] for name, key in TIMED_STAGES.items() if key in seconds}
    figures.update({f"peak_mb.{name}": peaks[key]["resident_mb"] for name, key in PEAK_STAGES.items()
                    if key in peaks})
    figures.update({f"anon_mb.{name}": peaks[key]["anonymous_mb"] for name, key in PEAK_STAGES.items()
                    if key in peaks})
    detection = folder.load_detection(folder.final_dir)
    if detection is not None:
        figures.update({f"stage_s.detect.{part}": s for part, s in detection.seconds.items()})
    audit = read_json(folder.audit_dir / folder.AUDIT_META, {})
    for part, key in AUDIT_PARTS.items():
        if key in audit:
            figures[f"stage_s.audit.{part}"] = audit[key]
    return figures


# `turn export` in a fresh interpreter that prints its own peak resident set when done (the
# rusage of a child counts the pages it shared with this large process before its exec)
EXPORT_SCRIPT = ("import sys; from turn_backend.cli import main; from turn_backend.estimate import peak_rss_mb; "
                 "code = main(sys.argv[1:]); print(f'PEAK_MB {peak_rss_mb()}', file=sys.stderr); sys.exit(code)")


def export_figures(run_dir: Path, out_file: Path) -> dict[str, float]:
    """`turn export` of the run's label file as a user runs it: wall seconds and its peak MB."""
    cmd = [sys.executable, "-c", EXPORT_SCRIPT, "export", str(run_dir), "--out", str(out_file)]
    t0 = time.perf_counter()
    result = subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t0
    if result.returncode:
        raise RuntimeError(f"turn export failed ({result.returncode}): {result.stderr[-2000:]}")
    peak = [line.split()[1] for line in result.stderr.splitlines() if line.startswith("PEAK_MB ")]
    return {"stage_s.export": seconds, **({"peak_mb.export": float(peak[0])} if peak and peak[0] != "None" else {})}


def detection_quality(data_dir: Path, run_dir: Path, image_size: int, size: int, log) -> list[dict]:
    """Every signal's F1, precision, recall and AUROC for the four noise types, one seed, on
    the set's cached features and the run's neighbour graph (they do not depend on the labels)."""
    from turn_backend.bench.detection import SETTINGS, image_features, run_grid
    from turn_backend.data.loaders import load_dataset
    from turn_backend.engine import Runtime

    train = load_dataset({"kind": "idx", "path": str(data_dir), "variant": "fashion-mnist"}).train
    feats, hparams = image_features(train, image_size, MODEL, log, Runtime("cpu", "no"))
    graph = RunFolder(run_dir).neighbour_graph()
    calibration: list[dict] = []
    rows = run_grid(train, feats, hparams, SETTINGS, [0], f"{size:,}", 0.6, log, calibration=calibration,
                    neighbours=None if graph is None else graph[0])
    noise = {c["setting"]: (c["true_noise"], c["est_noise"]) for c in calibration}
    return [{**row, "true_noise": noise[row["setting"]][0], "est_noise": noise[row["setting"]][1]} for row in rows]


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
        peak = peak_rss_mb(self.proc.pid)
        if peak is None:
            raise OSError("no VmHWM in /proc (not Linux?)")
        return peak

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


def drive(url: str, shots: Path | None, log) -> tuple[list[Timing], int | None]:
    """Every page's first render and the listed interactions, in one browser session; and
    how many samples the first map draws (its layout's meta, None where it does not say)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise SystemExit("turn bench --scale needs Playwright: pip install -r requirements-dev.txt") from exc
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"turn bench --scale needs Chromium at {CHROMIUM} (Debian package chromium)")
    timings: list[Timing] = []
    map_points = None

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
                # Embeddings is shot after its lasso: a window resize (the full-page shot) before
                # it sometimes keeps Streamlit's chart from sending the next lasso to the server
                if shots is not None and name != "Embeddings":
                    full_page_screenshot(page, shots / f"scale-{name.lower().replace(' ', '-')}.png")
                if name == "Embeddings":
                    map_points = page.evaluate(MAP_POINTS_JS)
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
    return timings, map_points


# ------------------------------------------------------------------------------- report


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(r) + " |" for r in rows]
    lines.insert(1, "| " + " | ".join("---" for _ in rows[0]) + " |")
    return "\n".join(lines)


def app_table(timings: list[Timing], rss_mb: float, map_points: int | None, n: int) -> str:
    rows = [["page", "what", "seconds", "goal (s)", "met"]] + [t.row() for t in timings]
    if map_points is not None:
        rows.append(["app", "samples the Embeddings map draws", f"{map_points:,}", f"{n:,}",
                     "yes" if map_points == n else "**no**"])
    rows.append(["app", "peak RSS of the Streamlit process", f"{rss_mb:,.0f} MB", f"<= {GOAL_APP_RSS_MB:,} MB",
                 "yes" if rss_mb <= GOAL_APP_RSS_MB else "**no**"])
    return markdown(rows)


def n_log_n_ratio(small: int, large: int) -> float:
    return large * np.log(large) / (small * np.log(small))


def stage_table(figures: dict[str, float], sizes: list[int]) -> str:
    """Seconds and peak MB of each stage at each size, and the growth from the first size to the last."""
    n, first = sizes[-1], sizes[0]

    def at(key: str, size: int) -> float | None:
        return figures.get(key if size == n else f"{key}@{size}")

    names = ["detect", "detect.reduce", "detect.probes", "detect.knn", "detect.noise_model", "audit",
             "audit.hashes", "audit.graph", "audit.duplicates_outliers", "audit.leaks", "projection", "export",
             "probe", "features"]
    header = ["stage"] + [f"{s:,}: s" for s in sizes] + [f"{n:,}: peak MB (anonymous)",
                                                          f"growth {first:,} → {n:,}", "goal", "met"]
    rows = [header]
    bound = n_log_n_ratio(first, n) if n > first else None
    for name in names:
        secs = [at(f"stage_s.{name}", s) for s in sizes]
        if all(v is None for v in secs):
            continue
        peak, anonymous = at(f"peak_mb.{name}", n), at(f"anon_mb.{name}", n)
        growth, met = "", []
        if bound is not None and secs[0] and secs[-1] is not None:
            ratio = secs[-1] / secs[0]
            growth = f"{ratio:.1f}x (N log N: {bound:.1f}x)"
            met.append(ratio <= bound)
        goal = GOALS_S.get(name)
        if goal is not None and secs[-1] is not None:
            met.append(secs[-1] <= goal)
        memory_goal = "." not in name and name != "features"  # whole stages that run from cached features
        if peak is not None and memory_goal:
            met.append(peak <= GOAL_PEAK_MB)
        goal_text = (f"<= {goal // 60} min, " if goal else "") + (f"<= {GOAL_PEAK_MB // 1024} GB" if memory_goal
                                                                    else "")
        rows.append([name if "." not in name else f"· {name.split('.', 1)[1]}"]
                    + ["" if v is None else f"{v:,.1f}" for v in secs]
                    + ["" if peak is None else f"{peak:,.0f}" + ("" if anonymous is None else f" ({anonymous:,.0f})"),
                       growth, goal_text.rstrip(", "),
                       "" if not met else ("yes" if all(met) else "**no**")])
    return markdown(rows)


def quality_table(rows: list[dict], sizes: list[int]) -> str:
    """The combined clean probability's F1 / precision / recall / AUROC per noise type, and
    the best single signal's F1, at each size."""
    import pandas as pd

    df = pd.DataFrame(rows)
    out = [["noise", "size", "true noise", "estimated", "F1", "precision", "recall", "AUROC",
            "best single signal: F1"]]
    for setting in dict.fromkeys(df.setting):
        for size in sizes:
            sub = df[(df.setting == setting) & (df.dataset == f"{size:,}")]
            if sub.empty:
                continue
            comb = sub[sub.signal == "combined"].iloc[0]
            single = sub[sub.signal != "combined"].sort_values("f1").iloc[-1]
            out.append([setting, f"{size:,}", f"{comb.true_noise:.1%}", f"{comb.est_noise:.1%}", f"{comb.f1:.1%}",
                        f"{comb.precision:.1%}", f"{comb.recall:.1%}", f"{comb.auroc:.1%}",
                        f"{single.f1:.1%} ({single.signal})"])
    return markdown(out)


def section(stages: str, quality: str, app: str, command: str, machine: str, sizes: list[int], when: str,
            wall_s: float) -> str:
    n = sizes[-1]
    return (f"{SECTION_TITLE}\n\n"
            f"Generated by `{command}` on {when} ({machine}); {wall_s / 60:.0f} min in all. Fashion-MNIST grown by "
            f"augmentation to {', '.join(f'{s:,}' for s in sizes)} training images (one memory-mapped IDX folder "
            "each; the 10,000 test images as they are), EfficientNet-Lite0 at 48 px, asymmetric noise 40%, "
            "the scan (`turn run --method lp-gce`). Figures written to `scale.json` in the output folder.\n\n"
            "### Each stage, from cached features\n\n"
            "Seconds from the run's timings. Peak MB: the run process's peak resident set during the stage "
            "(Linux VmHWM, reset at each stage), which counts the pages of memory-mapped files it has read (the "
            "cached features: 5 GB at a million images), and in brackets the peak of its anonymous memory "
            "(sampled every 0.2 s), what the stage needs beyond those pages, which the kernel can drop and read "
            "again; the export's is `turn export`'s own peak resident set. Indented rows are parts of the stage "
            "above. Growth: seconds at the largest size over "
            "seconds at the smallest, beside what N log N would give.\n\n"
            f"{stages}\n\n"
            "### Detection quality\n\n"
            "The combined clean probability flagged at tau 0.6, one seed, against the true labels; beside it "
            "the best single signal at its own default threshold.\n\n"
            f"{quality}\n\n"
            f"### The app at {n:,} images\n\n"
            "The run opened in `streamlit run app/main.py` and driven in headless Chromium. Times run from the "
            "click or key press until the page is idle (Streamlit's run finished, nothing stale, every chart "
            f"drawn and image loaded, held for {SETTLE_MS} ms); first renders are the first visit of each page "
            "in a new server, so they include loading the run's arrays.\n\n"
            f"{app}\n")


SHARED_CACHES = ("features", "fashion-mnist")  # what every invocation may reuse: extracted once


def fresh_cache(out: Path) -> Path:
    """The runs' cache folder (TURN_CACHE_DIR): the user's feature cache (and inflated
    Fashion-MNIST files) linked in, so features are extracted once for every invocation;
    maps and thumbnails start empty, so each run computes its maps and the app its
    thumbnails, as on a new dataset, instead of reusing an earlier invocation's."""
    import shutil

    from turn_backend.io import cache_root

    shared_root = cache_root()
    cache = out / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    for name in SHARED_CACHES:
        (shared_root / name).mkdir(parents=True, exist_ok=True)
        (cache / name).symlink_to((shared_root / name).resolve(), target_is_directory=True)
    return cache


def main(args) -> int:
    import datetime as dt
    import json

    started = time.time()
    n = getattr(args, "n", None) or 60_000
    sizes = [s for s in STEP_SIZES if s < n] + [n]
    image_size = args.image_size or 48
    out = Path(args.out or "runs/bench-scale").resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    log = progress_log(args.quiet)
    os.environ["TURN_CACHE_DIR"] = str(fresh_cache(out))  # the runs and the app below inherit it

    figures: dict[str, float] = {"n": n}
    quality: list[dict] = []
    for size in sizes:
        data_dir = build_scale_set(size, out / "data", log=log)
        run_dir = out / f"runs-{size}" / f"asym40-{size}"
        build_run(run_dir, data_dir, image_size, log)
        measured = {**stage_figures(run_dir), **export_figures(run_dir, out / f"export-{size}.csv")}
        figures.update({key if size == n else f"{key}@{size}": round(v, 3) for key, v in measured.items()})
        log(f"{size:,} images: " + ", ".join(f"{k} {v:,.1f}" for k, v in measured.items() if "." not in k[8:]))
        if size in (sizes[0], n):
            quality += detection_quality(data_dir, run_dir, image_size, size, log)
    for row in quality:
        if row["signal"] == "combined":
            suffix = "" if row["dataset"] == f"{n:,}" else f"@{row['dataset'].replace(',', '')}"
            for metric in ("f1", "precision", "recall", "auroc", "true_noise", "est_noise"):
                figures[f"quality.{row['setting']}.{metric}{suffix}"] = round(float(row[metric]), 4)

    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    app = "(not measured: --no-app)"
    if not args.no_app:
        server = Server(out / f"runs-{n}", out / "streamlit.log")
        try:
            timings, map_points = drive(server.url, out, log)
            rss = server.peak_rss_mb()
        finally:
            server.stop()
        for t in timings:
            kind = "first_render_s" if t.what.startswith("first render") else "interaction_s"
            name = t.page if kind == "first_render_s" else f"{t.page}: {t.what}"
            figures[f"{kind}.{name}"] = round(t.worst, 3)
        figures["app_rss_mb"] = round(rss, 1)
        if map_points is not None:
            figures["map_points"] = map_points
        app = app_table(timings, rss, map_points, n)
    (out / "scale.json").write_text(json.dumps(figures, indent=1) + "\n")
    log(f"wrote {out / 'scale.json'}")

    info = machine_info("cpu")
    load = info.get("load_average", [float("nan")])[0]
    machine = (f"{info['cpu']}, {info['cores']} cores, load average {load_start:.1f} before the app and {load:.1f} "
               "at the end")
    stages, qual = stage_table(figures, sizes), quality_table(quality, sorted({sizes[0], n}))
    print(stages, qual, app, sep="\n\n")
    command = "turn bench --scale" + (f" --n {n}" if n != 60_000 else "")
    if not args.no_docs:
        docs = Path(args.docs) if args.docs else DEFAULT_DOCS
        replace_section(docs, SECTION_TITLE, section(stages, qual, app, command, machine, sizes,
                                                     dt.date.today().isoformat(), time.time() - started))
        log(f"wrote the Scale section of {docs}")
    return 0
