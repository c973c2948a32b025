"""The training worker: a separate process that runs one run folder.

The app and the CLI start it with `launch`; it keeps going when a browser tab closes, and
anyone can reattach by reading the run folder. Several processes (several GPUs, or CPU
processes on gloo in tests) are started through torchrun, the engine PyTorch ships.

    python -m turn_backend.worker RUN_DIR
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from turn_backend.runfolder import TERMINAL_STATES, WORKING_STATES, RunFolder, RunState


@dataclass(frozen=True)
class Nodes:
    """This machine's place in a run over several machines ("nodes"): torchrun's static
    rendezvous, where every node names the same master (node 0's address and a free port)."""

    count: int
    rank: int
    master: str  # "host:port"

    @classmethod
    def parse(cls, count: int, rank: int, master: str | None) -> Nodes | None:
        """None for one machine; a clear ValueError for settings torchrun would hang on."""
        if count <= 1:
            return None
        host, _, port = (master or "").rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--master {master!r}: give node 0's address and a free port as HOST:PORT "
                             "(the same on every node)")
        if not 0 <= rank < count:
            raise ValueError(f"--node-rank {rank}: with --nodes {count} it is 0 to {count - 1}")
        return cls(count, rank, master)


def worker_command(run_dir: str | Path, processes: int = 1, nodes: Nodes | None = None) -> list[str]:
    target = ["-m", "turn_backend.worker", str(run_dir)]
    if nodes is not None:
        host, _, port = nodes.master.rpartition(":")
        return [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes.count}",
                f"--node_rank={nodes.rank}", f"--master_addr={host}", f"--master_port={port}",
                f"--nproc_per_node={processes}", *target]
    if processes <= 1:
        return [sys.executable, *target]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *target]


def worker_environment(env: dict | None = None) -> tuple[dict, Path]:
    """The worker's environment and working directory: the repository root, importable."""
    repo_root = Path(__file__).resolve().parents[1]
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo_root), full_env.get("PYTHONPATH")]))
    return full_env, repo_root


def launch(run_dir: str | Path, processes: int = 1, env: dict | None = None, nodes: Nodes | None = None) -> int:
    """Start the worker detached from this process (own session); returns its pid.

    The worker runs in the repository root, so it gets the run folder as an absolute path
    (a relative one is taken from this process's working directory)."""
    folder = RunFolder(Path(run_dir).absolute())
    log = open(folder.worker_log_path, "ab")
    full_env, repo_root = worker_environment(env)
    proc = subprocess.Popen(
        worker_command(folder.path, processes, nodes), stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True, env=full_env, cwd=repo_root,
    )
    folder.set_status(state=RunState.STARTING.value, pid=proc.pid, stage_label="Starting the worker")
    return proc.pid


def is_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # a zombie child of this process counts as dead
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1].split()[0] != "Z"
    except OSError:
        return True


def live_state(run_dir: str | Path) -> dict:
    """status.json, corrected when the worker died without saying so (killed, OOM)."""
    folder = RunFolder(run_dir)
    status = folder.status()
    if status.get("state") in WORKING_STATES and not is_alive(status.get("pid")):
        status = {**status, "state": RunState.INTERRUPTED.value,
                  "stage_label": "The worker stopped unexpectedly; resume continues from the last completed stage"}
    return status


def stop(run_dir: str | Path) -> bool:
    """Ask the worker (its whole process group) to stop; it records state 'stopped'."""
    pid = RunFolder(run_dir).status().get("pid")
    if not is_alive(pid):
        return False
    try:
        os.killpg(os.getpgid(pid), signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    from turn_backend.runner import StopRequested, execute_run  # torch: only the worker process trains

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m turn_backend.worker RUN_DIR", file=sys.stderr)
        return 2
    folder = RunFolder(argv[0])
    if folder.status().get("state") == "done":
        return 0
    try:
        execute_run(folder.path)
    except StopRequested:
        return 130
    except Exception as exc:  # noqa: BLE001 - recorded in status.json and events by execute_run
        print(f"run failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["TERMINAL_STATES", "Nodes", "launch", "live_state", "main", "stop", "worker_command"]
