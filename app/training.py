"""What the Train page does that is not layout: model choices, the checks before a start,
starting a run (run folder and worker), and the run's progress read back as tables and lines.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import streamlit as st

from app import ui
from app.state import runs_root, set_current_run, user_path_if_exists
from turn_backend import worker
from turn_backend.config import RunConfig
from turn_backend.models.hparams import PAPER_HPARAMS
from turn_backend.models.registry import DEFAULT_MODEL
from turn_backend.plan import plan_stages
from turn_backend.runfolder import RunFolder, list_runs, new_run_path
from turn_backend.runner import create_run
from turn_backend.stages.choice import final_test_accuracy


@st.cache_resource(show_spinner=False)
def gpu_devices() -> list[tuple[str, str]]:
    """(device, label) for every visible GPU."""
    try:
        import torch

        if not torch.cuda.is_available():
            return []
        return [(f"cuda:{i}", f"GPU {i}: {torch.cuda.get_device_name(i)}") for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - a broken driver must not break the page
        return []


@st.cache_resource(show_spinner=False)
def timm_names() -> set[str]:
    import timm

    return set(timm.list_models()) | set(timm.list_models(pretrained=True))


def device_options() -> dict[str, str]:
    gpus = gpu_devices()
    options = {"cpu": "CPU"}
    options.update(dict(gpus))
    if len(gpus) > 1:
        options["all"] = f"All {len(gpus)} GPUs (one process each)"
    return options


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-._")[:40] or "data"


def dataset_slug(spec: dict) -> str:
    if spec.get("kind") == "demo":
        return "demo"
    if spec.get("name"):
        return slug(str(spec["name"]))
    if spec.get("path"):
        return slug(Path(str(spec["path"])).stem)
    return slug(str(spec.get("kind", "data")))


def new_run_dir(method: str, spec: dict) -> Path:
    return new_run_path(runs_root(), f"{slug(method)}-{dataset_slug(spec)}")


def start_run(config: RunConfig, processes: int = 1) -> RunFolder | None:
    """Create the run folder, launch its worker, make it the current run."""
    path = new_run_dir(config.method, config.dataset)
    try:
        folder = create_run(config, path)
        worker.launch(folder.path, processes=processes)
    except (OSError, ValueError) as exc:
        ui.show_error(f"Could not start the run: {exc}", "Check that the runs folder is writable.")
        return None
    set_current_run(folder)
    return folder


def model_name() -> str:
    source = st.session_state.get("tr_model_source", "embedded")
    if source == "timm":
        name = st.session_state.get("tr_timm_name", "").strip()
        return f"timm:{name}" if name else ""
    if source == "hf":
        name = st.session_state.get("tr_hf_name", "").strip()
        return f"hf:{user_path_if_exists(name)}" if name else ""  # a local folder, made absolute
    return DEFAULT_MODEL


def prefill_hparams(family: str) -> None:
    """Put the paper's settings for `family` into the hyperparameter widgets."""
    hp = PAPER_HPARAMS[family]
    st.session_state.update({
        "tr_lp_opt": hp.lp.optimizer, "tr_lp_lr": float(hp.lp.lr), "tr_lp_wd": float(hp.lp.weight_decay),
        "tr_fft_opt": hp.fft.optimizer, "tr_fft_lr": float(hp.fft.lr), "tr_fft_wd": float(hp.fft.weight_decay),
        "tr_hp_family": family,
    })


def default_rounds(method: str) -> int:
    return RunConfig(method=method).rounds


def start_problems(source: str, model: str, checkpoint: str | None, projections) -> list[str]:
    """Why a run with these settings cannot start yet (empty: it can)."""
    problems = []
    if not model:
        problems.append("Give a model name.")
    elif source == "timm" and model.removeprefix("timm:") not in timm_names():
        problems.append(f"timm has no model named “{model.removeprefix('timm:')}”. "
                        "Names look like vit_base_patch16_224, convnext_tiny or resnet50.")
    elif source == "hf":
        name = model.removeprefix("hf:")
        if name.startswith(("/", ".", "~")) and not (Path(name).expanduser() / "config.json").is_file():
            problems.append(f"{name} is not a Hugging Face model folder (it has no config.json).")
    if checkpoint and not Path(checkpoint).expanduser().is_file():
        problems.append(f"The weights file {checkpoint} does not exist.")
    if not projections:
        problems.append("Choose at least one embedding projection.")
    return problems


def stage_plan(cfg: dict) -> list[tuple[str, str]]:
    """(key, title) of the steps a run goes through, in order, as the runner plans them."""
    try:
        return plan_stages(RunConfig.from_dict(cfg))
    except (TypeError, ValueError):  # a config this version cannot read: the steps every run has
        return [("data", "Dataset"), ("features", "Features"), ("final", "Final scoring")]


def stage_details(folder: RunFolder) -> dict[str, str]:
    """A short result line for each finished stage, from the fields of the stages' summaries."""
    out: dict[str, str] = {}
    summaries = folder.summaries()
    if "n_skipped" in summaries.get("data", {}):
        out["data"] = f"skipped {summaries['data']['n_skipped']} unreadable item(s)"
    if "n_dims" in (f := summaries.get("features", {})):
        out["features"] = (f"{f['n_train']} train x {f['n_dims']} dims" + (" (from the cache)" if f.get("from_cache")
                                                                            else ""))
    if "n_samples" in (p := summaries.get("projection", {})):
        out["projections"] = (f"projections of {p['n_samples']} {p['split']} samples ready"
                              + (" (pre-trained maps from the cache)" if p.get("maps_from_cache") else ""))
    history = folder.lp_history()
    accs = [h.get("test_acc") for h in history if h.get("test_acc") is not None]
    if accs:
        out["lp"] = f"test accuracy {ui.fmt_pct(accs[-1])}"
    for r in folder.rounds():
        parts = []
        if r.get("n_unique") is not None:
            parts.append(f"clean set {ui.fmt_int(r['n_unique'])}")
        if r.get("purity") is not None:
            parts.append(f"purity {ui.fmt_pct(r['purity'])}")
        if r.get("test_acc") is not None:
            parts.append(f"test {ui.fmt_pct(r['test_acc'])}")
        out[f"round-{r['round']}"] = " · ".join(parts)
    choice = folder.choice() or {}
    final_acc = final_test_accuracy(choice)
    if final_acc is not None:
        out["choice"] = f"test {ui.fmt_pct(final_acc)}"
    return out


def related_runs(folder: RunFolder, cfg: dict) -> pd.DataFrame:
    """Runs on the same data, noise and model: the comparison table."""
    keys = ("dataset", "noise", "model", "image_size")
    rows = []
    for other in list_runs(runs_root()):
        ocfg = other.config()
        if all(ocfg.get(k) == cfg.get(k) for k in keys):
            s = ui.run_summary(other)
            rows.append({"run": other.name + (" (this run)" if other.name == folder.name else ""),
                         "method": s["method"], "state": ui.state_style(s["state"])[2],
                         "best": s["test_acc"], "last": s["test_acc_last"],
                         "time": other.metrics().get("seconds_total")})
    return pd.DataFrame(rows)


def accuracy_curve(folder: RunFolder, metrics: dict) -> pd.DataFrame:
    """Test accuracy per LP epoch and per fine-tuning round, in order."""
    rows = []
    history = folder.lp_history()
    for h in history:
        if h.get("test_acc") is not None:
            rows.append({"step": f"LP {h['epoch']}", "test accuracy": h["test_acc"], "phase": "linear probing"})
    for r in folder.rounds():
        if r.get("test_acc") is not None:
            rows.append({"step": f"R{r['round']}", "test accuracy": r["test_acc"], "phase": "fine-tuning"})
    final = (metrics.get("final_model") or {}).get("test_acc_ensemble")
    if final is not None:  # TURN+'s final classifier: the last round's model averaged with a probe
        rows.append({"step": "Final", "test accuracy": final, "phase": "final classifier"})
    return pd.DataFrame(rows)


def worker_log_tail(folder: RunFolder, lines: int = 40) -> str:
    try:
        text = folder.worker_log_path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
