"""`turn bench --photos`: the scan and TURN+ on a folder of JPEG files with label noise.

Users bring folders of photos, not arrays: this benchmark runs the product's own path on
one. `photo_folder.write_photo_folder` makes N colour JPEGs of 256 px (the demo's images
upscaled) in one subfolder per given label, with synthetic noise on the training split and
the true labels in a manifest. On it, each via the staged run (`turn run`'s code):

- the scan: `--method lp-gce` (features + linear probe + detection, no fine-tuning);
- TURN+ at the model's input size (224 px by default);
- TURN+ fine-tuning at 128 px, the cheaper CPU variant (features and flags at 128 px too).

Fine-tuning only the last blocks is not a run option, so it is not measured here.

Reported per run: F1 / precision / recall of the flags against the true labels, the
estimated noise rate (metrics.json, no truth read) beside the true one, test accuracy and
the wall time of each stage. Writes OUT/photos.csv and the "Real photos" section of
docs/benchmarks.md.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path

import pandas as pd

from turn_backend.bench.detection import replace_section
from turn_backend.bench.grid import parse_setting, run_config
from turn_backend.bench.machine import choose_threads, machine_info, progress_log
from turn_backend.bench.photo_folder import write_photo_folder
from turn_backend.config import RunConfig
from turn_backend.runfolder import RunFolder

SECTION_TITLE = "## Real photos: JPEG files with label noise"
DEFAULT_DOCS = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"
FILE_PX = 256  # the generated JPEGs' size
DEFAULT_SETTING = "sym40"


def variants(image_size: int) -> list[tuple[str, str, int]]:
    """(name, method, input size) of each run."""
    small = min(128, image_size)
    return [("scan (lp-gce)", "lp-gce", image_size), ("turn+", "turn+", image_size),
            (f"turn+ at {small} px", "turn+", small)]


def run_row(name: str, method: str, image_size: int, metrics: dict, wall: float, true_rate: float) -> dict:
    det = metrics.get("final_detection") or {}
    est = metrics.get("estimated_noise_rate") or {}
    row = {"run": name, "method": method, "image_size": image_size, "n_train": metrics.get("n_train"),
           "f1": det.get("f1"), "precision": det.get("precision"), "recall": det.get("recall"),
           "n_flagged": det.get("n_flagged", det.get("n_removed")), "true_noise_rate": true_rate,
           "estimated_noise_rate": est.get("rate"), "estimated_low": est.get("low"), "estimated_high": est.get("high"),
           "test_acc_best": metrics.get("test_acc_best"), "test_acc_last": metrics.get("test_acc_last"),
           "wall_seconds": wall}
    for stage, seconds in (metrics.get("seconds") or {}).items():
        row[f"seconds_{stage}"] = seconds
    return row


def _pct(x) -> str:
    return "–" if x is None or pd.isna(x) else f"{100 * float(x):.1f}"


def photos_section(df: pd.DataFrame, info: dict) -> str:
    """The docs section: what ran where, and one table row per run."""
    L = [SECTION_TITLE, ""]
    w = L.append
    w(f"{info['n_train']:,} training and {info['n_test']:,} test JPEGs of {FILE_PX} px (Fashion-MNIST upscaled and "
      f"tinted, `turn_backend/bench/photo_folder.py`), one folder per given label, {info['setting']} noise on the "
      f"training labels (actual rate {info['true_rate']:.1%}); model {info['model']}, {info['lp_epochs']} LP epochs, "
      f"{info['fft_epochs'] or 'the default number of'} fine-tuning rounds. Machine: {info['machine']}. Command: "
      f"`{info['command']}`; {info['when']}.")
    w("")
    stages = [c.removeprefix("seconds_") for c in df.columns if c.startswith("seconds_")]  # in the runs' order
    w("| run | input px | flag F1 | precision | recall | noise rate: estimated (95% interval) / true | "
      "test acc. best / last | " + " | ".join(f"{s} s" for s in stages) + " | wall s |")
    w("|" + "---|" * (7 + len(stages)))
    for _, r in df.iterrows():
        est = ("–" if pd.isna(r.get("estimated_noise_rate")) else
               f"{_pct(r['estimated_noise_rate'])} ({_pct(r['estimated_low'])}–{_pct(r['estimated_high'])})")
        times = " | ".join("–" if pd.isna(r.get(f"seconds_{s}")) else f"{r[f'seconds_{s}']:.1f}" for s in stages)
        w(f"| {r['run']} | {r['image_size']} | {_pct(r['f1'])} | {_pct(r['precision'])} | {_pct(r['recall'])} | "
          f"{est} / {_pct(r['true_noise_rate'])} | {_pct(r['test_acc_best'])} / {_pct(r['test_acc_last'])} | "
          f"{times} | {r['wall_seconds']:.0f} |")
    w("")
    scan = df.iloc[0]
    for _, r in df.iloc[1:].iterrows():
        # fine-tuning runs on the scan's cached features: their own features stage is the cache read
        cost = (r["wall_seconds"] + scan.get("seconds_features", 0.0)) / scan["wall_seconds"]
        w(f"- **{r['run']}** against the scan: {cost:.1f}x the time from the same empty cache, flag F1 "
          f"{100 * (r['f1'] - scan['f1']):+.1f} points, last-round test accuracy "
          f"{100 * (r['test_acc_last'] - scan['test_acc_last']):+.1f} points.")
    w("")
    w("F1, precision and recall (%) of the flagged samples against the true labels; the estimated noise rate is "
      "what metrics.json tells a user who has no true labels. Stage times in seconds (timings.json); a run at the "
      "scan's input size reads the features the scan cached. Fine-tuning only the last blocks is not a run option "
      "yet, so it is not in the table.")
    return "\n".join(L) + "\n"


def main(args) -> int:
    import torch

    out = Path(args.out or "runs/bench-photos")
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TURN_CACHE_DIR", str(out / "cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    threads, why = choose_threads(getattr(args, "threads", None))
    torch.set_num_threads(threads)

    log = progress_log(args.quiet)

    n_train, n_test = args.n_train or 2000, args.n_test or 500
    image_size = args.image_size or 224
    setting = (args.settings or [DEFAULT_SETTING])[0]
    kind, rate = parse_setting(setting)
    t0 = time.time()
    manifest = write_photo_folder(out / "photos", n_train, n_test, FILE_PX, kind, rate, seed=0)
    truth = pd.read_csv(manifest)
    train_rows = truth[truth["split"] == "train"]
    true_rate = float((train_rows["label"] != train_rows["true_label"]).mean())
    log(f"{len(truth)} JPEGs in {out / 'photos'} ({time.time() - t0:.0f} s), {true_rate:.1%} wrong training labels")
    rows = []
    for name, method, size in variants(image_size):
        run_dir = out / "runs" / name.replace(" ", "-").replace("(", "").replace(")", "")
        done = RunFolder(run_dir).metrics_path
        t0 = time.time()
        if done.exists():
            metrics = json.loads(done.read_text())
            wall = float(metrics.get("seconds_total") or 0.0)
        else:
            # the manifest's labels carry the noise: no synthetic noise on top (RunConfig's default adds 40%)
            config = RunConfig(dataset={"kind": "manifest", "path": str(manifest)}, noise={"kind": "none"},
                               model=args.model, method=method,
                               image_size=size, batch_size=args.batch_size, lp_epochs=args.lp_epochs,
                               fft_epochs=args.fft_epochs, device=args.device, projection_methods=[])
            metrics = run_config(config, run_dir)
            wall = time.time() - t0
        rows.append(run_row(name, method, size, metrics, wall, true_rate))
        r = rows[-1]
        log(f"{name}: flags F1 {_pct(r['f1'])}%, estimated noise {_pct(r['estimated_noise_rate'])}% "
            f"(true {true_rate:.1%}), {wall:.0f} s")
    df = pd.DataFrame(rows)
    df.to_csv(out / "photos.csv", index=False)
    m = machine_info(args.device)
    info = {"n_train": n_train, "n_test": n_test, "setting": setting, "true_rate": true_rate, "model": args.model,
            "lp_epochs": args.lp_epochs, "fft_epochs": args.fft_epochs,
            "machine": f"{m['cpu']}, {m['cores']} cores, `{m['device']}`" + (f" ({m['gpu']})" if m.get("gpu") else "")
                       + f", {threads} torch thread(s) ({why}), load average at the end "
                       + ", ".join(f"{x:.1f}" for x in os.getloadavg()),
            "command": "turn bench --photos" + (f" --n-train {n_train}" if args.n_train else "")
                       + (f" --n-test {n_test}" if args.n_test else "")
                       + (f" --settings {setting}" if args.settings else "")
                       + (f" --fft-epochs {args.fft_epochs}" if args.fft_epochs else ""),
            "when": dt.datetime.now().strftime("%Y-%m-%d %H:%M")}
    section = photos_section(df, info)
    (out / "photos.md").write_text(section)
    log(f"wrote {out / 'photos.csv'} and {out / 'photos.md'}")
    if not args.no_docs:
        docs = Path(args.docs) if args.docs else DEFAULT_DOCS
        replace_section(docs, SECTION_TITLE + "\n", section)
        log(f"wrote {docs}")
    return 0
