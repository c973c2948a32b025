"""Compare runs: two runs side by side (turn_backend.compare.compare_runs).

Test accuracy per round, detection at each run's tau, per-class test accuracy, and how
many flags changed. A run retrained from another (config `retrained_from`) opens against
its source by default.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import ui
from app.state import current_run, runs_root
from turn_backend.compare import compare_runs, retrained_pairs
from turn_backend.runfolder import RunFolder, list_runs

COLOURS = ("#4F46E5", "#F59E0B")


def default_pair(names: list[str], runs: list[RunFolder]) -> tuple[str, str]:
    """The pair asked for (Retrain panel), else the current run and its source, else the newest
    retrained run and its source, else the two newest runs."""
    asked = st.session_state.get("compare_runs")
    if asked and all(n in names for n in asked):
        return asked[0], asked[1]
    current = current_run()
    pairs = retrained_pairs(runs)
    for source, retrained in pairs:
        if current is not None and retrained.name == current.name and source.name in names:
            return source.name, retrained.name
    for source, retrained in pairs:
        if source.name in names:
            return source.name, retrained.name
    return names[min(1, len(names) - 1)], names[0]


ui.page_header("Compare runs", ":material/compare_arrows:",
               "Two runs side by side: test accuracy per round, detection, per-class accuracy and how many flags "
               "changed. A run retrained with review decisions opens against the run it came from.")

runs = list_runs(runs_root())
if len(runs) < 2:
    ui.empty_state("Comparing needs two runs. Retrain a run with your review decisions (Review or Export page), "
                   "or start another run on the Train page.", icon=":material/compare_arrows:", page="train",
                   label="Open Train")
    st.stop()

names = [r.name for r in runs]
a_default, b_default = default_pair(names, runs)
pick = st.columns(2)
name_a = pick[0].selectbox("Run A", names, index=names.index(a_default), key="compare_a")
name_b = pick[1].selectbox("Run B", names, index=names.index(b_default), key="compare_b")
st.session_state["compare_runs"] = [name_a, name_b]
if name_a == name_b:
    st.info("Pick two different runs.", icon=":material/info:")
    st.stop()

try:
    result = compare_runs(runs_root() / name_a, runs_root() / name_b)
except (ValueError, OSError, KeyError) as exc:
    ui.show_error(exc, "One of the run folders looks incomplete; pick another run.")
    st.stop()

info_a, info_b = result["runs"]
labels = [f"A: {name_a}", f"B: {name_b}"]
for col, info, label in zip(st.columns(2), result["runs"], labels):
    with col.container(border=True):
        st.markdown(f"**{label}**")
        source = info.get("retrained_from")
        line = f"{info['method']} · {info['model']} · τ = {info['tau']:.2f}"
        if source:
            line += (f"  \n:material/model_training: retrained from **{Path(str(source.get('run'))).name}** with "
                     f"{ui.fmt_int(source.get('decisions'))} decision(s) ({ui.fmt_int(source.get('relabelled'))} "
                     f"relabelled, {ui.fmt_int(source.get('removed'))} removed, {ui.fmt_int(source.get('kept'))} kept"
                     + (f", {ui.fmt_int(source.get('none'))} none of these, {ui.fmt_int(source.get('ambiguous'))} "
                        f"ambiguous, {'kept' if source.get('ambiguous_choice') == 'keep' else 'left out'}"
                        if source.get("none") or source.get("ambiguous") else "") + ")")
        if not info["finished"]:
            line += "  \n:orange-badge[:material/hourglass_top: not finished yet]"
        st.markdown(line)

# ------------------------------------------------------------------------------ accuracy

st.subheader(":material/show_chart: Test accuracy per round", anchor=False)
if not any(result["accuracy"]):
    st.caption("Neither run has measured test accuracy (no test split, or not finished).")
else:
    fig = go.Figure()
    for acc, label, colour in zip(result["accuracy"], labels, COLOURS):
        if acc:
            fig.add_trace(go.Scatter(x=[r for r, _ in acc], y=[a for _, a in acc], mode="lines+markers", name=label,
                                     line={"color": colour, "width": 3}, marker={"size": 9},
                                     hovertemplate="round %{x}: %{y:.1%}<extra>" + label + "</extra>"))
    fig.update_layout(height=340, margin={"l": 10, "r": 10, "t": 10, "b": 10}, yaxis_tickformat=".0%",
                      xaxis={"title": "round (0 = linear probe)", "dtick": 1}, yaxis_title="test accuracy",
                      legend={"orientation": "h", "y": 1.08})
    st.plotly_chart(fig, key="compare_accuracy", config={"displayModeBar": False})

# ----------------------------------------------------------------------------- detection

st.subheader(":material/flag: Detection and flags", anchor=False)
det_rows = {"flagged at the run's τ": [d.get("n_flagged") for d in result["detection"]],
            "flagged share": [ui.fmt_pct(d.get("flagged_rate")) for d in result["detection"]]}
for key, label in (("precision", "precision (flags truly wrong)"), ("recall", "recall (wrong labels flagged)"),
                   ("f1", "F1"), ("purity", "purity of the kept set"), ("true_noise_rate", "true noise rate")):
    if any(key in d for d in result["detection"]):
        det_rows[label] = [ui.fmt_pct(d.get(key)) if key in d else "–" for d in result["detection"]]
det = pd.DataFrame(det_rows, index=labels).T.astype(str)
cols = st.columns([1.6, 1])
cols[0].dataframe(det, width="stretch", key="compare_detection")
flags = result["flags"]
with cols[1]:
    if flags is None:
        st.caption("Flags can be compared once both runs have finished.")
    else:
        m = st.columns(2)
        m[0].metric("Flags changed", ui.fmt_int(flags["changed"]), border=True,
                    help="Shared samples flagged by exactly one of the two runs")
        m[1].metric("Flagged by both", ui.fmt_int(flags["flagged_both"]), border=True)
        m = st.columns(2)
        m[0].metric("Only A flags", ui.fmt_int(flags["flagged_only_a"]), border=True)
        m[1].metric("Only B flags", ui.fmt_int(flags["flagged_only_b"]), border=True)
        if flags["only_a"] or flags["only_b"]:
            st.caption(f"Counted over the {ui.fmt_int(flags['shared_samples'])} training samples both runs have; "
                       f"{ui.fmt_int(flags['only_a'])} are only in A (e.g. removed in review), "
                       f"{ui.fmt_int(flags['only_b'])} only in B.")

# ----------------------------------------------------------------------------- per class

st.subheader(":material/category: Test accuracy per class", anchor=False)
per_class = result["per_class"]
class_names = result["class_names"]
if all(p is None for p in per_class):
    st.caption("Neither run stored test predictions per round (linear-probe-only runs do not).")
else:
    k = max(len(p) for p in per_class if p is not None)
    names_k = (list(class_names) + [str(c) for c in range(len(class_names), k)])[:k]
    fig = go.Figure()
    for p, label, colour in zip(per_class, labels, COLOURS):
        if p is not None:
            fig.add_trace(go.Bar(x=names_k, y=np.asarray(p), name=label, marker_color=colour,
                                 hovertemplate="%{x}: %{y:.1%}<extra>" + label + "</extra>"))
    fig.update_layout(barmode="group", height=340, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      yaxis_tickformat=".0%", yaxis_range=[0, 1], legend={"orientation": "h", "y": 1.08})
    st.plotly_chart(fig, key="compare_per_class", config={"displayModeBar": False})
    if all(p is not None for p in per_class):
        diff = np.asarray(per_class[1]) - np.asarray(per_class[0])
        order = np.argsort(-np.abs(np.nan_to_num(diff)))[:3]
        st.caption("Largest changes (B − A): " + ", ".join(f"{names_k[c]} {diff[c]:+.1%}" for c in order
                                                           if np.isfinite(diff[c])))
