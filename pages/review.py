"""Review: the flagged samples, least probably clean first, each with why it is flagged; keep,
relabel or remove each, or mark it "none of these classes" or "ambiguous", one by one or in
bulk ("More like this"), then retrain on the result.

Every decision goes straight into the run's review database (turn_backend.review); nothing
is held only in the browser session, so a refresh, a second tab or a crash loses nothing.
The queue is sorted once per run and tau (`analysis.ReviewIndex`), and the cards live in a
fragment, so a click reruns the cards only and costs array lookups, also at 60,000 samples.
"""

from __future__ import annotations

import html
import uuid

import numpy as np
import streamlit as st

from app import annotator_view, audit_data, labelstudio, review_data, ui
from app.annotator_view import REVIEW_ANNOTATOR_KEY
from app.retrain import retrain_panel
from app.review_data import Decisions
from turn_backend import analysis as an
from turn_backend.export import default_tau
from turn_backend.review import ReviewStore

PER_PAGE = 12
CARDS_PER_ROW = 4
THUMB = 160
SIMILAR_K = 11  # "More like this": the sample and its 11 nearest neighbours, one grid of 12
SIMILAR_THUMB = 96
DECISION_BADGE = {
    "": ("gray", ":material/pending:"),
    "keep": ("green", ":material/check:"),
    "relabel": ("blue", ":material/edit:"),
    "remove": ("red", ":material/delete:"),
    "none": ("orange", ":material/block:"),
    "ambiguous": ("violet", ":material/help:"),
}
SHORTCUTS = {"keep": "K", "accept": "A", "remove": "X", "none": "N", "ambiguous": "M", "undo": "U", "next": "Right",
             "prev": "Left"}
DECISION_FILTER = {"keep": "Kept", "relabel": "Relabelled", "remove": "Removed", "none": "None of these",
                   "ambiguous": "Ambiguous"}
PAIR_KEY = "review_pair"  # (given, suggested) set by the Noise matrix page


# ---------------------------------------------------------------------------------- page

ui.page_header("Review", ":material/rate_review:",
               "The samples flagged as probably mislabelled, least probably clean first, with the evidence for "
               "each; duplicates, test leaks and outliers too. Every decision is saved at once with the run.")

run = ui.require_finished_run("There is something to review")
# a card's Keep and Remove (and None of these and Ambiguous) share their row equally (one horizontal block, as
# st.columns(2) drew them)
# the second row's labels are longer: less padding, so "None of these" and "Ambiguous" fit a card; the key
# hints of the card marked next up (listed above the cards) would cut its labels to "Rem…": not drawn there
st.html("<style>[class*='st-key-actions_'] > div { flex: 1 1 0 !important; min-width: 0; } "
        "[class*='st-key-actions_more_'] button { padding-left: 0.3rem; padding-right: 0.3rem; } "
        "[class*='st-key-actions_more_'] button p { font-size: 0.8rem; } "
        "[class*='st-key-actions_'] button kbd { display: none; }</style>")
run_dir = str(run.path.resolve())
stamp = audit_data.stamp(run)
tau = default_tau(run)
annotators = annotator_view.annotators(run_dir, stamp)  # None: one label per image
annotator = st.session_state.get(REVIEW_ANNOTATOR_KEY)
if annotators is None or annotator not in annotators["names"]:  # another run's annotator: show all
    annotator = None
store = ReviewStore(run.review_db)
try:
    data = audit_data.review_inputs(run)
    index = review_data.review_index(run_dir, stamp, round(tau, 6), annotator, store.spot_check_size())
except (ValueError, OSError, KeyError) as exc:
    ui.show_error(exc, "The run folder looks incomplete; open the Runs page and pick another run.")
    st.stop()

reliability = run.metrics().get("flags_reliability")
recalibrated_on = 0  # once a spot check is decided, the other pages count with estimates refitted to it
if reliability and reliability.get("cautions") and store.spot_check_size():
    from turn_backend.detect.estimates import MIN_RANDOM_DECISIONS

    decided, spot_decided = review_data.verdict_counts(store.current(), data, store.spot_check_size())
    recalibrated_on = decided if spot_decided >= MIN_RANDOM_DECISIONS else 0
ui.unreliable_flags_warning(reliability, recalibrated_on=recalibrated_on, counted_here=False)
names: list[str] = data["names"]
# class names and sample ids are the user's data: escaped where a card's Markdown allows HTML
html_names = [html.escape(n, quote=False) for n in names]
session_id = st.session_state.setdefault("review_session_id", uuid.uuid4().hex)


actions = Decisions(store, session_id, names)


def first_page() -> None:
    st.session_state["review_page"] = 0


def go_page(delta: int) -> None:
    st.session_state["review_page"] = st.session_state.get("review_page", 0) + delta


def clear_pair() -> None:
    st.session_state.pop(PAIR_KEY, None)
    first_page()


def show_similar(position: int) -> None:
    st.session_state["review_similar"] = int(position)


def clear_annotator() -> None:
    st.session_state.pop(REVIEW_ANNOTATOR_KEY, None)
    first_page()


def close_similar() -> None:
    st.session_state.pop("review_similar", None)


if not len(index):
    ui.empty_state(f"Nothing to review: no training sample has a clean probability at or below τ = {tau:.2f}, and "
                   "the audit found no duplicate with another label, test leak or outlier. Raise τ on the "
                   "Threshold page to flag more samples, or export the labels as they are.",
                   icon=":material/task_alt:", page="export", label="Export labels")
    st.stop()

# ------------------------------------------------------------------------------ filters

counts = index.kind_counts()
kinds_present = [k for k in an.FLAG_KINDS if counts[k]]
f = st.columns([2, 2, 1.2], vertical_alignment="bottom")
given_filter = f[0].multiselect("Given label", names, key="review_given_filter", placeholder="All classes",
                                on_change=first_page)
pred_filter = f[1].multiselect("Suggested label", names, key="review_pred_filter", placeholder="All classes",
                               on_change=first_page)
only_undecided = f[2].toggle("Only undecided", key="review_only_undecided", on_change=first_page,
                             help="Hide samples that already have a decision")
kind_filter = st.pills("Flagged as", kinds_present, selection_mode="multi", key="review_kind_filter",
                       format_func=lambda k: f"{an.FLAG_KINDS[k]} ({ui.fmt_int(counts[k])})", on_change=first_page,
                       help="Why a sample is here: its clean probability is at most τ (label error), the audit "
                            "found a duplicate with another label, the same image in the test set, or an image "
                            "far from every class; or it was drawn at random for a spot check (asked for on the "
                            "Threshold page). None selected: all.")
decided_filter = st.pills("Decided as", list(DECISION_FILTER), selection_mode="multi", key="review_decided_filter",
                          format_func=DECISION_FILTER.get, on_change=first_page,
                          help="Show only the samples with one of these decisions (e.g. those you marked none of "
                               "these classes, or ambiguous). None selected: all.")
pair = st.session_state.get(PAIR_KEY)
if pair is not None:
    p = st.columns([5, 1], vertical_alignment="center")
    p[0].info(f"Showing the cell **given {names[pair[0]]} → likely {names[pair[1]]}** of the noise matrix.",
              icon=":material/grid_on:")
    p[1].button("Show all", icon=":material/filter_alt_off:", key="clear_pair", on_click=clear_pair)

view = index.view([names.index(n) for n in given_filter], [names.index(n) for n in pred_filter],
                  kind_filter or (), None if pair is None else tuple(pair))
if annotator is not None:  # opened from the Annotators page: only that annotator's disagreements
    view = view[(index.kinds[view] & an.KIND_BITS["annotator"]) > 0]
    a = st.columns([5, 1], vertical_alignment="center")
    a[0].info(f"Showing the images where annotator **{html.escape(annotator)}**'s label differs from the consensus.",
              icon=":material/groups:")
    a[1].button("Show all", icon=":material/filter_alt_off:", key="clear_annotator", on_click=clear_annotator)

# ------------------------------------------------------------------------ more like this


def similar_panel(position: int, codes: np.ndarray, labels: np.ndarray) -> None:
    """The sample at training position `position` and its nearest neighbours, with bulk actions."""
    with st.container(border=True, key="similar_panel"):
        head = st.columns([5, 1], vertical_alignment="center")
        head[0].markdown(f"**:material/image_search: More like {data['ids'][position]}**: its nearest images in "
                         "feature space, with their labels and clean probabilities. Tick the ones an action applies "
                         "to.")
        head[1].button("Close", icon=":material/close:", key="close_similar", on_click=close_similar)
        try:
            nn, sims = review_data.similar_samples(run_dir, stamp, position, SIMILAR_K)
        except (ValueError, OSError, ImportError) as exc:
            ui.show_error(exc)
            return
        picks = [(position, 1.0)] + [(int(j), float(s)) for j, s in zip(nn, sims) if j >= 0]
        chosen = []
        cols = st.columns(6)
        for n, (j, sim) in enumerate(picks):
            sid = str(data["ids"][j])
            with cols[n % 6]:
                # the picture (inlined, as the cards' are: no request per image) and its caption
                # in one element: fewer elements for the browser to build when the panel opens
                image = audit_data.thumbnail_html(run, j, SIMILAR_THUMB, alt=f"sample {sid}")
                decision = an.ACTIONS_BY_CODE[int(codes[j])]
                lab = int(labels[j])
                caption = (f"<b>{html_names[int(data['given'][j])]}</b> · p {data['clean_prob'][j]:.2f}<br>"
                           + ("this sample" if n == 0 else f"similarity {sim:.2f}") + "<br>"
                           + an.decision_text(decision, lab if lab >= 0 else None, html_names))
                st.markdown(f'{image or ""}<div style="{ui.CAPTION_STYLE}">'
                            f"{caption}</div>", unsafe_allow_html=True)
                if st.checkbox(sid, value=True, key=f"similar_pick_{position}_{sid}"):
                    chosen.append(sid)
        act = st.columns([2, 1.3, 1, 1, 1.2, 1.2], vertical_alignment="bottom")
        target = act[0].selectbox("Relabel the ticked ones to", names, key=f"similar_target_{position}",
                                  index=int(data["suggested"][position]))
        act[1].button(f"Relabel {len(chosen)} to {target}", icon=":material/edit:", key="similar_relabel",
                      on_click=actions.record_many, width="stretch",
                      args=([(s, "relabel", names.index(target)) for s in chosen], f"Relabelled to {target}"))
        act[2].button(f"Remove {len(chosen)}", icon=":material/delete:", key="similar_remove", width="stretch",
                      on_click=actions.record_many, args=([(s, "remove", None) for s in chosen], "Removed"))
        act[3].button(f"Keep {len(chosen)}", icon=":material/check:", key="similar_keep", width="stretch",
                      on_click=actions.record_many, args=([(s, "keep", None) for s in chosen], "Kept"))
        act[4].button(f"None of these: {len(chosen)}", icon=":material/block:", key="similar_none", width="stretch",
                      on_click=actions.record_many, help="The ticked images belong to none of the classes",
                      args=([(s, "none", None) for s in chosen], "Marked none of these classes"))
        act[5].button(f"Ambiguous: {len(chosen)}", icon=":material/help:", key="similar_ambiguous", width="stretch",
                      on_click=actions.record_many, help="The ticked images could be more than one class",
                      args=([(s, "ambiguous", None) for s in chosen], "Marked ambiguous"))


# --------------------------------------------------------------------------- card grid


@st.fragment
def review_grid() -> None:
    """Progress, toolbar and cards: a decision, a page turn or Undo reruns only this part."""
    decisions = store.current()
    codes, labels = index.decision_arrays(decisions)
    left, total = index.progress(codes)
    head = st.columns([3, 1], vertical_alignment="bottom")
    with head[0]:
        st.markdown(f"**{ui.fmt_int(left)} of {ui.fmt_int(total)} flagged samples left to review** "
                    f"(clean probability ≤ τ = {tau:.2f}, or found by the audit"
                    + (", or drawn for the spot check" if counts["spot"] else "") + ")")
        st.progress((total - left) / total, text=f"{ui.fmt_int(total - left)} reviewed")
    with head[1]:
        ui.page_link("threshold", label=f"Change τ ({tau:.2f})", icon=":material/tune:")

    if st.session_state.get("review_error"):
        ui.show_error(st.session_state.pop("review_error"))
    if st.session_state.get("review_notice"):
        st.toast(st.session_state.pop("review_notice"), icon=":material/undo:")

    # always there, empty while closed: Streamlit places elements by their position, so the
    # panel coming and going would shift every card and the browser would build all twelve anew
    with st.container(key="similar_slot"):
        similar = st.session_state.get("review_similar")
        if similar is not None and 0 <= similar < len(data["ids"]):
            similar_panel(int(similar), codes, labels)

    cards(codes, labels)
    st.caption(f"Decisions are saved in `{run.review_db.name}` inside the run folder the moment you make them; "
               "Export applies them.")
    retrain_panel(run, len(decisions), key="review_retrain")
    labelstudio.review_panel(run, tau, index.kind_counts()["label"], actions, index.kind_counts()["spot"])


def cards(codes: np.ndarray, labels: np.ndarray) -> None:
    shown = index.decided_as(view, codes, decided_filter or ())
    shown = index.undecided(shown, codes) if only_undecided else shown
    if not len(shown):
        msg = ("Every flagged sample matching these filters has a decision. "
               if only_undecided else "No flagged sample matches these filters. ")
        if only_undecided and decided_filter:
            msg = "*Only undecided* hides the decided samples that *Decided as* picks; turn one of them off. "
        ui.empty_state(msg + "Clear the filters to see the others, or go on to Export.",
                       icon=":material/filter_alt_off:", page="export", label="Export labels")
        st.button("Undo last decision", icon=":material/undo:", on_click=actions.undo, key="undo_empty",
                  shortcut=SHORTCUTS["undo"])
        return

    page, start, stop, pages = an.paginate(len(shown), st.session_state.get("review_page", 0), PER_PAGE)
    st.session_state["review_page"] = page
    rows = index.rows(shown[start:stop], codes, labels)
    undecided = rows.index[rows["decision"] == ""]
    focus = int(undecided[0]) if len(undecided) else None  # the card the keyboard acts on

    bar = st.columns([1.9, 1.2, 1.1, 1.0, 1.8], vertical_alignment="center")
    bar[0].button("Accept page suggestions", icon=":material/done_all:", type="primary", on_click=actions.record_bulk,
                  args=(rows,), key="bulk_accept", width="stretch",
                  help="For every undecided card on this page: relabel to the suggestion where it differs from "
                       "the given label, keep it where they agree. Cards you decided stay as they are; Undo "
                       "reverts the whole batch.")
    bar[1].button("Undo last", icon=":material/undo:", on_click=actions.undo, key="undo", width="stretch",
                  shortcut=SHORTCUTS["undo"], help="Undo the last decision made in this browser tab")
    bar[2].button("Previous", icon=":material/chevron_left:", on_click=go_page, args=(-1,), disabled=page == 0,
                  key="prev_page", width="stretch", shortcut=SHORTCUTS["prev"])
    bar[3].button("Next", icon=":material/chevron_right:", icon_position="right", on_click=go_page, args=(1,),
                  disabled=page >= pages - 1, key="next_page", width="stretch", shortcut=SHORTCUTS["next"])
    bar[4].caption(f"Page **{page + 1}** of {pages} · samples {start + 1}–{stop} of {ui.fmt_int(len(shown))}")
    st.caption(":material/keyboard: Keyboard, on the card marked *next up*: **A** accept the suggestion · **K** keep "
               "· **X** remove · **N** none of these classes · **M** ambiguous (maybe more than one) · **U** undo "
               "· **← →** previous / next page")

    # Cards and their widgets are keyed by their slot on the page, not by sample: turning a
    # page then updates the same twelve cards in the browser instead of building twelve new
    # ones (half the time of a page turn at 60,000 samples). The sample id is each card's
    # last caption, and every callback gets it as an argument.
    for row_start in range(0, len(rows), CARDS_PER_ROW):
        cols = st.columns(CARDS_PER_ROW)
        for slot, (col, (pos, r)) in enumerate(zip(cols, rows.iloc[row_start:row_start + CARDS_PER_ROW].iterrows()),
                                               start=row_start):
            with col.container(border=True, key=f"card_{slot}"):
                card(r, pos == focus, slot)
    # More like this on any of these cards, found while the user looks at them
    review_data.preload_similar(run, stamp, [int(i) for i in rows["index"]], SIMILAR_K, SIMILAR_THUMB)


def card(r, focused: bool, slot: int) -> None:
    """One card, in slot `slot` of the page (its widgets' keys end in the slot)."""
    sid, i = str(r["sample_id"]), int(r["index"])
    given, pred = int(r["given"]), int(r["pred"])
    decision, dlabel = r["decision"], int(r["decision_label"])
    image = audit_data.thumbnail_html(run, i, THUMB, alt=f"sample {sid}")
    colour, icon = DECISION_BADGE.get(decision, DECISION_BADGE[""])
    badge = f":{colour}-badge[{icon} {an.decision_text(decision, dlabel if dlabel >= 0 else None, html_names)}]"
    if focused:
        badge += " :orange-badge[:material/keyboard: next up]"
    same = pred == given
    cp = r["clean_prob"]
    why = " ".join(filter(None, [review_data.audit_chips(data, index, html_names, i, r["kinds"]),
                                 review_data.signal_chips(data, tau, i)]))
    # One Markdown element per card for its picture (inlined: no request per image) and its
    # text: fewer elements, a faster page at every click.
    st.markdown((image or ":material/hide_image: image unavailable") +
                f"\n\n{badge}\n\nGiven **{html_names[given]}**  \n"
                f"Suggested **{html_names[pred]}** ({r['pred_prob']:.0%}, {html.escape(data['source'])})" +
                (" · agrees" if same else "") +
                f"  \nClean probability **{'< 0.01' if cp < 0.005 else f'{cp:.2f}'}** ({data['clean_source']})" +
                (f"\n\n{why}" if why else "") +
                (f"\n\n{annotator_view.card_line(annotators, i, html_names)}" if annotators is not None else ""),
                unsafe_allow_html=True,
                help="Why this sample is here. Each detection signal's clean score (0 = surely wrong, 1 = surely "
                     "right; red at or below τ) and what the audit found: a near-duplicate (violet where its label "
                     "differs), the same image in the test set, an outlier far from every class." if why else None)
    st.button(f"Relabel to {names[pred]}" if not same else f"Accept: keep {names[pred]}",
              icon=":material/auto_fix_high:", key=f"accept_{slot}", on_click=actions.record,
              args=(sid, "relabel", pred) if not same else (sid, "keep"), width="stretch",
              help="Accept the suggestion" if not same else "The suggestion is the given label: accepting keeps it",
              shortcut=SHORTCUTS["accept"] if focused else None,
              type="primary" if (decision == "relabel" and dlabel == pred) else "secondary")
    with st.container(horizontal=True, gap="small", key=f"actions_{slot}"):  # one block, not three (st.columns)
        st.button("Keep", key=f"keep_{slot}", on_click=actions.record,
                  args=(sid, "keep"), width="stretch", help=f"Keep the given label, {names[given]}",
                  shortcut=SHORTCUTS["keep"] if focused else None,
                  type="primary" if decision == "keep" else "secondary")
        st.button("Remove", key=f"remove_{slot}", on_click=actions.record,
                  args=(sid, "remove"), width="stretch", help="Leave this sample out of the cleaned set",
                  shortcut=SHORTCUTS["remove"] if focused else None,
                  type="primary" if decision == "remove" else "secondary")
    with st.container(horizontal=True, gap="small", key=f"actions_more_{slot}"):
        st.button("None of these", key=f"none_{slot}", on_click=actions.record, args=(sid, "none"),
                  width="stretch", help="The image belongs to none of the classes: left out of retraining and of "
                                        "the ImageFolder and Hugging Face exports",
                  shortcut=SHORTCUTS["none"] if focused else None,
                  type="primary" if decision == "none" else "secondary")
        st.button("Ambiguous", key=f"ambiguous_{slot}", on_click=actions.record, args=(sid, "ambiguous"),
                  width="stretch", help="The image could be more than one class: retraining leaves it out or keeps "
                                        "its given label, as you choose there",
                  shortcut=SHORTCUTS["ambiguous"] if focused else None,
                  type="primary" if decision == "ambiguous" else "secondary")
    pick_key = f"relabel_{slot}"
    st.selectbox("Relabel to", names, index=None, key=pick_key, placeholder="Relabel to another class…",
                 label_visibility="collapsed", on_change=actions.record_relabel_choice, args=(sid, pick_key))
    st.button("More like this", icon=":material/image_search:", key=f"similar_{slot}", on_click=show_similar,
              args=(i,), width="stretch", type="tertiary",
              help="The nearest images in feature space, with bulk actions")
    st.caption(sid)


review_grid()
review_data.preload_search(run_dir, stamp)  # More like this's index, read while the browser draws the cards
