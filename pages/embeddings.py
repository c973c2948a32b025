"""Embeddings: 2-D maps of every training sample's features before and after tuning (Figure 2 of the paper).

Pre-trained features form clusters that the noisy labels do not destroy; plain fine-tuning
on noisy labels blurs them; TURN keeps them. The maps are WebGL scatter plots of up to
`an.MAX_MAP_POINTS` samples (a density beyond that). Hovering a point shows its image;
a lasso or box selection on one map highlights the same samples on the others and lists
their images below.
"""

from __future__ import annotations

import base64
import io

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
from turn_backend.projection import PROJECTION_METHODS, ensure_projection, reduced_path
from turn_backend.runfolder import RunFolder

METHOD_LABELS = {"tsne": "t-SNE", "umap": "UMAP"}
# 10 distinct colours (Tableau), then 24 more for larger label sets
PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac", "#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728",
           "#ff9896", "#9467bd", "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7",
           "#bcbd22", "#dbdb8d", "#17becf", "#9edae5", "#393b79", "#637939", "#8c6d31", "#843c39"]
FLAG_COLOURS = {"flagged (p ≤ τ)": "#c62828", "clean (p > τ)": "#2e7d32"}
MAX_SELECTED_IMAGES = 48
IMAGES_PER_ROW = 6
PLOT_HEIGHT = 470
DENSITY_BINS = 160
HOVER_THUMB_PX = 112

# The hover bridge: plotly's hover events stay in the browser, so this small component
# listens to them on every map and hands the hovered sample to Python (a fragment rerun,
# which draws nothing but the floating thumbnail it sends back). Points carry their
# sample's position in the split as customdata.
HOVER_JS = """
export default function (component) {
  const { data, setStateValue } = component;
  const w = window;
  if (!w.__turnHover) {
    w.__turnHover = { row: null, x: 0, y: 0, pending: null, sentAt: 0, tip: null, seen: new Map() };
    const tip = document.createElement("div");
    tip.id = "turn-hover-thumb";
    tip.style.cssText = "position:fixed;z-index:1000;display:none;pointer-events:none;background:#fff;" +
      "border:1px solid #bdbdbd;border-radius:6px;padding:6px;box-shadow:0 2px 8px rgba(0,0,0,.2);" +
      "font:12px sans-serif;max-width:220px";
    document.body.appendChild(tip);
    w.__turnHover.tip = tip;
    document.addEventListener("mousemove", (e) => { w.__turnHover.x = e.clientX; w.__turnHover.y = e.clientY; });
  }
  const h = w.__turnHover;
  h.send = (row) => setStateValue("hover", row);
  // One request at a time, sent at once: the next one goes out when the answer comes (for
  // the point hovered then), so a sweep across the map does not queue a rerun per point.
  h.request = (row) => {
    if (h.pending !== undefined && h.pending !== null && performance.now() - h.sentAt < 1000) return;
    h.pending = row;
    h.sentAt = performance.now();
    h.send(row);
  };
  const place = () => {
    const r = h.tip.getBoundingClientRect();
    const left = h.x + 18 + r.width > w.innerWidth ? h.x - 18 - r.width : h.x + 18;
    h.tip.style.left = Math.max(4, left) + "px";
    h.tip.style.top = Math.max(4, Math.min(h.y + 12, w.innerHeight - r.height - 4)) + "px";
  };
  const attach = () => {
    document.querySelectorAll(".js-plotly-plot").forEach((gd) => {
      if (gd.__turnHoverAttached || typeof gd.on !== "function") return;
      gd.__turnHoverAttached = true;
      gd.on("plotly_hover", (ev) => {
        const pt = ev.points && ev.points[0];
        if (!pt || pt.customdata === undefined || pt.customdata === null) return;
        const row = Array.isArray(pt.customdata) ? pt.customdata[0] : pt.customdata;
        h.row = row;
        if (h.seen.has(row)) { h.show(h.seen.get(row)); return; }
        h.request(row);
      });
      gd.on("plotly_unhover", () => { h.row = null; h.tip.style.display = "none"; });
    });
  };
  attach();
  const poll = setInterval(attach, 400);  // maps are redrawn on reruns
  h.show = (data) => {
    h.tip.innerHTML = "";
    const img = document.createElement("img");
    img.src = data.src;
    img.alt = data.caption;
    img.style.cssText = "display:block;width:" + data.size + "px;height:auto;image-rendering:pixelated";
    const cap = document.createElement("div");
    cap.textContent = data.caption;
    cap.style.marginTop = "4px";
    h.tip.append(img, cap);
    h.tip.dataset.row = String(data.row);
    h.tip.style.display = "block";
    place();
  };
  if (data && data.run !== h.run) { h.seen.clear(); h.run = data.run; }  // rows are per run and split
  if (data && data.src) {
    if (h.seen.size > 2000) h.seen.clear();
    h.seen.set(data.row, data);
    if (data.row === h.pending) h.pending = null;
    if (data.row === h.row) h.show(data);
    else if (h.row !== null && !h.seen.has(h.row)) h.request(h.row);  // the mouse moved on meanwhile
  }
  return () => clearInterval(poll);
}
"""
hover_bridge = st.components.v2.component("turn_studio.embedding_hover", js=HOVER_JS)


def method_title(method: str) -> str:
    return {"turn+": "TURN+", "turn": "TURN"}.get(method, method.upper() if method else "tuning")


@st.cache_resource(show_spinner=False, max_entries=4)
def _split_samples(run_dir: str, split: str, stamp: float) -> pd.DataFrame:
    samples = RunFolder(run_dir).samples()
    return samples[samples["split"] == split].reset_index(drop=True)


@st.cache_resource(show_spinner=False, max_entries=4)
def _final(run_dir: str, stamp: float) -> dict | None:
    return RunFolder(run_dir).final()


@st.cache_resource(show_spinner=False, max_entries=8)
def _frame(run_dir: str, split: str, method: str, stamp: float, tau: float, ref_dir: str | None) -> pd.DataFrame:
    """Labels, scores and flags of every mapped sample, with the coordinates of each stage.

    Columns x_before / y_before, x_after / y_after and x_fft / y_fft (the plain-FFT
    reference run, matched by sample) where those maps exist; NaN where a sample is missing
    from a map.
    """
    folder = RunFolder(run_dir)
    split_samples = _split_samples(run_dir, split, stamp)
    final = _final(run_dir, stamp) if split == "train" else None
    frame = an.projection_frame(folder.projection(split, "before", method), folder.projection_subset(split),
                                split_samples, ui.class_names(folder), final, tau)
    frame = frame.rename(columns={"x": "x_before", "y": "y_before"})
    after = folder.projection(split, "after", method)
    if after is not None:
        frame["x_after"], frame["y_after"] = after[:, 0], after[:, 1]
    if ref_dir is not None:
        ref = RunFolder(ref_dir)
        coords = an.coords_by_index(ref.projection(split, "after", method), ref.projection_subset(split),
                                    frame["index"].to_numpy())
        frame["x_fft"], frame["y_fft"] = coords[:, 0], coords[:, 1]
    return frame


def ensure_map(folder: RunFolder, split: str, stage: str, method: str) -> bool:
    """Whether the map exists, computing it (with a progress bar) from the stored reduction if needed."""
    if folder.projection(split, stage, method) is not None:
        return True
    if reduced_path(folder.path, split, stage) is None:
        return False
    subset = folder.projection_subset(split)
    n = 0 if subset is None else len(subset)
    label = f"Computing the {METHOD_LABELS.get(method, method)} map of {ui.fmt_int(n)} samples ({stage} tuning)"
    bar = st.progress(0.0, text=label + "; it is saved with the run for next time…")

    def progress(done: int, total: int) -> None:
        bar.progress(min(1.0, done / max(total, 1)), text=f"{label}: {100 * done // max(total, 1)}%")

    ensure_projection(folder.path, split, stage, method, progress=progress)
    bar.empty()
    return True


# ------------------------------------------------------------------------------ figures


def _marker_size(n: int) -> float:
    return 7.0 if n <= 2_000 else 4.0 if n <= 20_000 else 2.5


def _category_traces(frame: pd.DataFrame, colour: str, classes: list[str], colour_of: dict[str, str]):
    """(name, colour, row mask) per category of the colouring, in class order."""
    if colour == "flagged":
        flagged = frame["flagged"].to_numpy()
        return [(name, FLAG_COLOURS[name], mask) for name, mask in
                (("clean (p > τ)", ~flagged), ("flagged (p ≤ τ)", flagged)) if mask.any()]
    values = frame[colour].to_numpy()
    present = set(values)
    order = [c for c in classes if c in present] + sorted(present - set(classes))
    return [(str(cat), colour_of.get(cat, "#9e9e9e"), values == cat) for cat in order]


def map_figure(frame: pd.DataFrame, stage: str, colour: str, classes: list[str], mark_flagged: bool,
               colour_of: dict[str, str], selected: np.ndarray) -> go.Figure:
    """One map: WebGL points per category (or one continuous trace), flagged samples on top.

    Every point's customdata is its sample's position in the split, which is how hover and
    selection find the sample. `selected` (split positions) dims every other point.
    """
    x = frame[f"x_{stage}"].to_numpy(np.float32)
    y = frame[f"y_{stage}"].to_numpy(np.float32)
    index = frame["index"].to_numpy(np.int32)
    drawn = np.isfinite(x)
    n = int(drawn.sum())
    density = n > an.MAX_MAP_POINTS
    size = _marker_size(n)
    fig = go.Figure()
    flagged = frame["flagged"].to_numpy() if (mark_flagged and "flagged" in frame) else np.zeros(len(frame), bool)

    def points(mask: np.ndarray, **kwargs) -> None:
        mask = mask & drawn
        rows = index[mask]
        sel = None
        if len(selected):
            sel = np.flatnonzero(np.isin(rows, selected)).tolist()
        fig.add_trace(go.Scattergl(x=x[mask], y=y[mask], customdata=rows, mode="markers", selectedpoints=sel,
                                   unselected=dict(marker=dict(opacity=0.12)), **kwargs))

    if density:
        counts, xe, ye = np.histogram2d(x[drawn], y[drawn], bins=DENSITY_BINS)
        fig.add_heatmap(x=(xe[:-1] + xe[1:]) / 2, y=(ye[:-1] + ye[1:]) / 2, z=np.log1p(counts.T),
                        colorscale="Greys", showscale=False, hoverinfo="skip", name="density")
        if "flagged" in frame:
            points(frame["flagged"].to_numpy(), name="flagged (p ≤ τ)", hovertemplate="flagged<extra></extra>",
                   marker=dict(color=FLAG_COLOURS["flagged (p ≤ τ)"], size=3))
    elif colour == "clean_prob":
        points(np.ones(len(frame), bool), name="clean probability", showlegend=False,
               hovertemplate="clean prob %{marker.color:.2f}<extra></extra>",
               marker=dict(color=frame["clean_prob"].to_numpy(np.float32), colorscale="RdYlGn", cmin=0, cmax=1,
                           size=size, colorbar=dict(title=dict(text="clean prob", side="right"), thickness=12,
                                                    len=0.8)))
    else:
        for name, colour_cat, mask in _category_traces(frame, colour, classes, colour_of):
            points(mask, name=name, hovertemplate=f"{name}<extra></extra>",
                   marker=dict(color=colour_cat, size=size, opacity=0.8))
    if flagged.any() and not density:
        # thin crosses, fainter on a crowded map, so the class colours still show through
        points(flagged, name="flagged (p ≤ τ)", hovertemplate="flagged<extra></extra>",
               marker=dict(symbol="x-thin", size=size + 2, color="#212121", opacity=0.9 if n <= 2_000 else 0.4,
                           line=dict(width=1 if n <= 20_000 else 0.6, color="#212121")))
    fig.update_layout(
        height=PLOT_HEIGHT, dragmode="lasso", margin=dict(l=5, r=5, t=30, b=5), plot_bgcolor="rgba(0,0,0,0)",
        legend=dict(orientation="h", y=-0.02, yanchor="top", x=0, font=dict(size=11), itemsizing="constant"),
        uirevision=stage, hoverdistance=8,
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def thumb(img: Image.Image, size: int = 96) -> Image.Image:
    w, h = img.size
    s = size / max(w, h)
    return img.resize((max(1, round(w * s)), max(1, round(h * s))),
                      Image.NEAREST if max(w, h) <= 64 else Image.LANCZOS)


def data_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def describe(info: pd.Series) -> str:
    """One line about a sample: id, given / predicted / true label, clean probability."""
    parts = [str(info["sample_id"]), f"given {info['given']}"]
    if "pred" in info:
        parts.append(f"pred {info['pred']}")
    if info["mislabelled"]:
        parts.append(f"true {info['true']}")
    if "clean_prob" in info:
        parts.append(f"clean {info['clean_prob']:.2f}")
    return " · ".join(parts)


def load_images(folder: RunFolder, split: str):
    """The split's ImageSet, or None (with a warning) when the images cannot be read."""
    try:
        bundle = ui.run_bundle(folder)
        return bundle.test if split == "test" else bundle.train
    except Exception as exc:  # noqa: BLE001 - labels still show without images
        st.warning(f"The images could not be loaded ({exc}); showing labels only.", icon=":material/hide_image:")
        return None


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
colour_of = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(classes)}
colour_of["unknown"] = "#9e9e9e"
kind = method_kind(cfg.get("method", ""))

# ------------------------------------------------------------------------------ controls

stored = [m for m in PROJECTION_METHODS if run.projection(split, "before", m) is not None]
c = st.columns([1.2, 1.6, 1.2, 2], vertical_alignment="bottom")
method = c[0].segmented_control("Projection", list(PROJECTION_METHODS), format_func=METHOD_LABELS.get,
                                default=stored[0] if stored else "tsne", key="emb_method",
                                help="t-SNE is computed during training; UMAP is computed here the first time "
                                     "and saved with the run.") or (stored[0] if stored else "tsne")

ref = an.find_reference_run(runs_root(), cfg, exclude=run.path) if kind == "turn" else None
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

stamp = run.stamp(run.projection_path(split, "after", method))
try:
    frame = _frame(run_dir, split, method, stamp, tau, None if ref is None else str(ref.path.resolve()))
except ValueError as exc:
    ui.show_error(exc, "Retrain the run to rebuild its maps.")
    st.stop()

options = an.colour_options(frame)
colour = c[1].selectbox("Colour by", list(options), format_func=options.get, key="emb_colour")
mark_flagged = "flagged" in frame and c[2].toggle(
    "Mark flagged", value=True, key="emb_flagged",
    help=f"Cross the samples whose clean probability is at or below τ = {tau:.2f}")
n_split = len(_split_samples(run_dir, split, stamp))
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
if len(frame) > an.MAX_MAP_POINTS:
    st.info(f"{ui.fmt_int(len(frame))} samples are too many to draw one by one: each map shows their density "
            f"(darker = more samples)" + (", with the flagged samples drawn on top." if "flagged" in frame else "."),
            icon=":material/blur_on:")

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
    current = {stage: tuple(an.selected_rows(st.session_state.get(f"emb_chart_{stage}"))) for stage, _ in panels}
    changed = [stage for stage in current if current[stage] != previous.get(stage, ())]
    if changed:
        st.session_state["emb_selected"] = list(current[changed[-1]])
    st.session_state["emb_selection_by_map"] = current
    selected = np.asarray(st.session_state.get("emb_selected", []), dtype=np.int64)

    cols = st.columns(len(panels) if len(panels) > 1 else [1, 1])
    for col, (stage, title) in zip(cols, panels):
        with col:
            st.markdown(f"**{title}**")
            fig = map_figure(frame, stage, colour if colour in frame else "given", classes, mark_flagged,
                             colour_of, selected)
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
    selection_gallery(selected.tolist())


def selection_gallery(selected_idx: list[int]) -> None:
    st.subheader(":material/photo_library: Selected images", anchor=False)
    if not selected_idx:
        st.caption("Draw a lasso or a box on any map (the lasso is the default tool) to highlight those samples "
                   "on every map and see their images here. Double-click a map to clear its selection.")
        return
    by_index = frame.set_index("index")
    shown = [i for i in selected_idx if i in by_index.index][:MAX_SELECTED_IMAGES]
    st.caption(f"{ui.fmt_int(len(selected_idx))} selected" + (
        f"; the first {len(shown)} are shown" if len(shown) < len(selected_idx) else "") + ".")
    images = load_images(run, split)
    for start in range(0, len(shown), IMAGES_PER_ROW):
        row_cols = st.columns(IMAGES_PER_ROW)
        for col, idx in zip(row_cols, shown[start:start + IMAGES_PER_ROW]):
            info = by_index.loc[idx]
            lines = [f"given **{info['given']}**"]
            if info["mislabelled"]:
                lines.append(f":red[true **{info['true']}**]")
            if "pred" in info:
                lines.append(f"pred {info['pred']} · clean {info['clean_prob']:.2f}")
            with col:
                if images is not None:
                    try:
                        st.image(thumb(images.load_image(int(idx)), 112), width=112)
                    except Exception:  # noqa: BLE001
                        st.caption(":material/hide_image:")
                st.caption("  \n".join(lines))


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
                    "src": data_uri(thumb(images.load_image(int(row)), HOVER_THUMB_PX))}
            st.session_state["emb_hover_data"] = data
    hover_bridge(key="emb_hover", data={**(data or {}), "run": run_dir + split},
                 on_hover_change=lambda: None, height=0)


maps()
hover_thumbnail()
ui.preload_run_bundle(run)  # the hover thumbnails' images, read while the browser draws the maps
