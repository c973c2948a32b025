"""Embeddings: the 2-D projection of the features before and after tuning (Figure 2 of the paper).

Pre-trained features form clusters that the noisy labels do not destroy; plain fine-tuning
on noisy labels blurs them; TURN keeps them. Lasso or box-select points to see the images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from PIL import Image

from app import ui
from app.state import runs_root
from turn_backend import analysis as an
from turn_backend.config import method_kind
from turn_backend.export import default_tau
from turn_backend.projection import PROJECTION_METHODS, ensure_projection
from turn_backend.runfolder import RunFolder

METHOD_LABELS = {"tsne": "t-SNE", "umap": "UMAP"}
# 10 distinct colours (Tableau), then 24 more for larger label sets
PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac", "#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728",
           "#ff9896", "#9467bd", "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7",
           "#bcbd22", "#dbdb8d", "#17becf", "#9edae5", "#393b79", "#637939", "#8c6d31", "#843c39"]
MAX_SELECTED_IMAGES = 48
IMAGES_PER_ROW = 6
PLOT_HEIGHT = 470


def method_title(method: str) -> str:
    return {"turn+": "TURN+", "turn": "TURN"}.get(method, method.upper() if method else "tuning")


@st.cache_resource(show_spinner=False, max_entries=8)
def _split_samples(run_dir: str, split: str, stamp: float) -> pd.DataFrame:
    samples = RunFolder(run_dir).samples()
    return samples[samples["split"] == split].reset_index(drop=True)


@st.cache_resource(show_spinner=False, max_entries=8)
def _final(run_dir: str, stamp: float) -> dict | None:
    return RunFolder(run_dir).final()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def get_projection(folder: RunFolder, split: str, stage: str, method: str) -> np.ndarray | None:
    """The stored projection, computed (and cached in the run folder) on first use."""
    coords = folder.projection(split, stage, method)
    if coords is not None:
        return coords
    if not (folder.path / "projections" / f"{split}_features_{stage}.npy").exists():
        return None
    subset = folder.projection_subset(split)
    n = 0 if subset is None else len(subset)
    with st.spinner(f"Computing the {METHOD_LABELS.get(method, method)} projection of {n} points "
                    f"({'about 20 s the first time' if method == 'umap' else 'a few seconds'}); "
                    "it is saved with the run for next time…", show_time=True):
        return ensure_projection(folder.path, split, stage, method)


def scatter(frame: pd.DataFrame, colour: str, title: str, classes: list[str], mark_flagged: bool,
            colour_of: dict[str, str]) -> go.Figure:
    """One panel: a trace per category (or one continuous trace), flagged samples as crosses."""
    fig = go.Figure()
    pos = np.arange(len(frame))
    extra = frame["pred"] if "pred" in frame else frame["true"]
    extra_name = "predicted" if "pred" in frame else "true"
    cp = frame["clean_prob"].map(lambda v: f"{v:.2f}") if "clean_prob" in frame else pd.Series(["–"] * len(frame))
    custom = np.column_stack([pos, frame["sample_id"], frame["given"], extra, cp]).astype(object)
    flagged = frame["flagged"].to_numpy() if (mark_flagged and "flagged" in frame) else np.zeros(len(frame), bool)
    symbols = np.where(flagged, "x", "circle")
    hover = ("<b>%{customdata[1]}</b><br>given: %{customdata[2]}<br>" + extra_name +
             ": %{customdata[3]}" + ("<br>clean prob: %{customdata[4]}" if "clean_prob" in frame else "") +
             "<extra></extra>")
    if colour == "clean_prob":
        fig.add_scatter(
            x=frame["x"], y=frame["y"], mode="markers", customdata=custom, hovertemplate=hover,
            name="clean probability", showlegend=False,
            marker=dict(color=frame["clean_prob"], colorscale="RdYlGn", cmin=0, cmax=1, size=7, symbol=symbols,
                        line=dict(width=0),
                        colorbar=dict(title=dict(text="clean prob", side="right"), thickness=12, len=0.8)),
        )
    else:
        values = frame[colour].to_numpy()
        order = [c for c in classes if c in set(values)] + sorted(set(values) - set(classes))
        for cat in order:
            sel = values == cat
            colour_cat = colour_of.get(cat, "#9e9e9e")
            fig.add_scatter(
                x=frame["x"][sel], y=frame["y"][sel], mode="markers", name=str(cat), customdata=custom[sel],
                hovertemplate=hover, legendgroup=str(cat), showlegend=False,
                marker=dict(color=colour_cat, size=7, symbol=symbols[sel], opacity=0.85, line=dict(width=0)),
            )
            # the legend entry: a plain dot (a trace's legend shows its first point's symbol)
            fig.add_scatter(x=[None], y=[None], mode="markers", name=str(cat), legendgroup=str(cat),
                            marker=dict(color=colour_cat, size=8, symbol="circle"), hoverinfo="skip")
    if flagged.any():
        fig.add_scatter(x=[None], y=[None], mode="markers", name="flagged (p ≤ τ)",
                        marker=dict(symbol="x", color="#424242", size=8), hoverinfo="skip")
    fig.update_layout(
        height=PLOT_HEIGHT, dragmode="lasso", margin=dict(l=5, r=5, t=30, b=5), plot_bgcolor="rgba(0,0,0,0)",
        legend=dict(orientation="h", y=-0.02, yanchor="top", x=0, font=dict(size=11), itemsizing="constant"),
        uirevision=title,
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor=None)
    return fig


def thumb(img: Image.Image, size: int = 96) -> Image.Image:
    w, h = img.size
    s = size / max(w, h)
    return img.resize((max(1, round(w * s)), max(1, round(h * s))),
                      Image.NEAREST if max(w, h) <= 64 else Image.LANCZOS)


# ---------------------------------------------------------------------------------- page

ui.page_header("Embeddings", ":material/scatter_plot:",
               "A 2-D map of the image features before and after tuning (Figure 2 of the TURN paper). In the "
               "paper, plain fine-tuning on noisy labels blurs the class clusters and TURN keeps them apart: "
               "compare them on your data.")

run = ui.require_finished_run("The projections are drawn")

cfg = run.config()
split = cfg.get("projection_split", "test")
subset = run.projection_subset(split)
if subset is None:
    ui.empty_state(f"Run **{run.name}** has no projections: it was trained with projections turned off. "
                   "Start a run with t-SNE or UMAP selected on the Train page to see the embeddings.",
                   icon=":material/scatter_plot:", page="train", label="Open Train")
    st.stop()

classes = ui.class_names(run)
run_dir = str(run.path.resolve())
samples_stamp = _mtime(run.path / "samples.parquet")
split_samples = _split_samples(run_dir, split, samples_stamp)
final = _final(run_dir, _mtime(run.final_dir / "clean_prob.npy")) if split == "train" else None
tau = default_tau(run)
colour_of = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(classes)}
colour_of["unknown"] = "#9e9e9e"

# ------------------------------------------------------------------------------ controls

stored = [m for m in PROJECTION_METHODS if run.projection(split, "before", m) is not None]
c = st.columns([1.2, 1.6, 1.2, 2], vertical_alignment="bottom")
method = c[0].segmented_control("Projection", list(PROJECTION_METHODS), format_func=METHOD_LABELS.get,
                                default=stored[0] if stored else "tsne", key="emb_method",
                                help="t-SNE is computed during training; UMAP is computed here the first time "
                                     "(about 20 s) and saved with the run.") or (stored[0] if stored else "tsne")

try:
    before = get_projection(run, split, "before", method)
    after = get_projection(run, split, "after", method)
except ImportError:
    ui.show_error(f"{METHOD_LABELS[method]} is not installed in this environment.",
                  "Install umap-learn (`pip install umap-learn`) or pick t-SNE.")
    st.stop()
except (ValueError, OSError) as exc:
    ui.show_error(exc, "Pick the other projection method, or retrain the run.")
    st.stop()

if before is None:
    ui.empty_state("The stored features of this run's projection subset are missing, so the "
                   f"{METHOD_LABELS[method]} map cannot be drawn. Pick another method or retrain the run.",
                   icon=":material/scatter_plot:")
    st.stop()

try:
    frame = an.projection_frame(before, subset, split_samples, classes, final, tau)
except ValueError as exc:
    ui.show_error(exc, "Retrain the run to rebuild its projections.")
    st.stop()

options = an.colour_options(frame)
colour = c[1].selectbox("Colour by", list(options), format_func=options.get, key="emb_colour")
mark_flagged = "flagged" in frame and c[2].toggle(
    "Mark flagged", value=True, key="emb_flagged",
    help=f"Cross the samples whose clean probability is at or below τ = {tau:.2f}")
n_classes = int(frame["given"].nunique())
c[3].caption(f"{ui.fmt_int(len(frame))} {split} images of {n_classes} classes"
             + (f" · {int(frame['flagged'].sum())} flagged at τ = {tau:.2f}" if "flagged" in frame else "")
             + (f" · {int(frame['mislabelled'].sum())} with a wrong given label"
                if frame["mislabelled"].any() else ""))

if split == "test":
    st.caption(":material/info: These are **test** images (the run's projection split). Clean probabilities, "
               "predictions and the flagged marks exist for training samples only, so the map is coloured by "
               "given or true label; set the projection split to *train* on the Train page to see them here.")

# -------------------------------------------------------------------------------- panels

panels: list[tuple[str, str, pd.DataFrame]] = [("before", "Before tuning (pre-trained features)", frame)]

ref = None
if method_kind(cfg.get("method", "")) == "turn":
    ref = an.find_reference_run(runs_root(), cfg, exclude=run.path)
if ref is not None:
    try:
        ref_subset = ref.projection_subset(split)
        ref_after = get_projection(ref, split, "after", method) if ref_subset is not None else None
        if ref_after is not None:
            ref_final = (_final(str(ref.path.resolve()), _mtime(ref.final_dir / "clean_prob.npy"))
                         if split == "train" else None)
            panels.append(("fft", f"After plain FFT ({ref.name})",
                           an.projection_frame(ref_after, ref_subset, split_samples, classes, ref_final, tau)))
    except (ValueError, OSError, ImportError) as exc:
        st.caption(f":material/warning: The plain-FFT run {ref.name} could not be drawn: {exc}")

if after is not None:
    after_frame = frame.copy()
    after_frame["x"], after_frame["y"] = after[:, 0], after[:, 1]
    panels.append(("after", f"After {method_title(cfg.get('method', ''))}", after_frame))

cols = st.columns(len(panels) if len(panels) > 1 else [1, 1])
selected_idx: list[int] = []
for col, (stage, title, f) in zip(cols, panels):
    with col:
        st.markdown(f"**{title}**")
        fig = scatter(f, colour if colour in f else "given", title, classes, mark_flagged, colour_of)
        event = st.plotly_chart(fig, width="stretch", key=f"emb_chart_{stage}", on_select="rerun",
                                selection_mode=("lasso", "box"),
                                config={"displaylogo": False, "modeBarButtonsToRemove": ["toImage"]})
        for row in an.selected_rows(event):
            if 0 <= row < len(f):
                idx = int(f["index"].iloc[row])
                if idx not in selected_idx:
                    selected_idx.append(idx)
if after is None:
    with cols[1]:
        st.info("No *after* map: a linear probe trains only the head, so the features stay the pre-trained ones."
                if method_kind(cfg.get("method", "")) == "lp" else
                "The *after tuning* features of this run are missing; retrain it to draw them.",
                icon=":material/info:")
if ref is None and method_kind(cfg.get("method", "")) == "turn":
    st.caption(":material/lightbulb: Train an **fft-ce** run on the same data, noise and projection split "
               f"(*{split}*) on the Train page to add a third map: plain fine-tuning on the noisy labels, as in "
               "the paper's Figure 2.")

# ------------------------------------------------------------------------------ selection

st.subheader(":material/photo_library: Selected images", anchor=False)
if not selected_idx:
    st.caption("Draw a lasso or a box on any map (the lasso is the default tool) to see those images here, "
               "with their labels. Double-click a map to clear its selection.")
else:
    by_index = frame.set_index("index")
    shown = selected_idx[:MAX_SELECTED_IMAGES]
    st.caption(f"{len(selected_idx)} selected" + (f"; the first {len(shown)} are shown" if len(shown) < len(
        selected_idx) else "") + ".")
    try:
        bundle = ui.run_bundle(run)
        images = bundle.test if split == "test" else bundle.train
    except Exception as exc:  # noqa: BLE001 - labels still show without images
        images = None
        st.warning(f"The images could not be loaded ({exc}); showing labels only.", icon=":material/hide_image:")
    for start in range(0, len(shown), IMAGES_PER_ROW):
        row_cols = st.columns(IMAGES_PER_ROW)
        for col, idx in zip(row_cols, shown[start:start + IMAGES_PER_ROW]):
            info = by_index.loc[idx] if idx in by_index.index else None
            given = split_samples["given_label"].iloc[idx]
            true = split_samples["true_label"].iloc[idx]
            lines = [f"given **{classes[given]}**"]
            if true >= 0 and true != given:
                lines.append(f":red[true **{classes[true]}**]")
            if info is not None and "pred" in frame:
                lines.append(f"pred {info['pred']} · clean {info['clean_prob']:.2f}")
            with col:
                if images is not None:
                    try:
                        st.image(thumb(images.load_image(int(idx)), 112), width=112)
                    except Exception:  # noqa: BLE001
                        st.caption(":material/hide_image:")
                st.caption("  \n".join(lines))
