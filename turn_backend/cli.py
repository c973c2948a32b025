"""`turn`: TURN from the command line.

    turn demo --out DIR            TURN+, TURN and two baselines on the embedded Fashion-MNIST demo
    turn run --data PATH ...       start a run (folder, manifest, Hugging Face folder, ...), after an
                                   estimate of its time and memory
    turn estimate --data PATH ...  that estimate alone (the same options as run)
    turn finetune SCAN_DIR         fine-tune a finished scan (TURN+ from its probe on)
    turn resume RUN_DIR            continue a killed or stopped run
    turn export RUN_DIR --out F    write the cleaned label file (CSV, Parquet or JSON), an ImageFolder
                                   tree, a Hugging Face datasets folder, the decision log, the
                                   run's features (for turn run --features: your own embeddings)
                                   or a Label Studio import
    turn import-labels RUN_DIR F   apply a Label Studio JSON export as review decisions
    turn retrain RUN_DIR --out D   a new run on RUN_DIR's reviewed labels
    turn status RUN_DIR            where a run stands
    turn join RUN_DIR --nodes N --node-rank R --master HOST:PORT
                                   this machine's processes of a run over several machines
    turn bench [--quick]           the benchmark of TURN against its baselines
    turn bench --scale [--n N]     each stage and the app from 60,000 images up to N (a million: 1000000)
    turn bench --detection         how well each detection signal finds the wrong labels
    turn bench --annotators        consensus of several annotators per image, and their quality
    turn bench --photos            the scan and TURN+ on a folder of JPEGs with label noise
    turn bench --throughput        features from JPEG files: the data pipeline against the bare forward

Runs execute in a worker process (several with --processes N, through torchrun; over several
machines with --nodes N --master HOST:PORT, each other machine running `turn join`); this
command follows the run folder and draws progress bars, exactly as the app does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm

from turn_backend.config import DEFAULT_METHOD, GIVEN_INPUTS_METHOD, RunConfig
from turn_backend.demo import DEMO_METHODS, demo_config
from turn_backend.errors import DatasetError, ModelError
from turn_backend.io import atomic_write_json
from turn_backend.methods import get_method, list_methods
from turn_backend.noise import NOISE_TYPES
from turn_backend.runfolder import TERMINAL_STATES, RunFolder, RunState, new_run_path
from turn_backend.worker import Nodes, launch, live_state, stop, worker_command, worker_environment

# Each command imports what only it runs when it runs (runner, retrain: torch; export, bench:
# pandas and pyarrow), so `turn --help` and `turn status` start in a fraction of a second.

# user-facing method names: "scan" is the LP-GCE run (the first stage of TURN+, with detection)
METHOD_ALIASES = {"scan": "lp-gce"}
DEFAULT_BATCH_SIZE = 128

DATA_KINDS = ("auto", "demo", "folder", "manifest", "idx", "cifar10", "cifar100", "hf", "parquet",
              "clothing1m", "webvision")


# Every argument of every subcommand that names a file or folder. `absolute_paths` makes them
# absolute against the caller's working directory as soon as the command line is parsed, in
# this one place: the worker process runs with another working directory (the repository),
# and the run's config.json must name the same files from wherever it is read.
PATH_ARGS = ("data", "root", "out", "run_dir", "scan_dir", "checkpoint", "docs", "features", "test_features",
             "pred_probs", "file")
# What a path argument may also be: a name, not a file.
NOT_A_PATH = {"data": ("demo",)}
# Names or paths: made absolute only where such a file or folder exists here (a Hugging Face
# model folder); a hub id such as google/vit-base-patch16-224 stays as it is.
PATH_IF_EXISTS = ("model",)


def absolute_paths(args: argparse.Namespace, cwd: str | None = None) -> argparse.Namespace:
    """`args` with every path argument (`PATH_ARGS`, `PATH_IF_EXISTS`) absolute against `cwd`
    (default: this process's working directory); `~` is expanded. Returns `args`."""
    cwd = os.fspath(cwd) if cwd is not None else os.getcwd()
    for dest in (*PATH_ARGS, *PATH_IF_EXISTS):
        value = getattr(args, dest, None)
        if not isinstance(value, str) or not value or value in NOT_A_PATH.get(dest, ()):
            continue
        path = os.path.join(cwd, os.path.expanduser(value))
        if dest in PATH_IF_EXISTS and not os.path.exists(path):
            continue
        setattr(args, dest, os.path.normpath(path))
    return args


class CLIError(Exception):
    """A problem with what the user asked for; printed without a traceback."""


def dataset_spec(data: str, kind: str, n_train: int, n_test: int, root: str | None) -> dict:
    """A dataset spec from --data / --data-kind; 'auto' guesses from what the path holds."""
    if data == "demo" or kind == "demo":
        return {"kind": "demo", "n_train": n_train, "n_test": n_test}
    path = Path(data)
    if not path.exists():
        raise CLIError(f"--data {data}: no such file or folder")
    if kind == "auto":
        if path.is_file():
            kind = "manifest" if path.suffix.lower() in (".csv", ".tsv", ".txt") else "parquet"
            if path.suffix.lower() == ".parquet":
                import pyarrow.parquet as pq

                columns = set(pq.read_schema(path).names)
                kind = "manifest" if "path" in columns else "parquet"
        elif (path / "dataset_dict.json").exists() or (path / "dataset_info.json").exists():
            kind = "hf"
        elif (path / "cifar-10-batches-py").exists():
            kind = "cifar10"
        elif (path / "cifar-100-python").exists():
            kind = "cifar100"
        elif any(path.glob("*-idx3-ubyte*")):
            kind = "idx"
        else:
            kind = "folder"
    spec = {"kind": kind, "path": str(path)}
    if root:
        spec["root"] = root
    return spec


def _bar_label(status: dict) -> str:
    return status.get("stage_label") or status.get("stage") or ""


PROGRESS_INTERVAL_ENV = "TURN_PROGRESS_INTERVAL"
DEFAULT_PROGRESS_INTERVAL = 20.0  # seconds; the promise is a line at least every 30 s


def progress_interval() -> float:
    """Seconds between progress lines when the output is not a terminal (TURN_PROGRESS_INTERVAL)."""
    try:
        return max(0.1, float(os.environ.get(PROGRESS_INTERVAL_ENV, DEFAULT_PROGRESS_INTERVAL)))
    except ValueError:
        return DEFAULT_PROGRESS_INTERVAL


def fmt_duration(seconds: float) -> str:
    """'45 s', '3 min 10 s', '2 h 05 min'."""
    seconds = int(round(max(0.0, seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class ProgressLines:
    """Progress for a log file: one line with the stage, its rate and its time left, every
    `interval` seconds, measured over the part of the stage this follower saw."""

    def __init__(self, interval: float, out=None) -> None:
        self.interval = interval
        self.out = out
        self.stage: str | None = None
        self.stage_seen = (0.0, 0)  # (time, done) when this follower first saw the stage
        self.last_line = time.time()

    def update(self, status: dict, now: float | None = None) -> str | None:
        """The line to print now, if one is due (None otherwise)."""
        now = time.time() if now is None else now
        label = _bar_label(status)
        done, total = int(status.get("stage_done") or 0), int(status.get("stage_total") or 0)
        if label != self.stage:
            self.stage, self.stage_seen = label, (now, done)
        if now - self.last_line < self.interval:
            return None
        self.last_line = now
        return self.line(label, done, total, now)

    def line(self, label: str, done: int, total: int, now: float) -> str:
        t0, done0 = self.stage_seen
        elapsed = now - t0
        head = f"[progress] {label or 'working'}"
        if total <= 1:  # a step that reports no count (e.g. scoring the labels)
            return f"{head}: running for {fmt_duration(elapsed)}"
        rate = (done - done0) / elapsed if elapsed > 0 else 0.0
        text = f"{head}: {done:,}/{total:,} ({done / total:.0%})"
        if rate > 0:
            return f"{text}, {rate:,.1f}/s, about {fmt_duration((total - done) / rate)} left"
        return f"{text}, running for {fmt_duration(elapsed)}, rate not known yet"

    def emit(self, status: dict) -> None:
        line = self.update(status)
        if line is not None:
            print(line, file=self.out or sys.stdout, flush=True)


def follow(run_dir: Path, quiet: bool = False) -> dict:
    """Print the run's events and show each stage's progress until the run ends.

    On a terminal a progress bar per stage; where the output is not a terminal (a log file,
    nohup, CI), a line with the stage, its rate and its time left every `progress_interval()`
    seconds, so that a log never stays silent through a long round.
    """
    folder = RunFolder(run_dir)
    draw_bars = not quiet and sys.stderr.isatty()
    lines = ProgressLines(progress_interval()) if not quiet and not sys.stdout.isatty() else None
    seen_events = 0
    bar = None
    while True:
        status = live_state(run_dir)
        events = folder.events()
        for event in events[seen_events:]:
            if not quiet and event["stage"] != "lp":
                tqdm.write(f"[{event['stage']}] {event['message']}")
        if len(events) > seen_events:
            sys.stdout.flush()
        seen_events = len(events)
        finished = status.get("state") in (*TERMINAL_STATES, RunState.INTERRUPTED.value)
        if draw_bars and status.get("stage_total") and not finished:
            if bar is None or bar.desc != _bar_label(status):
                if bar is not None:
                    bar.close()
                bar = tqdm(total=status["stage_total"], desc=_bar_label(status), leave=False, dynamic_ncols=True)
            bar.update(max(0, min(status.get("stage_done", 0), bar.total) - bar.n))
        if lines is not None and not finished:
            lines.emit(status)
        if finished:
            if bar is not None:
                bar.close()
            return status
        time.sleep(min(0.5, lines.interval / 2) if lines is not None else 0.5)


def start_and_follow(config: RunConfig, run_dir: Path, quiet: bool = False, nodes: Nodes | None = None) -> dict:
    from turn_backend.runner import create_run

    create_run(config, run_dir)
    return launch_and_follow(run_dir, config.num_processes, quiet, nodes)


def launch_and_follow(run_dir: Path, processes: int, quiet: bool = False, nodes: Nodes | None = None) -> dict:
    """Start the worker on a run folder and follow it to the end; Ctrl-C stops it (resumable)."""
    if nodes is not None:
        print(f"node 0 of {nodes.count}: waiting for the other nodes to join with\n"
              f"  turn join {run_dir} --nodes {nodes.count} --node-rank R --master {nodes.master} "
              f"--processes {processes}", flush=True)
    launch(run_dir, processes, nodes=nodes)
    try:
        status = follow(run_dir, quiet)
    except KeyboardInterrupt:
        stop(run_dir)
        raise CLIError(f"stopped; continue with: turn resume {run_dir}") from None
    return _finish(run_dir, status)


def _finish(run_dir: Path, status: dict) -> dict:
    if status["state"] != "done":
        detail = status.get("error") or status.get("stage_label") or status["state"]
        raise CLIError(f"run {run_dir} {status['state']}: {detail}\n(log: {RunFolder(run_dir).worker_log_path})")
    return RunFolder(run_dir).metrics()


def _print_metrics(metrics: dict) -> None:
    keys = ("method", "test_acc_best", "test_acc_last", "n_train", "n_clean", "clean_purity", "seconds_total")
    print("  ".join(f"{k}={metrics[k]:.4f}" if isinstance(metrics.get(k), float) else f"{k}={metrics.get(k)}"
                    for k in keys if metrics.get(k) is not None))
    for line in flag_summary_lines(metrics):
        print(line)


def flag_summary_lines(metrics: dict) -> list[str]:
    """What the run's flags are worth, from metrics.json, in words (no true label read)."""
    if "estimated_noise_rate" not in metrics:
        return []
    est = metrics["estimated_noise_rate"]
    suggested = metrics.get("suggested_tau")
    lines = [f"estimated noise rate {est['rate']:.1%} (95% interval {est['low']:.1%}-{est['high']:.1%}); "
             f"at tau {metrics.get('tau', 'the run')}: estimated precision {metrics['estimated_precision']:.1%}, "
             f"recall {metrics['estimated_recall']:.1%}; suggested tau "
             + (f"{suggested:.2f}" if suggested is not None else "none (the flags cannot be trusted)"
                if metrics.get("flags_reliable") is False else "none (no wrong label expected)")]
    if metrics.get("flags_reliable") is False:
        info = metrics.get("flags_reliability", {})
        lines.append("WARNING: these flags cannot be trusted: " + "; ".join(info.get("reasons", []))
                     + (". Likely fixes: " + "; ".join(info["fixes"]) + "." if info.get("fixes") else "."))
    else:
        lines += [f"NOTE: {caution}." for caution in metrics.get("flags_reliability", {}).get("cautions", [])]
    return lines


# --- commands ---------------------------------------------------------------------------

def annotator_options(args, spec: dict) -> dict:
    """The dataset spec's keys for several annotators per image (--annotator-columns, --aggregator)."""
    if not (args.annotator_columns or args.aggregator):
        return {}
    if spec["kind"] != "manifest":
        raise CLIError("--annotator-columns and --aggregator apply to a manifest (CSV / Parquet with a path column); "
                       f"--data {args.data} is read as {spec['kind']}")
    out = {}
    if args.annotator_columns:
        out["annotator_columns"] = [c.strip() for c in args.annotator_columns.split(",") if c.strip()]
    if args.aggregator:
        from turn_backend.data.annotated import MANIFEST_AGGREGATORS  # pandas: only when asked for

        if args.aggregator not in MANIFEST_AGGREGATORS:
            raise CLIError(f"--aggregator {args.aggregator}: choose one of {', '.join(MANIFEST_AGGREGATORS)}")
        out["aggregator"] = args.aggregator
    return out


def run_config(args) -> RunConfig:
    """The RunConfig of `turn run` / `turn estimate`'s options (method and batch as given)."""
    noise = {"kind": args.noise, "rate": args.noise_rate, "seed": args.noise_seed}
    for option in ("features", "test_features", "pred_probs"):
        path = getattr(args, option)
        if path and not Path(path).is_file():
            raise CLIError(f"--{option.replace('_', '-')} {path}: no such file")
    # given features or probabilities take a linear probe (fine-tuning needs the image model)
    default_method = GIVEN_INPUTS_METHOD if given_inputs(args) else DEFAULT_METHOD
    dataset = dataset_spec(args.data, args.data_kind, args.n_train, args.n_test, args.root)
    return RunConfig(
        dataset={**dataset, **annotator_options(args, dataset)},
        noise=noise, model=args.model, checkpoint=args.checkpoint,
        method=METHOD_ALIASES.get(args.method, args.method or default_method),
        image_size=args.image_size, batch_size=args.batch_size or DEFAULT_BATCH_SIZE, lp_epochs=args.lp_epochs,
        fft_epochs=args.fft_epochs, tau=args.tau, seed=args.seed, device=args.device,
        num_processes=args.processes, num_workers=args.workers, mixed_precision=args.precision,
        projection_methods=args.projections, features=args.features, test_features=args.test_features,
        pred_probs=args.pred_probs,
    )


def given_inputs(args) -> bool:
    """A run on the user's own features or probabilities: no image model to load or to probe."""
    return bool(args.features or args.pred_probs)


def cmd_run(args) -> int:
    from turn_backend.runner import create_run

    config = run_config(args)
    out = Path(args.out) if args.out else None
    pre = None
    if not given_inputs(args):  # a linear probe on given features takes seconds: nothing to estimate
        pre = _preflight(config, args, finetune_hint=f"turn finetune {out or 'RUN_FOLDER'}")
        if not _confirm(args):
            return 1
        config = pre.config
    out = (out or new_run_path("runs", config.method)).absolute()
    create_run(config, out)
    if pre is not None:
        atomic_write_json(RunFolder(out).estimate_path, pre.estimate)
    metrics = launch_and_follow(out, config.num_processes, args.quiet, main_node(args))
    _print_metrics(metrics)
    print(f"run folder: {out}")
    if pre is not None and pre.fine_tuning_estimate is not None:  # the scan ran by default: say how to go on
        from turn_backend.estimate import fmt_seconds

        print(f"fine-tuning would take {fmt_seconds(pre.fine_tuning_estimate['groups']['fine-tuning'])} more: "
              f"turn finetune {out}")
    return 0


def cmd_estimate(args) -> int:
    if given_inputs(args):
        raise CLIError("a run on given features or probabilities loads no image model: a linear probe on them "
                       "takes seconds, there is nothing to estimate")
    _preflight(run_config(args), args, finetune_hint=f"turn finetune {args.out or 'RUN_FOLDER'}")
    return 0


def cmd_finetune(args) -> int:
    from turn_backend.finetune import REUSED_STAGES, create_finetune_run, default_out, finetune_config

    overrides = {"fft_epochs": args.fft_epochs, "tau": args.tau, "batch_size": args.batch_size,
                 "device": args.device}
    config = finetune_config(args.scan_dir, METHOD_ALIASES.get(args.method, args.method), **overrides)
    out = Path(args.out) if args.out else default_out(args.scan_dir, config.method)
    pre = _preflight(config, args, reused=REUSED_STAGES)
    if not _confirm(args):
        return 1
    folder = create_finetune_run(args.scan_dir, pre.config, out)
    atomic_write_json(folder.estimate_path, pre.estimate)
    print(f"fine-tuning the scan {args.scan_dir} with {pre.config.method}: its data, features and probe are reused")
    _print_metrics(launch_and_follow(folder.path, pre.config.num_processes, args.quiet))
    print(f"run folder: {out}")
    return 0


def _preflight(config: RunConfig, args, reused: tuple[str, ...] = (), finetune_hint: str = ""):
    """Probe the run, settle its method and batch, print the estimate (turn_backend.preflight)."""
    from turn_backend.preflight import estimate_lines, prepare

    print("estimating the run's time and memory on a few of its images...", flush=True)
    pre = prepare(config, method_given=args.method is not None, batch_given=args.batch_size is not None,
                  reused=reused, finetune_hint=finetune_hint)
    for line in estimate_lines(pre):
        print(line, flush=True)
    return pre


def _confirm(args) -> bool:
    """On a terminal, ask before a run starts (unless --yes); elsewhere (scripts, CI) go on."""
    if args.yes or not sys.stdin.isatty():
        return True
    answer = input("start the run? [Y/n] ").strip().lower()
    if answer in ("", "y", "yes"):
        return True
    print("not started")
    return False


def cmd_resume(args) -> int:
    folder = RunFolder(args.run_dir)
    if not folder.exists():
        raise CLIError(f"{args.run_dir} is not a run folder (no config.json)")
    if folder.status().get("state") == "done":
        print("run already finished")
        _print_metrics(folder.metrics())
        return 0
    _print_metrics(launch_and_follow(folder.path, args.processes or folder.config().get("num_processes", 1),
                                     args.quiet, main_node(args)))
    return 0


def main_node(args) -> Nodes | None:
    """The node that owns the run folder and follows the run (`turn run` / `turn resume`)."""
    return Nodes.parse(args.nodes, 0, args.master)


def cmd_join(args) -> int:
    """Run this machine's share of a run that node 0 started with --nodes: torchrun in the
    foreground, on the run folder node 0 made (a path every node sees: shared storage)."""
    nodes = Nodes.parse(args.nodes, args.node_rank, args.master)
    if nodes is None or nodes.rank == 0:
        raise CLIError("turn join is for the other nodes of a run over several machines: give --nodes N (2 or "
                       "more) and --node-rank 1 to N-1; node 0 starts the run with turn run --nodes N")
    folder = RunFolder(args.run_dir)
    deadline = time.time() + args.wait
    while not folder.exists():  # node 0 may not have written config.json yet
        if time.time() > deadline:
            raise CLIError(f"{args.run_dir} is not a run folder after {args.wait:.0f} s: start node 0 first "
                           f"(turn run --nodes {nodes.count} --master {nodes.master} --out {args.run_dir}), and "
                           "give a path on storage both machines share")
        time.sleep(0.5)
    env, repo_root = worker_environment()
    import subprocess

    return subprocess.run(worker_command(folder.path, args.processes, nodes), env=env, cwd=repo_root).returncode


def cmd_export(args) -> int:
    from turn_backend import export
    from turn_backend.annotator_export import annotator_table, beside

    if not RunFolder(args.run_dir).exists():
        raise CLIError(f"{args.run_dir} is not a run folder (no config.json)")
    if args.spot_check is not None and args.format != "label-studio":
        raise CLIError("--spot-check goes with --format label-studio (the samples to decide in Label Studio); "
                       "in the app, the Threshold page's Spot check adds them to Review")
    if args.format in export.FOLDER_FORMATS:
        scope = "kept" if args.scope == "all" else args.scope  # removed samples have no label folder
        if args.format == "imagefolder":
            info = export.export_imagefolder(args.run_dir, args.out, args.tau, scope, args.link)
        else:
            info = export.export_hf(args.run_dir, args.out, args.tau, scope)
        print(f"wrote {args.out}: {info['rows']} images ({args.format}, removed and \"none of these\" samples "
              "left out)")
        return 0
    if args.format == "features":
        from turn_backend.run_features import export_features

        info = export_features(args.run_dir, args.out, args.split)
        print(f"wrote {args.out}: {info['rows']} {args.split} images x {info['dims']} dims (the pre-trained "
              f"features; `turn run --{'test-' if args.split == 'test' else ''}features` reads them back)")
        return 0
    if args.format == "annotators":
        table = annotator_table(args.run_dir)
        path = export.write_export(table, args.out)
        print(f"wrote {path}: {len(table)} annotator(s), best estimated quality first")
        return 0
    if args.format == "label-studio":
        from turn_backend.labelstudio import export_labelstudio

        if args.spot_check is not None:
            extend_spot_check(args.run_dir, args.spot_check)
        done = export_labelstudio(args.run_dir, args.out, args.tau, args.scope, args.inline_images, args.link)
        print(f"wrote {done.out}: {done.rows} flagged or spot-check sample(s) as Label Studio tasks "
              f"({done.images} images); "
              + ("import its tasks.json" if args.inline_images else f"see {done.out}/LABEL_STUDIO.md"))
        return 0
    if args.format == "decisions":
        log = export.build_decision_log(args.run_dir, args.tau)
        path = export.write_export(log, args.out)
        print(f"wrote {path}: {len(log)} review decision(s)")
        return 0
    df = export.build_export(args.run_dir, args.tau, args.scope)
    path = export.write_export(df, args.out, args.format)
    s = export.summary(df)
    print(f"wrote {path}: {s['rows']} rows ({s['relabelled']} relabelled, {s['removed']} removed, "
          f"{s['none']} none of these, {s['ambiguous']} ambiguous, "
          f"{s['flagged']} flagged, {s['flagged_unreviewed']} flagged and not reviewed)")
    if RunFolder(args.run_dir).has_annotators():
        table = annotator_table(args.run_dir)
        table_path = export.write_export(table, beside(path), "csv")
        print(f"wrote {table_path}: {len(table)} annotators' estimated quality")
    return 0


def extend_spot_check(run_dir: str, by: int) -> None:
    """Add `by` random training samples to the run's spot check (the Threshold page's button)."""
    from turn_backend.review import ReviewStore

    folder = RunFolder(run_dir)
    if not folder.has_final():
        raise CLIError(f"run {folder.name} has no final results yet; let it finish before a spot check")
    if by < 1:
        raise CLIError(f"--spot-check {by}: give the number of random samples to add, 1 or more")
    samples = folder.samples()
    size = ReviewStore(folder.review_db).extend_spot_check(int((samples["split"] == "train").sum()), by)
    print(f"spot check: {size} random training samples (their decisions recalibrate the estimates: turn status)")


def cmd_import_labels(args) -> int:
    from turn_backend.labelstudio import import_labels, read_tasks

    if not RunFolder(args.run_dir).exists():
        raise CLIError(f"{args.run_dir} is not a run folder (no config.json)")
    summary = import_labels(args.run_dir, read_tasks(Path(args.file).read_bytes(), args.file))
    print("\n".join(summary.lines()))
    return 0


def cmd_retrain(args) -> int:
    from turn_backend.retrain import create_retrain_run

    overrides = {k: v for k, v in (("method", args.method), ("tau", args.tau), ("fft_epochs", args.fft_epochs),
                                   ("lp_epochs", args.lp_epochs), ("seed", args.seed), ("device", args.device))
                 if v is not None}
    folder = create_retrain_run(args.run_dir, args.out, ambiguous=args.ambiguous, **overrides)
    source = folder.config()["retrained_from"]
    print(f"retraining on the reviewed labels of {args.run_dir}: {source['relabelled']} relabelled, "
          f"{source['removed']} removed, {source['kept']} kept, {source['none']} none of these (left out), "
          f"{source['ambiguous']} ambiguous ({'kept with their label' if args.ambiguous == 'keep' else 'left out'})")
    _print_metrics(launch_and_follow(folder.path, folder.config().get("num_processes", 1), args.quiet))
    print(f"run folder: {args.out}")
    return 0


def cmd_status(args) -> int:
    folder = RunFolder(args.run_dir)
    if not folder.exists():
        raise CLIError(f"{args.run_dir} is not a run folder (no config.json)")
    from turn_backend.estimate import progress, progress_lines
    from turn_backend.export import default_tau
    from turn_backend.run_views import review_estimates

    metrics = folder.metrics()
    view = progress(folder)
    review, calibrated = review_estimates(folder, default_tau(folder))
    print(json.dumps({"status": live_state(folder.path), "metrics": metrics, "estimate": view,
                      "review_check": review, "review_calibrated": calibrated}, indent=2, default=str))
    # after the JSON, on stderr: stdout stays one JSON document
    for line in (progress_lines(view) if view else []) + flag_summary_lines(metrics) + review_lines(review) + \
            calibrated_lines(calibrated):
        print(line, file=sys.stderr)
    return 0


def review_lines(check: dict | None) -> list[str]:
    """The estimates against the run's Review decisions (`run_views.review_estimates`' check), in words."""
    if check is None:
        return []
    n, k, expected = check["n"], check["found_wrong"], check["expected_wrong"]
    line = (f"review: of the {n} samples kept or relabelled, the clean probabilities expected {expected:.1f} wrong "
            f"labels ({expected / n:.1%}); {k} were relabelled ({k / n:.1%}, 95% interval "
            f"{check['low']:.1%}-{check['high']:.1%}): ")
    if check["agrees"]:
        return [line + "the estimates agree with the review"]
    more = expected / n > check["high"]
    return [line + f"the estimates expect {'more' if more else 'fewer'} wrong labels than the review finds, so the "
            f"estimated precision is likely too {'high' if more else 'low'}"]


def calibrated_lines(calibrated: dict | None) -> list[str]:
    """The estimates recounted with the clean probabilities recalibrated on the Review decisions
    (`run_views.review_estimates`), in words."""
    if calibrated is None:
        return []
    noise, suggested = calibrated["estimated_noise_rate"], calibrated["suggested_tau"]
    return [f"calibrated on {calibrated['decisions']} review decisions: estimated noise rate {noise['rate']:.1%} "
            f"(95% interval {noise['low']:.1%}-{noise['high']:.1%}); at tau {calibrated['tau']:.2f}: estimated "
            f"precision {calibrated['estimated_precision']:.1%}, recall {calibrated['estimated_recall']:.1%}; "
            "suggested tau " + ("none" if suggested is None else f"{suggested:.2f}")]


def cmd_methods(args) -> int:
    """The registry: each method's name, kind, default rounds, stages (or why only `turn bench` runs it)."""
    for name in list_methods(include_bench_only=True):
        m = get_method(name)
        how = f"bench only: {m.bench_only}" if m.bench_only else "stages: " + " > ".join(m.stages)
        print(f"{name:13} {m.kind:4} rounds {m.default_rounds}  {m.description}\n{'':19}{how}")
    for alias, name in METHOD_ALIASES.items():
        print(f"{alias:13} = {name}: the scan (features, detection, audit, maps; no fine-tuning), the default "
              "on a CPU at 128 px and more; `turn finetune` continues it")
    return 0


def cmd_demo(args) -> int:
    out = Path(args.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for method in args.methods or DEMO_METHODS:
        config = demo_config(method, args.n_train, args.n_test, args.image_size, args.device)
        run_dir = out / method
        if RunFolder(run_dir).status().get("state") == "done":
            metrics = RunFolder(run_dir).metrics()
        elif RunFolder(run_dir).exists():
            raise CLIError(f"{run_dir} holds an unfinished run: `turn resume {run_dir}` or choose another --out")
        else:
            print(f"== {method}: {get_method(method).description}")
            metrics = start_and_follow(config, run_dir, args.quiet)
        _print_metrics(metrics)
        rows.append({
            "method": method,
            "test_acc_best": metrics.get("test_acc_best"),
            "test_acc_last": metrics.get("test_acc_last"),
            "n_train": metrics.get("n_train"),
            "n_clean": metrics.get("n_clean"),
            "clean_purity": metrics.get("clean_purity"),
            "noise_rate": metrics.get("noise_rate"),
            "seconds": metrics.get("seconds_total"),
            "run_dir": str(run_dir),
        })
    atomic_write_json(out / RunFolder.METRICS, rows)
    print(f"wrote {out / RunFolder.METRICS}")
    return 0


def cmd_bench(args) -> int:
    if args.detection:
        from turn_backend.bench.detection import main as detection_main

        return detection_main(args)
    if args.scale:
        from turn_backend.bench.scale import main as scale_main

        return scale_main(args)
    if args.annotators:
        from turn_backend.bench.annotators import main as annotators_main

        return annotators_main(args)
    if args.photos:
        from turn_backend.bench.photos import main as photos_main

        return photos_main(args)
    if args.throughput:
        from turn_backend.bench.throughput import main as throughput_main

        return throughput_main(args)
    from turn_backend.bench import main as bench_main

    return bench_main(args)


def add_node_arguments(parser: argparse.ArgumentParser, joining: bool = False) -> None:
    """Several machines: torchrun's --nnodes / --node_rank / --master_addr:--master_port."""
    parser.add_argument("--nodes", type=int, default=2 if joining else 1,
                        help="machines in the run (default %(default)s); the others run `turn join`")
    if joining:
        parser.add_argument("--node-rank", type=int, required=True, help="this machine's place, 1 to N-1")
    parser.add_argument("--master", required=joining,
                        help="HOST:PORT of node 0, reachable from every node, the same on each")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="turn", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="start a run and follow it", description="Run TURN (or a baseline) on a dataset.")
    r.add_argument("--data", default="demo", help="'demo', or a folder / manifest / dataset path (default: demo)")
    r.add_argument("--data-kind", default="auto", choices=DATA_KINDS, help="how to read --data (default: guess)")
    r.add_argument("--root", help="root folder that manifest paths are relative to (default: the manifest's folder)")
    r.add_argument("--annotator-columns",
                   help="manifest: its columns holding one annotator's label each, comma-separated (default: the "
                        "columns annotator_NAME, or one row per image and annotator with an annotator column)")
    r.add_argument("--aggregator", help="several annotators: how their labels become one (dawid-skene (default), "
                                        "majority, glad, mace)")
    r.add_argument("--n-train", type=int, default=3000, help="demo: training images (default 3000)")
    r.add_argument("--n-test", type=int, default=1000, help="demo: test images (default 1000)")
    r.add_argument("--noise", default="none", choices=NOISE_TYPES, help="synthetic label noise to add (default none)")
    r.add_argument("--noise-rate", type=float, default=0.4, help="synthetic noise rate (default 0.4)")
    r.add_argument("--noise-seed", type=int, default=0)
    r.add_argument("--model", default="efficientnet_lite0",
                   help="efficientnet_lite0 (embedded), a timm name, or a Hugging Face id / folder")
    r.add_argument("--checkpoint", help="local weights for a timm model (.pth / .safetensors)")
    r.add_argument("--method", choices=[*list_methods(), *METHOD_ALIASES],
                   help=f"default {DEFAULT_METHOD} (recommended; on a CPU at 128 px and more, where fine-tuning "
                        f"would take minutes, the scan: lp-gce; {GIVEN_INPUTS_METHOD} with --features or "
                        "--pred-probs); 'turn' is TURN exactly as published")
    r.add_argument("--image-size", type=int, help="input size (default: the model's own)")
    r.add_argument("--batch-size", type=int,
                   help=f"default {DEFAULT_BATCH_SIZE}, lowered on a CPU until the estimated peak memory fits half "
                        "the available memory")
    r.add_argument("--lp-epochs", type=int, default=20)
    r.add_argument("--fft-epochs", type=int, help="FFT rounds (default: 4 for turn, 5 otherwise)")
    r.add_argument("--tau", type=float, default=0.6, help="GMM clean-probability threshold (default 0.6)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    r.add_argument("--processes", type=int, default=1, help="processes (one per GPU) via torchrun (default 1)")
    add_node_arguments(r)
    r.add_argument("--workers", type=int, help="data-loader workers (default: by data kind)")
    r.add_argument("--precision", default="auto", choices=["auto", "no", "bf16", "fp16"],
                   help="mixed precision on CUDA (default auto: bf16 where supported, else fp16; none on CPU)")
    r.add_argument("--projections", nargs="*", default=["tsne"], choices=["tsne", "umap"])
    r.add_argument("--features", help="the training images' features from your own model instead of --model: "
                   ".npy (N, D) in the dataset's order, or .parquet / .csv keyed by a 'path' column; lp-* methods")
    r.add_argument("--test-features", help="the test split's features, as --features (without them a run with "
                   "--features leaves the test split out: no test accuracy)")
    r.add_argument("--pred-probs", help="the training images' predicted class probabilities (N, C), as --features: "
                   "they replace the probe's in detection; no test accuracy is measured")
    r.add_argument("--out", help="run folder (default runs/METHOD-TIME)")
    r.add_argument("--quiet", action="store_true", help="no progress output")
    r.add_argument("--yes", "-y", action="store_true", help="start without asking (asked on a terminal only)")
    r.set_defaults(func=cmd_run)

    # `turn estimate` takes run's options (argparse copies them, and run's defaults, from the parent)
    es = sub.add_parser("estimate", parents=[r], conflict_handler="resolve",
                        help="estimate a run's time and memory, without running it",
                        description="What `turn run` with these options would take: seconds per step and peak "
                                    "memory, measured on a few of its images.")
    es.set_defaults(func=cmd_estimate)

    ft = sub.add_parser("finetune", help="fine-tune a finished scan",
                        description="A new run that fine-tunes a finished scan (turn run --method scan): its data, "
                                    "features, audit and LP-GCE probe are reused, and TURN+'s rounds run from there.")
    ft.add_argument("scan_dir", help="the scan's run folder")
    ft.add_argument("--out", help="folder of the new run (default: SCAN_DIR-METHOD beside it)")
    ft.add_argument("--method", default="turn+", choices=["turn+", "turn"], help="default turn+")
    ft.add_argument("--fft-epochs", type=int, help="fine-tuning rounds (default: the method's)")
    ft.add_argument("--tau", type=float, help="default: the scan's")
    ft.add_argument("--batch-size", type=int, help="default: the largest that fits half the free memory (CPU)")
    ft.add_argument("--device", help="default: the scan's")
    ft.add_argument("--yes", "-y", action="store_true", help="start without asking")
    ft.add_argument("--quiet", action="store_true")
    ft.set_defaults(func=cmd_finetune)

    s = sub.add_parser("resume", help="continue a killed or stopped run")
    s.add_argument("run_dir")
    s.add_argument("--processes", type=int)
    add_node_arguments(s)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_resume)

    e = sub.add_parser("export", help="write the cleaned label file")
    e.add_argument("run_dir")
    e.add_argument("--out", required=True,
                   help="output file (.csv, .parquet or .json), or folder (--format imagefolder / hf)")
    e.add_argument("--format", choices=["csv", "parquet", "json", "imagefolder", "hf", "decisions", "features",
                                        "annotators", "label-studio"],
                   help="default: the label file, in the format of the file name; imagefolder: one folder per "
                        "final label; hf: a Hugging Face datasets folder; decisions: the decision log "
                        "(.csv, .parquet or .json); features: the training images' pre-trained features "
                        "(.npy, or .parquet / .csv keyed by path) for `turn run --features`; annotators: each "
                        "annotator's estimated quality (runs with several annotators per image; .csv, .parquet "
                        "or .json); label-studio: the flagged samples as a Label Studio import (tasks.json, "
                        "labeling_config.xml, images/)")
    e.add_argument("--scope", default="all", choices=["all", "kept", "clean"])
    e.add_argument("--split", default="train", choices=["train", "test"], help="--format features: which split's")
    e.add_argument("--tau", type=float, help="flagging threshold (default: the applied one, else the run's)")
    e.add_argument("--link", default="hardlink", choices=["hardlink", "symlink", "copy"],
                   help="imagefolder, label-studio: how image files get there (default hardlink, copied where "
                        "impossible)")
    e.add_argument("--spot-check", type=int, metavar="N",
                   help="label-studio: first add N random training samples to the run's spot check (as the "
                        "Threshold page's button does); the export holds the whole spot check besides the flagged "
                        "samples, and once decided and imported, `turn status` recalibrates the estimates on them")
    e.add_argument("--inline-images", action="store_true",
                   help="label-studio: the images inside tasks.json as data: URIs (small sets; Label Studio then "
                        "needs no local file serving)")
    e.set_defaults(func=cmd_export)

    il = sub.add_parser("import-labels", help="apply a Label Studio JSON export as review decisions",
                        description="Label Studio's \"JSON\" export of a project made from `turn export --format "
                                    "label-studio`: the given label is a keep, another class a relabel, \"None of "
                                    "these classes\" and \"Ambiguous\" those decisions. Each is a new decision in the "
                                    "run's review history, which keeps the one it replaces.")
    il.add_argument("run_dir")
    il.add_argument("file", help="the Label Studio JSON export")
    il.set_defaults(func=cmd_import_labels)

    rt = sub.add_parser("retrain", help="start a new run on a run's reviewed labels",
                        description="Retrain with my decisions: relabelled samples train with their new label, "
                                    "removed and \"none of these\" ones are left out, kept ones are never dropped "
                                    "by cleansing; ambiguous ones as --ambiguous says.")
    rt.add_argument("run_dir", help="the reviewed run")
    rt.add_argument("--out", required=True, help="folder of the new run")
    rt.add_argument("--method", choices=list_methods(), help="default: the reviewed run's")
    rt.add_argument("--tau", type=float, help="default: the reviewed run's")
    rt.add_argument("--fft-epochs", type=int)
    rt.add_argument("--lp-epochs", type=int)
    rt.add_argument("--seed", type=int)
    rt.add_argument("--ambiguous", choices=["drop", "keep"], default="drop",
                    help="images decided ambiguous: drop (default) leaves them out of training, keep trains them "
                         "with their given label")
    rt.add_argument("--device")
    rt.add_argument("--quiet", action="store_true")
    rt.set_defaults(func=cmd_retrain)

    j = sub.add_parser("join", help="this machine's processes of a run over several machines",
                       description="Join a run that node 0 started with `turn run --nodes N --master HOST:PORT`. "
                                   "The run folder (and TURN_CACHE_DIR) must be on storage every node sees.")
    j.add_argument("run_dir")
    add_node_arguments(j, joining=True)
    j.add_argument("--processes", type=int, default=1, help="processes on this machine, one per GPU (default 1)")
    j.add_argument("--wait", type=float, default=600, help="seconds to wait for node 0's run folder (default 600)")
    j.set_defaults(func=cmd_join)

    st = sub.add_parser("status", help="where a run stands")
    st.add_argument("run_dir")
    st.set_defaults(func=cmd_status)

    sub.add_parser("methods", help="list the registered methods").set_defaults(func=cmd_methods)

    d = sub.add_parser("demo", help="TURN and baselines on the embedded Fashion-MNIST demo")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--n-train", type=int, default=None, help="training images (default: the demo's)")
    d.add_argument("--n-test", type=int, default=None)
    d.add_argument("--image-size", type=int, default=None)
    d.add_argument("--device", default="auto")
    d.add_argument("--methods", nargs="*", choices=list_methods(), help="default: turn+, turn, lp-gce, fft-ce")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)

    b = sub.add_parser("bench", help="benchmark TURN against its baselines")
    from turn_backend.bench import add_arguments

    add_arguments(b)
    b.add_argument("--scale", action="store_true",
                   help="instead: each stage's time and peak memory from 60,000 images up to --n (Fashion-MNIST "
                        "grown by augmentation), detection quality, and the app on the largest run in headless "
                        "Chromium (page and interaction times, RSS); writes OUT/scale.json; uses --n, "
                        "--image-size, --out, --docs, --no-docs")
    b.add_argument("--n", type=int, help="--scale: training images of the largest set (default 60,000)")
    b.add_argument("--no-app", action="store_true", help="--scale: the stages only, not the app in Chromium")
    b.add_argument("--detection", action="store_true",
                   help="instead: detection F1 / AUROC of every signal and the combination, no fine-tuning "
                        "(default 10,000 images, 3 seeds); uses --n-train, --seeds, --settings, --out, --docs")
    b.add_argument("--annotators", action="store_true",
                   help="instead: four simulated annotators per image; consensus accuracy of each aggregator "
                        "and how it ranks the annotators (default 10,000 images, 3 seeds); uses --n-train, "
                        "--seeds, --out, --docs")
    b.add_argument("--photos", action="store_true",
                   help="instead: the scan and TURN+ (also at 128 px) on a folder of 256-px JPEGs with label noise: "
                        "flag F1, estimated vs true noise rate, time per stage (default 2,000 images, sym40); uses "
                        "--n-train, --n-test, --settings, --image-size, --lp-epochs, --fft-epochs, --out, --docs")
    b.add_argument("--throughput", action="store_true",
                   help="instead: feature extraction from 256-px JPEG files through the data pipeline against the "
                        "bare forward, with 0, 1 and 2 loader workers (default 512 images at 224 px); uses "
                        "--n-train, --image-size, --batch-size, --device, --out, --docs")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = absolute_paths(build_parser().parse_args(argv))
    try:
        return args.func(args)
    except (CLIError, DatasetError, ModelError, ValueError, FileExistsError, FileNotFoundError, OSError) as exc:
        print(f"turn: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
