"""`turn bench`'s arguments and main loop: plan, throughput, cells, report."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from turn_backend.bench.detection import replace_section
from turn_backend.bench.grid import SETTINGS_FULL, cell_dir, flatten, make_plan, run_cell
from turn_backend.bench.machine import choose_threads, machine_info
from turn_backend.bench.plots import make_plots
from turn_backend.bench.report import build_report
from turn_backend.bench.throughput import measure_throughput
from turn_backend.runfolder import RunFolder

DEFAULT_DOCS = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="a smaller grid (1 seed, 1000 images at 48 px, 2 settings, 7 methods, no ablations)")
    parser.add_argument("--out", help="output folder (default runs/bench, or runs/bench-quick)")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--seeds", type=int, help="seeds per cell (default 2; quick 1)")
    parser.add_argument("--no-small", action="store_true",
                        help="skip the small two-class set (400 images, T-shirt/top vs Shirt) of the grid or of "
                             "--detection")
    parser.add_argument("--small-seeds", type=int,
                        help="seeds of the small two-class set (default 10: its runs take seconds and their "
                             "accuracy spreads by several points from seed to seed)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds run from this one (default 0): split a grid over machines or processes")
    parser.add_argument("--n-train", type=int, help="demo training images (default 1500; quick 1000)")
    parser.add_argument("--n-test", type=int, help="demo test images (default 1000; quick 500)")
    parser.add_argument("--image-size", type=int, help="input size (default 48)")
    parser.add_argument("--settings", nargs="+", help=f"noise settings (default {' '.join(SETTINGS_FULL)})")
    parser.add_argument("--methods", nargs="+", help="methods or variants (default: all; see the module doc)")
    parser.add_argument("--lp-epochs", type=int, default=20)
    parser.add_argument("--fft-epochs", type=int, help="FFT rounds / epochs (default: each method's own)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda (default auto)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="cells run at once, each in its own process (default 1); with N jobs on C cores, "
                             "give each --threads C/N")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads (default: torch's own, or 1 when the machine is already busy: "
                             "1-minute load average above half the cores)")
    parser.add_argument("--ablation-setting", default="sym60", help="setting of the ablations (default sym60)")
    parser.add_argument("--dev-settings", nargs="*", help="settings of the TURN+ development (default sym60 asym40)")
    parser.add_argument("--no-ablation", action="store_true", help="skip the Table 4 / tau ablations")
    parser.add_argument("--no-dev", action="store_true", help="skip the TURN+ development variants")
    parser.add_argument("--no-throughput", action="store_true", help="skip the throughput measurement")
    parser.add_argument("--docs", help="also write this Markdown file (default: docs/benchmarks.md for a full run)")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    parser.add_argument("--docs-section",
                        help="write the report into --docs as one \"## TITLE\" section (its headings one level "
                             "down, its plots in bench/SLUG/), leaving the rest of the file as it is: a second "
                             "machine's run beside the main grid")
    parser.add_argument("--time-limit", type=float,
                        help="minutes after which no new cell starts (but the first of each data set); cells "
                             "already running finish and the report says which did not run (for a borrowed "
                             "machine's fixed budget)")
    parser.add_argument("--fresh", action="store_true", help="delete finished cells in --out and run them again")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from OUT/results.csv")
    parser.add_argument("--quiet", action="store_true")



def _eta(done_s: list[float], remaining: int) -> str:
    if not done_s:
        return "?"
    return f"{np.mean(done_s) * remaining / 60:.0f} min"



def _run_one(plan, cell: tuple, threads: int) -> tuple[dict | None, bool, float, str | None]:
    """One cell, in this process: (metrics, reused, seconds, error message or None)."""
    import torch

    torch.set_num_threads(threads)
    t0 = time.time()
    try:
        metrics, reused = run_cell(plan, *cell)
    except Exception as exc:  # one broken cell must not lose the others
        from turn_backend.runner import StopRequested  # torch: imported once a cell has run anyway

        if isinstance(exc, StopRequested):  # SIGTERM: stop the whole benchmark
            raise
        import traceback

        return None, False, time.time() - t0, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
    return metrics, reused, time.time() - t0, None


def run_cells(plan, jobs: int, threads: int, on_cell_done, log_file, deadline: float | None = None) -> list:
    """Every cell of the plan, `jobs` at a time in worker processes (spawned, so that each
    has its own torch threads), calling on_cell_done(k, cell, metrics, reused, seconds, error).
    With several jobs, the first cell of each data set runs alone first: it fills the shared
    feature cache that the others then read. After `deadline` (time.time()) no cell starts but
    those first ones, so that a report always has a row; returns the (k, cell) pairs that did
    not start."""
    cells = list(enumerate(plan.cells, start=1))
    in_time = (lambda: True) if deadline is None else (lambda: time.time() < deadline)

    def report(k, cell, result):
        metrics, reused, seconds, error = result
        if error is not None:
            log_file.write(error + "\n")
            error = error.split("\n", 1)[0]
        on_cell_done(k, cell, metrics, reused, seconds, error)

    if jobs <= 1:
        for i, (k, cell) in enumerate(cells):
            if i > 0 and not in_time():
                return cells[i:]
            report(k, cell, _run_one(plan, cell, threads))
        return []
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    firsts = {}
    for k, cell in cells:
        firsts.setdefault(cell[3] == "small", (k, cell))
    for k, cell in firsts.values():
        report(k, cell, _run_one(plan, cell, threads))
    queue = [(k, cell) for k, cell in cells if (k, cell) not in firsts.values()]
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        running = {}
        while queue or running:
            # submit only as many as there are workers, so that the deadline stops the rest
            while queue and len(running) < jobs and in_time():
                k, cell = queue.pop(0)
                running[pool.submit(_run_one, plan, cell, threads)] = (k, cell)
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                k, cell = running.pop(future)
                report(k, cell, future.result())
    return queue


def carry_other_sections(old: str, new: str) -> str:
    """`new`, plus every "## " section of `old` that `new` does not write: the sections other
    commands generate (turn bench --detection, --scale, the audit benchmark) survive a grid run."""
    def sections(text: str) -> dict[str, str]:
        parts = ("\n" + text).split("\n## ")[1:]
        return {p.split("\n", 1)[0]: "## " + p.rstrip("\n") + "\n" for p in parts}

    written = sections(new)
    kept = [body for title, body in sections(old).items() if title not in written]
    return new.rstrip("\n") + "\n" + "".join("\n" + body for body in kept)


def as_section(report: str, title: str) -> str:
    """The report as one "## title" section: its own title line dropped, every heading one
    level down, so that carry_other_sections keeps it whole beside the main grid's."""
    lines = report.rstrip("\n").split("\n")
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    body = ["#" + line if line.startswith("#") else line for line in lines]
    return f"## {title}\n" + "\n".join(body) + "\n"


def section_slug(title: str) -> str:
    return "-".join("".join(ch if ch.isalnum() else " " for ch in title.lower()).split())


def main(args) -> int:
    import torch

    plan = make_plan(args)
    out = plan.out
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TURN_CACHE_DIR", str(out / "cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    log_file = open(out / "bench.log", "a")

    def log(msg: str) -> None:
        line = f"[{_dt.datetime.now().strftime('%H:%M:%S')}] {msg}"
        log_file.write(line + "\n")
        log_file.flush()
        if not args.quiet:
            print(line, flush=True)

    state_path = out / "bench.json"
    state = json.loads(state_path.read_text()) if (args.report_only and state_path.exists()) else {}
    csv_path = out / "results.csv"
    if args.report_only:
        if not csv_path.exists():
            raise FileNotFoundError(f"{csv_path} does not exist; run the benchmark first")
        df = pd.read_csv(csv_path, keep_default_na=True)
        machine, throughput = state.get("machine", machine_info(plan.device)), state.get("throughput")
        started, finished, wall = state.get("started", "?"), state.get("finished", "?"), state.get("wall_seconds")
    else:
        if args.fresh and (out / "runs").exists():
            shutil.rmtree(out / "runs")
        t_start = time.time()
        started = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        threads, why = choose_threads(getattr(args, "threads", None))
        torch.set_num_threads(threads)
        machine = machine_info(plan.device)
        machine["threads_reason"] = why
        machine["jobs"] = args.jobs
        log(f"benchmark: {len(plan.cells)} cells -> {out}; machine {machine['cpu']}, {machine['cores']} cores")
        throughput = measure_throughput(plan, log) if plan.throughput else None
        rows, durations, failed, reused_cells = {}, [], [], []
        total = len(plan.cells)

        def on_cell_done(k: int, cell: tuple, metrics: dict | None, reused: bool, seconds: float, error: str | None):
            method, setting, seed, group = cell
            where = f"{setting} (small)" if group == "small" else setting
            if error is not None:
                log(f"[{k}/{total}] {where} {method} seed {seed}: FAILED {error}")
                failed.append(f"{where} {method} seed {seed}: {error}")
                return
            if not reused:
                durations.append(seconds)
            elif RunFolder(cell_dir(plan, *cell)).metrics_path.stat().st_mtime < t_start:
                reused_cells.append(k)  # from an earlier call (not a cell another column shares, as fft-true's)
            rows[k] = flatten(method, setting, seed, group, metrics, cell_dir(plan, method, setting, seed, group), plan)
            pd.DataFrame([rows[j] for j in sorted(rows)]).to_csv(csv_path, index=False)
            left = (total - len(rows) - len(failed)) / max(1, args.jobs)
            log(f"[{k}/{total}] {where} {method} seed {seed}: best {metrics.get('test_acc_best', 0):.1%}, "
                f"last {metrics.get('test_acc_last', 0):.1%}, {metrics.get('seconds_total', 0):.0f} s"
                + (" (reused)" if reused else "") + f"; ETA {_eta(durations, round(left))}")

        limit = getattr(args, "time_limit", None)
        not_started = run_cells(plan, args.jobs, threads, on_cell_done, log_file,
                                deadline=None if limit is None else t_start + 60 * limit)
        for k, (method, setting, seed, group) in not_started:
            log(f"[{k}/{total}] {setting}{' (small)' if group == 'small' else ''} {method} seed {seed}: "
                f"not started (--time-limit {limit:g} min)")
        if not rows:
            raise RuntimeError(f"every cell failed; see {out / 'bench.log'}")
        df = pd.DataFrame([rows[j] for j in sorted(rows)])
        finished = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        wall = time.time() - t_start
        try:
            machine["load_average_end"] = list(os.getloadavg())
        except OSError:
            pass
        state = {"machine": machine, "throughput": throughput, "started": started, "finished": finished,
                 "wall_seconds": wall, "command": plan.command, "failed": failed, "reused_cells": len(reused_cells),
                 "time_limit_min": limit, "not_started": [list(cell) for _, cell in not_started]}
        state_path.write_text(json.dumps(state, indent=2))
    plan.command = state.get("command", plan.command)
    plan.failed = state.get("failed", [])
    machine["time_limit_min"] = state.get("time_limit_min")
    machine["not_started"] = state.get("not_started", [])
    machine["reused_cells"] = state.get("reused_cells", 0)
    features_once = (throughput or {}).get("features_seconds")
    plots = make_plots(df, plan, features_once, out / "plots")
    report = build_report(df, plan, machine, throughput, "plots/", plots, started, finished, wall)
    (out / "results.md").write_text(report)
    log(f"wrote {csv_path} and {out / 'results.md'}")
    section = getattr(args, "docs_section", None)
    docs = None if args.no_docs else (Path(args.docs) if args.docs else
                                      (None if plan.quick and not section else DEFAULT_DOCS))
    if docs is not None:
        prefix = f"bench/{section_slug(section)}/" if section else "bench/"
        img_dir = docs.parent / prefix
        img_dir.mkdir(parents=True, exist_ok=True)
        for name, _ in plots:
            shutil.copy(out / "plots" / name, img_dir / name)
        report = build_report(df, plan, machine, throughput, prefix, plots, started, finished, wall)
        if section:  # the rest of the file stays; this run is one section of it
            replace_section(docs, f"## {section}\n", as_section(report, section))
        else:
            docs.write_text(carry_other_sections(docs.read_text() if docs.exists() else "", report))
        log(f"wrote {docs}")
    log_file.close()
    return 0
