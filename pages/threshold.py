"""Threshold: move tau and watch the clean set change, from the stored clean probabilities.

Nothing is refitted: the final model's clean probabilities (the combined detection score,
or TURN's per-class GMM for the runs that select by it) and losses are read once per run
(cached) and every slider move is a few sorted-array look-ups.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from app import threshold_view as tv
from app import ui
from app.state import runs_root, set_current_run
from turn_backend import analysis as an
from turn_backend import run_views
from turn_backend.config import RunConfig, method_kind
from turn_backend.detect import estimates as est
from turn_backend.export import default_tau
from turn_backend.review import SPOT_CHECK_SIZE, ReviewStore
from turn_backend.runfolder import RunFolder, list_runs, retrain_run_name

# ---------------------------------------------------------------------------------- page

ui.page_header("Threshold", ":material/tune:",
               "Move the clean-probability threshold τ and watch the clean set change. Everything here "
               "is read from the final model's stored clean probabilities: no retraining.")

# what a run's clean probability is, by analysis.clean_prob_source
CLEAN_PROB_MEANING = {
    "combined": "This run's clean probability is the detection layer's combined score: the posterior that "
                "the given label is right under the estimated noise matrix.",
    "GMM": "This run's clean probability is TURN's: the posterior of the low-loss Gaussian of its class, "
           "fitted on the final model's losses.",
}
run = ui.require_finished_run("The threshold can be tuned")
clean_source = run_views.clean_prob_source(run)  # read once: the tau panel reruns on every slider move

try:
    data = tv.threshold_data(str(run.path.resolve()), run.stamp())
except (ValueError, OSError, KeyError) as exc:
    ui.show_error(exc, "The run folder looks incomplete; open the Runs page and pick another run.")
    st.stop()

names: list[str] = data["names"]
index: an.ThresholdIndex = data["index"]
cfg = run.config()
run_tau = float(cfg.get("tau", 0.6))
store = ReviewStore(run.review_db)
TABLE_HEIGHT = min(35 * (len(names) + 1) + 3, 430)
try:
    run_balance = RunConfig.from_dict(cfg).turn_option("balance")
except (ValueError, TypeError, AttributeError, KeyError):
    run_balance = "mean" if cfg.get("method") == "turn+" else "min"
if method_kind(cfg.get("method", "turn")) != "turn":
    run_balance = None


# read once per page run, not at each tau step: decisions are made on the Review page
run_dir, stamp = str(run.path.resolve()), run.stamp()
spot_size = store.spot_check_size()
verdicts = tv.review_verdicts(run_dir, stamp, store.current(), spot_size)
review_check = tv.review_check(run_dir, stamp, verdicts)
calibration_key = tv.verdict_key(verdicts)
calibration = tv.review_calibration(run_dir, stamp, calibration_key, verdicts)
spot_decided = 0 if verdicts is None else int(verdicts[2].sum())  # spot-check samples kept or relabelled
# the switch below (in the tau panel) is on unless turned off; the caution says which estimates the page shows
warned_recalibrated = calibration is not None and st.session_state.get("calibrate_on_review", True)
ui.unreliable_flags_warning(data["reliability"], recalibrated_on=calibration["fit"]["n"] if warned_recalibrated else 0)


def review_agreement_note(check: dict | None, calibrated: bool) -> None:
    """The model's estimates against the person's own decisions in Review: true labels without a
    benchmark (`calibrated`: the page's estimates are recalibrated on them)."""
    if check is None:
        st.caption("Decisions you make in Review (keep, relabel) are checked against these estimates here: "
                   "the wrong labels the clean probabilities expected among the samples you decided, against "
                   "those you relabelled.")
        return
    n, k, expected = check["n"], check["found_wrong"], check["expected_wrong"]
    text = (f"**Your review:** of the {ui.fmt_int(n)} {'sample' if n == 1 else 'samples'} you kept or relabelled, "
            f"the clean probabilities expected {expected:.1f} wrong labels ({ui.fmt_pct(expected / n)}); you "
            f"relabelled {ui.fmt_int(k)} ({ui.fmt_pct(k / n)}, 95% interval {ui.fmt_pct(check['low'])}–"
            f"{ui.fmt_pct(check['high'])}).")
    if check["agrees"]:
        st.success(text + " The model's estimates agree with your decisions so far.", icon=":material/check_circle:")
    elif calibrated:
        more = expected / n > check["high"]
        st.info(text + f" The model expects {'more' if more else 'fewer'} wrong labels than you find; the estimates "
                "on this page are recalibrated on your decisions.", icon=":material/rule:")
    else:
        more = expected / n > check["high"]
        st.warning(text + f" The estimates expect {'more' if more else 'fewer'} wrong labels than you find, so the "
                   f"estimated precision on this page is likely too {'high' if more else 'low'}. "
                   + ("Switch on the calibration on your decisions above." if calibration is not None else
                      f"Keep or relabel {est.MIN_RANDOM_DECISIONS - spot_decided} more of a spot check (below) to "
                      "recalibrate the estimates on your decisions."),
                   icon=":material/rule:")


def calibration_toggle() -> dict:
    """With enough Review decisions, a switch between the estimates recalibrated on them and the
    model's own; returns the estimates in use (`threshold_data` or `review_calibration`)."""
    if calibration is None:
        return data
    fit = calibration["fit"]
    on = st.toggle(f"Calibrate the estimates on your {ui.fmt_int(fit['n'])} Review decisions",
                   value=True, key="calibrate_on_review",
                   help="Your keep and relabel decisions are true labels for those samples. With this on, every "
                        "estimate on this page (noise rate, precision, recall, the suggested τ) is counted with "
                        "the clean probabilities refitted to them (P(wrong) = sigmoid(a + b·logit(1 − p)), "
                        f"here a = {fit['a']:.2f}, b = {fit['b']:.2f}; a = 0, b = 1 leaves them as they were; "
                        f"pulled toward that with weight {fit['prior']:g}, the weight your decisions are likeliest "
                        "under), and your decided samples count as you decided them. On the benchmark (docs/"
                        "benchmarks.md, After a review) 100 decisions on the least probably clean samples and a "
                        "spot check of 100 brought the estimated precision on two look-alike classes within 1.1 "
                        "points of the truth, where the model's own missed by 15-17. Off: the model's own.")
    if on != warned_recalibrated:
        st.rerun()  # the whole page: the caution above it names the estimates in use
    return calibration if on else data


def suggestion_row(tau: float, view: dict) -> None:
    """The suggested tau, how it is chosen, and a button that moves the slider there (`view`: the
    estimates in use)."""
    slider_key = f"tau_slider_{run.name}"
    cols = st.columns([1.4, 2.6, 1.2], vertical_alignment="bottom")
    by = cols[0].selectbox("Suggest τ by", list(tv.SUGGESTION_TARGETS), key="suggest_by",
                           help="The τ with the highest estimated F1, or the highest τ whose estimated precision "
                                "still reaches the target (the most flags at that precision)")
    suggested = view["suggested"][tv.SUGGESTION_TARGETS[by]]
    if suggested is None:
        if not data["reliability"].get("reliable", True):
            why = "these flags cannot be trusted (above)."
        elif view["noise_estimate"]["rate"] * len(index.clean_prob) < est.MIN_EXPECTED_WRONG:
            why = "the clean probabilities expect no wrong label."
        else:
            why = "no τ reaches that estimated precision."
        cols[1].caption("No suggestion: " + why)
    else:
        row = tv.nearest_row(view["estimated"], suggested)
        cols[1].markdown(f"Suggested τ: **{suggested:.2f}** · estimated precision {ui.fmt_pct(row['precision'])}, "
                         f"recall {ui.fmt_pct(row['recall'])}, {ui.fmt_int(int(row['n_flagged']))} flagged")

    def use_suggestion() -> None:
        st.session_state[slider_key] = suggested

    cols[2].button("Use suggested τ", icon=":material/auto_fix_high:", key="use_suggested_tau", width="stretch",
                   disabled=suggested is None or abs(suggested - tau) < 1e-9, on_click=use_suggestion)


def spot_check_row() -> None:
    """Random samples for Review: decisions on them reach the unflagged samples, which the lowest-first
    queue never shows, so the calibration holds across the whole range."""
    n_train = len(index.clean_prob)
    cols = st.columns([3, 1.7, 1.2], vertical_alignment="center")
    cols[0].caption(
        (f"**Spot check:** {ui.fmt_int(spot_decided)} of {ui.fmt_int(spot_size)} random samples kept or relabelled "
         "in Review. " if spot_size else "**Spot check:** ") +
        "Samples drawn at random show how many wrong labels the unflagged samples hold, which the flagged ones "
        f"alone cannot: once {est.MIN_RANDOM_DECISIONS} of them are kept or relabelled, the estimates above are "
        "recalibrated on all your decisions.")

    def open_review() -> None:
        st.session_state["review_kind_filter"] = ["spot"]
        st.session_state["review_page"] = 0

    room = min(SPOT_CHECK_SIZE, n_train - spot_size)
    if cols[1].button(f"Add {ui.fmt_int(room)} random samples" if room else "Every sample is in it",
                      icon=":material/casino:", key="extend_spot_check", width="stretch",
                      disabled=spot_size >= n_train,
                      help="Adds random training samples to Review's queue, marked “Spot check”; a larger spot "
                           "check keeps every sample of the smaller one"):
        store.extend_spot_check(n_train)
        st.rerun()  # the whole page: the spot check's size is read once per page run
    if cols[2].button("Review them", icon=":material/arrow_forward:", key="open_spot_check", width="stretch",
                      disabled=not spot_size, on_click=open_review):
        ui.switch_page("review")


@st.fragment
def tau_panel() -> None:
    """Everything that depends on tau: moving the slider reruns only this function."""
    applied = default_tau(run)

    # ------------------------------------------------------------------------------ controls

    top = st.columns([3, 1.2], vertical_alignment="bottom")
    with top[0]:
        tau = st.slider("Clean-probability threshold τ", min_value=0.01, max_value=0.99,
                        value=float(min(0.99, max(0.01, round(applied, 2)))), step=0.01, format="%.2f",
                        key=f"tau_slider_{run.name}",
                        help="A sample counts as clean when its clean probability is above τ; at or below "
                             "τ it is flagged. " + CLEAN_PROB_MEANING[clean_source])
    with top[1]:
        if st.button("Apply τ to Review and Export", icon=":material/check:", type="primary",
                     disabled=abs(tau - applied) < 1e-9, width="stretch", key="apply_tau",
                     help="Stores τ with the run's review: Review lists the samples flagged at this τ and "
                          "Export marks them."):
            store.set_setting("tau", f"{tau:.2f}")
            applied = float(f"{tau:.2f}")
            st.toast(f"τ = {tau:.2f} applied to Review and Export", icon=":material/check_circle:")
    st.caption(f"Applied τ: **{applied:.2f}** (Review and Export use it) · trained with τ = {run_tau:.2f} · "
               f"method {cfg.get('method', '?')}")
    view = calibration_toggle()
    calibrated = view is not data
    suggestion_row(tau, view)

    # ----------------------------------------------------------------------------- numbers

    counts = index.counts_at(tau)
    sizes = an.selection_sizes(counts, index.class_sizes)
    n_total = len(index.clean_prob)
    n_flagged = index.flagged_at(tau)
    noise = view["noise_estimate"]
    at = tv.nearest_row(view["estimated"], tau)

    m = st.columns(5)
    note = dict(delta_color="off", delta_arrow="off", border=True)
    m[0].metric("Clean candidates", ui.fmt_int(int(counts.sum())),
                delta=f"{ui.fmt_pct(counts.sum() / max(n_total, 1))} of {ui.fmt_int(n_total)}",
                help="Samples with clean probability above τ", **note)
    m[1].metric("Flagged", ui.fmt_int(n_flagged), delta=f"{ui.fmt_pct(index.noise_rate_at(tau))} of the set",
                help="Samples with clean probability at or below τ (Review lists them), and their share of the "
                     "training set: it moves with τ", **note)
    m[2].metric("Estimated noise rate", ui.fmt_pct(noise["rate"]),
                delta=f"±{100 * (noise['high'] - noise['low']) / 2:.1f}" + (
                    f" · true {ui.fmt_pct(data['true_noise'])}" if data["true_noise"] is not None else
                    f" · model {ui.fmt_pct(data['noise_estimate']['rate'])}" if calibrated else ""),
                help="The expected share of wrong labels in the training set: the mean of 1 − the combined clean "
                     "probability" + (", recalibrated on your Review decisions (the model's own: "
                                      f"{ui.fmt_pct(data['noise_estimate']['rate'])})" if calibrated else "") +
                     f". It does not depend on τ. 95% interval {ui.fmt_pct(noise['low'])}–"
                     f"{ui.fmt_pct(noise['high'])} (± points): " +
                     ("the uncertainty of the recalibration, which shrinks as you decide more samples (a spot "
                      "check helps most), and the spread the probabilities imply." if calibrated else
                      "the spread the probabilities themselves imply, not their own miscalibration. On data with "
                      "known noise (docs/benchmarks.md, Calibration) the estimate missed by up to 2.7 points on "
                      "Fashion-MNIST sets of 1,000 images and up, and by 5.3 on scikit-learn's digits; decisions "
                      "in Review, a spot check above all, recalibrate it."),
                **note)
    m[3].metric("N per class (TURN)", ui.fmt_int(sizes["N_min"]),
                delta=f"{ui.fmt_int(sizes['total_min'])} per round" + (" · this run" if run_balance == "min" else ""),
                help="N = min over classes of |D_clean^c|: TURN as published fine-tunes each round on N samples of "
                     "every class", **note)
    m[4].metric("Mean size (TURN+)", ui.fmt_int(sizes["N_mean"]),
                delta=f"{ui.fmt_int(sizes['total_mean'])} per round" + (" · this run" if run_balance == "mean" else ""),
                help="TURN+ keeps every candidate and draws smaller classes up to the mean candidate count "
                     f"({ui.fmt_int(sizes['unique_mean'])} distinct samples)", **note)
    if sizes["floored"]:
        st.warning("No sample above τ in " + ", ".join(f"**{names[c]}**" for c in sizes["floored"]) +
                   ": training would fall back to its most probably clean 5% (a floor), so N stays above zero. "
                   "Lower τ to keep real candidates in every class.", icon=":material/warning:")

    # ------------------------------------------------------------------- per-class counts

    # a table, not a chart: redrawing a per-class bar chart took a third of a slider step in the
    # browser (measured at 60k); the progress column shows the same proportions
    st.subheader(":material/table: Clean samples per class at this τ", anchor=False)
    table = pd.DataFrame({
        "class": names,
        "samples": index.class_sizes,
        "clean": counts,
        "flagged": index.class_sizes - counts,
        "clean %": np.where(index.class_sizes > 0, counts / np.maximum(index.class_sizes, 1), 0.0) * 100,
        "vs N (TURN)": counts - sizes["N_min"],
    })
    st.dataframe(table, hide_index=True, width="stretch", height=TABLE_HEIGHT, key="per_class_table",
                 column_config={"clean %": st.column_config.ProgressColumn("clean %", format="%.0f%%",
                                                                         min_value=0, max_value=100),
                                "vs N (TURN)": st.column_config.NumberColumn(
                                    "vs N (TURN)", format="%+d",
                                    help="Clean candidates beyond N = min over classes: TURN as published "
                                         "draws N of every class; the class at 0 sets N")})

    # ------------------------------------------------------------------------- histograms

    lines: dict[str, list[dict]] = {}
    st.subheader(":material/ssid_chart: Loss histograms and the two Gaussians of each class", anchor=False)
    st.caption("Cross-entropy loss of every training sample against its given label, per class (grey bars), with "
               "the two fitted mixture components (:green[**green**]: clean, :red[**red**]: noisy). The dashed line "
               "is the loss at which the GMM's clean posterior falls to τ. " +
               ("Samples to its right are flagged." if clean_source == "GMM" else
                "This run flags by the combined score, not by this GMM, so its flags need not follow the line: "
                "Review shows both for each sample."))

    shown = list(range(len(names)))
    if len(names) > tv.MAX_HISTOGRAMS:
        chosen = st.multiselect("Classes to show", names, default=names[:tv.MAX_HISTOGRAMS], key="hist_classes",
                                max_selections=24)
        shown = [names.index(c) for c in chosen]

    if shown:
        with st.container(key="hist_box"):
            st.plotly_chart(tv.histogram_base(str(run.path.resolve()), run.stamp(), tuple(shown)), width="stretch",
                            key="hist_chart")
        lines["hist_box"] = tv.crossing_lines(data, shown, tau)
        unsplit = [names[c] for c in shown if c < len(data["fits"]) and data["fits"][c].get("status") not in ("fit",)]
        if unsplit:
            st.caption(":material/info: No separate noisy component for " + ", ".join(unsplit) +
                       " (too few samples, or the mixture did not separate): all its samples count as clean.")

    # ------------------------------------------------------------------- detection quality

    st.subheader(":material/insights: Detection quality at this τ", anchor=False)
    sweep_at = tv.nearest_row(data["sweep"], tau) if data["has_true"] else None
    st.caption(("Estimated from the clean probabilities recalibrated on your Review decisions" if calibrated else
                "Estimated from the clean probabilities alone (no true label read)") +
               ": the flagged samples' expected wrong labels, over their number (precision) and over all expected "
               "wrong labels (recall). " +
               ("The true values, from this dataset's ground truth, are shown beside them and as solid curves."
                if data["has_true"] else "This dataset has no ground truth to check them against."))
    q = st.columns(4)
    for col, (key, label, help_text) in zip(q, (
            ("precision", "Precision", "Flagged samples whose given label is wrong"),
            ("recall", "Recall", "Wrongly labelled samples that are flagged"),
            ("f1", "F1", "Harmonic mean of precision and recall"))):
        col.metric(f"{label} (estimated)", ui.fmt_pct(at[key]), help=help_text, border=True,
                   delta=None if sweep_at is None else f"true {ui.fmt_pct(sweep_at[key])}",
                   delta_color="off", delta_arrow="off")
    q[3].metric("Wrong among flagged", ui.fmt_int(int(round(at["expected_wrong"]))),
                delta=None if sweep_at is None else f"true {ui.fmt_int(int(sweep_at['tp']))}",
                delta_color="off", delta_arrow="off", border=True,
                help="Wrong labels expected among the flagged samples: the sum of 1 − clean probability")
    review_agreement_note(review_check, calibrated)
    spot_check_row()
    with st.container(key="sweep_box"):
        st.plotly_chart(tv.sweep_base(run_dir, stamp, calibration_key if calibrated else "", view["estimated"]),
                        width="stretch", key="sweep_chart")
    lines["sweep_box"] = [{"xaxis": "xaxis", "yaxis": "yaxis", "x": tau, "color": "#424242",
                           "label": f"τ = {tau:.2f}"}]
    reliability = tv.reliability_figure(run_dir, stamp, calibration_key + (":calibrated" if calibrated else ""),
                                        verdicts, view["counting_prob"] if calibrated else None)
    if reliability is not None:
        with st.expander("Is the clean probability calibrated? (reliability diagram)", icon=":material/query_stats:"):
            among = (["the samples you kept or relabelled in Review"] if verdicts is not None else []) + (
                ["every sample, by this dataset's ground truth"] if data["has_true"] else [])
            st.caption("Samples binned by their clean probability, against the share whose label is right: among "
                       + " and among ".join(among) + ". A calibrated probability lies on the dotted diagonal; below "
                       "it, the model calls labels right more often than they are." +
                       (" Your decisions come mostly from the flagged samples, and from the whole range only "
                        "through a spot check." if verdicts is not None else ""))
            with st.container(key="reliability_box"):
                st.plotly_chart(reliability, width="stretch", key="reliability_chart")

    tv.tau_lines(data=lines, key="tau_lines", height=0)

    # ----------------------------------------------------------------------------- retrain

    st.subheader(":material/replay: Retrain step 2 at this τ", anchor=False)
    uses_tau = method_kind(cfg.get("method", "turn")) == "turn"
    st.caption("Starts a new run with the same settings and τ = "
               f"{tau:.2f}. The pre-trained features are cached, so feature extraction is skipped and the "
               "linear probe (step 1) takes seconds; the cleansing and fine-tuning rounds (step 2) run again. "
               "This run stays as it is." if uses_tau else
               f"Method {cfg.get('method')} does not use τ in training (only TURN and TURN+ cleanse), so there is "
               "nothing to retrain; τ still decides which samples Review and Export flag.")

    started = st.session_state.get("retrain_started")
    if st.button("Retrain step 2 at this τ", icon=":material/rocket_launch:", disabled=not uses_tau,
                 key="retrain_button"):
        try:
            from turn_backend import worker
            from turn_backend.runner import create_run

            config = replace(RunConfig.from_dict(cfg), tau=float(f"{tau:.2f}"))
            root = runs_root()
            name = retrain_run_name(run.name, tau, [r.name for r in list_runs(root)] +
                                       [p.name for p in root.iterdir()])
            new = create_run(config, root / name)
            worker.launch(new.path, processes=max(1, int(config.num_processes or 1)))
            st.session_state["retrain_started"] = started = str(new.path)
        except (ValueError, OSError, FileExistsError) as exc:
            ui.show_error(exc, "The new run could not be started; check that the runs folder is writable.")
    if started and Path(started).parent == runs_root() and Path(started).name != run.name:
        with st.container(border=True):
            st.success(f"Started run **{Path(started).name}** at τ = "
                       f"{RunFolder(started).config().get('tau', tau):.2f}. It keeps going if you close the tab.",
                       icon=":material/rocket_launch:")
            if st.button("Follow it on the Train page", icon=":material/arrow_forward:", key="follow_retrain"):
                set_current_run(started)
                st.session_state.pop("retrain_started", None)
                ui.switch_page("train")


tau_panel()
