"""The machine a benchmark ran on, and how many torch threads to use there."""

from __future__ import annotations

import datetime as dt
import os
import platform
from collections.abc import Callable
from pathlib import Path


def machine_info(device: str) -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "platform": platform.platform(), "device": device}
    if torch.cuda.is_available() and device != "cpu":
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["load_average"] = list(os.getloadavg())
    except OSError:
        pass
    return info




def choose_threads(requested: int | None) -> tuple[int, str]:
    """torch's thread count for the run, and why. On a busy machine several OpenMP threads
    spin-wait for each other; one thread was 2-5x faster there (measured on 2 cores)."""
    import torch

    if requested:
        return requested, "asked for"
    try:
        load = os.getloadavg()[0]
    except OSError:
        return torch.get_num_threads(), "torch's default"
    cores = os.cpu_count() or 1
    if load > 0.5 * cores:
        return 1, f"the machine was busy at the start (load {load:.1f} on {cores} cores)"
    return torch.get_num_threads(), "torch's default"


def progress_log(quiet: bool) -> Callable[[str], None]:
    """A benchmark's progress lines, each stamped with the time of day; silent when `quiet`."""

    def log(msg: str) -> None:
        if not quiet:
            print(f"[{dt.datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)

    return log
