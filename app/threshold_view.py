"""What the Threshold page draws that does not change with tau, computed once per run and
cached: the sorted clean probabilities, the histograms and their Gaussians, the true and the
estimated quality curves over tau, the suggested taus; and the dashed tau lines drawn over the
charts in the browser, so that a slider step moves a few divs instead of redrawing figures."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from app import ui
from turn_backend import analysis as an
from turn_backend import run_views
from turn_backend.detect import estimates as est
from turn_backend.review import VERDICT_ACTIONS, label_errors_found, spot_check_mask
from turn_backend.runfolder import RunFolder

CLEAN_COLOUR = "#2e7d32"
NOISY_COLOUR = "#c62828"
TAU_COLOUR = "#1565c0"
MAX_HISTOGRAMS = 12
SWEEP_NAMES = {"precision": "Precision", "recall": "Recall", "f1": "F1", "purity": "Purity"}
# how the suggested tau is chosen: a label -> the precision it must reach (None: the best estimated F1)
SUGGESTION_TARGETS = {"best estimated F1": None, "precision ≥ 80%": 0.8, "precision ≥ 90%": 0.9,
                      "precision ≥ 95%": 0.95}

# Dashed lines at tau over the (unchanging) histogram and sweep charts: {container key:
# [{xaxis, yaxis, x, color, label?}]}, placed with the chart's own axes and redrawn when
# Plotly redraws (a resize), so a slider step changes a few divs instead of whole figures.
TAU_LINES_JS = """
export default function (component) {
  const draw = (gd) => {
    const fl = gd._fullLayout;
    if (!fl || !gd.__tauLines) return;
    let layer = gd.querySelector(":scope > .turn-tau-lines");
    if (!layer) {
      layer = document.createElement("div");
      layer.className = "turn-tau-lines";
      layer.style.cssText = "position:absolute;left:0;top:0;pointer-events:none;z-index:5";
      gd.style.position = "relative";
      gd.appendChild(layer);
    }
    layer.replaceChildren();
    for (const line of gd.__tauLines) {
      const xa = fl[line.xaxis], ya = fl[line.yaxis];
      if (!xa || !ya || typeof xa.l2p !== "function") continue;
      const px = xa._offset + xa.l2p(line.x);
      const el = document.createElement("div");
      el.className = "turn-tau-line";
      el.dataset.x = String(line.x);
      el.style.cssText = `position:absolute;left:${px - 1}px;top:${ya._offset}px;height:${ya._length}px;` +
        `border-left:2px dashed ${line.color}`;
      layer.appendChild(el);
      if (line.label) {
        const text = document.createElement("div");
        text.textContent = line.label;
        text.style.cssText = `position:absolute;left:${px + 4}px;top:${ya._offset + ya._length - 20}px;` +
          "font:11px sans-serif;white-space:nowrap;background:rgba(255,255,255,.8);padding:0 2px";
        layer.appendChild(text);
      }
    }
  };
  for (const [key, lines] of Object.entries(component.data || {})) {
    const apply = () => {
      const gd = document.querySelector(`.st-key-${key} .js-plotly-plot`);
      if (!gd || !gd._fullLayout) return false;
      gd.__tauLines = lines;
      if (!gd.__tauHooked && typeof gd.on === "function") {
        gd.__tauHooked = true;
        gd.on("plotly_afterplot", () => draw(gd));
      }
      draw(gd);
      return true;
    };
    if (!apply()) {  // the chart is still being drawn
      let tries = 0;
      const poll = setInterval(() => { if (apply() || ++tries > 100) clearInterval(poll); }, 100);
    }
  }
}
"""
tau_lines = st.components.v2.component("turn_studio.tau_lines", js=TAU_LINES_JS)


# ------------------------------------------------------------------------------- caching


@st.cache_resource(show_spinner=False, max_entries=8)
def threshold_data(run_dir: str, stamp: float) -> dict:
    """Everything the page needs that does not depend on tau, computed once per run."""
    folder = RunFolder(run_dir)
    final = folder.final()
    samples = folder.samples()
    # only the label columns: taking a million sample ids too cost 0.3 s
    train = samples.loc[samples["split"] == "train", ["given_label", "true_label"]].reset_index(drop=True)
    names = ui.class_names(folder) or [str(c) for c in range(int(train["given_label"].max()) + 1)]
    given = train["given_label"].to_numpy(dtype=np.int64)
    true = train["true_label"].to_numpy(dtype=np.int64)
    clean_prob = np.asarray(final["clean_prob"], dtype=np.float64)
    losses = np.asarray(final["losses"], dtype=np.float64)
    index = an.ThresholdIndex.build(clean_prob, given, len(names))
    has_true = bool((true >= 0).any())
    # expected wrong labels are counted with the combined clean probability (the calibrated one),
    # also where the run flags by TURN's GMM
    detection = folder.load_detection(folder.final_dir)
    counting = run_views.counting_probability(clean_prob, detection)
    calibrated = None if counting is clean_prob else counting  # the same array: no combined one
    reliability = detection.reliability if detection is not None else {}
    trusted = reliability.get("reliable", True)  # no tau makes untrustworthy flags right: nothing to suggest
    fits = final.get("fits") or []
    estimated = est.estimated_flag_curves(clean_prob, an.default_tau_grid(), calibrated=calibrated)
    hists = []
    for c in range(len(names)):
        fit = fits[c] if c < len(fits) else None
        hists.append(an.histogram_with_fit(losses[given == c], fit))
    return {
        "names": names, "given": given, "true": true, "index": index, "fits": fits, "hists": hists,
        "has_true": has_true,
        "sweep": an.tau_sweep(clean_prob, given, true if has_true else None),
        "true_noise": an.true_noise_rate(given, true) if has_true else None,
        "estimated": estimated,
        "counting_prob": counting,
        "noise_estimate": est.estimate_noise_rate(counting),
        "suggested": {target: est.suggest_tau(clean_prob, target, calibrated=calibrated, curves=estimated)
                      if trusted else None for target in SUGGESTION_TARGETS.values()},
        "reliability": reliability,
    }


@st.cache_resource(show_spinner=False, max_entries=8)
def train_sample_ids(run_dir: str, stamp: float):
    """The training samples' ids in row order (a pandas Index), to place Review's decisions; read
    only once a run has decisions (a million ids take 0.3 s)."""
    import pandas as pd

    samples = RunFolder(run_dir).samples()
    return pd.Index(samples.loc[samples["split"] == "train", "sample_id"].to_numpy())


def review_verdicts(run_dir: str, stamp: float, decisions: dict[str, tuple[str, int | None]],
                    spot_check_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(rows, wrong, at_random) of the training samples kept or relabelled in Review
    (`review.label_errors_found`), at_random marking those of the spot check of `spot_check_size`;
    None where there is none."""
    if not any(action in VERDICT_ACTIONS for action, _ in decisions.values()):
        return None
    given = threshold_data(run_dir, stamp)["given"]
    rows, wrong = label_errors_found(decisions, train_sample_ids(run_dir, stamp), given)
    if not len(rows):
        return None
    return rows, wrong, spot_check_mask(len(given), spot_check_size)[rows]


def review_check(run_dir: str, stamp: float, verdicts: tuple[np.ndarray, ...] | None) -> dict | None:
    """`est.review_agreement` over the `review_verdicts`; None where there is none."""
    if verdicts is None:
        return None
    rows, wrong, _ = verdicts
    return est.review_agreement(threshold_data(run_dir, stamp)["counting_prob"][rows], wrong)


def verdict_key(verdicts: tuple[np.ndarray, ...] | None) -> str:
    """A digest of the `review_verdicts` ("" for none): the cache key of what is computed from them."""
    import hashlib

    if verdicts is None:
        return ""
    rows, wrong, at_random = verdicts
    return hashlib.blake2b(np.ascontiguousarray(rows, dtype=np.int64).tobytes() +
                           np.ascontiguousarray(wrong, dtype=bool).tobytes() +
                           np.ascontiguousarray(at_random, dtype=bool).tobytes(), digest_size=16).hexdigest()


@st.cache_resource(show_spinner=False, max_entries=4)
def review_calibration(run_dir: str, stamp: float, key: str, _verdicts: tuple[np.ndarray, ...] | None) -> dict | None:
    """The estimates of `threshold_data` recounted with the clean probabilities recalibrated on the
    Review decisions `_verdicts` (`est.calibrate_on_decisions`; `key`: their `verdict_key`): "fit"
    {a, b, prior, n}, "counting_prob", "estimated", "noise_estimate", "suggested"; None with fewer
    than `est.MIN_RANDOM_DECISIONS` decisions of the spot check."""
    if _verdicts is None:
        return None
    data = threshold_data(run_dir, stamp)
    fit = est.calibrate_on_decisions(data["counting_prob"], *_verdicts)
    if fit is None:
        return None
    clean_prob, calibrated = data["index"].clean_prob, fit["probability"]
    estimated = est.estimated_flag_curves(clean_prob, an.default_tau_grid(), calibrated=calibrated)
    trusted = data["reliability"].get("reliable", True)
    return {"fit": {k: fit[k] for k in ("a", "b", "prior", "n")}, "counting_prob": calibrated, "estimated": estimated,
            "noise_estimate": fit["noise_rate"],
            "suggested": {target: est.suggest_tau(clean_prob, target, calibrated=calibrated, curves=estimated)
                          if trusted else None for target in SUGGESTION_TARGETS.values()}}


def run_calibration(run: RunFolder) -> dict | None:
    """`review_calibration` of a run on its Review decisions as they stand, for the pages that
    count with it besides Threshold (Classes, Noise matrix, the Runs panel). A run never reviewed
    has none, and these read-only pages do not create its review database."""
    from turn_backend.review import ReviewStore

    if not run.review_db.exists():
        return None
    run_dir, stamp = str(run.path.resolve()), run.stamp()
    store = ReviewStore(run.review_db)
    verdicts = review_verdicts(run_dir, stamp, store.current(), store.spot_check_size())
    return review_calibration(run_dir, stamp, verdict_key(verdicts), verdicts)


def calibration_toggle(calibration: dict | None, key: str) -> bool:
    """The switch between counting with the clean probabilities recalibrated on the Review
    decisions (on by default) and the model's own; False without a calibration."""
    if calibration is None:
        return False
    return st.toggle(f"Calibrate on your {ui.fmt_int(calibration['fit']['n'])} Review decisions", value=True, key=key,
                     help="As on the Threshold page: your keep and relabel decisions, a spot check among them, "
                          "recalibrate the clean probabilities, and the counts here are made with them. Off: the "
                          "model's own.")


@st.cache_resource(show_spinner=False, max_entries=8)
def reliability_figure(run_dir: str, stamp: float, key: str, _verdicts: tuple[np.ndarray, ...] | None,
                       _calibrated: np.ndarray | None) -> go.Figure | None:
    """The clean probability the estimates count with against what is known to be right
    (`est.reliability_bins`): the samples decided in Review (`_verdicts`, named by `key`, a
    `verdict_key`) and, with ground truth, every training sample, as the model gives it and, with
    `_calibrated`, recalibrated on the decisions (its undecided samples; `key` then says so). None
    with neither."""
    data = threshold_data(run_dir, stamp)
    p = data["counting_prob"]
    series = []
    if data["has_true"]:
        clean = data["given"] == data["true"]
        series.append(("truth, the model's own", p, clean, "#1565c0", "solid"))
        if _calibrated is not None:
            undecided = np.ones(len(p), dtype=bool)
            undecided[_verdicts[0]] = False
            series.append(("truth, recalibrated (undecided samples)", _calibrated[undecided], clean[undecided],
                           "#ef6c00", "solid"))
    if _verdicts is not None:
        rows, wrong, _ = _verdicts
        series.append(("your decisions, the model's own", p[rows], ~wrong, "#6a1b9a", "dot"))
    if not series:
        return None
    fig = go.Figure()
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color="#9e9e9e", dash="dot", width=1),
                    name="perfectly calibrated", hoverinfo="skip")
    for name, prob, outcome, colour, dash in series:
        table = est.reliability_bins(prob, outcome)
        used = table[:, 2] > 0
        fig.add_scatter(x=table[used, 0], y=table[used, 1], mode="lines+markers", name=name,
                        line=dict(color=colour, dash=dash, width=2), customdata=table[used, 2],
                        marker=dict(size=6 + 14 * np.sqrt(table[used, 2] / table[:, 2].sum()), color=colour),
                        hovertemplate="clean probability %{x:.2f}: %{y:.0%} clean, %{customdata:,.0f} samples"
                                      "<extra></extra>")
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=30, b=10),
                      xaxis=dict(title="clean probability (bin mean)", range=[0, 1]),
                      yaxis=dict(title="share with the right label", tickformat=".0%", range=[0, 1.02]),
                      legend=dict(orientation="h", y=1.15, x=0))
    return fig


@st.cache_resource(show_spinner=False, max_entries=8)
def sweep_base(run_dir: str, stamp: float, estimates_key: str, _estimated: dict[str, np.ndarray]) -> go.Figure:
    """Estimated precision / recall / F1 over the tau grid (dashed: `_estimated`, the curves in use,
    named by `estimates_key`: "" for the model's own, else the `verdict_key` they were recalibrated
    on), and with ground truth the true ones and the kept set's purity (solid): built once per run
    and estimates; tau only moves a line."""
    data = threshold_data(run_dir, stamp)
    fig = go.Figure()
    curves = (("precision", "#1565c0"), ("recall", "#ef6c00"), ("f1", "#6a1b9a"))
    for col, colour in curves:
        fig.add_scatter(x=_estimated["tau"], y=_estimated[col], mode="lines",
                        name=f"{SWEEP_NAMES[col]} (estimated)", line=dict(color=colour, width=2, dash="dash"),
                        hovertemplate="τ %{x:.2f}: %{y:.1%} estimated<extra></extra>")
    if data["has_true"]:
        sweep = data["sweep"]
        for col, colour in curves + (("purity", CLEAN_COLOUR),):
            fig.add_scatter(x=sweep["tau"], y=sweep[col], mode="lines", name=f"{SWEEP_NAMES[col]} (true)",
                            line=dict(color=colour, width=2), hovertemplate="τ %{x:.2f}: %{y:.1%} true<extra></extra>")
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="τ",
                      yaxis=dict(tickformat=".0%", range=[0, 1.02]), legend=dict(orientation="h", y=1.15, x=0))
    return fig


@st.cache_resource(show_spinner=False, max_entries=16)
def histogram_base(run_dir: str, stamp: float, classes: tuple[int, ...]) -> go.Figure:
    """The histograms and Gaussians (independent of tau), built once per run and class choice.

    The figure never changes with tau, so the browser keeps it as drawn; the dashed lines at
    tau are drawn over it (`tau_lines`). Redrawing a dozen subplots took most of a slider
    step (0.5-1.5 s of the browser's time on 2 busy cores, measured).
    """
    data = threshold_data(run_dir, stamp)
    names = data["names"]
    cols = min(4, max(1, len(classes)))
    rows = -(-len(classes) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[names[c] for c in classes],
                        horizontal_spacing=0.05, vertical_spacing=0.22 / max(1, rows - 1) if rows > 1 else 0.1)
    for k, c in enumerate(classes):
        r, col = k // cols + 1, k % cols + 1
        h = data["hists"][c]
        fit = data["fits"][c] if c < len(data["fits"]) else None
        if len(h["counts"]):
            centres = (h["edges"][:-1] + h["edges"][1:]) / 2
            fig.add_bar(x=centres, y=h["counts"], width=np.diff(h["edges"]), marker_color="#90a4ae",
                        name="samples", row=r, col=col, hovertemplate="loss %{x:.2f}: %{y} samples<extra></extra>")
            if an.fit_is_usable(fit):
                fig.add_scatter(x=h["x"], y=h["clean"], mode="lines", line=dict(color=CLEAN_COLOUR, width=2),
                                name="clean component", row=r, col=col, hoverinfo="skip")
                fig.add_scatter(x=h["x"], y=h["noisy"], mode="lines", line=dict(color=NOISY_COLOUR, width=2),
                                name="noisy component", row=r, col=col, hoverinfo="skip")
    fig.update_layout(height=max(260, 230 * rows), margin=dict(l=10, r=10, t=30, b=10), bargap=0,
                      showlegend=False)
    fig.update_xaxes(title_text=None, tickfont=dict(size=10))
    fig.update_yaxes(tickfont=dict(size=10))
    return fig


def crossing_lines(data: dict, classes: list[int], tau: float) -> list[dict]:
    """A dashed line per subplot at the loss where the clean posterior falls to tau (for `tau_lines`)."""
    lines = []
    for k, c in enumerate(classes):
        h = data["hists"][c]
        fit = data["fits"][c] if c < len(data["fits"]) else None
        cross = an.posterior_crossing(fit, tau, h["lo"], h["hi"]) if len(h["counts"]) else None
        if cross is not None:
            axis = "" if k == 0 else str(k + 1)
            lines.append({"xaxis": f"xaxis{axis}", "yaxis": f"yaxis{axis}", "x": cross, "color": TAU_COLOUR})
    return lines


def nearest_row(table, tau: float) -> dict:
    """The row of a per-tau table (a DataFrame or a dict of arrays with a "tau" column) nearest `tau`."""
    i = int(np.argmin(np.abs(np.asarray(table["tau"]) - tau)))
    return {k: np.asarray(v)[i] for k, v in (table.items() if isinstance(table, dict) else table.items())}
