"""The orchestrator: runs a method's stages in order and records everything in a run folder.

`run_turn(config, run_dir)` starts a run; `resume(run_dir)` continues one that was killed
from its last completed stage. The method (turn_backend.methods) names its stages; each is a
function of the run's context in turn_backend.stages, re-seeded from (seed, stage), so a
resumed run ends with the same result as an uninterrupted one. The plan of a run as a
person follows it (a step per round) is `turn_backend.plan.plan_stages(config)`, kept apart
so that the app reads it without importing the stages and torch.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from turn_backend.config import RunConfig
from turn_backend.estimate import StagePeakMemory
from turn_backend.io import atomic_write_json, read_json
from turn_backend.methods import get_method
from turn_backend.runfolder import RunFolder, RunState
from turn_backend.stages import audit, choice, data, features, final, metrics, probe, projections, rounds
from turn_backend.stages.context import RunContext

# every stage a method may name, in the order they can run
STAGES = {
    "data": data.load_data,
    "features": features.extract,
    "audit": audit.audit,
    "probe": probe.linear_probe,
    "rounds": rounds.fine_tune,
    "choice": choice.choose_final_model,
    "final": final.score_final_model,
    "projections": projections.project,
    "metrics": metrics.summarise,
}


class StopRequested(Exception):
    """The user pressed Stop (SIGTERM to the worker)."""


class TurnRun:
    """One execution (or resumption) of a run folder, in one process of possibly several."""

    def __init__(self, run_dir: Path, config: RunConfig) -> None:
        self.ctx = RunContext(run_dir, config)
        self.rt = self.ctx.rt

    def execute(self) -> dict:
        ctx, cfg = self.ctx, self.ctx.config
        ctx.timings = read_json(ctx.folder.timings_path, {})
        ctx.status(state=RunState.RUNNING.value, pid=os.getpid(), error=None, processes=ctx.rt.world)
        ctx.log("start", f"{cfg.method} on {cfg.model}, {ctx.rt.world} process(es), device {ctx.rt.device}")
        peaks = ctx.folder.peak_memory()
        for stage in ctx.method.stages:
            with StagePeakMemory() as memory:
                STAGES[stage](ctx)
            # a resumed run skips finished stages: their peak stays the one measured when they ran
            ran_before = peaks.get(stage, {}).get("resident_mb", 0.0)
            if memory.resident is not None and ctx.rt.is_main and memory.resident > ran_before:
                peaks[stage] = {"resident_mb": round(memory.resident, 1),
                                "anonymous_mb": round(memory.anonymous or 0.0, 1)}
                atomic_write_json(ctx.folder.peak_memory_path, peaks)
        ctx.status(state=RunState.DONE.value, stage="done", stage_label="Finished")
        ctx.log("done", "run finished", test_acc_last=ctx.metrics.get("test_acc_last"))
        return {"rounds": [], **ctx.metrics}


_stop_signalled = False  # set by the SIGTERM handler: a library may wrap StopRequested in its own error


def _install_stop_handler() -> None:
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:
            # a forked child (a multiprocessing pool's worker) inherits this handler; pools stop
            # their workers with SIGTERM, and raising here would unwind the child into a copy of
            # this process's own stack. It dies the default way instead.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        global _stop_signalled
        _stop_signalled = True
        raise StopRequested()

    signal.signal(signal.SIGTERM, handler)


def execute_run(run_dir: str | Path) -> dict:
    """Run (or continue) the run folder `run_dir` in this process; records failures."""
    folder = RunFolder(run_dir)
    config = RunConfig.from_json(folder.config_path)
    _install_stop_handler()
    run = None
    try:
        run = TurnRun(folder.path, config)
        return run.execute()
    except BaseException as exc:
        # torch's load_state_dict, for one, re-raises the handler's StopRequested as a RuntimeError
        if isinstance(exc, StopRequested) or _stop_signalled:
            folder.set_status(state=RunState.STOPPED.value, stage_label="Stopped by the user")
            folder.log("stop", "stopped by the user; `turn resume` continues from the last completed stage")
            if isinstance(exc, StopRequested):
                raise
            raise StopRequested() from exc
        if run is None or run.rt.is_main:
            folder.set_status(state=RunState.FAILED.value, error=f"{type(exc).__name__}: {exc}")
            folder.log("error", f"{type(exc).__name__}: {exc}")
        raise


def create_run(config: RunConfig, run_dir: str | Path) -> RunFolder:
    """A new run folder holding `config`, queued for a worker."""
    method = get_method(config.method)
    if method.bench_only:
        raise ValueError(f"{config.method} runs in `turn bench` only: {method.bench_only}")
    folder = RunFolder(run_dir)
    if folder.exists():
        raise FileExistsError(f"{run_dir} already holds a run; use `turn resume {run_dir}` or another folder")
    folder.path.mkdir(parents=True, exist_ok=True)
    config.to_json(folder.config_path)
    folder.set_status(state=RunState.QUEUED.value, stage="queued", stage_label="Waiting to start")
    return folder


def run_turn(config: RunConfig, run_dir: str | Path) -> dict:
    """Start a run in this process and return its metrics."""
    create_run(config, run_dir)
    return execute_run(run_dir)


def resume(run_dir: str | Path) -> dict:
    """Continue a killed or stopped run from its last completed stage."""
    folder = RunFolder(run_dir)
    if not folder.exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.json)")
    folder.log("resume", "resuming")
    return execute_run(run_dir)
