"""The Train page's estimates: before a run (time, memory, and the scan where fine-tuning
would be long), during it (each step's estimate beside its time, the whole run's time left),
and after a scan (Fine-tune this scan). The probe runs in its own process
(turn_backend.estimate), never inside a script rerun's imports of torch.
"""

from __future__ import annotations

from dataclasses import replace

import streamlit as st

from app import ui
from app.state import set_current_run
from turn_backend import estimate as est
from turn_backend import worker
from turn_backend.config import DEFAULT_METHOD, RunConfig
from turn_backend.io import atomic_write_json
from turn_backend.runfolder import RunFolder

ESTIMATE_KEY = "tr_estimate"  # session state: the estimates of the last probe, by config


def _key(config: RunConfig) -> str:
    """What an estimate depends on (fine-tuning rounds count, not fft_epochs: a probe has none)."""
    return repr((config.dataset, config.noise, config.model, config.checkpoint, config.image_size, config.method,
                 config.batch_size, config.lp_epochs, config.rounds, config.device, config.projection_methods,
                 config.turn_option("balance"), config.turn_option("scoring")))


def _estimate(config: RunConfig, batch_options: list[int]) -> None:
    """The Estimate button's callback: it runs before the widgets are drawn, so it may move
    the batch slider to a batch that fits. Keeps the estimates of the config on the form and
    of the scan where the scan is recommended, so that choosing it needs no second probe."""
    from turn_backend.preflight import prepare

    try:
        pre = prepare(config, method_given=config.method != DEFAULT_METHOD)
    except (ValueError, OSError, RuntimeError) as exc:
        st.session_state[ESTIMATE_KEY] = {"error": f"{type(exc).__name__}: {exc}", "for": _key(config)}
        return
    measurement = est.Measurement(**pre.estimate["measurement"])
    batch, fits = config.batch_size, est.fitting_batch(measurement, config)
    if measurement.device == "cpu" and fits < batch:  # the slider's largest batch that fits the form's method
        batch = max((b for b in batch_options if b <= fits), default=min(batch_options))
        st.session_state["tr_batch"] = batch
    estimates = {}
    for method in {config.method, pre.config.method}:
        variant = replace(config, method=method, batch_size=batch)
        estimates[_key(variant)] = est.extrapolate(variant, measurement)
    st.session_state[ESTIMATE_KEY] = {"estimates": estimates, "scan_recommended": pre.config.method != config.method,
                                      "lowered": (config.batch_size, batch) if batch < config.batch_size else None}


def _use_scan() -> None:
    st.session_state["tr_method"] = est.SCAN_METHOD


def estimate_panel(config: RunConfig | None, batch_options: list[int]) -> dict | None:
    """The Estimate button and, for the config on the form, its estimate and advice; returns
    the estimate to save with the run (None where there is none for this config)."""
    st.button("Estimate time and memory", icon=":material/timer:", key="tr_estimate_btn", width="stretch",
              disabled=config is None, on_click=_estimate, args=(config, batch_options),
              help="Loads the model and times a few batches of this data (about 10 s on a CPU)")
    stored = st.session_state.get(ESTIMATE_KEY)
    if config is None or stored is None:
        return None
    if "error" in stored:
        if stored["for"] == _key(config):
            ui.show_error(f"Could not estimate this run: {stored['error']}")
        return None
    e = stored["estimates"].get(_key(config))
    if e is None:  # the form changed since: press the button again
        return None
    st.info(f"**Estimate** ({e['method']}, {e['device']}, batch {e['batch_size']}): {est.summary_line(e)}; "
            f"total {est.fmt_seconds(e['total_seconds'])}.", icon=":material/timer:")
    if stored["lowered"]:
        old, new = stored["lowered"]
        st.caption(f":material/memory: Batch size lowered from {old} to {new}: at {old} the estimated peak memory "
                   "would exceed half of the memory available now.")
    if e["peak_memory_bytes"] > e["available_memory_bytes"]:
        st.warning(f"The estimated peak memory ({est.fmt_bytes(e['peak_memory_bytes'])}) exceeds the available "
                   f"{est.fmt_bytes(e['available_memory_bytes'])}: choose a smaller batch size.",
                   icon=":material/memory:")
    if stored["scan_recommended"]:
        if config.method == est.SCAN_METHOD:
            st.caption(":material/radar: The scan is recommended on this machine: when it has finished, "
                       "*Fine-tune this scan* continues from it.")
        else:
            scan = stored["estimates"][_key(replace(config, method=est.SCAN_METHOD))]
            st.warning(f"Fine-tuning would take {est.fmt_seconds(e['groups']['fine-tuning'])} on this machine. The "
                       f"scan (features, detection, audit and maps, no fine-tuning) takes "
                       f"{est.fmt_seconds(scan['total_seconds'])}, and *Fine-tune this scan* continues from it "
                       "later.", icon=":material/speed:")
            st.button("Use the scan", icon=":material/radar:", key="tr_use_scan", on_click=_use_scan)
    return e


def save_estimate(folder: RunFolder, estimate: dict | None) -> None:
    if estimate is not None:
        atomic_write_json(folder.estimate_path, estimate)


def step_details(folder: RunFolder) -> tuple[dict[str, str], str | None]:
    """Each plan step's "estimated ~X, took Y" and the whole run's time left, in words."""
    view = est.progress(folder)
    if view is None:
        return {}, None
    details = {row["key"]: est.step_text(row).removesuffix(", not yet") for row in view["steps"]}
    left = view["time_left_seconds"]
    return details, (None if left is None else f"About {est.fmt_seconds(left).lstrip('~')} left for the whole run "
                     f"(the estimate × {view['ratio']:.2f}, as the finished steps ran)")


def memory_line(folder: RunFolder) -> str | None:
    """The estimated peak memory beside the measured one, once a stage has measured it."""
    view = est.progress(folder)
    return None if view is None or not view["memory"] else view["memory"][0].upper() + view["memory"][1:]


def finetune_action(folder: RunFolder, cfg: dict, container) -> None:
    """A finished scan: the button that fine-tunes it (TURN+ from its probe on) in a new run."""
    if cfg.get("method") != est.SCAN_METHOD or folder.status().get("state") != "done":
        return
    if container.button("Fine-tune this scan", icon=":material/model_training:", key="tr_finetune",
                        help="A new TURN+ run that reuses this scan's data, features and probe and runs the "
                             "fine-tuning rounds"):
        from turn_backend.finetune import REUSED_STAGES, create_finetune_run, default_out, finetune_config
        from turn_backend.preflight import prepare

        try:
            config = finetune_config(folder.path)
            with st.spinner("Estimating the fine-tuning…"):
                pre = prepare(config, batch_given=False, reused=REUSED_STAGES)
            new = create_finetune_run(folder.path, pre.config, default_out(folder.path, config.method))
        except (ValueError, OSError) as exc:
            ui.show_error(exc)
            return
        save_estimate(new, pre.estimate)
        worker.launch(new.path, int(pre.config.num_processes or 1))
        set_current_run(new.path)
        st.toast(f"Started {new.name}: {est.summary_line(pre.estimate)}", icon=":material/model_training:")
        st.rerun()
