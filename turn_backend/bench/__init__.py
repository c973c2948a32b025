"""`turn bench`: TURN against its baselines, every number measured in one run on one machine.

    turn bench [--quick] [--out DIR] [--model NAME] [--seeds N] [--n-train N] [--n-test N]
               [--image-size N] [--settings sym20 sym60 asym40 inst40] [--methods ...]

A grid of methods x noise settings x seeds on the Fashion-MNIST demo. Each cell is a real
run: methods with run-folder stages through `runner.run_turn`, the benchmark-only
DivideMix-LP / UNICON-LP / cleanlab+FFT through `methods.run_standalone` (same features, FFT
epoch and evaluation). Writes

- `OUT/results.csv`: one row per method x setting x seed (accuracies, detection precision /
  recall / F1 and clean-set purity per round and of the final model, seconds per stage);
- `OUT/results.md`: mean +- std tables, ablations, throughput, the "where TURN does not win"
  analysis, and PNG plots under `OUT/plots/`;
- `docs/benchmarks.md` (+ `docs/bench/*.png`) for the full default run (`--docs` elsewhere).

A method is a name from the registry (`turn_backend.methods.list_methods(include_bench_only=True)`),
or a run-folder method with config overrides, `base:key=value,...` (e.g. `turn:tau=0.3`,
`turn+:relabel_confidence=0.9`). Finished cells are reused when the command is run again
with the same --out (their metrics.json is kept), so an interrupted run continues.
"""

from turn_backend.bench.command import add_arguments, main
from turn_backend.bench.grid import Plan, make_plan, parse_method, parse_setting
from turn_backend.bench.report import aggregate, fmt_ms, mean_std, pivot_text, time_with_features

__all__ = ["Plan", "add_arguments", "aggregate", "fmt_ms", "main", "make_plan", "mean_std", "parse_method",
           "parse_setting", "pivot_text", "time_with_features"]
