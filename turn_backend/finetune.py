"""Fine-tune a scan: a TURN run that starts from a finished scan's run folder, not from scratch.

The scan (`lp-gce`: features, the LP-GCE probe, detection, audit, maps) is exactly TURN's
first stage, so a TURN / TURN+ run on the same data, model and probe settings would train the
same probe again. `create_finetune_run` copies what the scan made into a new run folder
(the dataset's sample list, the class names, the probe's head and history, the audit, any
reviewed labels the scan trained on) and marks those stages done, so the new run loads the
data, takes the features from the shared cache (or extracts them again on another machine),
and goes straight to the fine-tuning rounds. Everything is copied from the scan's folder, so
the folder can be moved to another machine; only the dataset must be where its config says.
The new run is an ordinary run folder: `turn resume` continues it after a kill.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from turn_backend.config import RunConfig
from turn_backend.methods import get_method
from turn_backend.runfolder import RunFolder, unique_run_name
from turn_backend.runner import create_run

FINETUNE_DEFAULT_METHOD = "turn+"
# what a fine-tune run takes from its scan and does not compute again (plan / progress keys)
REUSED_STAGES = ("lp", "audit")
# RunConfig fields that decide the probe: a fine-tune run keeps the scan's
PROBE_SETTINGS = ("dataset", "noise", "model", "pretrained", "checkpoint", "image_size", "lp_epochs", "gce_q",
                  "lp_optimizer", "lp_lr", "lp_weight_decay", "seed")


def finetune_config(scan_dir: str | Path, method: str = FINETUNE_DEFAULT_METHOD, **overrides) -> RunConfig:
    """The config of a run that fine-tunes the finished scan in `scan_dir` with `method`.

    overrides: RunConfig fields the fine-tuning may change (fft_epochs, tau, batch_size,
    device, ...); those that decide the probe (PROBE_SETTINGS) stay the scan's. ValueError
    where the folder is not a finished run whose probe the method's first stage would train."""
    scan = RunFolder(scan_dir)
    if not scan.exists():
        raise ValueError(f"{scan_dir} is not a run folder (no config.json)")
    settings = scan.config()
    if settings.get("features") or settings.get("pred_probs"):
        raise ValueError(f"{scan_dir} ran on given features or probabilities: fine-tuning needs the image model; "
                         "scan the images themselves first (turn run --method scan)")
    source = get_method(settings["method"])
    target = get_method(method)
    if target.kind != "turn":
        raise ValueError(f"{method} has no probe to reuse; fine-tune a scan with turn+ or turn")
    if source.probe_loss != target.probe_loss or "probe" not in source.stages:
        raise ValueError(f"{scan_dir} is a {settings['method']} run: its probe is not {method}'s first stage "
                         f"(linear probing with {target.probe_loss}); run a scan first (turn run --method scan)")
    if "lp" not in scan.completed() or not (scan.lp_dir / scan.LP_HEAD).exists():
        raise ValueError(f"{scan_dir} has not finished its linear probe yet: let it finish (turn resume {scan_dir})")
    fixed = sorted(set(overrides) & set(PROBE_SETTINGS))
    if fixed:
        raise ValueError(f"{', '.join(fixed)} decide the scan's probe, which is reused: they stay the scan's")
    settings.update(method=method, **{k: v for k, v in overrides.items() if v is not None})
    return RunConfig.from_dict(settings)


def default_out(scan_dir: str | Path, method: str) -> Path:
    """A folder beside the scan: SCAN-turn+, then SCAN-turn+-2, ..."""
    scan = Path(scan_dir)
    existing = [p.name for p in scan.parent.iterdir()] if scan.parent.is_dir() else []
    return scan.parent / unique_run_name(f"{scan.name}-{method}", existing)


def create_finetune_run(scan_dir: str | Path, config: RunConfig, out_dir: str | Path) -> RunFolder:
    """A new (queued) run folder at `out_dir` for `config` (from `finetune_config`) holding
    copies of what the scan made, its probe and audit marked done; start it with
    `turn_backend.worker.launch(out_dir)`. The folder appears complete or not at all."""
    scan, out = RunFolder(scan_dir), Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not empty; choose a new folder for the fine-tuned run")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        folder = create_run(config, tmp / "run")
        for name in (scan.SAMPLES, scan.CLASSES, scan.REVIEWED_LABELS):
            if (scan.path / name).exists():
                shutil.copy2(scan.path / name, folder.path / name)
        shutil.copytree(scan.lp_dir, folder.lp_dir)
        reused = ["lp"]
        if "audit" in scan.completed() and scan.audit_dir.is_dir():
            shutil.copytree(scan.audit_dir, folder.audit_dir)
            reused.append("audit")
        for stage in reused:
            folder.mark_completed(stage)
        os.replace(folder.path, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    folder = RunFolder(out)
    folder.log("finetune", f"fine-tunes the scan {scan.name}: its {' and '.join(reused)} are reused, not computed "
               "again", summary=True, scan=scan.name, reused=reused)
    return folder
