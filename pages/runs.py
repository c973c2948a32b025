"""Runs: every run under the runs root; open one, start a new one, delete one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import streamlit as st

from app import threshold_view as tv
from app import ui
from app.embedding_maps import preload_maps
from app.state import RUN_KEY, current_run, runs_root, set_current_run
from turn_backend.runfolder import ACTIVE_STATES, RunFolder, list_runs

ui.page_header("Runs", ":material/folder_open:",
               "Every training run is a folder under the runs root; open one to audit its labels.")

root = runs_root()
runs = list_runs(root)

top = st.columns([1, 1, 4])
with top[0]:
    ui.page_link("train", label="New run", icon=":material/add_circle:")
with top[1]:
    ui.page_link("dataset", label="Choose data", icon=":material/dataset:")

if not runs:
    ui.empty_state(f"No runs yet under `{root}`. Start one on the Train page: the Fashion-MNIST demo "
                   "with 40% label noise is preselected.", icon=":material/lightbulb:",
                   page="train", label="Start your first run")
    st.stop()

current = current_run()
rows = [ui.run_summary(r) for r in runs]
table = pd.DataFrame(rows)
table["created"] = pd.to_datetime(table["created"], unit="s")
table["state"] = [ui.state_style(s)[2] for s in table["state"]]
table.insert(1, "open", ["open" if current is not None and n == current.name else "" for n in table["name"]])
table["dataset"] = table["dataset"] + ", " + table["noise"]
table["flags"] = table["flags_reliable"].map({True: "ok", False: "⚠ cannot be trusted"}).fillna("–")
table = table[["name", "open", "state", "method", "model", "dataset", "test_acc", "est_noise", "flags", "n_clean",
               "created"]]

st.subheader(f":material/list: {len(runs)} run{'s' if len(runs) != 1 else ''}", anchor=False)
st.caption(f"Runs root: `{root}` (set `TURN_RUNS_DIR` to use another folder). "
           "Select a row to open that run.")
event = st.dataframe(
    table,
    hide_index=True,
    width="stretch",
    on_select="rerun",
    selection_mode="single-row",
    key="runs_table",
    column_config={
        "name": st.column_config.TextColumn("Run", width="medium"),
        "open": st.column_config.TextColumn("", help="The run the other pages show", width=50),
        "method": st.column_config.TextColumn("Method"),
        "model": st.column_config.TextColumn("Model"),
        "dataset": st.column_config.TextColumn("Data", width="large"),
        "state": st.column_config.TextColumn("State"),
        "test_acc": st.column_config.NumberColumn("Test acc. (best)", format="percent"),
        "est_noise": st.column_config.NumberColumn(
            "Est. noise", format="percent",
            help="Expected share of wrong labels, the model's own (no ground truth read); the run's panel "
                 "recalibrates it on your Review decisions once a spot check is decided"),
        "flags": st.column_config.TextColumn("Flags", help="Whether the run's model can judge its labels"),
        "n_clean": st.column_config.NumberColumn("Clean set", help="Samples in TURN's first clean set"),
        "created": st.column_config.DatetimeColumn("Created", format="YYYY-MM-DD HH:mm"),
    },
)
selected_rows = getattr(getattr(event, "selection", None), "rows", None) or []
picked = runs[selected_rows[0]].name if selected_rows and selected_rows[0] < len(runs) else None
if picked != st.session_state.get("runs_table_last"):  # act on a new selection only
    st.session_state["runs_table_last"] = picked
    if picked and (current is None or picked != current.name):
        set_current_run(root / picked)
        st.rerun()

st.divider()
names = [r.name for r in runs]
default = names.index(current.name) if current is not None and current.name in names else 0
# Follow the open run when it changes elsewhere (table, sidebar); keep the user's pick otherwise.
if current is not None and st.session_state.get("runs_choice_follows") != current.name:
    st.session_state["runs_choice_follows"] = current.name
    if current.name in names:
        st.session_state["runs_choice"] = current.name
if st.session_state.get("runs_choice") not in names:
    st.session_state["runs_choice"] = names[default]
left, right = st.columns([2, 3], gap="large")
with left:
    st.subheader(":material/open_in_new: Open or delete", anchor=False)
    choice = st.selectbox("Run", names, key="runs_choice")
    folder = RunFolder(root / choice)
    summary = ui.run_summary(folder)
    b1, b2 = st.columns(2)
    if b1.button("Open", icon=":material/open_in_new:", type="primary", width="stretch", key="runs_open"):
        set_current_run(folder)
        st.toast(f"Opened {choice}", icon=":material/check:")
        st.rerun()
    active = summary["state"] in ACTIVE_STATES
    if b2.button("Delete…", icon=":material/delete:", width="stretch", key="runs_delete", disabled=active,
                 help="Stop the run first" if active else "Delete this run folder and everything in it"):
        st.session_state["runs_confirm_delete"] = choice

    pending = st.session_state.get("runs_confirm_delete")
    if pending:
        st.warning(f"Delete **{pending}** and all its files (features, checkpoints, review decisions, "
                   "exports)? This cannot be undone.", icon=":material/warning:")
        c1, c2 = st.columns(2)
        if c1.button("Delete for good", icon=":material/delete_forever:", type="primary", width="stretch",
                     key="runs_confirm"):
            target = (root / pending).resolve()
            st.session_state.pop("runs_confirm_delete", None)
            if target.parent != root or not RunFolder(target).exists():
                ui.show_error(f"{pending} is not a run folder under {root}; nothing was deleted.")
            elif ui.run_state(RunFolder(target)).get("state") in ACTIVE_STATES:
                ui.show_error(f"{pending} is still running.", "Stop it on the Train page first.")
            else:
                try:
                    shutil.rmtree(target)
                except OSError as exc:
                    ui.show_error(f"Could not delete {pending}: {exc}")
                else:
                    if st.session_state.get(RUN_KEY) and Path(st.session_state[RUN_KEY]).resolve() == target:
                        st.session_state.pop(RUN_KEY, None)
                        st.query_params.pop("run", None)
                    st.toast(f"Deleted {pending}", icon=":material/delete:")
                    st.rerun()
        if c2.button("Cancel", width="stretch", key="runs_cancel"):
            st.session_state.pop("runs_confirm_delete", None)
            st.rerun()

with right:
    st.subheader(f":material/info: {choice}", anchor=False)
    ui.state_badge(summary["state"])
    calibration = tv.run_calibration(folder) if folder.has_final() else None
    ui.unreliable_flags_warning(summary["reliability"], recalibrated_on=calibration["fit"]["n"] if calibration else 0)
    m = st.columns(5)
    m[0].metric("Test acc. (best)", ui.fmt_pct(summary["test_acc"]))
    m[1].metric("Test acc. (last)", ui.fmt_pct(summary["test_acc_last"]))
    if calibration is None:
        m[2].metric("Est. noise", ui.fmt_pct(summary["est_noise"]),
                    help="Expected share of wrong labels, from the clean probabilities (no ground truth read)")
    else:
        m[2].metric("Est. noise", ui.fmt_pct(calibration["noise_estimate"]["rate"]),
                    help=f"Expected share of wrong labels, from the clean probabilities recalibrated on your "
                         f"{ui.fmt_int(calibration['fit']['n'])} Review decisions (Threshold page)")
    m[3].metric("Clean set", ui.fmt_int(summary["n_clean"]))
    m[4].metric("Purity", ui.fmt_pct(summary["purity"]), help="Share of the clean set whose given label is right")
    if calibration is not None:  # the panel's columns are too narrow for this as the metric's delta
        st.caption(f"Est. noise recalibrated on your {ui.fmt_int(calibration['fit']['n'])} Review decisions; "
                   f"the model's own: {ui.fmt_pct(summary['est_noise'])}.")
    st.caption(f"**Method** {summary['method']} · **Model** {summary['model']} · "
               f"**Data** {summary['dataset']}, {summary['noise']} · **Created** {ui.fmt_time(summary['created'])}")
    error = ui.run_state(folder).get("error")
    if summary["state"] == "failed" and error:
        ui.show_error(error, "Open the Train page to resume it after fixing the cause.")
    if current is not None and choice == current.name:
        links = st.columns(4)
        with links[0]:
            ui.page_link("train", label="Progress", icon=":material/monitoring:")
        with links[1]:
            ui.page_link("embeddings")
        with links[2]:
            ui.page_link("threshold")
        with links[3]:
            ui.page_link("review")
    else:
        st.caption("Open this run to follow its progress and audit its labels.")

if current is not None:
    preload_maps(current)  # the Embeddings page's maps, built while the user reads this page
