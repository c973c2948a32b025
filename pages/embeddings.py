"""Embeddings: 2-D maps of every training sample's features before and after tuning (Figure 2 of the paper).

Pre-trained features form clusters that the noisy labels do not destroy; plain fine-tuning
on noisy labels blurs them; TURN keeps them. The maps are WebGL scatter plots of up to
`an.MAX_MAP_POINTS` samples; beyond that, a picture of every sample drawn on the server with
a random sample of them on top as WebGL points. Hovering a point shows its image; a lasso or
box selection on one map (over every sample, drawn one by one or not) highlights the same
samples on the others and lists their images below.
"""

from __future__ import annotations

from html import escape

import numpy as np
import streamlit as st

from app import audit_data, ui
from app.embedding_maps import (
    METHOD_LABELS,
    class_colours,
    data_uri,
    describe,
    ensure_map,
    hover_bridge,
    load_images,
    map_figure,
    map_key,
    map_table,
    method_title,
    reference_run,
    selection_layer,
    selection_pictures,
    split_rows,
    split_samples,
    thumb,
)
from turn_backend import analysis as an
from turn_backend.config import method_kind
from turn_backend.export import default_tau
from turn_backend.projection import PROJECTION_METHODS
from turn_backend.thumbnails import preview_image

MAX_SELECTED_IMAGES = 48
IMAGES_PER_ROW = 6
HOVER_THUMB_PX = 112
GALLERY_THUMB_PX = 112
TRUE_LABEL_RED = "#d32f2f"
SELECTION_FADE = 0.12  # opacity of what a selection leaves out on a large map (as plotly fades points)


# ---------------------------------------------------------------------------------- page

ui.page_header("Embeddings", ":material/scatter_plot:",
               "A 2-D map of every sample's image features before and after tuning (Figure 2 of the TURN "
               "paper). In the paper, plain fine-tuning on noisy labels blurs the class clusters and TURN keeps "
               "them apart: compare them on your data. Hover a point to see its image.")

run = ui.require_finished_run("The maps are drawn")
ui.preload_charts()  # the browser loads the chart code while the maps are computed below

cfg = run.config()
split = cfg.get("projection_split", "test")
subset = run.projection_subset(split)
if subset is None:
    ui.empty_state(f"Run **{run.name}** has no maps: it was trained with projections turned off. "
                   "Start a run with t-SNE or UMAP selected on the Train page to see the embeddings.",
                   icon=":material/scatter_plot:", page="train", label="Open Train")
    st.stop()

classes = ui.class_names(run)
run_dir = str(run.path.resolve())
tau = default_tau(run)
colour_of = class_colours(classes)
kind = method_kind(cfg.get("method", ""))

# ------------------------------------------------------------------------------ controls

stored = [m for m in PROJECTION_METHODS if run.projection(split, "before", m) is not None]
c = st.columns([1.2, 1.6, 1.2, 2], vertical_alignment="bottom")
method = c[0].segmented_control("Projection", list(PROJECTION_METHODS), format_func=METHOD_LABELS.get,
                                default=stored[0] if stored else "tsne", key="emb_method",
                                help="t-SNE is computed during training; UMAP is computed here the first time "
                                     "and saved with the run.") or (stored[0] if stored else "tsne")

ref = reference_run(run)
try:
    has_before = ensure_map(run, split, "before", method)
    has_after = ensure_map(run, split, "after", method)
    if ref is not None and not ensure_map(ref, split, "after", method):
        ref = None
except ImportError:
    ui.show_error(f"{METHOD_LABELS[method]} is not installed in this environment.",
                  "Install umap-learn (`pip install umap-learn`) or pick t-SNE.")
    st.stop()
except (ValueError, OSError) as exc:
    ui.show_error(exc, "Pick the other projection method, or retrain the run.")
    st.stop()

if not has_before:
    ui.empty_state("The stored features of this run's map are missing, so the "
                   f"{METHOD_LABELS[method]} map cannot be drawn. Pick another method or retrain the run.",
                   icon=":material/scatter_plot:")
    st.stop()

key = map_key(run, split, method, ref)
stamp = key[3]  # when the maps were last written
try:
    frame = map_table(*key)
except ValueError as exc:
    ui.show_error(exc, "Retrain the run to rebuild its maps.")
    st.stop()

options = an.colour_options(frame)
colour = c[1].selectbox("Colour by", list(options), format_func=options.get, key="emb_colour")
mark_flagged = "flagged" in frame and c[2].toggle(
    "Mark flagged", value=True, key="emb_flagged",
    help=f"Cross the samples whose clean probability is at or below τ = {tau:.2f}")
n_split = len(split_samples(run_dir, split, stamp))
n_classes = int(frame["given"].nunique())
c[3].caption(f"{ui.fmt_int(len(frame))} of {ui.fmt_int(n_split)} {split} images, {n_classes} classes"
             + (f" · {ui.fmt_int(int(frame['flagged'].sum()))} flagged at τ = {tau:.2f}" if "flagged" in frame
                else "")
             + (f" · {ui.fmt_int(int(frame['mislabelled'].sum()))} with a wrong given label"
                if frame["mislabelled"].any() else ""))

if split == "test":
    st.caption(":material/info: These are **test** images (the run's projection split). Clean probabilities, "
               "predictions and the flagged marks exist for training samples only, so the map is coloured by "
               "given or true label; set the projection split to *train* on the Train page to see them here.")
large = len(frame) > an.MAX_MAP_POINTS
if large:
    st.info(f"{ui.fmt_int(len(frame))} samples are too many to draw one by one: each map is a picture of all of "
            f"them (stronger = more samples), with a random {ui.fmt_int(an.OVERLAY_POINTS)} drawn on top to hover"
            + (" and cross where flagged" if "flagged" in frame else "") + ". A lasso or box selects among all "
            "samples.", icon=":material/blur_on:")

# -------------------------------------------------------------------------------- panels

panels: list[tuple[str, str]] = [("before", "Before tuning (pre-trained features)")]
if ref is not None:
    panels.append(("fft", f"After plain FFT ({ref.name})"))
if has_after:
    panels.append(("after", f"After {method_title(cfg.get('method', ''))}"))


@st.fragment
def maps() -> None:
    """The maps and the selection: a lasso on one map reruns only this part of the page."""
    # the latest selection on any map is the one shown on all of them
    previous = st.session_state.get("emb_selection_by_map", {})
    current = {stage: selection_key(stage) for stage, _ in panels}
    changed = [stage for stage in current if current[stage] != previous.get(stage, ())]
    if changed:
        st.session_state["emb_selected"] = selected_positions(changed[-1])
        st.session_state["emb_selection_source"] = changed[-1]
    st.session_state["emb_selection_by_map"] = current
    selected = np.asarray(st.session_state.get("emb_selected", []), dtype=np.int64)
    colouring = colour if colour in frame else "given"

    cols = st.columns(len(panels) if len(panels) > 1 else [1, 1])
    for col, (stage, title) in zip(cols, panels):
        with col:
            st.markdown(f"**{title}**")
            fig = map_figure(frame, stage, colouring, classes, mark_flagged, colour_of, selected)
            st.plotly_chart(fig, width="stretch", key=f"emb_chart_{stage}", on_select="rerun",
                            selection_mode=("lasso", "box"),
                            config={"displaylogo": False, "modeBarButtonsToRemove": ["toImage"]})
    if not has_after:
        with cols[1]:
            st.info("No *after* map: a linear probe trains only the head, so the features stay the pre-trained "
                    "ones." if kind == "lp" else
                    "The *after tuning* features of this run are missing; retrain it to draw them.",
                    icon=":material/info:")
    if ref is None and kind == "turn":
        st.caption(":material/lightbulb: Train an **fft-ce** run on the same data, noise and projection split "
                   f"(*{split}*) on the Train page to add a third map: plain fine-tuning on the noisy labels, as "
                   "in the paper's Figure 2.")
    if large:
        stages = [stage for stage, _ in panels]
        source = st.session_state.get("emb_selection_source")
        selection_layer(key="emb_selection_layer", height=0, data={
            "pictures": selection_pictures(frame, stages, colouring, classes, colour_of, selected),
            "source": stages.index(source) if source in stages else -1, "fade": SELECTION_FADE})
    selection_gallery(selected)


def selection_key(stage: str) -> tuple:
    """What identifies a map's current selection: its samples on a small map, the lasso or box
    itself on a large one (where most points are not drawn one by one)."""
    state = st.session_state.get(f"emb_chart_{stage}")
    return an.selection_geometry(state) if large else tuple(an.selected_rows(state))


def selected_positions(stage: str) -> np.ndarray:
    """Split positions of the samples a map's selection picks; on a large map every sample
    inside the lasso or box, drawn one by one or not."""
    state = st.session_state.get(f"emb_chart_{stage}")
    if not large:
        return np.asarray(an.selected_rows(state), dtype=np.int64)
    inside = an.in_selection(frame[f"x_{stage}"].to_numpy(), frame[f"y_{stage}"].to_numpy(), state)
    return frame["index"].to_numpy(np.int64)[inside]


def selection_gallery(selected_idx: np.ndarray) -> None:
    st.subheader(":material/photo_library: Selected images", anchor=False)
    if not len(selected_idx):
        st.caption("Draw a lasso or a box on any map (the lasso is the default tool) to highlight those samples "
                   "on every map and see their images here. Double-click a map to clear its selection.")
        return
    rows = np.flatnonzero(split_rows(frame, selected_idx[:MAX_SELECTED_IMAGES]))
    # in the selection's order
    order = {int(p): r for p, r in zip(frame["index"].to_numpy()[rows], rows)}
    shown = [int(p) for p in selected_idx[:MAX_SELECTED_IMAGES] if int(p) in order]
    st.caption(f"{ui.fmt_int(len(selected_idx))} selected" + (
        f"; the first {len(shown)} are shown" if len(shown) < len(selected_idx) else "") + ".")
    images = load_images(run, split)
    cards = []
    for idx in shown:
        info = frame.iloc[order[idx]]
        lines = [f"given <b>{escape(str(info['given']))}</b>"]
        if info["mislabelled"]:
            lines.append(f'<span style="color:{TRUE_LABEL_RED}">true <b>{escape(str(info["true"]))}</b></span>')
        if "pred" in info:
            lines.append(f"pred {escape(str(info['pred']))} · clean {info['clean_prob']:.2f}")
        # inlined (as Review's cards): 48 images as media files cost 48 requests per lasso
        picture = (audit_data.thumbnail_html(run, idx, GALLERY_THUMB_PX, split, alt=str(info["sample_id"]))
                   if images is not None else None)
        cards.append(f"<figure style=\"margin:0\">{picture or '(no image)'}<figcaption style=\"{ui.CAPTION_STYLE}\">"
                     f"{'<br>'.join(lines)}</figcaption></figure>")
    # one element for the whole gallery: 48 columns of image and caption cost the browser 0.1 s to lay out
    st.markdown(f'<div style="display:grid;grid-template-columns:repeat({IMAGES_PER_ROW},minmax(0,1fr));'
                f'gap:0.5rem 1rem">{"".join(cards)}</div>', unsafe_allow_html=True)


@st.fragment
def hover_thumbnail() -> None:
    """The hovered sample's image for the floating panel: each hover reruns only this."""
    row = (st.session_state.get("emb_hover") or {}).get("hover")  # set by the bridge before this rerun
    data = st.session_state.get("emb_hover_data")
    if (data or {}).get("run") != run_dir + split:
        data = None  # another run or split than the last hover's
    if row is not None and (data or {}).get("row") != int(row):
        positions = frame["index"].to_numpy()
        k = int(np.searchsorted(positions, int(row)))  # the frame is in split order
        images = load_images(run, split) if k < len(positions) and positions[k] == int(row) else None
        if images is not None:
            data = {"row": int(row), "run": run_dir + split, "size": HOVER_THUMB_PX, "caption": describe(frame.iloc[k]),
                    "src": data_uri(thumb(preview_image(images, int(row)), HOVER_THUMB_PX))}
            st.session_state["emb_hover_data"] = data
    hover_bridge(key="emb_hover", data={**(data or {}), "run": run_dir + split},
                 on_hover_change=lambda: None, height=0)


maps()
hover_thumbnail()
ui.preload_run_bundle(run)  # the hover thumbnails' images, read while the browser draws the maps
if large:
    ui.preload(an.warm_lasso)
