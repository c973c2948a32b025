"""Annotators: for a run whose images were labelled by several annotators, each annotator's
estimated quality (from the aggregator's posterior; no ground truth needed), how many images
they labelled and how often they agree with the consensus, and their confusion matrix
(consensus label x their label). Choosing an annotator opens Review on the images where
their label differs from the consensus."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from app import annotator_view, audit_data, ui
from app.annotator_view import OPEN_REVIEW_KEY

AGGREGATOR_NAMES = {"dawid-skene": "Dawid-Skene", "majority": "majority vote", "glad": "GLAD", "mace": "MACE"}


def confusion_heatmap(counts: np.ndarray, names: list[str]) -> go.Figure:
    """Row-normalised shares as colour (of the images with that consensus label, how many the
    annotator gave each label), the counts as text."""
    k = len(names)
    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    text = [[f"{counts[i, j]:,}" if counts[i, j] else "" for j in range(k)] for i in range(k)]
    fig = go.Figure(go.Heatmap(
        z=shares.tolist(), x=names, y=names, text=text, texttemplate="%{text}", colorscale="Blues", zmin=0, zmax=1,
        colorbar={"title": "share of<br>the row", "tickformat": ".0%"},
        hovertemplate="consensus %{y}<br>their label %{x}<br>%{z:.1%} of the row<extra></extra>"))
    fig.update_layout(height=max(380, 38 * k + 150), margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      xaxis={"title": "their label", "tickangle": -30},
                      yaxis={"title": "consensus label", "autorange": "reversed"}, dragmode=False)
    return fig


ui.page_header("Annotators", ":material/groups:",
               "Who labelled this dataset and how well: each annotator's estimated quality, agreement with the "
               "consensus and confusions. Open an annotator's disagreements in Review.")

if st.session_state.pop(OPEN_REVIEW_KEY, False):
    ui.switch_page("review")

run = ui.require_finished_run("Its annotators appear")
run_dir = str(run.path.resolve())
data = annotator_view.annotators(run_dir, audit_data.stamp(run))
if data is None:
    ui.empty_state(f"Run **{run.name}** has one label per image. To compare annotators, load a manifest with "
                   "several annotators per image (one row per image and annotator with an `annotator` column, or "
                   "one column `annotator_NAME` per annotator) on the Dataset page.",
                   icon=":material/group_off:", page="dataset", label="Open Dataset")
    st.stop()

names = ui.class_names(run) or [str(c) for c in range(data["posterior"].shape[1])]
consensus = data["consensus"]
quality = data["quality"].reset_index(drop=True)
disagreeing = {name: int(annotator_view.disagreement_mask(run_dir, audit_data.stamp(run), name).sum())
               for name in quality["annotator"]}

m = st.columns(4)
m[0].metric("Annotators", ui.fmt_int(len(quality)), border=True)
m[1].metric("Images", ui.fmt_int(len(consensus)), border=True)
m[2].metric("Unanimous images", ui.fmt_pct(float((consensus["agreement"] >= 1).mean())), border=True,
            help="Share of images whose annotators all gave the consensus label")
m[3].metric("Labels per image", f"{consensus['n_labels'].mean():.1f}", border=True,
            help="Annotators per image, on average")
st.caption(f"The run's given labels are the annotators' **{AGGREGATOR_NAMES.get(data['method'], data['method'])}** "
           "consensus; their agreement is one of the detection signals on Review.")

st.subheader("Ranked by estimated quality", anchor=False)
table = quality.assign(rank=np.arange(1, len(quality) + 1), disagreements=quality["annotator"].map(disagreeing))
st.dataframe(
    table[["rank", "annotator", "quality", "n_labels", "agreement_with_consensus", "disagreements"]],
    hide_index=True, width="stretch", key="annotator_table",
    column_config={
        "rank": st.column_config.NumberColumn("Rank", width="small"),
        "annotator": st.column_config.TextColumn("Annotator"),
        "quality": st.column_config.ProgressColumn(
            "Estimated quality", min_value=0.0, max_value=1.0, format="percent",
            help="The probability the aggregator's posterior gives their labels, on average: an estimate of their "
                 "accuracy that needs no ground truth"),
        "n_labels": st.column_config.NumberColumn("Images labelled"),
        "agreement_with_consensus": st.column_config.NumberColumn(
            "Agree with consensus", format="percent", help="Share of their labels equal to the consensus label"),
        "disagreements": st.column_config.NumberColumn("Disagreements", help="Images where their label differs"),
    })

st.subheader("One annotator", anchor=False)
pick = st.columns([2, 2, 3], vertical_alignment="bottom")
# the lowest-ranked annotator first: the one most worth a look
chosen = pick[0].selectbox("Annotator", list(quality["annotator"]), index=len(quality) - 1, key="annotator_choice",
                           help="Ranked best first")
n_disagree = disagreeing[chosen]
plural = "" if n_disagree == 1 else "s"
pick[1].button(f"Review their {ui.fmt_int(n_disagree)} disagreement{plural}", icon=":material/rate_review:",
               key="annotator_open_review", type="primary", on_click=annotator_view.open_review, args=(chosen,),
               disabled=n_disagree == 0, width="stretch",
               help="Open Review on the images where their label differs from the consensus")
row = quality.set_index("annotator").loc[chosen]
pick[2].caption(f"**{chosen}** labelled {ui.fmt_int(row['n_labels'])} images; estimated quality "
                f"{row['quality']:.0%}, agrees with the consensus on {row['agreement_with_consensus']:.0%}.")
st.plotly_chart(confusion_heatmap(data["confusion"][chosen], names), key="annotator_confusion",
                config={"displayModeBar": False})
st.caption("Rows: the consensus label. Columns: the label this annotator gave. Colour: share of the row; numbers: "
           "images. Off the diagonal: where they disagree with the others, and with which class they confuse it.")
