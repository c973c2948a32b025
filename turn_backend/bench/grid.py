"""The benchmark grid: method / noise-setting specs, the plan of cells, running one cell
and flattening its metrics into a results.csv row."""

from __future__ import annotations

import json
import re
import shutil
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from turn_backend.config import RunConfig
from turn_backend.methods import get_method, list_methods, run_standalone
from turn_backend.runfolder import RunFolder

SETTINGS_FULL = ["sym20", "sym60", "asym40", "inst40"]
# every registered method, the clean-label reference last
METHODS_FULL = sorted(list_methods(include_bench_only=True), key=lambda m: get_method(m).trains_on_true_labels)
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


def parse_bool(text: str) -> bool:
    """'true' / 'false' (also 1/0, yes/no) of a method override."""
    value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(text.lower())
    if value is None:
        raise ValueError(f"expected true or false, got {text!r}")
    return value


# TURN+ development: each of its changes undone (or an option added) beside the published
# method, on the dev settings, every seed.
TURNPLUS_DEV = [
    ("turn", "TURN as published (GMM on the losses, N = min_c \\|D_c\\| per class, 4 rounds)"),
    ("turn+:scoring=gmm", "turn+ selecting by TURN's GMM on the losses (relabelling by the model's own "
                          "prediction), not by the combined detection score"),
    ("turn+:balance=min", "turn+ drawing N = min_c \\|D_c\\| per class, as TURN"),
    ("turn+:fft_epochs=4", "turn+ with TURN's 4 rounds"),
    ("turn+", "turn+ (the product's default)"),
    ("turn+:cleanse_interval=2", "turn+ re-selecting every other round (rounds 1, 3, 5)"),
    ("turn+:holdout=0.1", "turn+ holding out 10% of round 1's confident samples to choose fine-tuned vs probe"),
    ("turn+:lr_decay=cosine", "turn+ with the fine-tuning LR decayed over the rounds (cosine, round 5 at 0.1x)"),
    ("turn+:probe_ensemble=false", "turn+ ending with the fine-tuned model alone, not averaged with the probe "
                                   "on the cleaned labels"),
]
OVERRIDE_KEYS = {"tau": float, "lp_epochs": int, "fft_epochs": int, "balance": str, "cleansing": str,
                 "warmup_backbone_lr": float, "relabel_confidence": float, "gce_q": float,
                 "holdout": float, "scoring": str, "cleanse_interval": int,
                 "lr_decay": str, "probe_ensemble": parse_bool}
NOISE_NAMES = {"sym": "symmetric", "asym": "asymmetric", "inst": "instance"}
# The small set: a few hundred images of two look-alike classes, as people audit by hand.
SMALL_CLASSES = (0, 6)  # Fashion-MNIST T-shirt/top vs Shirt
SMALL_N_TRAIN, SMALL_N_TEST = 400, 400
SMALL_SETTINGS = ["sym20", "sym40"]
SMALL_SEEDS = 10
# what a run times (timings.json keys, RunContext.add_time), in the order they run
TIMED_STAGES = ("data", "features", "audit", "lp", "scoring", "detect", "gmm", "fft", "eval", "choice", "final",
          "projection")


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
    base, _, rest = spec.partition(":")
    method = get_method(base)  # ValueError naming the choices
    overrides = {}
    for part in filter(None, rest.split(",")):
        key, eq, value = part.partition("=")
        if not eq or key not in OVERRIDE_KEYS:
            raise ValueError(f"bad override {part!r} in {spec!r}; keys: {', '.join(OVERRIDE_KEYS)}")
        overrides[key] = OVERRIDE_KEYS[key](value)
    if overrides and method.run_standalone is not None:
        raise ValueError(f"{base} takes no overrides")
    return base, overrides


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name)


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
    small: bool = False  # also the grid's methods on the small two-class set (group "small")
    small_seeds: list[int] = field(default_factory=list)
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
        model=args.model, seeds=[getattr(args, "first_seed", 0) + k for k in range(args.seeds or (1 if q else 2))],
        n_train=args.n_train or (1000 if q else 1500), n_test=args.n_test or (500 if q else 1000),
        image_size=args.image_size or 48, settings=list(settings), methods=list(methods),
        lp_epochs=args.lp_epochs, fft_epochs=args.fft_epochs, batch_size=args.batch_size, device=args.device,
        ablation_setting=ablation, dev_settings=list(dev), throughput=not args.no_throughput, quick=q,
        small=not (q or getattr(args, "no_small", False)),
        command="turn bench " + " ".join(sys.argv[2:] if len(sys.argv) > 1 and sys.argv[1] == "bench" else []),
    )
    for seed in plan.seeds:
        for setting in plan.settings:
            for m in plan.methods:
                plan.cells.append((m, setting, seed, "grid"))
    if plan.small:
        plan.small_seeds = [plan.seeds[0] + k for k in range(getattr(args, "small_seeds", None) or SMALL_SEEDS)]
        for seed in plan.small_seeds:
            for setting in SMALL_SETTINGS:
                for m in plan.methods:
                    plan.cells.append((m, setting, seed, "small"))
    first = plan.seeds[:1]
    if ablation is not None:
        specs = [s for s, _ in ABLATION] + [f"turn:tau={t:g}" if t != 0.6 else "turn" for t in TAUS]
        for spec in dict.fromkeys(specs):
            for seed in first:
                plan.cells.append((spec, ablation, seed, "ablation"))
    for setting in plan.dev_settings:  # every seed: a one-seed difference is not a result
        parse_setting(setting)
        for spec, _ in TURNPLUS_DEV:
            for seed in plan.seeds:
                plan.cells.append((spec, setting, seed, "dev"))
    # a cell asked for by several groups runs once
    seen, unique = set(), []
    for cell in plan.cells:
        key = cell if cell[3] == "small" else cell[:3]
        if key not in seen:
            seen.add(key)
            unique.append(cell)
    plan.cells = unique
    return plan


# ----------------------------------------------------------------------------- running cells


def cell_config(plan: Plan, base: str, overrides: dict, setting: str, seed: int, group: str = "grid"):
    kind, rate = parse_setting(setting)
    noise = {"kind": "none"} if base == "fft-true" or kind == "none" else {"kind": kind, "rate": rate, "seed": seed}
    dataset = {"kind": "demo", "n_train": plan.n_train, "n_test": plan.n_test}
    if group == "small":
        dataset = {"kind": "demo", "n_train": SMALL_N_TRAIN, "n_test": SMALL_N_TEST, "classes": list(SMALL_CLASSES)}
    settings = dict(
        dataset=dataset, noise=noise, model=plan.model,
        method=base, image_size=plan.image_size, batch_size=plan.batch_size, lp_epochs=plan.lp_epochs,
        fft_epochs=plan.fft_epochs, seed=seed, device=plan.device, num_workers=0, projection_methods=[],
    )
    settings.update(overrides)
    return RunConfig(**settings)


def cell_dir(plan: Plan, method: str, setting: str, seed: int, group: str = "grid") -> Path:
    base, _ = parse_method(method)
    if base == "fft-true":  # trains on the true labels: one run per seed serves every setting
        setting = "clean"
    runs = plan.out / "runs" / ("small" if group == "small" else "")
    return runs / setting / f"{_safe(method)}-s{seed}"


def run_config(config: RunConfig, run_dir: Path) -> dict:
    """Run `config` in this process (a standalone method's own way, else the staged run) into
    `run_dir`; returns its metrics."""
    from turn_backend.runner import run_turn  # torch

    old = signal.getsignal(signal.SIGTERM)
    try:
        if get_method(config.method).run_standalone is not None:
            return run_standalone(config.method, config, run_dir)
        return run_turn(config, run_dir)
    finally:
        signal.signal(signal.SIGTERM, old)  # run_turn installs a stop handler


def run_cell(plan: Plan, method: str, setting: str, seed: int, group: str = "grid") -> tuple[dict, bool]:
    """The metrics of one cell, and whether they were reused from an earlier run."""
    run_dir = cell_dir(plan, method, setting, seed, group)
    done = RunFolder(run_dir).metrics_path
    if done.exists():
        return json.loads(done.read_text()), True
    if run_dir.exists():
        shutil.rmtree(run_dir)
    base, overrides = parse_method(method)
    metrics = run_config(cell_config(plan, base, overrides, setting, seed, group), run_dir)
    # only a resume reads the checkpoint, and a finished cell is never resumed: about 25 MB a
    # fine-tuned cell, 11 GB over the full grid
    RunFolder(run_dir).checkpoint_path.unlink(missing_ok=True)
    return metrics, False


def _rounds(run_dir: Path) -> list[dict]:
    try:
        return RunFolder(run_dir).rounds()
    except Exception:  # noqa: BLE001 - a cell with no rounds to read (a baseline's, or one that failed)
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
        fft_images = int(sum((r.get("n_selected") or metrics.get("n_train") or plan.n_train)
                             + (r.get("n_relabelled") or 0) for r in rounds))

    def per_round(key):
        return json.dumps([None if d is None else round(float(d.get(key, float("nan"))), 5) for d in dets])

    def each_round(key):  # the rounds' own values, where any round has them
        return json.dumps([r.get(key) for r in rounds]) if any(key in r for r in rounds) else ""

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
        "purity_per_round": json.dumps([None if p is None else round(p, 5)
                                        for p in metrics.get("purity_per_round") or []]),
        "precision_per_round": per_round("precision"), "recall_per_round": per_round("recall"),
        "f1_per_round": per_round("f1"),
        "final_precision": final.get("precision"), "final_recall": final.get("recall"), "final_f1": final.get("f1"),
        "final_purity": final.get("purity"), "final_n_kept": final.get("n_kept"),
        "fft_images": fft_images,
        "n_relabelled": each_round("n_relabelled"),
        "relabel_accuracy": each_round("relabel_accuracy"),
        "final_model": (metrics.get("final_model") or {}).get("chosen", ""),
        "test_acc_fft_last": (metrics.get("final_model") or {}).get("test_acc_fft", metrics.get("test_acc_last")),
        "test_acc_probe_last": (metrics.get("final_model") or {}).get("test_acc_probe"),
    }
    for stage in TIMED_STAGES:
        row[f"seconds_{stage}"] = sec.get(stage, 0.0)
    row["seconds_total"] = metrics.get("seconds_total")
    row["run_dir"] = str(run_dir)
    row["note"] = "one run on the true labels, shared by every setting" if base == "fft-true" else ""
    return row
