"""The Train page's progress panel: the run's stages, live progress, actions (stop, resume,
a baseline), results and log. It only reads the run folder, so it reattaches after a refresh.
"""

from __future__ import annotations

import re
import time
from datetime import datetime

import pandas as pd
import plotly.express as px
import streamlit as st

from app import run_estimate, training, ui
from app.training import accuracy_curve, related_runs, stage_details, stage_plan, worker_log_tail
from turn_backend import worker
from turn_backend.config import RunConfig, method_kind
from turn_backend.runfolder import ACTIVE_STATES, RESUMABLE_STATES, WORKING_STATES, RunFolder


def render_stages(folder: RunFolder, cfg: dict, status: dict) -> float:
    """The stage list; returns the overall fraction done."""
    plan = stage_plan(cfg)
    completed = set(folder.completed())
    if folder.has_samples():
        completed.add("data")
    details = stage_details(folder)
    estimated, _ = run_estimate.step_details(folder)
    state = status.get("state")
    current_found = False
    lines = []
    for key, title in plan:
        detail = details.get(key, "")
        if key in completed or state == "done":
            icon = ":green[:material/check_circle:]"
        elif not current_found and state in ACTIVE_STATES:
            current_found = True
            icon = ":blue[:material/pending:]"
            detail = re.sub(r"^Round \d+: ", "", status.get("stage_label") or "working…")
        elif not current_found and state in RESUMABLE_STATES:
            current_found = True
            icon = {"failed": ":red[:material/cancel:]"}.get(state, ":orange[:material/pause_circle:]")
            detail = {"failed": "failed here", "stopped": "stopped here"}.get(state, "interrupted here")
        else:
            pending = f" — {estimated[key]}" if key in estimated else ""
            lines.append(f":gray[:material/radio_button_unchecked: {title}{pending}]")
            continue
        timing = f" :gray[({estimated[key]})]" if key in estimated else ""
        lines.append(f"{icon} **{title}**" + (f" — {detail}" if detail else "") + timing)
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


def render_done(folder: RunFolder, cfg: dict) -> None:
    metrics = folder.metrics()
    m = st.columns(5)
    m[0].metric("Test acc. (best)", ui.fmt_pct(metrics.get("test_acc_best")))
    m[1].metric("Test acc. (last)", ui.fmt_pct(metrics.get("test_acc_last")))
    m[2].metric("Clean set", ui.fmt_int(metrics.get("n_clean")), help="Samples in the first round's clean set")
    m[3].metric("Purity", ui.fmt_pct(metrics.get("clean_purity")),
                help="Share of the clean set whose given label is the true one (known for synthetic noise)")
    m[4].metric("Time", ui.fmt_seconds(metrics.get("seconds_total")))
    memory = run_estimate.memory_line(folder)
    if memory:
        st.caption(f":material/memory: {memory}")
    detection = metrics.get("final_detection")
    if detection:
        st.caption(f"Noisy-label detection at τ = {cfg.get('tau', 0.6)}: "
                   f"precision {ui.fmt_pct(detection.get('precision'))}, "
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
    if state in WORKING_STATES:
        if row.button("Stop", icon=":material/stop:", key="tr_stop",
                          help="Stops after the current step; Resume continues from the last completed stage"):
            if worker.stop(folder.path):
                st.toast("Stopping…", icon=":material/stop_circle:")
            else:
                st.toast("The worker had already ended.", icon=":material/info:")
            time.sleep(0.3)
            st.rerun()
    if state in RESUMABLE_STATES or state == "queued":
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
    run_estimate.finetune_action(folder, cfg, row)
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
            # through the module, so the one place that starts runs stays the one to replace in tests
            started = training.start_run(config, int(cfg.get("num_processes", 1) or 1))
            if started is not None:
                st.toast(f"Started baseline {started.name}", icon=":material/compare_arrows:")
                st.rerun()


def progress_panel(folder: RunFolder) -> None:
    status = ui.run_state(folder)
    was_active = status.get("state") in WORKING_STATES

    @st.fragment(run_every=1.0 if was_active else None)
    def live() -> None:
        status = ui.run_state(folder)
        state = status.get("state", "new")
        if was_active and state not in WORKING_STATES:
            st.rerun()  # finished: redraw the whole page once, and stop polling
        cfg = folder.config()
        events = folder.events()
        head, badge = st.columns([4, 1])
        head.subheader(f":material/monitoring: {folder.name}", anchor=False)
        with badge:
            ui.state_badge(state)
        st.caption(f"**Method** {cfg.get('method')} · **Model** {cfg.get('model')} · "
                   f"**Data** {ui.dataset_label(cfg.get('dataset'))}, {ui.noise_label(cfg.get('noise'))} · "
                   f"**Device** {cfg.get('device')}"
                   + (f" × {cfg['num_processes']}" if cfg.get("num_processes", 1) > 1 else ""))

        if state == "failed":
            ui.show_error(status.get("error") or "The run failed.",
                          "Fix the cause (see the log below), then press Resume: finished stages are kept.")
        elif state == "interrupted":
            st.warning(status.get("stage_label") or "The worker stopped unexpectedly.", icon=":material/warning:")
        elif state == "stopped":
            st.info("Stopped. Resume continues from the last completed stage.", icon=":material/pause_circle:")
        elif state == "queued":
            st.info("This run is waiting for a worker (it was created but not started).", icon=":material/schedule:")

        overall = render_stages(folder, cfg, status)
        if state in ACTIVE_STATES:
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
            _, time_left = run_estimate.step_details(folder)
            if time_left:
                st.caption(f":material/timer: {time_left}")
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
