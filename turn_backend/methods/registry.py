"""The registry of training methods, by name, as timm registers models.

A method module describes each of its methods with a `Method` and registers it with
`register_method`; `get_method(name)` and `list_methods()` are what everything else reads
(config validation, the CLI's choices, the app's Train page, `turn bench`).

Nothing here imports torch: the app reads the registry in processes that never train.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

KINDS = ("turn", "lp", "fft")
# why the benchmark-only baselines are not offered by `turn run` and the app
NO_RUN_FOLDER = ("a compact baseline for `turn bench`: it trains outside a run folder and records metrics only "
                 "(no per-sample clean probabilities, projections, checkpoints or resume for the app to show)")


@dataclass(frozen=True)
class Method:
    """What a method is, and how it runs.

    A method that runs in a run folder lists its `stages` (names in `runner.STAGES`, run in
    this order by the orchestrator, each resumable). A benchmark-only method has no stages:
    `run_standalone(config, run_dir)` trains it and returns its metrics, and `bench_only`
    says why `turn run` and the app do not offer it.
    """

    name: str
    description: str
    kind: str  # "turn": cleansing rounds after a probe; "lp": linear probe only; "fft": fine-tuning
    loss: str  # the loss it trains with (for "turn": of its fine-tuning rounds)
    default_rounds: int = 0  # fine-tuning rounds when the config leaves fft_epochs unset
    stages: tuple[str, ...] = ()
    probe_loss: str | None = None  # the linear probe's loss where the method probes
    options: Mapping[str, object] = field(default_factory=dict)  # defaults of the TURN options it takes
    trains_on_true_labels: bool = False  # the clean reference: needs ground truth
    run_standalone: Callable[..., dict] | None = None
    bench_only: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"method {self.name!r}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if bool(self.stages) == (self.run_standalone is not None):
            raise ValueError(f"method {self.name!r}: give either stages or run_standalone")
        if self.run_standalone is not None and not self.bench_only:
            raise ValueError(f"method {self.name!r} runs outside a run folder: say why in bench_only")


_METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add `method` to the registry under its name (once)."""
    if method.name in _METHODS:
        raise ValueError(f"method {method.name!r} is already registered")
    _METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The registered method called `name`; ValueError naming the choices otherwise."""
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(_METHODS)}") from None


def list_methods(include_bench_only: bool = False) -> list[str]:
    """Method names in registration order: those `turn run` and the app offer, and with
    `include_bench_only` also the baselines only `turn bench` runs."""
    return [name for name, m in _METHODS.items() if include_bench_only or not m.bench_only]


def run_standalone(name: str, config, run_dir: str | Path) -> dict:
    """Run a benchmark-only method: `config` gives data, noise, model, epochs, seed and
    device; config.json and metrics.json are written into `run_dir`."""
    method = get_method(name)
    if method.run_standalone is None:
        raise ValueError(f"{name} runs in a run folder (runner.run_turn), not standalone")
    return method.run_standalone(config, Path(run_dir))
