"""Aggregation over seeds and the Markdown report (results.md, docs/benchmarks.md)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from turn_backend.bench.grid import (
    ABLATION,
    SMALL_CLASSES,
    SMALL_N_TEST,
    SMALL_N_TRAIN,
    SMALL_SETTINGS,
    TAUS,
    TIMED_STAGES,
    TURNPLUS_DEV,
    Plan,
    parse_method,
)
from turn_backend.methods import get_method
from turn_backend.noise import FASHION_MNIST_CLASSES


def mean_std(values) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for one value) and count of the finite values."""
    v = np.asarray([x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))], dtype=float)
    if not len(v):
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v)


def fmt_ms(values, scale: float = 100.0, digits: int = 1) -> str:
    m, s, n = mean_std(values)
    if n == 0:
        return "–"
    return f"{m * scale:.{digits}f}" if n == 1 else f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"


def aggregate(df: pd.DataFrame, value: str, rows: str = "method", cols: str = "setting") -> pd.DataFrame:
    """mean, std and n of `value` over seeds for every (rows, cols) pair (long format)."""
    out = []
    for (r, c), g in df.groupby([rows, cols], sort=False):
        m, s, n = mean_std(g[value].tolist())
        out.append({rows: r, cols: c, "mean": m, "std": s, "n": n})
    return pd.DataFrame(out, columns=[rows, cols, "mean", "std", "n"])


def time_with_features(df: pd.DataFrame, features_once: float | None) -> pd.Series:
    """Seconds per cell with the one-off feature extraction charged to every method (the runs
    themselves read the shared cache). Every run extracts the pre-trained features: the audit
    and the final detection read them, whatever the method."""
    base = df["seconds_total"].astype(float) - df["seconds_features"].astype(float)
    return base + (features_once or 0.0)


def pivot_text(df: pd.DataFrame, value: str, methods: list[str], settings: list[str], scale=100.0, digits=1) -> str:
    lines = ["| method | " + " | ".join(settings) + " |", "|---|" + "---|" * len(settings)]
    for m in methods:
        cells = []
        for s in settings:
            g = df[(df["method"] == m) & (df["setting"] == s)]
            cells.append(fmt_ms(g[value].tolist(), scale, digits) if len(g) else "–")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)



def verdict_row(df: pd.DataFrame, settings: list[str], method: str = "turn+", value: str = "test_acc_last") -> str:
    """'| method >= every baseline | ✓ / ✗ (margin) |' per setting: the mean over seeds of
    `method` against the best other method that does not read the true labels."""
    cells = []
    for s in settings:
        g = df[df["setting"] == s]
        means = {m: _mean_of(gm, value) for m, gm in g.groupby("method")}
        rivals = {m: v for m, v in means.items() if m != method and parse_method(m)[0] not in ("fft-true", "turn+")
                  and not math.isnan(v)}
        if method not in means or not rivals:
            cells.append("–")
            continue
        best = max(rivals, key=rivals.get)
        gap = (means[method] - rivals[best]) * 100
        cells.append(f"{'✓' if gap >= 0 else '✗'} {gap:+.1f} vs {best}")
    return f"| **{method} >= every baseline?** | " + " | ".join(cells) + " |"


def last_accuracy_table(df: pd.DataFrame, methods: list[str], settings: list[str]) -> str:
    """Last-round test accuracy per method and setting, with the TURN+ verdict row."""
    text = pivot_text(df, "test_acc_last", methods, settings)
    return text + ("\n" + verdict_row(df, settings) if "turn+" in methods else "")


def _json_list(cell) -> list:
    if cell is None or (isinstance(cell, float) and math.isnan(cell)) or cell == "":
        return []
    return json.loads(cell)


def _mean_of(g: pd.DataFrame, col: str) -> float:
    return mean_std(g[col].tolist())[0]


def where_turn_loses(df: pd.DataFrame, settings: list[str]) -> list[str]:
    """Findings computed from the numbers: per setting, TURN / TURN+ against the best
    baseline, with the clean-set sizes and purities that explain the gap."""
    lines = []
    grid = df[df["group"] == "grid"]
    for s in settings:
        g = grid[grid["setting"] == s]
        if g.empty:
            continue
        means = {m: _mean_of(gm, "test_acc_last") for m, gm in g.groupby("method")}
        rivals = {m: v for m, v in means.items() if parse_method(m)[0] not in ("turn", "turn+", "fft-true")
                  and not math.isnan(v)}
        if not rivals:
            continue
        best_m = max(rivals, key=rivals.get)
        noise = _mean_of(g[g["base_method"] != "fft-true"], "noise_rate_actual")
        for t in ("turn", "turn+"):
            if t not in means:
                continue
            gt = g[g["method"] == t]
            gap = (means[t] - rivals[best_m]) * 100
            size, cand, pur = _mean_of(gt, "n_clean"), _mean_of(gt, "n_candidates"), _mean_of(gt, "clean_purity")
            n = _mean_of(gt, "n_train")
            fft_imgs = _mean_of(gt, "fft_images")
            best_imgs = _mean_of(g[g["method"] == best_m], "fft_images")
            last_pur = [(_json_list(x) or [None])[-1] for x in gt["purity_per_round"]]
            lp = mean_std(last_pur)[0]
            spread = max(mean_std(gt["test_acc_last"].tolist())[1],
                         mean_std(g[g["method"] == best_m]["test_acc_last"].tolist())[1]) * 100
            verdict = "wins" if gap >= 0 else "does not win"
            if abs(gap) <= spread:
                verdict += " (within one standard deviation across seeds, so not a clear result)"
            text = (f"- **{s}** ({noise:.0%} of labels actually wrong): {t} {verdict} — last-round test accuracy "
                    f"{means[t]:.1%} vs {best_m} {rivals[best_m]:.1%} ({gap:+.1f} pt).")
            if not math.isnan(size):
                text += (f" Its round-1 clean set: {size:.0f} distinct samples ({size / n:.0%} of the training set) "
                         f"out of {cand:.0f} GMM candidates, {pur:.1%} pure (last round {lp:.1%}).")
            if not math.isnan(fft_imgs):
                text += f" It fine-tuned on {fft_imgs:.0f} images in all"
                text += (f", {best_m} on {best_imgs:.0f}." if not math.isnan(best_imgs) else ".")
            if gap < 0 and not math.isnan(size):
                reasons = []
                if pur < 1 - noise + 0.15:
                    reasons.append(f"its selection barely separates clean from noisy here (purity {pur:.0%} against "
                                   f"{1 - noise:.0%} for the raw labels)")
                if size / n < 0.4:
                    reasons.append(f"the clean set is small ({size / n:.0%} of the data), so FFT sees few images")
                if cand > 0 and size < 0.8 * cand:
                    reasons.append(f"min-balancing discards {1 - size / cand:.0%} of its own candidates")
                if not math.isnan(lp) and lp < pur - 0.02:
                    reasons.append(f"its clean set gets less pure over the rounds ({pur:.0%} -> {lp:.0%}): noisy "
                                   f"labels that slipped into round 1 are memorised and then look clean")
                if parse_method(best_m)[0].startswith("lp-") or best_m.endswith("-lp"):
                    reasons.append(f"the best method here never fine-tunes the backbone ({best_m}): the frozen "
                                   f"features already separate the classes and a linear head cannot memorise "
                                   f"the noise the way full fine-tuning does")
                if "fft-true" in means and "lp-gce" in means:
                    head_room = (means["fft-true"] - means["lp-gce"]) * 100
                    if head_room < 5:
                        reasons.append(f"even on the true labels full fine-tuning reaches only {means['fft-true']:.1%} "
                                       f"(fft-true), {head_room:+.1f} pt over LP-GCE on the noisy labels, so at this "
                                       f"data size fine-tuning has little to add")
                if reasons:
                    text += " Why: " + "; ".join(reasons) + "."
            lines.append(text)
    return lines




def paired_time_ratio(df: pd.DataFrame, method: str, reference: str, col: str = "t_feat") -> list[float]:
    """`method`'s time over `reference`'s for every (setting, seed) both ran."""
    a = df[df["method"] == method].set_index(["setting", "seed"])[col]
    b = df[df["method"] == reference].set_index(["setting", "seed"])[col]
    both = a.index.intersection(b.index)
    return [float(a[k] / b[k]) for k in both if b[k] > 0]


@dataclass
class _Report:
    """What the sections of the report read: the arguments of build_report, and the grid's rows,
    settings and methods."""

    df: pd.DataFrame
    plan: Plan
    machine: dict
    throughput: dict | None
    image_prefix: str
    plots: list[tuple[str, str]]
    started: str
    finished: str
    wall: float | None
    grid: pd.DataFrame = field(init=False)
    settings: list[str] = field(init=False)
    methods: list[str] = field(init=False)
    features_once: float | None = field(init=False)

    def __post_init__(self) -> None:
        self.grid = self.df[self.df["group"] == "grid"]
        self.settings = [s for s in self.plan.settings if s in set(self.grid["setting"])]
        self.methods = [m for m in self.plan.methods if m in set(self.grid["method"])]
        self.features_once = (self.throughput or {}).get("features_seconds")


def _intro(r: _Report) -> list[str]:
    """The title and how the numbers were made: command, machine, load, data, noise, caveats."""
    df, plan, machine, grid, settings = r.df, r.plan, r.machine, r.grid, r.settings
    started, finished, wall = r.started, r.finished, r.wall
    L: list[str] = []
    w = L.append
    w("# TURN Studio benchmark")
    w("")
    w(f"Generated by `turn bench` ({'quick mode' if plan.quick else 'full grid'}); every number from here to "
      f"\"Files\" comes from this one run, on this one machine. Do not edit by hand: run the command again. The "
      f"sections after \"Files\" come from other commands, each named in its section.")
    w("")
    w(f"- Command: `{plan.command.strip()}`")
    w(f"- Started {started}, finished {finished}" + (f", {wall / 60:.1f} min of wall time." if wall else ".")
      + (f" {machine['reused_cells']} of the {len(df)} cells had been finished by an earlier call of the same "
         "command into the same folder and were reused (their times are from then; `turn bench` reuses every "
         "finished cell)." if machine.get("reused_cells") else ""))
    gpu = f", GPU {machine['gpu']}" if machine.get("gpu") else ""
    jobs = machine.get("jobs", 1)
    w(f"- Machine: {machine.get('cpu')}, {machine.get('cores')} cores{gpu}; torch {machine.get('torch')} "
      f"({machine.get('torch_threads')} thread(s): {machine.get('threads_reason', '')}), "
      f"Python {machine.get('python')}; device `{machine.get('device')}`."
      + (f" {jobs} cells ran at once, each in its own process, so every time below is under that shared load."
         if jobs > 1 else ""))
    if machine.get("load_average") is not None:
        la = machine["load_average"]
        end = machine.get("load_average_end")
        w(f"- Load average (1/5/15 min) at the start: {la[0]:.1f} / {la[1]:.1f} / {la[2]:.1f}"
          + (f"; at the end: {end[0]:.1f} / {end[1]:.1f} / {end[2]:.1f}" if end else "")
          + ". Other work on the machine slows every method alike but adds noise to the times.")
    w(f"- Data: Fashion-MNIST demo, {plan.n_train} train / {plan.n_test} test images, {plan.image_size} px; "
      f"model `{plan.model}`; {len(plan.seeds)} seed(s) per cell (seed s: noise seed s and training seed s); "
      f"LP {plan.lp_epochs} epochs; FFT rounds: "
      + (f"{plan.fft_epochs} for every method." if plan.fft_epochs else
         f"each method's default (TURN {get_method('turn').default_rounds}, "
         f"TURN+ {get_method('turn+').default_rounds}, FFT baselines {get_method('fft-ce').default_rounds})."))
    noisy = grid[grid["base_method"] != "fft-true"]
    actual = noisy.groupby("setting")["noise_rate_actual"].mean()
    w("- Noise settings (fraction of training labels actually wrong): "
      + ", ".join(f"{s} {actual.get(s, float('nan')):.1%}" for s in settings) + ".")
    w("- Every method shares the engine's fine-tuning code path (`engine.fft_epoch`: same optimiser, learning "
      "rate, augmentation, frozen BatchNorm statistics) and its features (`engine.extract_features`, one cache).")
    w("- DivideMix-LP and UNICON-LP run on the cached features: two linear heads, their sample selection, label "
      "refinement / co-guessing, and **MixUp in feature space** (the two views of a sample are two dropout masks "
      "over its feature vector); UNICON's contrastive term is left out (it needs image augmentations). "
      "cleanlab+FFT: `cleanlab.filter.find_label_issues` on 5-fold out-of-fold logistic-regression probabilities "
      "of the cached features, then FFT-CE (fresh head, as the FFT-CE baseline) on the kept samples.")
    w("- `fft-true` trains on the true labels (the clean reference); it is one run per seed, repeated in every column.")
    for f in plan.failed:
        w(f"- **Failed cell** (see bench.log): {f}")
    not_started = machine.get("not_started") or []
    if not_started:
        names = [f"{m} {s}{' (small)' if g == 'small' else ''} seed {seed}" for m, s, seed, g in not_started]
        w(f"- **Stopped at the time limit** (`--time-limit {machine.get('time_limit_min'):g}` min): "
          f"{len(names)} of the plan's {len(names) + len(df)} cells did not start, and the tables hold only the "
          f"cells that ran. Not run: {', '.join(names[:12])}" + (", ..." if len(names) > 12 else "") + ".")
    w("")
    return L


def _last_accuracy(r: _Report) -> list[str]:
    """Last-round test accuracy: the table to judge methods by."""
    grid, settings, methods = r.grid, r.settings, r.methods
    L: list[str] = []
    w = L.append
    w("## Last-round test accuracy (%), mean ± std over seeds")
    w("")
    w("The accuracy of the classifier each run ends with: the last round's model (or LP epoch's); for TURN+ the "
      "last round's model averaged with a linear probe on the cleaned labels (`probe_ensemble`; the variant "
      "`turn+:probe_ensemble=false` ends with the fine-tuned model alone); for variants with `holdout` the model "
      "they chose on their held-out clean samples. The test set chooses nothing. This is the table to judge "
      "methods by.")
    w("")
    w(last_accuracy_table(grid, methods, settings))
    w("")
    return L


def _best_accuracy(r: _Report) -> list[str]:
    """Best-round test accuracy, for comparison with papers that pick the round on the test set."""
    grid, settings, methods = r.grid, r.settings, r.methods
    L: list[str] = []
    w = L.append
    w("## Best-round test accuracy (%)")
    w("")
    w("The best of the rounds, which picks the round by looking at the test set: reported for comparison with "
      "papers that do so, not to choose methods by.")
    w("")
    w(pivot_text(grid, "test_acc_best", methods, settings))
    w("")
    return L


def _small_set(r: _Report) -> list[str]:
    """The small two-class set, where it ran."""
    df, plan = r.df, r.plan
    L: list[str] = []
    w = L.append
    small = df[df["group"] == "small"]
    if len(small):
        s_settings = [s for s in SMALL_SETTINGS if s in set(small["setting"])]
        s_methods = [m for m in plan.methods if m in set(small["method"])]
        names = " vs ".join(FASHION_MNIST_CLASSES[c] for c in SMALL_CLASSES)
        w(f"## Small set: {SMALL_N_TRAIN} images, two look-alike classes ({names})")
        w("")
        n_seeds = small["seed"].nunique()
        w(f"Fashion-MNIST's first {SMALL_N_TRAIN // 2} training images of each class, tested on "
          f"{SMALL_N_TEST // 2} per class; {n_seeds} seeds (`--small-seeds`: runs this small are cheap, and their "
          "accuracy spreads by several points from seed to seed). Last-round test accuracy (%):")
        w("")
        w(last_accuracy_table(small, s_methods, s_settings))
        w("")
        w("Best-round test accuracy (%):")
        w("")
        w(pivot_text(small, "test_acc_best", s_methods, s_settings))
        w("")
    return L


def _turn_plus(r: _Report) -> list[str]:
    """TURN+'s relabelling and its final classifier, where TURN+ ran."""
    df = r.df
    L: list[str] = []
    w = L.append
    plus = df[df["base_method"] == "turn+"]
    if len(plus) and "final_model" in plus.columns:
        w("## TURN+: relabelling, and the final classifier")
        w("")
        w("Relabelling: flagged samples that the detection posterior assigns to another class with probability "
          ">= 0.9 train with that label; per round, how many and how many of them got their true class. "
          "The final classifier: TURN+ averages the fine-tuned model's class probabilities with those of a linear "
          "probe on the frozen pre-trained features trained on the cleaned labels (`probe_ensemble`); variants "
          "with `holdout` set hold that share of round 1's confidently clean samples out of training and end with "
          "whichever of the two is more accurate on them (how often the fine-tuned model was kept). Test accuracy "
          "(%) of the fine-tuned model alone, of the probe alone, and of the classifier the run ends with; the "
          "test set plays no part in any of it.")
        w("")
        lines = ["| set | method | setting | relabelled per round | relabels right (%) | final classifier | "
                 "test acc. fine-tuned | test acc. probe | test acc. final |", "|---|---|---|---|---|---|---|---|---|"]
        for (group, m, s), g in plus.groupby(["group", "method", "setting"], sort=False):
            counts = [x for c in g["n_relabelled"] for x in _json_list(c) if x is not None]
            accs = [a for c in g["relabel_accuracy"] for a in _json_list(c) if a is not None]
            chosen = g["final_model"].fillna("").astype(str)
            if chosen.isin(["fft", "probe"]).any():
                final = f"fine-tuned kept {int((chosen == 'fft').sum())} of {int(chosen.isin(['fft', 'probe']).sum())}"
            elif (chosen == "ensemble").any():
                final = "fine-tuned + probe"
            else:
                final = "fine-tuned"
            probe = g["test_acc_probe_last"].dropna().tolist() if "test_acc_probe_last" in g else []
            lines.append(f"| {group} | {m} | {s} | {np.mean(counts) if counts else 0:.0f} | "
                         f"{fmt_ms(accs) if accs else '–'} | {final} | {fmt_ms(g['test_acc_fft_last'].tolist())} | "
                         f"{fmt_ms(probe) if probe else '–'} | {fmt_ms(g['test_acc_last'].tolist())} |")
        w("\n".join(lines))
        w("")
    return L


def _detection(r: _Report) -> list[str]:
    """Detection by each method's final model against the true noise."""
    grid, settings, methods = r.grid, r.settings, r.methods
    L: list[str] = []
    w = L.append
    w("## Noisy-label detection by the final model (%)")
    w("")
    w("Flagged = the final clean probability <= tau (0.6), what the app shows for each run, scored against the "
      "true noise: the combined detection score on the final model for TURN+ and the LP / FFT baselines; TURN's "
      "per-class GMM on the final model's per-sample losses for TURN as published (and for the bench-only "
      "DivideMix-LP, UNICON-LP and cleanlab+FFT, which keep no run folder). F1, then precision / recall.")
    w("")
    det = grid.copy()
    lines = ["| method | " + " | ".join(settings) + " |", "|---|" + "---|" * len(settings)]
    for m in methods:
        cells = []
        for s in settings:
            g = det[(det["method"] == m) & (det["setting"] == s)]
            if not len(g) or parse_method(m)[0] == "fft-true":
                cells.append("–")
                continue
            cells.append(f"{fmt_ms(g['final_f1'].tolist())} ({fmt_ms(g['final_precision'].tolist(), digits=0)} / "
                         f"{fmt_ms(g['final_recall'].tolist(), digits=0)})")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    w("\n".join(lines))
    w("")
    return L


def _clean_sets(r: _Report) -> list[str]:
    """The clean sets of the selecting methods: size and purity."""
    grid, settings, methods = r.grid, r.settings, r.methods
    L: list[str] = []
    w = L.append
    w("## The clean sets of the selecting methods")
    w("")
    w("Round 1 (TURN, TURN+) or the first selection (DivideMix / UNICON: first co-divided epoch, head 0's labeled "
      "set; cleanlab: its kept set): distinct samples kept, of how many, purity; then purity in the last round.")
    w("")
    sel = [m for m in methods if parse_method(m)[0] in ("turn", "turn+", "dividemix-lp", "unicon-lp", "cleanlab-fft")]
    lines = ["| method | setting | kept | purity round 1 (%) | purity last round (%) | detection F1 round 1 (%) |",
             "|---|---|---|---|---|---|"]
    for m in sel:
        for s in settings:
            g = grid[(grid["method"] == m) & (grid["setting"] == s)]
            if not len(g):
                continue
            last = [(_json_list(x) or [None])[-1] for x in g["purity_per_round"]]
            f1 = [(_json_list(x) or [None])[0] for x in g["f1_per_round"]]
            w_ = f"{_mean_of(g, 'n_clean'):.0f} / {_mean_of(g, 'n_train'):.0f}"
            lines.append(f"| {m} | {s} | {w_} | {fmt_ms(g['clean_purity'].tolist())} | {fmt_ms(last)} | {fmt_ms(f1)} |")
    w("\n".join(lines))
    w("")
    return L


def _wall_time(r: _Report) -> list[str]:
    """Seconds per run by stage, and TURN+ against FFT-CE paired by setting and seed."""
    grid, methods, features_once = r.grid, r.methods, r.features_once
    L: list[str] = []
    w = L.append
    w("## Wall time")
    w("")
    w("Seconds per run (mean over settings and seeds) by stage, as measured inside each run. The runs share one "
      "feature cache, filled once by the throughput step"
      + (f" in {features_once:.1f} s" if features_once else "")
      + "; the column *incl. features* charges that one-off cost to every method (every run extracts the "
      "features: the audit and the final detection read them), and the ratio is to FFT-CE on the same basis.")
    w("")
    gt = grid.copy()
    gt["t_feat"] = time_with_features(gt, features_once)
    # the features are charged above; the benchmark's runs make no projections
    stages = [st for st in TIMED_STAGES if st not in ("features", "projection") and f"seconds_{st}" in gt.columns]
    ref = gt[gt["base_method"] == "fft-ce"]["t_feat"].mean() if (gt["base_method"] == "fft-ce").any() else float("nan")
    lines = ["| method | " + " | ".join(stages) + " | total | incl. features | x FFT-CE |",
             "|---|" + "---|" * (len(stages) + 3)]
    for m in methods:
        g = gt[gt["method"] == m]
        if not len(g):
            continue
        cells = [f"{g[f'seconds_{st}'].astype(float).mean():.1f}" for st in stages]
        tf = g["t_feat"].mean()
        ratio = f"{tf / ref:.2f}" if ref == ref and ref > 0 else "–"
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {g['seconds_total'].astype(float).mean():.1f} | "
                     f"{tf:.1f} | {ratio} |")
    w("\n".join(lines))
    w("")
    pairs = paired_time_ratio(gt, "turn+", "fft-ce")
    if pairs:
        w(f"TURN+ / FFT-CE wall time, paired by setting and seed (same machine, minutes apart; features charged as "
          f"above): median **{np.median(pairs):.2f}x** (range {min(pairs):.2f}-{max(pairs):.2f}x, {len(pairs)} pairs).")
        w("")
    return L


def _ablation(r: _Report) -> list[str]:
    """The ablation (Table 4) and the tau sensitivity (Figure 3b), where they ran."""
    df, plan = r.df, r.plan
    L: list[str] = []
    w = L.append
    abl = df[df["setting"] == plan.ablation_setting] if plan.ablation_setting else df.iloc[0:0]
    abl = abl[abl["seed"].isin(plan.seeds[:1])]
    if len(abl):
        w(f"## Ablation (Table 4), {plan.ablation_setting}, seed {plan.seeds[0]}")
        w("")
        lines = ["| variant | what | best (%) | last (%) | round-1 kept | round-1 purity (%) | s |",
                 "|---|---|---|---|---|---|---|"]
        for spec, what in ABLATION:
            g = abl[abl["method"] == spec]
            if len(g):
                k = _mean_of(g, "n_clean")
                lines.append(f"| `{spec}` | {what} | {fmt_ms(g['test_acc_best'].tolist())} | "
                             f"{fmt_ms(g['test_acc_last'].tolist())} | {'–' if math.isnan(k) else f'{k:.0f}'} | "
                             f"{fmt_ms(g['clean_purity'].tolist())} | {_mean_of(g, 'seconds_total'):.0f} |")
        w("\n".join(lines))
        w("")
        w(f"### tau sensitivity (Figure 3b), TURN on {plan.ablation_setting}")
        w("")
        lines = ["| tau | best (%) | last (%) | round-1 kept | round-1 purity (%) | detection F1 round 1 (%) |",
                 "|---|---|---|---|---|---|"]
        for t in TAUS:
            g = abl[abl["method"] == ("turn" if t == 0.6 else f"turn:tau={t:g}")]
            if len(g):
                f1 = [(_json_list(x) or [None])[0] for x in g["f1_per_round"]]
                lines.append(f"| {t:g} | {fmt_ms(g['test_acc_best'].tolist())} | "
                             f"{fmt_ms(g['test_acc_last'].tolist())} | "
                             f"{_mean_of(g, 'n_clean'):.0f} | {fmt_ms(g['clean_purity'].tolist())} | {fmt_ms(f1)} |")
        w("\n".join(lines))
        w("")
    return L


def _development(r: _Report) -> list[str]:
    """TURN+'s development variants beside TURN+, where they ran."""
    df, plan = r.df, r.plan
    L: list[str] = []
    w = L.append
    dev = df[df["setting"].isin(plan.dev_settings)]
    if plan.dev_settings and len(dev):
        w("## TURN+ development: each change measured beside TURN as published")
        w("")
        w(f"Mean ± sd over {len(plan.seeds)} seed(s); each row changes one thing relative to the turn+ row (see "
          "`TURN_PLUS_DEFAULTS` in `turn_backend/methods/turn.py` for what turn+ uses). *FFT images*: images "
          "fine-tuned on, all rounds, per run.")
        w("")
        head = "| variant | what | " + " | ".join(f"{s} last (%) | {s} best (%)" for s in plan.dev_settings)
        lines = [head + " | FFT images | s |", "|---|---|" + "---|---|" * len(plan.dev_settings) + "---|---|"]
        for spec, what in TURNPLUS_DEV:
            g = dev[dev["method"] == spec]
            if not len(g):
                continue
            cells = []
            for s in plan.dev_settings:
                gs = g[g["setting"] == s]
                cells += [fmt_ms(gs["test_acc_last"].tolist()), fmt_ms(gs["test_acc_best"].tolist())]
            lines.append(f"| `{spec}` | {what} | " + " | ".join(cells) +
                         f" | {_mean_of(g, 'fft_images'):.0f} | {_mean_of(g, 'seconds_total'):.0f} |")
        w("\n".join(lines))
        rel = dev[dev["relabel_accuracy"].map(lambda c: isinstance(c, str) and c.startswith("["))]
        if len(rel):
            counts = [sum(x or 0 for x in _json_list(c)) for c in rel["n_relabelled"]]
            accs = [a for c in rel["relabel_accuracy"] for a in _json_list(c) if a is not None]
            w("")
            w(f"Relabelling: {np.mean(counts):.0f} relabelled images per run over all rounds on average; "
              f"the predicted label was the true one for {np.mean(accs):.1%} of them (mean over rounds).")
        w("")
    return L


def _throughput(r: _Report) -> list[str]:
    """Feature extraction against the bare forward, and per-stage speeds."""
    plan, machine, throughput, grid = r.plan, r.machine, r.throughput, r.grid
    L: list[str] = []
    w = L.append
    if throughput:
        w("## Throughput")
        w("")
        t = throughput
        gpu = f" ({machine['gpu']})" if machine.get("gpu") and t["device"].startswith("cuda") else ""
        w(f"- Feature extraction (the engine's `extract_features`: uint8 batches, resize and normalisation on the "
          f"device, forward, write to the cache): {t['features_images']} images in {t['features_seconds']:.1f} s = "
          f"**{t['features_images_per_s']:.0f} images/s** at {t['image_size']} px on `{t['device']}`{gpu}.")
        w(f"- The bare forward pass on batches already preprocessed and on the device ({t['bare_images']} images, "
          f"same precision): **{t['bare_images_per_s']:.0f} images/s**; preprocessing alone "
          f"{t['pipeline_images_per_s']:.0f} images/s. Feature extraction runs at "
          f"**{1 / t['ratio_bare_to_extract']:.0%} of the bare forward** (the rest is the data pipeline and the write "
          f"to the cache).")
        lp = grid[grid["base_method"].isin(["turn", "turn+", "lp-ce", "lp-gce", "lp-elr"])]["seconds_lp"].astype(float)
        if len(lp):
            w(f"- Linear probing ({plan.lp_epochs} epochs on cached features): median {lp.median():.2f} s per run.")
        tt = grid[grid["base_method"].isin(["turn", "turn+"])]
        if len(tt):
            n_r = tt["clean_per_round"].map(lambda c: max(1, len(_json_list(c))))
            gm = (tt["seconds_gmm"].astype(float) / n_r).median()
            sc = tt["seconds_scoring"].astype(float) / (n_r - 1).clip(lower=1)
            w(f"- Per-class GMM and selection: median {gm:.2f} s per round; scoring the training set "
              f"(rounds 2+): median {sc.median():.1f} s per round.")
        fc = grid[grid["base_method"] == "fft-ce"]
        if len(fc):
            per_epoch = fc["seconds_fft"].astype(float) / fc["fft_images"].astype(float) * plan.n_train
            w(f"- Full fine-tuning: median {per_epoch.median():.1f} s per epoch over {plan.n_train} images "
              f"({plan.n_train / per_epoch.median():.0f} images/s, forward + backward + update, "
              "augmentation included).")
        w("")
    return L


def _where_turn_loses(r: _Report) -> list[str]:
    """Where TURN does not win, computed from the tables."""
    df, settings = r.df, r.settings
    L: list[str] = []
    w = L.append
    findings = where_turn_loses(df, settings)
    if findings:
        w("## Where TURN does not win, and why")
        w("")
        w("Computed from the tables above (last-round test accuracy, mean over seeds; the best rival excludes "
          "`fft-true` and TURN+'s own variants).")
        w("")
        L.extend(findings)
        w("")
    return L


def _plots(r: _Report) -> list[str]:
    """The plots, where made."""
    image_prefix, plots = r.image_prefix, r.plots
    L: list[str] = []
    w = L.append
    if plots:
        w("## Plots")
        w("")
        for name, title in plots:
            w(f"![{title}]({image_prefix}{name})")
            w("")
    return L


def _files(r: _Report) -> list[str]:
    """What results.csv holds."""
    L: list[str] = []
    w = L.append
    w("## Files")
    w("")
    w("`results.csv` holds one row per method x setting x seed: accuracies (best, last, per epoch), detection "
      "precision / recall / F1 and clean-set purity per round (JSON lists) and of the final model, seconds per stage "
      "and in total, and the run folder of the cell.")
    return L


SECTIONS = (_intro, _last_accuracy, _best_accuracy, _small_set, _turn_plus, _detection, _clean_sets, _wall_time,
            _ablation, _development, _throughput, _where_turn_loses, _plots, _files)


def build_report(df: pd.DataFrame, plan: Plan, machine: dict, throughput: dict | None, image_prefix: str,
                 plots: list[tuple[str, str]], started: str, finished: str, wall: float | None) -> str:
    """results.md: one function per section (SECTIONS, in order), each returning its lines."""
    report = _Report(df, plan, machine, throughput, image_prefix, plots, started, finished, wall)
    return "\n".join(line for section in SECTIONS for line in section(report)) + "\n"
