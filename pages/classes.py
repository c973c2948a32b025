"""Classes: the dataset's health per class, and its duplicates and train/test leaks.

The table (one row per class: size, estimated noise rate, mean clean probability, the
classes it is most confused with, duplicates and outliers) sorts by any column; selecting a
row opens Review filtered to that class. The Duplicates tab lists the audit's pairs above a
similarity the user moves, with both images side by side.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app import audit_data, ui
from app import threshold_view as tv
from turn_backend import analysis as an
from turn_backend.export import default_tau
from turn_backend.runfolder import RunFolder

PAIRS_PER_PAGE = 8
PAIR_THUMB = 120


def open_review_for_class(name: str) -> None:
    """Review filtered to one given class (other filters cleared). Set in the script run;
    the switch follows at once."""
    st.session_state["review_given_filter"] = [name]
    for key in ("review_pred_filter", "review_kind_filter", "review_pair"):
        st.session_state.pop(key, None)
    st.session_state["review_page"] = 0
    ui.switch_page("review")


@st.cache_resource(show_spinner=False, max_entries=4)
def _split_ids(run_dir: str, stamp: float) -> dict[str, tuple[pd.Index, np.ndarray]]:
    """Per split: its sample ids (an index to find a sample's position in the split) and their
    given labels. A dict over every sample took about 1 s to build at 1,000,000."""
    samples = audit_data.samples(RunFolder(run_dir))
    return {str(split): (pd.Index(part["sample_id"].astype(str)), part["given_label"].to_numpy())
            for split, part in samples[["split", "sample_id", "given_label"]].groupby("split", sort=False)}


def _find_sample(sid: str, split: str) -> tuple[int, int] | None:
    """(position in its split, given label) of a sample, or None where the run lacks it."""
    ids, labels = _split_ids(run_dir, stamp).get(split, (pd.Index([]), np.array([])))
    pos = int(ids.get_indexer([sid])[0]) if ids.is_unique else -1
    return None if pos < 0 else (pos, int(labels[pos]))


ui.page_header("Classes", ":material/category:",
               "Dataset health per class: how big, how noisy, confused with what, with how many duplicates and "
               "outliers. Select a row to review that class.")

run = ui.require_finished_run("Its classes can be audited")
run_dir = str(run.path.resolve())
stamp = audit_data.stamp(run)
try:
    inputs = audit_data.review_inputs(run)
except (ValueError, OSError, KeyError) as exc:
    ui.show_error(exc, "The run folder looks incomplete; open the Runs page and pick another run.")
    st.stop()
names = inputs["names"]
tau = default_tau(run)
detection = audit_data.detection(run)
warning_box = st.container()  # filled once the health tab knows whether its counts are recalibrated
audit = audit_data.audit(run)

health, duplicates = st.tabs([":material/monitor_heart: Health", ":material/content_copy: Duplicates and leaks"])

# ------------------------------------------------------------------------------- health

with health:
    calibration = tv.run_calibration(run)
    calibrated = tv.calibration_toggle(calibration, "classes_calibrate_on_review")
    ui.unreliable_flags_warning(None if detection is None else detection.get("reliability"), warning_box,
                                recalibrated_on=calibration["fit"]["n"] if calibrated else 0)
    table = an.class_health(inputs["given"], inputs["clean_prob"], tau, names,
                            noise_counts=None if detection is None else detection["noise_counts"],
                            audit_train=inputs["audit"],
                            calibrated=calibration["counting_prob"] if calibrated else None)
    notes = []
    if calibrated:
        notes.append("expected wrong labels, noise rates, mean p(clean) and confusions are counted with the clean "
                     "probabilities recalibrated on your Review decisions; flagged is the run's own at τ")
    if detection is None:
        notes.append("no detection layer in this run: the noise rate is the share flagged at τ, and the confused "
                     "classes are unknown")
    if inputs["audit"] is None:
        notes.append("no audit in this run: duplicates and outliers are not counted")
    if notes:
        st.caption(":material/info: " + "; ".join(notes) + ".")
    shown = table.drop(columns=["class_id"] + (["confused_with"] if detection is None else []))
    event = st.dataframe(
        shown, hide_index=True, width="stretch", key="classes_table", on_select="rerun",
        selection_mode="single-row", height=min(35 * (len(shown) + 1) + 3, 640),
        column_config={
            "class": st.column_config.TextColumn("class", pinned=True),
            "size": st.column_config.NumberColumn("size", help="Training samples with this given label"),
            "flagged": st.column_config.NumberColumn("flagged", help=f"Clean probability ≤ τ = {tau:.2f}"),
            "expected_wrong": st.column_config.NumberColumn(
                "expected wrong", format="%.1f",
                help="Wrong labels the model expects in this class, whatever τ (the noise matrix's off-diagonal "
                     "counts, else the sum of 1 − clean probability); no ground truth read"),
            "noise_rate": st.column_config.ProgressColumn(
                "noise rate", format="percent", min_value=0.0, max_value=1.0,
                help="Share of the class whose likely true class is another (noise matrix), else the share flagged"),
            "mean_clean_prob": st.column_config.ProgressColumn("mean p(clean)", format="%.2f", min_value=0.0,
                                                               max_value=1.0),
            "confused_with": st.column_config.TextColumn("confused with",
                                                         help="Likely true classes of its samples, besides itself"),
            "duplicates": st.column_config.NumberColumn("duplicates", help="Samples with a near-duplicate in train"),
            "label_conflicts": st.column_config.NumberColumn("conflicts",
                                                             help="Duplicates whose twin has another label"),
            "outliers": st.column_config.NumberColumn("outliers", help="Samples far from every class"),
            "test_leaks": st.column_config.NumberColumn("leaks", help="Samples whose image is also in test"),
        },
    )
    rows = event.selection.rows if event else []
    if rows:
        open_review_for_class(str(shown.iloc[rows[0]]["class"]))
    st.caption("Click a column header to sort; select a row (the box at its left) to review that class.")

# --------------------------------------------------------------------------- duplicates

with duplicates:
    if audit is None:
        ui.empty_state(f"Run **{run.name}** has no audit of duplicates and leaks: it was trained before the "
                       "audit existed. Retrain it to find them.", icon=":material/content_copy:")
        st.stop()
    pairs = audit["pairs"]
    meta = audit["meta"] or {}
    if pairs.empty:
        st.info("No pair of images reaches the audit's similarity floor: no duplicates, no leaks.",
                icon=":material/task_alt:")
        st.stop()
    lo = float(np.floor(min(pairs["similarity"].min(), meta.get("floor", 1.0)) * 100) / 100)
    default = float(meta.get("threshold", max(lo, 0.95)))  # the threshold the audit flagged with
    c = st.columns([2.2, 1.6, 1.2], vertical_alignment="bottom")
    threshold = c[0].slider("Similarity at least", min_value=lo, max_value=1.0, value=min(max(default, lo), 1.0),
                            step=0.005, format="%.3f", key=f"dup_threshold_{run.name}",
                            help="Cosine similarity of the two images' features; 1 = the same image. Exact "
                                 "copies (same bytes) are always 1.")
    which = c[1].segmented_control("Pairs", ["train / train", "train / test"], default="train / train",
                                   key="dup_which")
    conflicts_only = c[2].toggle("Other label only", key="dup_conflicts",
                                 help="Only pairs whose two images carry different labels")
    leak = (pairs["a_split"] != pairs["b_split"]).to_numpy()
    mask = (pairs["similarity"].to_numpy() >= threshold - 1e-9) & (leak if which == "train / test" else ~leak)
    if conflicts_only:
        mask &= pairs["label_conflict"].to_numpy(dtype=bool)
    chosen = pairs[mask].sort_values("similarity", ascending=False, kind="stable")
    st.markdown(f"**{ui.fmt_int(len(chosen))} pair(s)** at similarity ≥ {threshold:.3f} "
                f"({ui.fmt_int(int((pairs['kind'] == 'exact').sum()))} exact copies in the audit in all)")
    page_count = max(1, -(-len(chosen) // PAIRS_PER_PAGE))
    page = st.number_input("Page", 1, page_count, 1, key="dup_page") - 1 if page_count > 1 else 0

    def side(col, sid: str, split: str) -> None:
        where = _find_sample(sid, split)
        image = audit_data.thumbnail(run, where[0], PAIR_THUMB, split) if where else None
        if image is not None:
            col.image(image, width=PAIR_THUMB)
        label = names[where[1]] if where else "?"
        col.caption(f"**{label}** · {split}  \n{sid}")

    for r in chosen.iloc[page * PAIRS_PER_PAGE:(page + 1) * PAIRS_PER_PAGE].itertuples(index=False):
        with st.container(border=True):
            cols = st.columns([1, 1, 2.2], vertical_alignment="center")
            side(cols[0], str(r.a_id), str(r.a_split))
            side(cols[1], str(r.b_id), str(r.b_split))
            badges = [f":blue-badge[similarity {float(r.similarity):.3f}]",
                      ":gray-badge[exact copy]" if r.kind == "exact" else ":gray-badge[near duplicate]"]
            if bool(r.label_conflict):
                badges.append(":violet-badge[:material/label_off: different labels]")
            if r.a_split != r.b_split:
                badges.append(":red-badge[:material/science: train/test leak]")
            cols[2].markdown(" ".join(badges))
