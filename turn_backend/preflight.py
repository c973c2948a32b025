"""Before a run starts: its estimate, a batch that fits the memory, and the default method.

`prepare(config, ...)` probes the run (turn_backend.estimate), then

- where no method was asked for: on a CPU, at 128 px or more, when fine-tuning would take
  more than a few minutes, the run becomes the scan (`lp-gce`), and the notes say how long
  fine-tuning would take and how to start it from the scan (`turn finetune`); on a GPU the
  default stays TURN+;
- where no batch size was asked for, on a CPU: the largest batch (at most the config's)
  whose estimated peak stays under half the available memory; an explicit batch is kept,
  with a warning where its estimate exceeds the available memory.

The CLI and the app print the notes and the estimate, and save the estimate in the run folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from turn_backend import estimate as est
from turn_backend.config import RunConfig


@dataclass
class Preflight:
    config: RunConfig  # what will run (method and batch size possibly changed)
    estimate: dict
    notes: list[str] = field(default_factory=list)  # what changed, and why; warnings
    fine_tuning_estimate: dict | None = None  # where the scan was chosen: TURN+'s estimate


def prepare(config: RunConfig, method_given: bool = True, batch_given: bool = True,
            reused: tuple[str, ...] = (), finetune_hint: str = "turn finetune OUT") -> Preflight:
    """Probe `config`'s run and settle its method and batch (see the module's doc)."""
    measurement = est.probe(config)
    on_gpu = measurement.device.startswith("cuda")
    notes: list[str] = []
    turn_plus = None
    if not method_given:
        turn_plus = est.extrapolate(config, measurement, reused)
        fine_tuning = turn_plus["groups"]["fine-tuning"]
        method = est.default_method(on_gpu, measurement.image_size, fine_tuning)
        if method != config.method:
            config = replace(config, method=method)
            notes.append(f"running the scan ({method}: features, detection, audit and maps, no fine-tuning): "
                         f"on this CPU at {measurement.image_size} px fine-tuning would take "
                         f"{est.fmt_seconds(fine_tuning)}; after the scan, run `{finetune_hint}` "
                         "(or give --method turn+ to fine-tune now)")
        else:
            turn_plus = None
    if not on_gpu and not batch_given:
        batch = est.fitting_batch(measurement, config)
        if batch < config.batch_size:
            old = config.batch_size
            config = replace(config, batch_size=batch)
            notes.append(f"batch size lowered from {old} to {batch}: at {old} the estimated peak memory "
                         f"({est.fmt_bytes(est.peak_memory(measurement, old, est.fine_tunes(config)))}) would "
                         f"exceed half of the available {est.fmt_bytes(measurement.available_memory)} "
                         "(give --batch-size to choose)")
    estimate = est.extrapolate(config, measurement, reused)
    if batch_given and estimate["peak_memory_bytes"] > measurement.available_memory:
        notes.append(f"WARNING: at batch size {config.batch_size} the estimated peak memory "
                     f"({est.fmt_bytes(estimate['peak_memory_bytes'])}) exceeds the available "
                     f"{est.fmt_bytes(measurement.available_memory)}; a smaller --batch-size avoids swapping "
                     "or an out-of-memory kill")
    return Preflight(config, estimate, notes, turn_plus)


def estimate_lines(pre: Preflight) -> list[str]:
    """What `turn run` prints before it starts."""
    e = pre.estimate
    lines = [*pre.notes, f"estimate ({e['method']}, batch {e['batch_size']}, {e['image_size']} px, {e['device']}): "
             f"{est.summary_line(e)}; total {est.fmt_seconds(e['total_seconds'])} "
             f"(measured on a few of its images in {e['probe_seconds']:.0f} s)"]
    return lines
