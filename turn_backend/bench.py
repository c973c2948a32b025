"""`turn bench`: TURN against its baselines, every number measured in one run on one machine.

    turn bench [--quick] [--out DIR] [--model NAME] [--seeds N] [--n-train N] [--n-test N]
               [--image-size N] [--settings sym20 sym60 asym40 inst40] [--methods ...]

A grid of methods x noise settings x seeds on the Fashion-MNIST demo. Each cell is a real
run: engine methods through `runner.run_turn`, DivideMix-LP / UNICON-LP / cleanlab+FFT
through `baselines_extra.run_extra` (same features, FFT epoch and evaluation). Writes

- `OUT/results.csv`: one row per method x setting x seed (accuracies, detection precision /
  recall / F1 and clean-set purity per round and of the final model, seconds per stage);
- `OUT/results.md`: mean +- std tables, ablations, throughput, the "where TURN does not win"
  analysis, and PNG plots under `OUT/plots/`;
- `docs/benchmarks.md` (+ `docs/bench/*.png`) for the full default run (`--docs` elsewhere).

A method is a name from `config.METHODS` or `baselines_extra.EXTRA_METHODS`, or an engine
method with config overrides, `base:key=value,...` (e.g. `turn:tau=0.3`,
`turn+:relabel_confidence=0.9`). Finished cells are reused when the command is run again
with the same --out (their metrics.json is kept), so an interrupted run continues.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import re
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from turn_backend.config import METHODS

SETTINGS_FULL = ["sym20", "sym60", "asym40", "inst40"]
METHODS_FULL = ["turn+", "turn", "lp-ce", "lp-gce", "lp-elr", "fft-ce", "fft-gce", "fft-elr",
                "dividemix-lp", "unicon-lp", "cleanlab-fft", "fft-true"]
SETTINGS_QUICK = ["sym60", "asym40"]
METHODS_QUICK = ["turn+", "turn", "lp-gce", "fft-ce", "dividemix-lp", "unicon-lp", "cleanlab-fft"]
# Table 4 of the paper (on one setting): LP or not, cleansing none / once / every round.
ABLATION = [
    ("turn", "TURN (LP-GCE, cleansing every round)"),
    ("turn:lp_epochs=0", "no LP: random head, then cleansing every round"),
    ("turn:cleansing=none", "LP, no cleansing (LP-FFT on every sample)"),
    ("turn:cleansing=once", "LP, cleansing once (round 1's clean set in every round)"),
]
TAUS = [0.3, 0.5, 0.6, 0.7, 0.9]  # Figure 3b
# TURN+ development: each change beside the published method, on the ablation settings.
TURNPLUS_DEV = [
    ("turn", "TURN as published (N = min_c \\|D_c\\| per class, 4 rounds)"),
    ("turn+:balance=min", "turn+ without mean balancing (min-balanced, 5 rounds)"),
    ("turn+", "turn+ (the product's default)"),
    ("turn+:warmup_backbone_lr=0", "+ round 1 trains the head alone (protects the LP head)"),
    ("turn+:relabel_confidence=0.9", "+ relabel flagged samples predicted with p >= 0.9"),
    ("turn+:fft_epochs=8", "+ 8 rounds (about FFT-CE's compute)"),
]
OVERRIDE_KEYS = {"tau": float, "lp_epochs": int, "fft_epochs": int, "balance": str, "cleansing": str,
                 "warmup_backbone_lr": float, "relabel_confidence": float, "gce_q": float}
NOISE_NAMES = {"sym": "symmetric", "asym": "asymmetric", "inst": "instance"}
FFT_ONLY = ("fft-ce", "fft-gce", "fft-elr", "fft-true")  # methods that do not need the cached features
DEFAULT_DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


# ----------------------------------------------------------------------------- specs


def parse_setting(name: str) -> tuple[str, float]:
    """'sym60' -> ('symmetric', 0.6); also 'asym40', 'inst40', 'none'."""
    if name in ("none", "clean"):
        return "none", 0.0
    m = re.fullmatch(r"(sym|asym|inst)(\d{1,3})", name)
    if not m or not 0 <= int(m.group(2)) <= 100:
        raise ValueError(f"bad noise setting {name!r}: use sym20, sym60, asym40, inst40 (kind + percent)")
    return NOISE_NAMES[m.group(1)], int(m.group(2)) / 100


def parse_method(spec: str) -> tuple[str, dict]:
    """'turn:tau=0.3,fft_epochs=2' -> ('turn', {'tau': 0.3, 'fft_epochs': 2})."""
    from turn_backend.baselines_extra import EXTRA_METHODS

    base, _, rest = spec.partition(":")
    if base not in METHODS and base not in EXTRA_METHODS:
        raise ValueError(f"unknown method {base!r}; choose from {', '.join([*METHODS, *EXTRA_METHODS])}")
    overrides = {}
    for part in filter(None, rest.split(",")):
        key, eq, value = part.partition("=")
        if not eq or key not in OVERRIDE_KEYS:
            raise ValueError(f"bad override {part!r} in {spec!r}; keys: {', '.join(OVERRIDE_KEYS)}")
        overrides[key] = OVERRIDE_KEYS[key](value)
    if overrides and base not in METHODS:
        raise ValueError(f"{base} takes no overrides")
    return base, overrides


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name)


# ----------------------------------------------------------------------------- arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="a smaller grid (1 seed, 1000 images at 48 px, 2 settings, 7 methods, no ablations)")
    parser.add_argument("--out", help="output folder (default runs/bench, or runs/bench-quick)")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--seeds", type=int, help="seeds per cell (default 2; quick 1)")
    parser.add_argument("--n-train", type=int, help="demo training images (default 1500; quick 1000)")
    parser.add_argument("--n-test", type=int, help="demo test images (default 1000; quick 500)")
    parser.add_argument("--image-size", type=int, help="input size (default 48)")
    parser.add_argument("--settings", nargs="+", help=f"noise settings (default {' '.join(SETTINGS_FULL)})")
    parser.add_argument("--methods", nargs="+", help="methods or variants (default: all; see the module doc)")
    parser.add_argument("--lp-epochs", type=int, default=20)
    parser.add_argument("--fft-epochs", type=int, help="FFT rounds / epochs (default: each method's own)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda (default auto)")
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
    parser.add_argument("--fresh", action="store_true", help="delete finished cells in --out and run them again")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from OUT/results.csv")
    parser.add_argument("--quiet", action="store_true")


@dataclass
class Plan:
    out: Path
    model: str
    seeds: list[int]
    n_train: int
    n_test: int
    image_size: int
    settings: list[str]
    methods: list[str]
    lp_epochs: int
    fft_epochs: int | None
    batch_size: int
    device: str
    ablation_setting: str | None
    dev_settings: list[str]
    throughput: bool
    quick: bool
    command: str
    cells: list[tuple[str, str, int, str]] = field(default_factory=list)  # (method, setting, seed, group)
    failed: list[str] = field(default_factory=list)


def make_plan(args) -> Plan:
    q = bool(args.quick)
    settings = args.settings or (SETTINGS_QUICK if q else SETTINGS_FULL)
    methods = args.methods or (METHODS_QUICK if q else METHODS_FULL)
    for s in settings:
        parse_setting(s)
    for m in methods:
        parse_method(m)
    ablation = None if (args.no_ablation or q) else args.ablation_setting
    if ablation is not None:
        parse_setting(ablation)
    dev = [] if (args.no_dev or q) else (args.dev_settings if args.dev_settings is not None else ["sym60", "asym40"])
    plan = Plan(
        out=Path(args.out or ("runs/bench-quick" if q else "runs/bench")),
        model=args.model, seeds=list(range(args.seeds or (1 if q else 2))),
        n_train=args.n_train or (1000 if q else 1500), n_test=args.n_test or (500 if q else 1000),
        image_size=args.image_size or 48, settings=list(settings), methods=list(methods),
        lp_epochs=args.lp_epochs, fft_epochs=args.fft_epochs, batch_size=args.batch_size, device=args.device,
        ablation_setting=ablation, dev_settings=list(dev), throughput=not args.no_throughput, quick=q,
        command="turn bench " + " ".join(sys.argv[2:] if len(sys.argv) > 1 and sys.argv[1] == "bench" else []),
    )
    for seed in plan.seeds:
        for setting in plan.settings:
            for m in plan.methods:
                plan.cells.append((m, setting, seed, "grid"))
    first = plan.seeds[:1]
    if ablation is not None:
        specs = [s for s, _ in ABLATION] + [f"turn:tau={t:g}" if t != 0.6 else "turn" for t in TAUS]
        for spec in dict.fromkeys(specs):
            for seed in first:
                plan.cells.append((spec, ablation, seed, "ablation"))
    for setting in plan.dev_settings:
        parse_setting(setting)
        for spec, _ in TURNPLUS_DEV:
            for seed in first:
                plan.cells.append((spec, setting, seed, "dev"))
    # a cell asked for by several groups runs once
    seen, unique = set(), []
    for cell in plan.cells:
        if cell[:3] not in seen:
            seen.add(cell[:3])
            unique.append(cell)
    plan.cells = unique
    return plan


# ----------------------------------------------------------------------------- running cells


def cell_config(plan: Plan, base: str, overrides: dict, setting: str, seed: int):
    from turn_backend.config import RunConfig

    kind, rate = parse_setting(setting)
    noise = {"kind": "none"} if base == "fft-true" or kind == "none" else {"kind": kind, "rate": rate, "seed": seed}
    engine_method = base if base in METHODS else "lp-ce"  # extra methods read everything but `method`
    settings = dict(
        dataset={"kind": "demo", "n_train": plan.n_train, "n_test": plan.n_test}, noise=noise, model=plan.model,
        method=engine_method, image_size=plan.image_size, batch_size=plan.batch_size, lp_epochs=plan.lp_epochs,
        fft_epochs=plan.fft_epochs, seed=seed, device=plan.device, num_workers=0, projection_methods=[],
    )
    settings.update(overrides)
    return RunConfig(**settings)


def cell_dir(plan: Plan, method: str, setting: str, seed: int) -> Path:
    base, _ = parse_method(method)
    if base == "fft-true":  # trains on the true labels: one run per seed serves every setting
        setting = "clean"
    return plan.out / "runs" / setting / f"{_safe(method)}-s{seed}"


def run_cell(plan: Plan, method: str, setting: str, seed: int) -> tuple[dict, bool]:
    """The metrics of one cell, and whether they were reused from an earlier run."""
    from turn_backend.baselines_extra import EXTRA_METHODS, run_extra
    from turn_backend.runner import run_turn

    run_dir = cell_dir(plan, method, setting, seed)
    done = run_dir / "metrics.json"
    if done.exists():
        return json.loads(done.read_text()), True
    if run_dir.exists():
        shutil.rmtree(run_dir)
    base, overrides = parse_method(method)
    config = cell_config(plan, base, overrides, setting, seed)
    old = signal.getsignal(signal.SIGTERM)
    try:
        if base in EXTRA_METHODS:
            return run_extra(base, config, run_dir), False
        return run_turn(config, run_dir), False
    finally:
        signal.signal(signal.SIGTERM, old)  # run_turn installs a stop handler


def _rounds(run_dir: Path) -> list[dict]:
    from turn_backend.runfolder import RunFolder

    try:
        return RunFolder(run_dir).rounds()
    except Exception:
        return []


def flatten(method: str, setting: str, seed: int, group: str, metrics: dict, run_dir: Path, plan: Plan) -> dict:
    """One results.csv row from a cell's metrics (lists JSON-encoded)."""
    base, overrides = parse_method(method)
    kind, rate = parse_setting(setting)
    sec = metrics.get("seconds", {}) or {}
    dets = metrics.get("detection_per_round") or []
    final = metrics.get("final_detection") or {}
    rounds = _rounds(run_dir)
    fft_images = None
    if rounds:
        fft_images = int(sum((r.get("n_selected") or plan.n_train) + (r.get("n_relabelled") or 0) for r in rounds))

    def per_round(key):
        return json.dumps([None if d is None else round(float(d.get(key, float("nan"))), 5) for d in dets])

    row = {
        "method": method, "base_method": base, "overrides": json.dumps(overrides), "group": group,
        "setting": setting, "noise_kind": kind, "noise_rate": rate,
        "noise_rate_actual": metrics.get("noise_rate"), "seed": seed,
        "model": plan.model, "n_train": metrics.get("n_train"), "n_test": metrics.get("n_test"),
        "image_size": plan.image_size,
        "test_acc_best": metrics.get("test_acc_best"), "test_acc_last": metrics.get("test_acc_last"),
        "test_acc_per_epoch": json.dumps([round(a, 5) for a in metrics.get("test_acc_per_epoch") or []]),
        "n_clean": metrics.get("n_clean"), "clean_purity": metrics.get("clean_purity"),
        "n_candidates": dets[0].get("n_kept") if dets and dets[0] else None,
        "clean_per_round": json.dumps(metrics.get("clean_per_round") or []),
        "purity_per_round": json.dumps([None if p is None else round(p, 5) for p in metrics.get("purity_per_round") or []]),
        "precision_per_round": per_round("precision"), "recall_per_round": per_round("recall"),
        "f1_per_round": per_round("f1"),
        "final_precision": final.get("precision"), "final_recall": final.get("recall"), "final_f1": final.get("f1"),
        "final_purity": final.get("purity"), "final_n_kept": final.get("n_kept"),
        "fft_images": fft_images,
        "n_relabelled": json.dumps([r.get("n_relabelled") for r in rounds]) if any("n_relabelled" in r for r in rounds) else "",
        "relabel_accuracy": json.dumps([r.get("relabel_accuracy") for r in rounds]) if any("relabel_accuracy" in r for r in rounds) else "",
    }
    for stage in ("data", "features", "lp", "scoring", "gmm", "fft", "eval", "final", "projection"):
        row[f"seconds_{stage}"] = sec.get(stage, 0.0)
    row["seconds_total"] = metrics.get("seconds_total")
    row["run_dir"] = str(run_dir)
    row["note"] = "one run on the true labels, shared by every setting" if base == "fft-true" else ""
    return row


# ----------------------------------------------------------------------------- throughput


def measure_throughput(plan: Plan, log) -> dict:
    """Feature extraction (the engine's function, data pipeline included) vs the bare forward
    pass on the same preprocessed batches; fills the feature cache the runs then share."""
    import torch

    from turn_backend.data.loaders import load_dataset
    from turn_backend.engine import Runtime, extract_features
    from turn_backend.models.core import Preprocess
    from turn_backend.models.registry import load_model
    from turn_backend.pipeline import ImageTensorDataset, make_loader
    from turn_backend.runner import TurnRun

    cfg = cell_config(plan, "lp-ce", {}, plan.settings[0], 0)
    rt = Runtime(plan.device)
    bundle = load_dataset(cfg.dataset)
    loaded = load_model(plan.model)
    p = loaded.preprocess
    pre = Preprocess(plan.image_size, p.mean, p.std, p.interpolation)
    owner = type("K", (), {"loaded": loaded, "config": cfg, "pre": pre})()
    tmp = plan.out / "throughput"
    tmp.mkdir(parents=True, exist_ok=True)
    out: dict = {"device": str(rt.device), "image_size": plan.image_size}
    total, seconds = 0, 0.0
    for split, images in (("train", bundle.train), ("test", bundle.test)):
        path = tmp / f"{split}.npy"
        if path.exists():
            path.unlink()
        t0 = time.time()
        extract_features(loaded.extractor, images, pre, path, rt, plan.batch_size, 0)
        seconds += time.time() - t0
        total += len(images)
        cache = TurnRun._feature_path(owner, images, split)
        if not cache.exists():
            cache.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), cache)
        else:
            path.unlink()
    out["features_images"] = total
    out["features_seconds"] = seconds
    out["features_images_per_s"] = total / seconds
    # the same first batches, preprocessed once, then the forward pass alone
    n = min(len(bundle.train), 1024)
    loader = make_loader(ImageTensorDataset(bundle.train, pre, train=False, index=np.arange(n)), plan.batch_size,
                         False, 0, 0)
    t0 = time.time()
    batches = [x for x, _, _ in loader]
    pipeline_s = time.time() - t0
    ext = loaded.extractor.to(rt.device).eval()
    with torch.inference_mode():
        ext(batches[0][:8].to(rt.device))  # warm-up
        if rt.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.time()
        for x in batches:
            ext(x.to(rt.device))
        if rt.device.type == "cuda":
            torch.cuda.synchronize()
        forward_s = time.time() - t0
    out.update(bare_images=n, bare_forward_seconds=forward_s, bare_images_per_s=n / forward_s,
               pipeline_only_seconds=pipeline_s, pipeline_images_per_s=n / pipeline_s,
               ratio_bare_to_extract=(n / forward_s) / out["features_images_per_s"])
    log(f"throughput: features {out['features_images_per_s']:.0f} img/s with the data pipeline, "
        f"bare forward {out['bare_images_per_s']:.0f} img/s")
    return out


# ----------------------------------------------------------------------------- machine


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


# ----------------------------------------------------------------------------- aggregation


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
    """Seconds per cell with the one-off feature extraction charged to the methods that use it
    (the runs themselves read the shared cache)."""
    base = df["seconds_total"].astype(float) - df["seconds_features"].astype(float)
    uses = ~df["base_method"].isin(FFT_ONLY)
    return base + (features_once or 0.0) * uses.astype(float)


def pivot_text(df: pd.DataFrame, value: str, methods: list[str], settings: list[str], scale=100.0, digits=1) -> str:
    lines = ["| method | " + " | ".join(settings) + " |", "|---|" + "---|" * len(settings)]
    for m in methods:
        cells = []
        for s in settings:
            g = df[(df["method"] == m) & (df["setting"] == s)]
            cells.append(fmt_ms(g[value].tolist(), scale, digits) if len(g) else "–")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _first(values):
    v = [x for x in values if x is not None]
    return v[0] if v else None


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
        means = {m: _mean_of(gm, "test_acc_best") for m, gm in g.groupby("method")}
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
            spread = max(mean_std(gt["test_acc_best"].tolist())[1],
                         mean_std(g[g["method"] == best_m]["test_acc_best"].tolist())[1]) * 100
            verdict = "wins" if gap >= 0 else "does not win"
            if abs(gap) <= spread:
                verdict += " (within one standard deviation across seeds, so not a clear result)"
            text = (f"- **{s}** ({noise:.0%} of labels actually wrong): {t} {verdict} — best test accuracy "
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
                    reasons.append(f"the GMM barely separates clean from noisy here (purity {pur:.0%} against "
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


# ----------------------------------------------------------------------------- plots


def make_plots(df: pd.DataFrame, plan: Plan, features_once: float | None, plot_dir: Path) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_dir.mkdir(parents=True, exist_ok=True)
    made = []
    setting = plan.ablation_setting or (plan.settings[1] if len(plan.settings) > 1 else plan.settings[0])
    g = df[(df["setting"] == setting) & (df["group"] == "grid")].copy()
    if not g.empty:
        g["t"] = time_with_features(g, features_once)
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for m, gm in g.groupby("method", sort=False):
            x, y = gm["t"].mean(), gm["test_acc_best"].mean() * 100
            ax.scatter(x, y, s=60 if parse_method(m)[0].startswith("turn") else 30,
                       marker="*" if parse_method(m)[0].startswith("turn") else "o")
            ax.annotate(m, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel("wall time per run, s (feature extraction charged to the methods that use it)")
        ax.set_ylabel("best test accuracy, %")
        ax.set_title(f"Accuracy vs time, {setting} (Figure 3a)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(plot_dir / "accuracy_vs_time.png", dpi=110)
        plt.close(fig)
        made.append(("accuracy_vs_time.png", f"Accuracy vs wall time on {setting}"))
    if plan.ablation_setting:
        rows = []
        for t in TAUS:
            spec = "turn" if t == 0.6 else f"turn:tau={t:g}"
            gt = df[(df["method"] == spec) & (df["setting"] == plan.ablation_setting)
                    & (df["seed"].isin(plan.seeds[:1]))]
            if len(gt):
                rows.append((t, _mean_of(gt, "test_acc_best"), _mean_of(gt, "test_acc_last"),
                             _mean_of(gt, "clean_purity"), _mean_of(gt, "n_clean")))
        if rows:
            a = np.array(rows, dtype=float)
            fig, ax = plt.subplots(figsize=(6, 4))
            ax.plot(a[:, 0], a[:, 1] * 100, "o-", label="best test acc")
            ax.plot(a[:, 0], a[:, 2] * 100, "s--", label="last test acc")
            ax.plot(a[:, 0], a[:, 3] * 100, "^:", label="round-1 clean-set purity")
            ax2 = ax.twinx()
            ax2.bar(a[:, 0], a[:, 4], width=0.04, alpha=0.2, color="grey")
            ax2.set_ylabel("round-1 clean-set size (bars)")
            ax.set_xlabel("tau")
            ax.set_ylabel("%")
            ax.set_title(f"TURN's sensitivity to tau, {plan.ablation_setting} (Figure 3b)")
            ax.legend(loc="lower left", fontsize=8)
            fig.tight_layout()
            fig.savefig(plot_dir / "tau_sensitivity.png", dpi=110)
            plt.close(fig)
            made.append(("tau_sensitivity.png", "TURN's accuracy and clean-set purity against tau"))
    tg = df[(df["group"] == "grid") & (df["base_method"].isin(["turn", "turn+"]))]
    if not tg.empty:
        fig, axes = plt.subplots(1, len(plan.settings), figsize=(3.2 * len(plan.settings), 3.2), sharey=True,
                                 squeeze=False)
        for ax, s in zip(axes[0], plan.settings):
            for m, gm in tg[tg["setting"] == s].groupby("method", sort=False):
                curves = [_json_list(x) for x in gm["purity_per_round"]]
                curves = [c for c in curves if c and all(v is not None for v in c)]
                if curves:
                    k = min(len(c) for c in curves)
                    mean = np.mean([c[:k] for c in curves], axis=0) * 100
                    ax.plot(range(1, k + 1), mean, "o-", label=m)
            ax.set_title(s)
            ax.set_xlabel("round")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("clean-set purity, %")
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(plot_dir / "purity_per_round.png", dpi=110)
        plt.close(fig)
        made.append(("purity_per_round.png", "Purity of TURN's clean set in each round"))
    return made


# ----------------------------------------------------------------------------- report


def build_report(df: pd.DataFrame, plan: Plan, machine: dict, throughput: dict | None, image_prefix: str,
                 plots: list[tuple[str, str]], started: str, finished: str, wall: float | None) -> str:
    grid = df[df["group"] == "grid"]
    settings = [s for s in plan.settings if s in set(grid["setting"])]
    methods = [m for m in plan.methods if m in set(grid["method"])]
    features_once = (throughput or {}).get("features_seconds")
    L = []
    w = L.append
    w("# TURN Studio benchmark")
    w("")
    w(f"Generated by `turn bench` ({'quick mode' if plan.quick else 'full grid'}); every number below comes "
      f"from this one run, on this one machine. Do not edit by hand: run the command again.")
    w("")
    w(f"- Command: `{plan.command.strip()}`")
    w(f"- Started {started}, finished {finished}" + (f", {wall / 60:.1f} min of wall time." if wall else "."))
    gpu = f", GPU {machine['gpu']}" if machine.get("gpu") else ""
    w(f"- Machine: {machine.get('cpu')}, {machine.get('cores')} cores{gpu}; torch {machine.get('torch')} "
      f"({machine.get('torch_threads')} thread(s): {machine.get('threads_reason', '')}), Python {machine.get('python')}; device `{machine.get('device')}`.")
    if machine.get("load_average") is not None:
        la = machine["load_average"]
        end = machine.get("load_average_end")
        w(f"- Load average (1/5/15 min) at the start: {la[0]:.1f} / {la[1]:.1f} / {la[2]:.1f}"
          + (f"; at the end: {end[0]:.1f} / {end[1]:.1f} / {end[2]:.1f}" if end else "")
          + ". Other work on the machine slows every method alike but adds noise to the times.")
    w(f"- Data: Fashion-MNIST demo, {plan.n_train} train / {plan.n_test} test images, {plan.image_size} px; "
      f"model `{plan.model}`; {len(plan.seeds)} seed(s) per cell (seed s: noise seed s and training seed s); "
      f"LP {plan.lp_epochs} epochs; FFT rounds: "
      + (f"{plan.fft_epochs} for every method." if plan.fft_epochs else "each method's default (TURN 4, TURN+ 5, FFT baselines 5)."))
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
    w("")
    w("## Best test accuracy (%), mean ± std over seeds")
    w("")
    w(pivot_text(grid, "test_acc_best", methods, settings))
    w("")
    w("## Last test accuracy (%)")
    w("")
    w(pivot_text(grid, "test_acc_last", methods, settings))
    w("")
    w("## Noisy-label detection by the final model (%)")
    w("")
    w("Flagged = clean probability <= tau (0.6) from the per-class GMM on the final model's per-sample losses "
      "(the same `fit_clean_probability` for every method), scored against the true noise. F1, then precision / recall.")
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
    w("## Wall time")
    w("")
    w("Seconds per run (mean over settings and seeds) by stage, as measured inside each run. The runs share one "
      "feature cache, filled once by the throughput step"
      + (f" in {features_once:.1f} s" if features_once else "")
      + "; the column *incl. features* charges that one-off cost to every method that uses the features "
      "(TURN, LP, DivideMix, UNICON, cleanlab), and the ratio is to FFT-CE on the same basis.")
    w("")
    gt = grid.copy()
    gt["t_feat"] = time_with_features(gt, features_once)
    stages = ["data", "lp", "scoring", "gmm", "fft", "eval", "final"]
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
    abl = df[df["setting"] == plan.ablation_setting] if plan.ablation_setting else df.iloc[0:0]
    abl = abl[abl["seed"].isin(plan.seeds[:1])]
    if len(abl):
        w(f"## Ablation (Table 4), {plan.ablation_setting}, seed {plan.seeds[0]}")
        w("")
        lines = ["| variant | what | best (%) | last (%) | round-1 kept | round-1 purity (%) | s |", "|---|---|---|---|---|---|---|"]
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
                lines.append(f"| {t:g} | {fmt_ms(g['test_acc_best'].tolist())} | {fmt_ms(g['test_acc_last'].tolist())} | "
                             f"{_mean_of(g, 'n_clean'):.0f} | {fmt_ms(g['clean_purity'].tolist())} | {fmt_ms(f1)} |")
        w("\n".join(lines))
        w("")
    dev = df[df["setting"].isin(plan.dev_settings) & df["seed"].isin(plan.seeds[:1])]
    if plan.dev_settings and len(dev):
        w("## TURN+ development: each change measured beside TURN as published")
        w("")
        w(f"Seed {plan.seeds[0]}; each row changes one thing relative to the turn+ row (see `TURN_PLUS_DEFAULTS` in "
          "`turn_backend/config.py` for what turn+ currently uses). *FFT images*: images fine-tuned on, all rounds.")
        w("")
        head = "| variant | what | " + " | ".join(f"{s} best (%) | {s} last (%)" for s in plan.dev_settings)
        lines = [head + " | FFT images | s |", "|---|---|" + "---|---|" * len(plan.dev_settings) + "---|---|"]
        for spec, what in TURNPLUS_DEV:
            g = dev[dev["method"] == spec]
            if not len(g):
                continue
            cells = []
            for s in plan.dev_settings:
                gs = g[g["setting"] == s]
                cells += [fmt_ms(gs["test_acc_best"].tolist()), fmt_ms(gs["test_acc_last"].tolist())]
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
    if throughput:
        w("## Throughput")
        w("")
        t = throughput
        w(f"- Feature extraction (the engine's `extract_features`, data pipeline included): "
          f"{t['features_images']} images in {t['features_seconds']:.1f} s = **{t['features_images_per_s']:.0f} images/s** "
          f"at {t['image_size']} px on `{t['device']}`.")
        w(f"- The bare forward pass on the same preprocessed batches ({t['bare_images']} images): "
          f"**{t['bare_images_per_s']:.0f} images/s**; preprocessing alone {t['pipeline_images_per_s']:.0f} images/s. "
          f"Ratio bare / full = {t['ratio_bare_to_extract']:.2f} (above 1: the share of the time the data pipeline "
          f"and the write to the cache cost).")
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
              f"({plan.n_train / per_epoch.median():.0f} images/s, forward + backward + update, augmentation included).")
        w("")
    findings = where_turn_loses(df, settings)
    if findings:
        w("## Where TURN does not win, and why")
        w("")
        w("Computed from the tables above (best test accuracy, mean over seeds; the best rival excludes `fft-true`).")
        w("")
        L.extend(findings)
        w("")
    if plots:
        w("## Plots")
        w("")
        for name, title in plots:
            w(f"![{title}]({image_prefix}{name})")
            w("")
    w("## Files")
    w("")
    w("`results.csv` holds one row per method x setting x seed: accuracies (best, last, per epoch), detection "
      "precision / recall / F1 and clean-set purity per round (JSON lists) and of the final model, seconds per stage "
      "and in total, and the run folder of the cell.")
    return "\n".join(L) + "\n"


# ----------------------------------------------------------------------------- main


def _eta(done_s: list[float], remaining: int) -> str:
    if not done_s:
        return "?"
    return f"{np.mean(done_s) * remaining / 60:.0f} min"


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
        log(f"benchmark: {len(plan.cells)} cells -> {out}; machine {machine['cpu']}, {machine['cores']} cores")
        throughput = measure_throughput(plan, log) if plan.throughput else None
        rows, durations, failed = [], [], []
        for k, (method, setting, seed, group) in enumerate(plan.cells, start=1):
            t0 = time.time()
            try:
                metrics, reused = run_cell(plan, method, setting, seed)
            except Exception as exc:  # one broken cell must not lose the others
                import traceback

                from turn_backend.runner import StopRequested

                if isinstance(exc, StopRequested):  # SIGTERM: stop the whole benchmark
                    raise

                log(f"[{k}/{len(plan.cells)}] {setting} {method} seed {seed}: FAILED {type(exc).__name__}: {exc}")
                log_file.write(traceback.format_exc())
                failed.append(f"{setting} {method} seed {seed}: {type(exc).__name__}: {exc}")
                continue
            if not reused:
                durations.append(time.time() - t0)
            rows.append(flatten(method, setting, seed, group, metrics, cell_dir(plan, method, setting, seed), plan))
            pd.DataFrame(rows).to_csv(csv_path, index=False)
            log(f"[{k}/{len(plan.cells)}] {setting} {method} seed {seed}: best {metrics.get('test_acc_best', 0):.1%}, "
                f"last {metrics.get('test_acc_last', 0):.1%}, {metrics.get('seconds_total', 0):.0f} s"
                + (" (reused)" if reused else "") + f"; ETA {_eta(durations, len(plan.cells) - k)}")
        if not rows:
            raise RuntimeError(f"every cell failed; see {out / 'bench.log'}")
        df = pd.DataFrame(rows)
        finished = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        wall = time.time() - t_start
        try:
            machine["load_average_end"] = list(os.getloadavg())
        except OSError:
            pass
        state = {"machine": machine, "throughput": throughput, "started": started, "finished": finished,
                 "wall_seconds": wall, "command": plan.command, "failed": failed}
        state_path.write_text(json.dumps(state, indent=2))
    plan.command = state.get("command", plan.command)
    plan.failed = state.get("failed", [])
    features_once = (throughput or {}).get("features_seconds")
    plots = make_plots(df, plan, features_once, out / "plots")
    (out / "results.md").write_text(build_report(df, plan, machine, throughput, "plots/", plots, started, finished, wall))
    log(f"wrote {csv_path} and {out / 'results.md'}")
    docs = None if args.no_docs else (Path(args.docs) if args.docs else (None if plan.quick else DEFAULT_DOCS))
    if docs is not None:
        img_dir = docs.parent / "bench"
        img_dir.mkdir(parents=True, exist_ok=True)
        for name, _ in plots:
            shutil.copy(out / "plots" / name, img_dir / name)
        docs.write_text(build_report(df, plan, machine, throughput, "bench/", plots, started, finished, wall))
        log(f"wrote {docs}")
    log_file.close()
    return 0
