"""Train: choose a model and a method, start a run in a worker process, follow it live.

Training never runs inside this script: `Start` writes a run folder and launches
`turn_backend.worker`; the progress panel only reads the run folder, so it reattaches after
a refresh and keeps working when the tab was closed.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import plotly.express as px
import streamlit as st

from app import ui
from app.state import current_run, runs_root, set_current_run, user_path, user_path_if_exists
from turn_backend import worker
from turn_backend.config import DEFAULT_METHOD, RunConfig, method_kind
from turn_backend.methods import get_method, list_methods
from turn_backend.models.registry import DEFAULT_MODEL, PAPER_HPARAMS, family_of
from turn_backend.runfolder import RunFolder, list_runs, read_json
from turn_backend.runner import create_run
from turn_backend.stages.choice import final_test_accuracy

MODEL_SOURCES = {
    "embedded": ":material/inventory_2: Embedded: EfficientNet-Lite0",
    "timm": ":material/deployed_code: timm model",
    "hf": ":material/hub: Hugging Face (hub id or folder)",
}
OPTIMIZERS = ["adamw", "sgd"]
BATCH_SIZES = [8, 16, 32, 64, 128, 256, 512]
PROJECTIONS = {"tsne": "t-SNE", "umap": "UMAP"}
FAMILY_NAMES = {
    "vit": "ViT", "convnext": "ConvNeXt", "mae": "MAE-ViT", "msn": "MSN-ViT", "clip": "CLIP-ViT",
    "resnet": "ResNet", "efficientnet": "EfficientNet",
}


# ---------------------------------------------------------------------------- helpers


@st.cache_resource(show_spinner=False)
def gpu_devices() -> list[tuple[str, str]]:
    """(device, label) for every visible GPU."""
    try:
        import torch

        if not torch.cuda.is_available():
            return []
        return [(f"cuda:{i}", f"GPU {i}: {torch.cuda.get_device_name(i)}") for i in range(torch.cuda.device_count())]
    except Exception:  # a broken driver must not break the page
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
    base = f"{slug(method)}-{dataset_slug(spec)}-{datetime.now():%Y%m%d-%H%M%S}"
    root = runs_root()
    path, k = root / base, 2
    while path.exists():
        path, k = root / f"{base}-{k}", k + 1
    return path


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


# ---------------------------------------------------------------------------- the form


def settings_form() -> None:
    spec, noise = ui.dataset_choice()
    st.subheader(":material/tune: New run", anchor=False)

    with st.container(border=True):
        st.markdown("**Data**")
        st.markdown(f":material/dataset: {ui.dataset_label(spec)} · {ui.noise_label(noise)}")
        ui.page_link("dataset", label="Change the dataset or the noise", icon=":material/edit:")

    # --- model
    st.session_state.setdefault("tr_model_source", "embedded")
    st.session_state.setdefault("tr_timm_name", "vit_base_patch16_224")
    st.session_state.setdefault("tr_hf_name", "google/vit-base-patch16-224")
    st.radio("Model", list(MODEL_SOURCES), format_func=MODEL_SOURCES.get, key="tr_model_source",
             help="EfficientNet-Lite0 ships with the app and works offline. timm and Hugging Face models "
                  "need their weights reachable (or cached, or a local folder).")
    source = st.session_state["tr_model_source"]
    checkpoint = None
    if source == "timm":
        st.text_input("timm model name", key="tr_timm_name", placeholder="convnext_tiny",
                      help="Any name from timm.list_models(), e.g. vit_base_patch16_224, convnext_tiny, resnet50")
        checkpoint = st.text_input("Local weights (optional)", key="tr_checkpoint",
                                   placeholder="/models/convnext_tiny.safetensors",
                                   help="A state dict (.pt, .pth or .safetensors) when the hub is not reachable")
        checkpoint = user_path(checkpoint) or None  # relative: from where the app was started
    elif source == "hf":
        st.text_input("Hub id or local folder", key="tr_hf_name", placeholder="facebook/convnext-tiny-224",
                      help="e.g. google/vit-base-patch16-224, facebook/convnext-tiny-224, "
                           "openai/clip-vit-base-patch16, or a folder written by save_pretrained")
    model = model_name()
    family = family_of(model or DEFAULT_MODEL)
    if st.session_state.get("tr_hp_family") != family:
        prefill_hparams(family)
    hp_source = PAPER_HPARAMS[family].source
    st.caption(f":material/auto_awesome: {FAMILY_NAMES.get(family, family)} family: "
               f"hyperparameters prefilled ({hp_source}).")

    # --- method
    st.session_state.setdefault("tr_method", DEFAULT_METHOD)
    method = st.selectbox("Method", list_methods(), key="tr_method",
                          format_func=lambda m: f"{m} — {get_method(m).description.split(':')[0].split(',')[0]}",
                          help="turn+ is the recommended variant; turn is TURN exactly as published; "
                               "the others are the paper's baselines.")
    st.caption(get_method(method).description)
    kind = method_kind(method)
    if st.session_state.get("tr_rounds_for") != method:
        st.session_state["tr_rounds_for"] = method
        st.session_state["tr_fft_epochs"] = max(1, default_rounds(method))

    # --- device
    options = device_options()
    if st.session_state.get("tr_device") not in options:
        st.session_state["tr_device"] = next((d for d in options if d.startswith("cuda")), "cpu")
    device = st.selectbox("Device", list(options), format_func=options.get, key="tr_device",
                          help="Training runs in a separate worker process; it keeps going if you close the tab.")

    # --- main settings
    if st.session_state.get("tr_size_for") != spec.get("kind"):
        st.session_state["tr_size_for"] = spec.get("kind")
        st.session_state["tr_image_size"] = 64 if spec.get("kind") == "demo" else 224
    c1, c2 = st.columns(2)
    image_size = c1.number_input("Image size (px)", min_value=16, max_value=1024, step=16, key="tr_image_size",
                                 help="Images are resized to this square size. 64 px is plenty for the "
                                      "28 px demo images; pre-trained ViTs expect 224.")
    if family == "efficientnet" and image_size < 64:
        st.warning("Below 64 px EfficientNet-Lite0's features collapse (measured: near-constant features, "
                   "chance-level accuracy). Use 64 px or more.", icon=":material/warning:")
    st.session_state.setdefault("tr_batch", 128)
    batch = c2.select_slider("Batch size", BATCH_SIZES, key="tr_batch")
    st.session_state.setdefault("tr_lp_epochs", 20)
    lp_epochs = c1.number_input("LP epochs", min_value=1, max_value=500, step=1, key="tr_lp_epochs",
                                disabled=kind == "fft", help="Linear probing epochs (paper: 20)")
    fft_epochs = c2.number_input("FFT rounds" if kind == "turn" else "FFT epochs", min_value=1, max_value=100,
                                 step=1, key="tr_fft_epochs", disabled=kind == "lp",
                                 help="Each TURN round cleanses, then fine-tunes one epoch (paper: 4)")
    st.session_state.setdefault("tr_tau", 0.6)
    tau = st.slider("Clean threshold τ", 0.05, 0.95, step=0.05, key="tr_tau", disabled=kind != "turn",
                    help="A sample joins the clean set when its clean probability exceeds τ (paper: 0.6). "
                         "You can move it again on the Threshold page after the run.")
    st.session_state.setdefault("tr_seed", 0)
    seed = st.number_input("Seed", min_value=0, max_value=2**31 - 1, step=1, key="tr_seed")

    with st.expander(":material/settings: Optimizers and more"):
        st.caption(f"Prefilled for the {FAMILY_NAMES.get(family, family)} family ({hp_source}).")
        a, b, c = st.columns([1.2, 1, 1])
        a.selectbox("LP optimizer", OPTIMIZERS, key="tr_lp_opt")
        b.number_input("LP learning rate", min_value=1e-7, max_value=10.0, step=1e-4, format="%.1e", key="tr_lp_lr")
        c.number_input("LP weight decay", min_value=0.0, max_value=1.0, step=1e-5, format="%.1e", key="tr_lp_wd")
        a.selectbox("FFT optimizer", OPTIMIZERS, key="tr_fft_opt")
        b.number_input("FFT learning rate", min_value=1e-8, max_value=10.0, step=1e-5, format="%.1e", key="tr_fft_lr")
        c.number_input("FFT weight decay", min_value=0.0, max_value=1.0, step=1e-5, format="%.1e", key="tr_fft_wd")
        if st.button("Reset to the paper's settings", icon=":material/restart_alt:", key="tr_hp_reset"):
            prefill_hparams(family)
            st.rerun()
        st.session_state.setdefault("tr_freeze_bn", True)
        st.toggle("Freeze BatchNorm statistics while fine-tuning", key="tr_freeze_bn",
                  help="Keeps small-batch fine-tuning stable (measured on the demo)")
        st.session_state.setdefault("tr_projections", ["tsne"])
        st.multiselect("Embedding projections", list(PROJECTIONS), format_func=PROJECTIONS.get,
                       key="tr_projections", help="Computed at the end of the run for the Embeddings page")
        st.session_state.setdefault("tr_projection_split", "train")
        st.radio("Projected samples", ["train", "test"], key="tr_projection_split", horizontal=True,
                 format_func={"train": "Training set (clean probabilities, flagged marks)",
                              "test": "Test set (as in the paper's Figure 2)"}.get,
                 help="Which split the Embeddings page maps: up to 1,000 samples of 10 classes")

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
    if not st.session_state.get("tr_projections"):
        problems.append("Choose at least one embedding projection.")
    for p in problems:
        st.warning(p, icon=":material/warning:")

    if st.button("Start", icon=":material/play_arrow:", type="primary", width="stretch", key="tr_start",
                 disabled=bool(problems)):
        hp = PAPER_HPARAMS[family]

        def override(value, default):
            return None if value == default else value

        processes = len(gpu_devices()) if device == "all" else 1
        try:
            config = RunConfig(
                dataset=spec, noise=noise, model=model, checkpoint=checkpoint, method=method,
                image_size=int(image_size), batch_size=int(batch), lp_epochs=int(lp_epochs),
                fft_epochs=int(fft_epochs), tau=float(tau), seed=int(seed),
                lp_optimizer=override(st.session_state["tr_lp_opt"], hp.lp.optimizer),
                lp_lr=override(float(st.session_state["tr_lp_lr"]), hp.lp.lr),
                lp_weight_decay=override(float(st.session_state["tr_lp_wd"]), hp.lp.weight_decay),
                fft_optimizer=override(st.session_state["tr_fft_opt"], hp.fft.optimizer),
                fft_lr=override(float(st.session_state["tr_fft_lr"]), hp.fft.lr),
                fft_weight_decay=override(float(st.session_state["tr_fft_wd"]), hp.fft.weight_decay),
                freeze_bn_stats=bool(st.session_state["tr_freeze_bn"]),
                device="cuda" if device == "all" else device, num_processes=processes,
                projection_methods=list(st.session_state["tr_projections"]),
                projection_split=st.session_state["tr_projection_split"],
            )
        except ValueError as exc:
            ui.show_error(exc)
            return
        folder = start_run(config, processes)
        if folder is not None:
            st.toast(f"Started {folder.name}", icon=":material/rocket_launch:")
            st.rerun()


# ---------------------------------------------------------------------------- progress


def stage_plan(cfg: dict) -> list[tuple[str, str]]:
    """(key, title) of the stages a run goes through, in order."""
    kind = method_kind(cfg.get("method", DEFAULT_METHOD))
    stages = [("data", "Dataset"), ("features", "Features")]
    try:
        config = RunConfig.from_dict(cfg)
    except (TypeError, ValueError):
        config = None
    if kind in ("turn", "lp"):
        stages.append(("lp", f"Linear probing ({cfg.get('lp_epochs', 20)} epochs)"))
    if kind != "lp":
        rounds = config.rounds if config is not None else cfg.get("fft_epochs") or 4
        for r in range(1, rounds + 1):
            stages.append((f"round-{r}", f"Round {r}: cleanse + fine-tune" if kind == "turn" else f"Fine-tuning epoch {r}"))
    if config is not None and config.turn_option("holdout"):
        stages.append(("choice", "Final model chosen on held-out clean samples"))
    elif config is not None and config.turn_option("probe_ensemble"):
        stages.append(("choice", "Final classifier: fine-tuned + probe"))
    stages.append(("final", "Final scoring"))
    if cfg.get("projection_methods"):
        stages.append(("projections", "Embedding projections"))
    return stages


def stage_details(folder: RunFolder, events: list[dict]) -> dict[str, str]:
    """A short result line for each finished stage."""
    out: dict[str, str] = {}
    for e in events:
        if e.get("stage") == "features" and "features ready" in e.get("message", ""):
            out["features"] = e["message"].replace("features ready: ", "")
        if e.get("stage") == "projection":
            out["projections"] = e.get("message", "")
        if e.get("stage") == "data" and "skipped" in e.get("message", ""):
            out["data"] = e["message"]
    history = read_json(folder.path / "lp" / "history.json", []) or []
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
    choice = read_json(folder.path / "choice" / "choice.json", None) or {}
    final_acc = final_test_accuracy(choice)
    if final_acc is not None:
        out["choice"] = f"test {ui.fmt_pct(final_acc)}"
    return out


def render_stages(folder: RunFolder, cfg: dict, status: dict, events: list[dict]) -> float:
    """The stage list; returns the overall fraction done."""
    plan = stage_plan(cfg)
    completed = set(folder.completed())
    if (folder.path / "samples.parquet").exists():
        completed.add("data")
    details = stage_details(folder, events)
    state = status.get("state")
    current_found = False
    lines = []
    for key, title in plan:
        detail = details.get(key, "")
        if key in completed or state == "done":
            icon = ":green[:material/check_circle:]"
        elif not current_found and state in ui.ACTIVE_STATES:
            current_found = True
            icon = ":blue[:material/pending:]"
            detail = re.sub(r"^Round \d+: ", "", status.get("stage_label") or "working…")
        elif not current_found and state in ("failed", "interrupted", "stopped"):
            current_found = True
            icon = {"failed": ":red[:material/cancel:]"}.get(state, ":orange[:material/pause_circle:]")
            detail = {"failed": "failed here", "stopped": "stopped here"}.get(state, "interrupted here")
        else:
            lines.append(f":gray[:material/radio_button_unchecked: {title}]")
            continue
        lines.append(f"{icon} **{title}**" + (f" — {detail}" if detail else ""))
    st.markdown("  \n".join(lines))
    done = sum(1 for key, _ in plan if key in completed)
    return 1.0 if state == "done" else done / max(1, len(plan))


def render_log(events: list[dict]) -> None:
    rows = [{"time": datetime.fromtimestamp(e.get("time", 0)).strftime("%H:%M:%S"), "stage": e.get("stage", ""),
             "message": e.get("message", "")} for e in events[-30:]][::-1]
    if not rows:
        st.caption("No events yet.")
        return
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", height=min(400, 36 + 35 * len(rows)),
                 column_config={"time": st.column_config.TextColumn("Time", width="small"),
                                "stage": st.column_config.TextColumn("Stage", width="small"),
                                "message": st.column_config.TextColumn("Message", width="large")})


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
    history = read_json(folder.path / "lp" / "history.json", []) or []
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
        text = (folder.path / "worker.log").read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def render_done(folder: RunFolder, cfg: dict) -> None:
    metrics = folder.metrics()
    m = st.columns(5)
    m[0].metric("Test acc. (best)", ui.fmt_pct(metrics.get("test_acc_best")))
    m[1].metric("Test acc. (last)", ui.fmt_pct(metrics.get("test_acc_last")))
    m[2].metric("Clean set", ui.fmt_int(metrics.get("n_clean")), help="Samples in the first round's clean set")
    m[3].metric("Purity", ui.fmt_pct(metrics.get("clean_purity")),
                help="Share of the clean set whose given label is the true one (known for synthetic noise)")
    m[4].metric("Time", ui.fmt_seconds(metrics.get("seconds_total")))
    detection = metrics.get("final_detection")
    if detection:
        st.caption(f"Noisy-label detection at τ = {cfg.get('tau', 0.6)}: precision {ui.fmt_pct(detection.get('precision'))}, "
                   f"recall {ui.fmt_pct(detection.get('recall'))}, F1 {ui.fmt_pct(detection.get('f1'))} "
                   f"({ui.fmt_int(detection.get('n_flagged'))} flagged of {ui.fmt_int(metrics.get('n_train'))}).")
    choice = metrics.get("final_model")
    if choice and choice.get("chosen") == "ensemble":  # TURN+'s final classifier
        alone = (f" Test accuracy of the fine-tuned model alone {ui.fmt_pct(choice.get('test_acc_fft'))}, of the "
                 f"probe alone {ui.fmt_pct(choice.get('test_acc_probe'))}." if choice.get("test_acc_fft") is not None
                 else "")
        st.caption("Final classifier: the fine-tuned model averaged with a linear probe on the pre-trained features, "
                   f"trained on the {ui.fmt_int(choice.get('n_probe_train'))} cleaned labels of the last round."
                   + alone)
    elif choice:  # TURN+ chose its final model on held-out clean samples
        probe, tuned = ui.fmt_pct(choice.get("holdout_acc_probe")), ui.fmt_pct(choice.get("holdout_acc_fft"))
        which = ("a linear probe on the cleaned labels" if choice.get("chosen") == "probe"
                 else "the fine-tuned model")
        st.caption(f"Final model: {which}, chosen on {ui.fmt_int(choice.get('n_holdout'))} held-out clean samples "
                   f"(accuracy there: fine-tuned {tuned}, probe {probe}). The test set played no part.")
    links = st.columns(3)
    with links[0]:
        ui.page_link("embeddings", label="See the embeddings")
    with links[1]:
        ui.page_link("threshold", label="Tune the threshold")
    with links[2]:
        ui.page_link("review", label="Review flags")
    curve = accuracy_curve(folder, metrics)
    if len(curve) >= 2:
        fig = px.line(curve, x="step", y="test accuracy", color="phase", markers=True,
                      color_discrete_map={"linear probing": "#4C78A8", "fine-tuning": "#F58518",
                                          "final classifier": "#54A24B"})
        fig.update_layout(height=240, margin=dict(l=10, r=10, t=30, b=10), yaxis_tickformat=".0%",
                          title=dict(text="Test accuracy during training", font=dict(size=14)),
                          legend=dict(orientation="h", y=-0.3, title=None), xaxis_title=None)
        st.plotly_chart(fig, width="stretch", key="tr_curve")
    table = related_runs(folder, cfg)
    if len(table) > 1:
        st.markdown("**Compared with runs on the same data and model**")
        st.dataframe(table, hide_index=True, width="stretch", column_config={
            "best": st.column_config.NumberColumn("Test acc. (best)", format="percent"),
            "last": st.column_config.NumberColumn("Test acc. (last)", format="percent"),
            "time": st.column_config.NumberColumn("Seconds", format="%.0f"),
        })


def render_actions(folder: RunFolder, cfg: dict, state: str) -> None:
    row = st.container(horizontal=True)
    if state in ("starting", "running"):
        if row.button("Stop", icon=":material/stop:", key="tr_stop",
                          help="Stops after the current step; Resume continues from the last completed stage"):
            if worker.stop(folder.path):
                st.toast("Stopping…", icon=":material/stop_circle:")
            else:
                st.toast("The worker had already ended.", icon=":material/info:")
            time.sleep(0.3)
            st.rerun()
    if state in ui.RESUMABLE_STATES or state == "queued":
        if row.button("Resume" if state != "queued" else "Start worker", icon=":material/play_arrow:",
                          type="primary", key="tr_resume",
                          help="Launch the worker again; it continues from the last completed stage"):
            try:
                worker.launch(folder.path, processes=int(cfg.get("num_processes", 1) or 1))
            except OSError as exc:
                ui.show_error(f"Could not start the worker: {exc}")
            else:
                folder.log("resume", "resumed from the app")
                st.rerun()
    if method_kind(cfg.get("method", "")) != "fft" and state not in ("new",):
        if row.button("Run baseline for comparison", icon=":material/compare_arrows:",
                          key="tr_baseline", help="Run baseline for comparison: full fine-tuning with cross-entropy "
                                                  "(fft-ce) on the same data, model and settings"):
            base = {k: v for k, v in cfg.items()}
            base["method"] = "fft-ce"
            try:
                config = RunConfig.from_dict(base)
            except (TypeError, ValueError) as exc:
                ui.show_error(exc)
                return
            started = start_run(config, int(cfg.get("num_processes", 1) or 1))
            if started is not None:
                st.toast(f"Started baseline {started.name}", icon=":material/compare_arrows:")
                st.rerun()


def progress_panel(folder: RunFolder) -> None:
    status = ui.run_state(folder)
    was_active = status.get("state") in ("starting", "running")

    @st.fragment(run_every=1.0 if was_active else None)
    def live() -> None:
        status = ui.run_state(folder)
        state = status.get("state", "new")
        if was_active and state not in ("starting", "running"):
            st.rerun()  # finished: redraw the whole page once, and stop polling
        cfg = folder.config()
        events = folder.events()
        head, badge = st.columns([4, 1])
        head.subheader(f":material/monitoring: {folder.name}", anchor=False)
        with badge:
            ui.state_badge(state)
        st.caption(f"**Method** {cfg.get('method')} · **Model** {cfg.get('model')} · "
                   f"**Data** {ui.dataset_label(cfg.get('dataset'))}, {ui.noise_label(cfg.get('noise'))} · "
                   f"**Device** {cfg.get('device')}" + (f" × {cfg['num_processes']}" if cfg.get("num_processes", 1) > 1 else ""))

        if state == "failed":
            ui.show_error(status.get("error") or "The run failed.",
                          "Fix the cause (see the log below), then press Resume: finished stages are kept.")
        elif state == "interrupted":
            st.warning(status.get("stage_label") or "The worker stopped unexpectedly.", icon=":material/warning:")
        elif state == "stopped":
            st.info("Stopped. Resume continues from the last completed stage.", icon=":material/pause_circle:")
        elif state == "queued":
            st.info("This run is waiting for a worker (it was created but not started).", icon=":material/schedule:")

        overall = render_stages(folder, cfg, status, events)
        if state in ui.ACTIVE_STATES:
            done, total = status.get("stage_done"), status.get("stage_total")
            frac = min(1.0, done / total) if done is not None and total else 0.0
            label = status.get("stage_label") or "Working…"
            if total:
                label = f"{label} ({done:,} / {total:,})"
            st.progress(frac, text=label)
            st.progress(overall, text=f"Overall: {overall:.0%}")
            gpu = status.get("gpu")
            if gpu:
                st.caption(f":material/memory: GPU memory {gpu.get('allocated_mb', 0):,.0f} MB "
                           f"(peak {gpu.get('peak_mb', 0):,.0f} MB)")
            if events:
                st.caption(f"Running for {ui.fmt_seconds(time.time() - events[0].get('time', time.time()))}")
        render_actions(folder, cfg, state)
        if state == "done":
            render_done(folder, cfg)
        with st.expander(":material/receipt_long: Log", expanded=state != "done"):
            render_log(events)
        if state in ("failed", "interrupted"):
            tail = worker_log_tail(folder)
            if tail:
                with st.expander(":material/terminal: Worker output (last lines)"):
                    st.code(tail, language=None)

    live()


# ---------------------------------------------------------------------------- the page

ui.page_header("Train", ":material/model_training:",
               "Pick a pre-trained model and a method; the run trains in the background and you can "
               "follow it here, close the tab, and come back.")

folder = current_run()
left, right = st.columns([2, 3], gap="large")
with left:
    settings_form()
with right:
    if folder is None:
        ui.empty_state("No run yet. The settings on the left are ready for the Fashion-MNIST demo with 40% "
                       "symmetric noise: press Start.", icon=":material/rocket_launch:")
    else:
        progress_panel(folder)
