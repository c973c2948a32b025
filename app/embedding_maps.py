"""The Embeddings page's maps: the table of mapped samples (cached per run), maps computed on
demand, the WebGL figures, the hover bridge and the thumbnails shown beside the maps."""

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
from turn_backend import run_views
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
PLOT_HEIGHT = 470
CLEAN_PROB_SCALE = "RdYlGn"

# The hover bridge: plotly's hover events stay in the browser, so this small component
# listens to them on every map and hands the hovered sample to Python (a fragment rerun,
# which draws nothing but the floating thumbnail it sends back). Points carry their
# sample's position in the split as customdata.
HOVER_JS = """
const QUIET_MS = 400;
export default function (component) {
  const { data, setStateValue } = component;
  const w = window;
  if (!w.__turnHover) {
    w.__turnHover = { row: null, x: 0, y: 0, pending: null, sentAt: 0, tip: null, seen: new Map(), pressed: false,
                      releasedAt: -1e9 };
    const tip = document.createElement("div");
    tip.id = "turn-hover-thumb";
    tip.style.cssText = "position:fixed;z-index:1000;display:none;pointer-events:none;background:#fff;" +
      "border:1px solid #bdbdbd;border-radius:6px;padding:6px;box-shadow:0 2px 8px rgba(0,0,0,.2);" +
      "font:12px sans-serif;max-width:220px";
    document.body.appendChild(tip);
    w.__turnHover.tip = tip;
    document.addEventListener("mousemove", (e) => { w.__turnHover.x = e.clientX; w.__turnHover.y = e.clientY; });
    // No hover request while a lasso or box is drawn, nor just after its release: plotly
    // reports the point under the cursor at the release, and Streamlit sent that hover and the
    // selection as one rerun of the hover's fragment only, so the maps never saw the selection.
    document.addEventListener("mousedown", () => { w.__turnHover.pressed = true; }, true);
    document.addEventListener("mouseup", () => {
      w.__turnHover.pressed = false;
      w.__turnHover.releasedAt = performance.now();
    }, true);
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
        if (h.pressed || performance.now() - h.releasedAt < QUIET_MS) return;  // the next point hovered is asked
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
def split_samples(run_dir: str, split: str, stamp: float) -> pd.DataFrame:
    """The split's sample ids and labels, in split order (what `an.projection_frame` reads)."""
    samples = RunFolder(run_dir).samples()
    return samples.loc[samples["split"] == split, ["sample_id", "given_label", "true_label"]].reset_index(drop=True)


@st.cache_resource(show_spinner=False, max_entries=4)
def final_results(run_dir: str, stamp: float) -> dict | None:
    return RunFolder(run_dir).final()


@st.cache_resource(show_spinner=False, max_entries=8)
def map_table(run_dir: str, split: str, method: str, stamp: float, tau: float, ref_dir: str | None) -> pd.DataFrame:
    """Labels, scores and flags of every mapped sample, with the coordinates of each stage.

    Columns x_before / y_before, x_after / y_after and x_fft / y_fft (the plain-FFT
    reference run, matched by sample) where those maps exist; NaN where a sample is missing
    from a map.
    """
    folder = RunFolder(run_dir)
    samples = split_samples(run_dir, split, stamp)
    final = final_results(run_dir, stamp) if split == "train" else None
    frame = an.projection_frame(folder.projection(split, "before", method), folder.projection_subset(split),
                                samples, ui.class_names(folder), final, tau)
    frame = frame.rename(columns={"x": "x_before", "y": "y_before"})
    after = folder.projection(split, "after", method)
    if after is not None:
        frame["x_after"], frame["y_after"] = after[:, 0], after[:, 1]
    if ref_dir is not None:
        ref = RunFolder(ref_dir)
        coords = an.coords_by_index(ref.projection(split, "after", method), ref.projection_subset(split),
                                    frame["index"].to_numpy())
        frame["x_fft"], frame["y_fft"] = coords[:, 0], coords[:, 1]
    # names this frame's contents, so that a large map's pictures can be cached per frame
    frame.attrs["key"] = (run_dir, split, method, stamp, tau, ref_dir)
    return frame


def class_colours(classes: list[str]) -> dict[str, str]:
    """Each class's colour on the maps (and grey for an unknown label)."""
    return {**{c: PALETTE[i % len(PALETTE)] for i, c in enumerate(classes)}, "unknown": "#9e9e9e"}


def reference_run(folder: RunFolder) -> RunFolder | None:
    """The plain-FFT run whose "after" map a TURN run's maps are shown beside (Figure 2), or None."""
    cfg = folder.config()
    if method_kind(cfg.get("method", "")) != "turn":
        return None
    return run_views.find_reference_run(runs_root(), cfg, exclude=folder.path)


def map_key(folder: RunFolder, split: str, method: str, ref: RunFolder | None) -> tuple:
    """`map_table`'s arguments for a run's maps of one split and method, beside `ref`'s."""
    return (str(folder.path.resolve()), split, method, folder.stamp(folder.projection_path(split, "after", method)),
            default_tau(folder), None if ref is None else str(ref.path.resolve()))


def preload_maps(folder: RunFolder) -> None:
    """Build the Embeddings page's table and large-map figures of a run in the background
    (`ui.preload`), as the page first shows them, so that opening the page finds them cached:
    1.2 s of its 2.4 s first render at 1,000,000 samples. Only maps saved with the run are
    read; one the page would compute first (UMAP) is left to the page."""
    if folder.has_final():
        ui.preload(_warm_maps, str(folder.path.resolve()), folder.stamp(folder.config_path))


def _warm_maps(run_dir: str, stamp: float) -> None:
    folder = RunFolder(run_dir)
    split = folder.config().get("projection_split", "test")
    stored = [m for m in PROJECTION_METHODS if folder.projection(split, "before", m) is not None]
    if not stored:
        return
    ref = reference_run(folder)
    if ref is not None and ref.projection(split, "after", stored[0]) is None:
        return  # the page computes the reference run's map first
    frame = map_table(*map_key(folder, split, stored[0], ref))
    classes = ui.class_names(folder)
    for stage in ("before", "fft", "after"):
        if f"x_{stage}" in frame and is_picture(frame, stage):
            cached_picture_figure(frame.attrs["key"], stage, "given", True, frame, classes, class_colours(classes))
    if is_picture(frame, "before"):
        an.warm_lasso()


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


def split_rows(frame: pd.DataFrame, positions: np.ndarray) -> np.ndarray:
    """Frame rows of the samples at split `positions` (those on the map), as a boolean mask."""
    index = frame["index"].to_numpy()
    mask = np.zeros(len(index), dtype=bool)
    if len(positions) and len(index):
        # a map's rows are usually in split order: no sort of a million positions then
        order = np.arange(len(index)) if bool(np.all(index[1:] >= index[:-1])) else np.argsort(index, kind="stable")
        k = np.minimum(np.searchsorted(index, positions, sorter=order), len(index) - 1)
        found = index[order[k]] == positions
        mask[order[k[found]]] = True
    return mask


def map_figure(frame: pd.DataFrame, stage: str, colour: str, classes: list[str], mark_flagged: bool,
               colour_of: dict[str, str], selected: np.ndarray) -> go.Figure:
    """One map: WebGL points per category (or one continuous trace), flagged samples on top.

    Every point's customdata is its sample's position in the split, which is how hover and
    selection find the sample. `selected` (split positions) dims every other point. Above
    `an.MAX_MAP_POINTS` drawn points the map is a picture of all of them (`picture_figure`),
    and `selection_layer` draws the selection instead.
    """
    if is_picture(frame, stage):
        key = frame.attrs.get("key")
        return (cached_picture_figure(key, stage, colour, mark_flagged, frame, classes, colour_of) if key is not None
                else picture_figure(frame, stage, colour, classes, mark_flagged, colour_of))
    x = frame[f"x_{stage}"].to_numpy(np.float32)
    y = frame[f"y_{stage}"].to_numpy(np.float32)
    index = frame["index"].to_numpy(np.int32)
    drawn = np.isfinite(x)
    n = int(drawn.sum())
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

    if colour == "clean_prob":
        points(np.ones(len(frame), bool), name="clean probability", showlegend=False,
               hovertemplate="clean prob %{marker.color:.2f}<extra></extra>",
               marker=dict(color=frame["clean_prob"].to_numpy(np.float32), colorscale=CLEAN_PROB_SCALE, cmin=0,
                           cmax=1, size=size, colorbar=dict(title=dict(text="clean prob", side="right"),
                                                            thickness=12, len=0.8)))
    else:
        for name, colour_cat, mask in _category_traces(frame, colour, classes, colour_of):
            points(mask, name=name, hovertemplate=f"{name}<extra></extra>",
                   marker=dict(color=colour_cat, size=size, opacity=0.8))
    if flagged.any():
        # thin crosses, fainter on a crowded map, so the class colours still show through
        points(flagged, name="flagged (p ≤ τ)", hovertemplate="flagged<extra></extra>",
               marker=dict(symbol="x-thin", size=size + 2, color="#212121", opacity=0.9 if n <= 2_000 else 0.4,
                           line=dict(width=1 if n <= 20_000 else 0.6, color="#212121")))
    _map_layout(fig, stage, n)
    return fig


def _map_layout(fig: go.Figure, stage: str, points: int) -> None:
    """The maps' common layout; `meta.points` says how many samples the map draws (the scale
    benchmark reads it in the browser)."""
    fig.update_layout(
        meta={"points": points}, height=PLOT_HEIGHT, dragmode="lasso", margin=dict(l=5, r=5, t=30, b=5),
        plot_bgcolor="rgba(0,0,0,0)",
        legend=dict(orientation="h", y=-0.02, yanchor="top", x=0, font=dict(size=11), itemsizing="constant"),
        uirevision=stage, hoverdistance=8,
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)


def _rgb(colour: str) -> tuple[int, int, int]:
    colour = colour.lstrip("#")
    return tuple(int(colour[i:i + 2], 16) for i in (0, 2, 4))


class MapPicture:
    """What a large map draws, computed once per frame, stage and colouring: each point's
    category code (or value), the picture of all points and the overlay's rows."""

    def __init__(self, frame: pd.DataFrame, stage: str, colour: str, classes: list[str],
                 colour_of: dict[str, str]) -> None:
        self.x = frame[f"x_{stage}"].to_numpy(np.float32)
        self.y = frame[f"y_{stage}"].to_numpy(np.float32)
        self.extent = an.map_extent(self.x, self.y)
        self.colour = colour
        if colour == "clean_prob":
            from matplotlib import colormaps  # deferred: only a large map coloured by probability needs it

            self.lut = np.rint(255 * colormaps[CLEAN_PROB_SCALE](np.linspace(0, 1, 256))[:, :3])
            self.values = frame["clean_prob"].to_numpy(np.float32)
            self.categories: list[tuple[str, str]] = []
        else:
            values = frame["flagged"].map({True: "flagged (p ≤ τ)", False: "clean (p > τ)"}) \
                if colour == "flagged" else frame[colour]
            present = set(pd.unique(values))
            order = [c for c in classes if c in present] + sorted(map(str, present - set(classes)))
            palette = FLAG_COLOURS if colour == "flagged" else colour_of
            self.categories = [(name, palette.get(name, "#9e9e9e")) for name in order]
            self.codes = pd.Categorical(values, categories=order).codes.astype(np.int16)
            self.rgb = np.array([_rgb(c) for _, c in self.categories], dtype=np.float64).reshape(-1, 3)
        self.picture = self.draw(np.ones(len(self.x), bool))
        drawn = np.flatnonzero(np.isfinite(self.x))
        self.overlay = drawn[an.overlay_rows(len(drawn), an.OVERLAY_POINTS)]

    def draw(self, mask: np.ndarray) -> np.ndarray:
        """The RGBA picture of the points in `mask`."""
        if self.colour == "clean_prob":
            return an.value_raster(self.x[mask], self.y[mask], self.values[mask], self.lut, self.extent)
        return an.category_raster(self.x[mask], self.y[mask], self.codes[mask], self.rgb, self.extent)


@st.cache_resource(show_spinner=False, max_entries=12)
def map_picture(key: tuple, stage: str, colour: str, _frame: pd.DataFrame, _classes: list[str],
                _colour_of: dict[str, str]) -> MapPicture:
    """The frame's `MapPicture`, cached by the frame's key (map_table's arguments)."""
    return MapPicture(_frame, stage, colour, _classes, _colour_of)


def png_uri(picture: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(picture, "RGBA").save(buf, format="PNG", compress_level=1)  # fast over small
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def picture_figure(frame: pd.DataFrame, stage: str, colour: str, classes: list[str], mark_flagged: bool,
                   colour_of: dict[str, str]) -> go.Figure:
    """A map of more points than WebGL draws fluidly: a picture of every point under the axes,
    coloured as the small maps are, and a random `an.OVERLAY_POINTS` of them on top as WebGL
    points (per category, so the legend reads as on a small map) that carry hover and the
    flagged crosses. A selection does not change this figure (a changed figure costs the
    browser a full redraw, 0.3 s at a million points): `selection_layer` draws it on top."""
    pic = _picture(frame, stage, colour, classes, colour_of)
    rows = pic.overlay
    x0, x1, y0, y1 = pic.extent
    fig = go.Figure()
    fig.add_layout_image(source=png_uri(pic.picture), xref="x", yref="y", x=x0, y=y1, sizex=x1 - x0,
                         sizey=y1 - y0, xanchor="left", yanchor="top", sizing="stretch", layer="below")
    index = frame["index"].to_numpy(np.int32)

    def points(mask: np.ndarray, **kwargs) -> None:
        picked = rows[mask]
        fig.add_trace(go.Scattergl(x=pic.x[picked], y=pic.y[picked], customdata=index[picked], mode="markers",
                                   unselected=dict(marker=dict(opacity=0.12)), **kwargs))

    if colour == "clean_prob":
        points(np.ones(len(rows), bool), name="clean probability", showlegend=False,
               hovertemplate="clean prob %{marker.color:.2f}<extra></extra>",
               marker=dict(color=pic.values[rows], colorscale=CLEAN_PROB_SCALE, cmin=0, cmax=1, size=3,
                           colorbar=dict(title=dict(text="clean prob", side="right"), thickness=12, len=0.8)))
    else:
        codes = pic.codes[rows]
        for k, (name, colour_cat) in enumerate(pic.categories):
            points(codes == k, name=name, hovertemplate=f"{name}<extra></extra>",
                   marker=dict(color=colour_cat, size=3, opacity=0.8))
    if mark_flagged and "flagged" in frame:
        points(frame["flagged"].to_numpy()[rows], name="flagged (p ≤ τ), a sample",
               hovertemplate="flagged<extra></extra>",
               marker=dict(symbol="x-thin", size=4, color="#212121", opacity=0.25,
                           line=dict(width=0.5, color="#212121")))
    _map_layout(fig, stage, int((np.isfinite(pic.x) & np.isfinite(pic.y)).sum()))
    # the picture is not a trace: hiding a legend entry would hide only its overlay points
    fig.update_layout(legend=dict(itemclick=False, itemdoubleclick=False))
    fig.update_xaxes(range=[x0, x1])
    fig.update_yaxes(range=[y0, y1])
    return fig


@st.cache_resource(show_spinner=False, max_entries=12)
def cached_picture_figure(key: tuple, stage: str, colour: str, mark_flagged: bool, _frame: pd.DataFrame,
                          _classes: list[str], _colour_of: dict[str, str]) -> go.Figure:
    """`picture_figure`, cached by the frame's key: a lasso reruns the maps and would rebuild
    each unchanged figure (45 ms at a million points)."""
    return picture_figure(_frame, stage, colour, _classes, mark_flagged, _colour_of)


def _picture(frame: pd.DataFrame, stage: str, colour: str, classes: list[str],
             colour_of: dict[str, str]) -> MapPicture:
    key = frame.attrs.get("key")
    return (map_picture(key, stage, colour, frame, classes, colour_of) if key is not None
            else MapPicture(frame, stage, colour, classes, colour_of))


def selection_pictures(frame: pd.DataFrame, stages: list[str], colour: str, classes: list[str],
                       colour_of: dict[str, str], selected: np.ndarray) -> list[str | None]:
    """Per map, a picture (PNG data URI) of only the selected samples, on the same extent as
    the map's own picture; None where nothing is selected or the map is drawn point by point."""
    large = [is_picture(frame, stage) for stage in stages]
    if not len(selected) or not any(large):
        return [None] * len(stages)
    chosen = split_rows(frame, selected)
    return [png_uri(_picture(frame, stage, colour, classes, colour_of).draw(chosen)) if big else None
            for stage, big in zip(stages, large)]


def is_picture(frame: pd.DataFrame, stage: str) -> bool:
    """Whether the stage's map has too many points to draw one by one (`picture_figure`)."""
    return int(np.isfinite(frame[f"x_{stage}"].to_numpy()).sum()) > an.MAX_MAP_POINTS


# Draws a selection on the large maps in the browser: each map's picture fades and the
# picture of its selected samples goes on top of it (an SVG image beside plotly's own, kept
# in place when plotly redraws: zoom, pan, resize). The overlay points of the maps other
# than the one the lasso was drawn on fade too; on that one, plotly fades them itself.
SELECTION_JS = """
export default function (component) {
  const { data } = component;
  const w = window;
  w.__turnSelection = data || {};
  const apply = () => {
    const sel = w.__turnSelection, pictures = sel.pictures || [];
    document.querySelectorAll('[data-testid="stMain"] .js-plotly-plot').forEach((gd, i) => {
      if (!gd.__turnSelectionHook && typeof gd.on === "function") {
        gd.__turnSelectionHook = true;
        gd.on("plotly_afterplot", apply);
      }
      const base = gd.querySelector("image:not(.turn-selection)");
      if (!base) return;
      const src = pictures[i] || null;
      const old = gd.querySelector("image.turn-selection");
      base.style.opacity = src ? String(sel.fade) : "";
      const gl = gd.querySelector(".gl-container");
      if (gl) gl.style.opacity = src && i !== sel.source ? String(sel.fade) : "";
      if (!src) { if (old) old.remove(); return; }
      const fresh = base.cloneNode();
      fresh.classList.add("turn-selection");
      fresh.style.opacity = "";
      fresh.setAttribute("href", src);
      if (old && old.outerHTML === fresh.outerHTML) return;
      if (old) old.remove();
      base.after(fresh);
    });
  };
  apply();
  const poll = setInterval(apply, 500);  // maps drawn after this ran (a new colouring, a new page)
  return () => clearInterval(poll);
}
"""
selection_layer = st.components.v2.component("turn_studio.map_selection", js=SELECTION_JS)


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
