"""Noise matrix: the estimated noise transition matrix (given class x likely true class).

Read from the run's detection layer (final/noise_matrix.json). Clicking a cell opens Review
filtered to the samples given that label whose suggested label is that column.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from app import audit_data, ui
from app import threshold_view as tv
from turn_backend import analysis as an
from turn_backend.export import default_tau

TOP_CONFUSIONS = 8


def open_review(given: int, likely: int) -> None:
    """Review, filtered to one cell (the other Review filters cleared so the cell shows whole).
    Set in a callback; the page switch happens in the script run that follows."""
    st.session_state["review_pair"] = (int(given), int(likely))
    for key in ("review_given_filter", "review_pred_filter", "review_kind_filter"):
        st.session_state.pop(key, None)
    st.session_state["review_page"] = 0
    st.session_state["noise_open_review"] = True


def heatmap(rates: np.ndarray, counts: np.ndarray, names: list[str]) -> go.Figure:
    """Row-normalised rates as colour, the estimated counts as text; an invisible marker on
    each cell makes a click select that cell (a plotly heatmap alone has no selection)."""
    k = len(names)
    text = [[f"{counts[i, j]:,.0f}" if counts[i, j] >= 0.5 else "" for j in range(k)] for i in range(k)]
    fig = go.Figure(go.Heatmap(
        z=rates.tolist(), x=names, y=names, text=text, texttemplate="%{text}", colorscale="Blues", zmin=0, zmax=1,
        colorbar={"title": "share of<br>the row", "tickformat": ".0%"},
        hovertemplate="given %{y}<br>likely %{x}<br>%{z:.1%} of the class<extra></extra>",
    ))
    gi, gj = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    fig.add_trace(go.Scatter(
        x=[names[j] for j in gj.ravel()], y=[names[i] for i in gi.ravel()], mode="markers",
        marker={"size": max(12, 400 // max(k, 1)), "symbol": "square", "opacity": 0.0},
        customdata=np.stack([gi.ravel(), gj.ravel(), counts.ravel()], axis=1).tolist(),
        hovertemplate="given %{y}<br>likely %{x}<br>about %{customdata[2]:,.0f} samples<br>"
                      "click: review them<extra></extra>",
        showlegend=False,
    ))
    fig.update_layout(
        height=max(420, 42 * k + 160), margin={"l": 10, "r": 10, "t": 10, "b": 10}, clickmode="event+select",
        # the cell markers must not pad the axes beyond the heatmap's cells
        xaxis={"title": "likely true class", "side": "bottom", "tickangle": -30, "range": [-0.5, k - 0.5]},
        yaxis={"title": "given label", "range": [k - 0.5, -0.5]}, dragmode=False,
    )
    return fig


ui.page_header("Noise matrix", ":material/grid_on:",
               "How the given labels map to the likely true classes, estimated from the detection signals. "
               "Click a cell to review its samples.")

if st.session_state.pop("noise_open_review", False):
    ui.switch_page("review")

run = ui.require_finished_run("Its noise matrix appears")
detection = audit_data.detection(run)
if detection is None:
    ui.empty_state(f"Run **{run.name}** has no noise matrix: it was trained before the detection layer existed. "
                   "Retrain it (Threshold page, or Review's *Retrain with my decisions*) to estimate one; the "
                   "Threshold page shows this run's flags meanwhile.",
                   icon=":material/grid_off:", page="threshold", label="Open Threshold")
    st.stop()

warning_box = st.container()  # filled once the page knows whether its counts are recalibrated
names = ui.class_names(run) or [str(c) for c in range(len(detection["noise_counts"]))]
counts = np.asarray(detection["noise_counts"], dtype=np.float64)
if counts.shape != (len(names), len(names)):
    ui.show_error(f"The noise matrix is {counts.shape[0]} x {counts.shape[1]} for {len(names)} classes; the run "
                  "folder is inconsistent. Retrain the run to rebuild it.")
    st.stop()
tau = default_tau(run)
combined = detection["signals"]["combined"].to_numpy(dtype=np.float64)
samples = audit_data.samples(run)
train = samples[samples["split"] == "train"]
calibration = tv.run_calibration(run)
noise_rate = detection["noise_rate"]
calibrated = tv.calibration_toggle(calibration, "noise_calibrate_on_review")
ui.unreliable_flags_warning(detection.get("reliability"), warning_box,
                            recalibrated_on=calibration["fit"]["n"] if calibrated else 0)
if calibrated:
    counts = an.recount_noise_counts(counts, train["given_label"].to_numpy(dtype=np.int64),
                                     calibration["counting_prob"])
    noise_rate = calibration["noise_estimate"]["rate"]
rates = an.noise_rates(counts)

m = st.columns(4)
m[0].metric("Estimated noise rate", ui.fmt_pct(noise_rate), border=True,
            help="Estimated fraction of wrong labels, from the combined clean probability of the detection signals"
                 + (", recalibrated on your Review decisions" if calibrated else ""))
m[1].metric(f"Flagged at τ = {tau:.2f}", ui.fmt_pct((combined <= tau).mean() if len(combined) else None),
            border=True, help="Share of training samples whose combined clean probability is at most τ")
m[2].metric("Off-diagonal samples", ui.fmt_int(round(counts.sum() - np.trace(counts))), border=True,
            help="Estimated number of samples whose likely true class differs from the given label")
true = train["true_label"].to_numpy(dtype=np.int64)
known = true >= 0
if known.any():
    actual = float((train["given_label"].to_numpy(dtype=np.int64)[known] != true[known]).mean())
    m[3].metric("True noise rate", ui.fmt_pct(actual), border=True,
                help="From the dataset's ground truth (synthetic noise): what the estimate aims at")
else:
    m[3].metric("Classes", ui.fmt_int(len(names)), border=True)

left, right = st.columns([3, 1.3], gap="large")
with left:
    # a new key after each click, so that coming back does not find the old cell still selected
    generation = st.session_state.get("noise_chart_generation", 0)
    event = st.plotly_chart(heatmap(rates, counts, names), key=f"noise_heatmap_{generation}", on_select="rerun",
                            selection_mode="points", config={"displayModeBar": False})
    points = (event or {}).get("selection", {}).get("points", []) if event else []
    cell = next((p.get("customdata") for p in points if p.get("customdata")), None)
    if cell is not None:
        st.session_state["noise_chart_generation"] = generation + 1
        open_review(int(cell[0]), int(cell[1]))
        ui.switch_page("review")
    st.caption("Rows: the label the dataset gives. Columns: the class the detection signals find most likely. "
               "Colour: share of the row; numbers: estimated samples. The diagonal is the labels that look right.")

with right:
    st.markdown("**Largest confusions**")
    off = [(counts[i, j], i, j) for i in range(len(names)) for j in range(len(names)) if i != j and counts[i, j] >= 0.5]
    off.sort(reverse=True)
    if not off:
        st.caption("No off-diagonal cell: every label looks right.")
    for n, (c, i, j) in enumerate(off[:TOP_CONFUSIONS]):
        st.button(f"{names[i]} → {names[j]}: {c:,.0f} ({rates[i, j]:.0%})", key=f"confusion_{i}_{j}",
                  on_click=open_review, args=(i, j), width="stretch", icon=":material/rate_review:",
                  type="primary" if n == 0 else "secondary")
    with st.expander("Open any cell"):
        g = st.selectbox("Given label", names, key="noise_given")
        t = st.selectbox("Likely true class", names, key="noise_likely")
        st.button("Review these samples", icon=":material/rate_review:", key="noise_open", on_click=open_review,
                  args=(names.index(g), names.index(t)))
