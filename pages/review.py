"""Review: the samples TURN flags, least probably clean first; keep, relabel or remove each.

Every decision goes straight into the run's review database (turn_backend.review); nothing
is held only in the browser session, so a refresh, a second tab or a crash loses nothing.
"""

from __future__ import annotations

import uuid

import numpy as np
import streamlit as st
from PIL import Image

from app import ui
from turn_backend import analysis as an
from turn_backend.export import default_tau
from turn_backend.review import ReviewStore
from turn_backend.runfolder import RunFolder

PER_PAGE = 12
CARDS_PER_ROW = 4
THUMB = 160
DECISION_BADGE = {
    "": ("gray", ":material/pending:"),
    "keep": ("green", ":material/check:"),
    "relabel": ("blue", ":material/edit:"),
    "remove": ("red", ":material/delete:"),
}
SHORTCUTS = {"keep": "K", "accept": "A", "remove": "X", "undo": "U", "next": "Right", "prev": "Left"}


@st.cache_resource(show_spinner=False, max_entries=8)
def _review_data(run_dir: str, stamp: float) -> dict:
    folder = RunFolder(run_dir)
    final = folder.final()
    samples = folder.samples()
    train = samples[samples["split"] == "train"].reset_index(drop=True)
    names = ui.class_names(folder) or [str(c) for c in range(int(train["given_label"].max()) + 1)]
    return {
        "names": names,
        "ids": train["sample_id"].astype(str).to_numpy(),
        "given": train["given_label"].to_numpy(dtype=np.int64),
        "true": train["true_label"].to_numpy(dtype=np.int64),
        "clean_prob": np.asarray(final["clean_prob"], dtype=np.float64),
        "pred": np.asarray(final["pred"], dtype=np.int64),
        "pred_prob": np.asarray(final["pred_prob"], dtype=np.float64),
    }


def _stamp(folder: RunFolder) -> float:
    try:
        return (folder.final_dir / "clean_prob.npy").stat().st_mtime
    except OSError:
        return 0.0


def thumbnail(bundle, i: int) -> Image.Image | None:
    if bundle is None:
        return None
    try:
        img = bundle.train.load_image(int(i))
    except Exception:  # a file that vanished since training: the card still works
        return None
    w, h = img.size
    scale = THUMB / max(w, h)
    resample = Image.NEAREST if max(w, h) <= 64 else Image.LANCZOS  # keep tiny images crisp
    return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample)


# ---------------------------------------------------------------------------------- page

ui.page_header("Review", ":material/rate_review:",
               "The samples TURN flags as probably mislabelled, least probably clean first. "
               "Every decision is saved at once with the run.")

run = ui.require_finished_run("There is something to review")

try:
    data = _review_data(str(run.path.resolve()), _stamp(run))
except (ValueError, OSError, KeyError) as exc:
    ui.show_error(exc, "The run folder looks incomplete; open the Runs page and pick another run.")
    st.stop()

names: list[str] = data["names"]
store = ReviewStore(run.review_db)
session_id = st.session_state.setdefault("review_session_id", uuid.uuid4().hex)
tau = default_tau(run)


def _push_undo(n: int) -> None:
    """Remember how many rows the last action wrote, so that Undo reverts a bulk accept whole."""
    st.session_state.setdefault("review_undo_stack", []).append(int(n))


def record(sample_id: str, action: str, label: int | None = None) -> None:
    try:
        store.record(sample_id, action, label, session=session_id)
    except Exception as exc:  # noqa: BLE001 - shown to the user, never a traceback
        st.session_state["review_error"] = f"The decision was not saved: {exc}"
        return
    _push_undo(1)


def record_relabel_choice(sample_id: str, key: str) -> None:
    choice = st.session_state.get(key)
    if choice is not None and choice in names:
        record(sample_id, "relabel", names.index(choice))
    st.session_state[key] = None


def record_bulk(rows) -> None:
    todo = rows[rows["decision"] == ""]
    if todo.empty:
        st.session_state["review_notice"] = "Every card on this page already has a decision."
        return
    try:
        store.record_many(an.bulk_accept(todo), session=session_id)
    except Exception as exc:  # noqa: BLE001
        st.session_state["review_error"] = f"The decisions were not saved: {exc}"
        return
    _push_undo(len(todo))
    st.session_state["review_notice"] = f"Accepted the suggestion for {len(todo)} sample(s)."


def undo() -> None:
    stack = st.session_state.get("review_undo_stack") or []
    n = stack.pop() if stack else 1
    undone = []
    try:
        for _ in range(n):
            sid = store.undo_last(session_id)
            if sid is None:
                break
            undone.append(sid)
    except Exception as exc:  # noqa: BLE001
        st.session_state["review_error"] = f"Undo failed: {exc}"
        return
    if not undone:
        st.session_state["review_notice"] = "Nothing to undo in this browser tab."
    elif len(undone) == 1:
        st.session_state["review_notice"] = f"Undid the last decision (sample {undone[0]})."
    else:
        st.session_state["review_notice"] = f"Undid the last bulk accept ({len(undone)} samples)."


def first_page() -> None:
    st.session_state["review_page"] = 0


def go_page(delta: int) -> None:
    st.session_state["review_page"] = st.session_state.get("review_page", 0) + delta


decisions = store.current()
left, total = an.review_progress(data["clean_prob"], data["ids"], tau, decisions)

# ------------------------------------------------------------------------ progress, filters

head = st.columns([3, 1], vertical_alignment="bottom")
with head[0]:
    if total:
        st.markdown(f"**{ui.fmt_int(left)} of {ui.fmt_int(total)} flagged samples left to review** "
                    f"(clean probability ≤ τ = {tau:.2f})")
        st.progress((total - left) / total, text=f"{ui.fmt_int(total - left)} reviewed")
    else:
        st.markdown(f"**No sample is flagged at τ = {tau:.2f}.**")
with head[1]:
    ui.page_link("threshold", label=f"Change τ ({tau:.2f})", icon=":material/tune:")

if not total:
    ui.empty_state("Nothing to review: no training sample has a clean probability at or below τ. Raise τ on the "
                   "Threshold page to flag more samples, or export the labels as they are.",
                   icon=":material/task_alt:", page="export", label="Export labels")
    st.stop()

f = st.columns([2, 2, 1.2], vertical_alignment="bottom")
given_filter = f[0].multiselect("Given label", names, key="review_given_filter", placeholder="All classes",
                                on_change=first_page)
pred_filter = f[1].multiselect("Suggested label", names, key="review_pred_filter", placeholder="All classes",
                               on_change=first_page)
only_undecided = f[2].toggle("Only undecided", key="review_only_undecided", on_change=first_page,
                             help="Hide samples that already have a decision")

queue = an.review_queue(data["ids"], data["clean_prob"], data["given"], data["pred"], data["pred_prob"], tau,
                        decisions, given_classes=[names.index(n) for n in given_filter],
                        pred_classes=[names.index(n) for n in pred_filter], only_undecided=only_undecided)

if st.session_state.get("review_error"):
    ui.show_error(st.session_state.pop("review_error"))
if st.session_state.get("review_notice"):
    st.toast(st.session_state.pop("review_notice"), icon=":material/undo:")

if queue.empty:
    msg = ("Every flagged sample matching these filters has a decision. "
           if only_undecided else "No flagged sample matches these filters. ")
    ui.empty_state(msg + "Clear the filters to see the others, or go on to Export.",
                   icon=":material/filter_alt_off:", page="export", label="Export labels")
    st.button("Undo last decision", icon=":material/undo:", on_click=undo, key="undo_empty",
              shortcut=SHORTCUTS["undo"])
    st.stop()

page, start, stop, pages = an.paginate(len(queue), st.session_state.get("review_page", 0), PER_PAGE)
st.session_state["review_page"] = page
rows = queue.iloc[start:stop]
undecided = rows.index[rows["decision"] == ""]
focus = int(undecided[0]) if len(undecided) else None  # the card the keyboard acts on

# ------------------------------------------------------------------------------ toolbar

bar = st.columns([1.9, 1.2, 1.1, 1.0, 1.8], vertical_alignment="center")
bar[0].button("Accept page suggestions", icon=":material/done_all:", type="primary", on_click=record_bulk,
              args=(rows,), key="bulk_accept", width="stretch",
              help="For every undecided card on this page: relabel to the model's suggestion where it differs "
                   "from the given label, keep it where they agree. Cards you decided stay as they are; Undo "
                   "reverts the whole batch.")
bar[1].button("Undo last", icon=":material/undo:", on_click=undo, key="undo", width="stretch",
              shortcut=SHORTCUTS["undo"], help="Undo the last decision made in this browser tab")
bar[2].button("Previous", icon=":material/chevron_left:", on_click=go_page, args=(-1,), disabled=page == 0,
              key="prev_page", width="stretch", shortcut=SHORTCUTS["prev"])
bar[3].button("Next", icon=":material/chevron_right:", icon_position="right", on_click=go_page, args=(1,),
              disabled=page >= pages - 1, key="next_page", width="stretch", shortcut=SHORTCUTS["next"])
bar[4].caption(f"Page **{page + 1}** of {pages} · samples {start + 1}–{stop} of {len(queue)}")
st.caption(":material/keyboard: Keyboard, on the card marked *next up*: **A** accept the suggestion · **K** keep · "
           "**X** remove · **U** undo · **← →** previous / next page")

# -------------------------------------------------------------------------------- cards

try:
    bundle = ui.run_bundle(run)
except Exception as exc:  # noqa: BLE001 - images are optional; decisions still work
    bundle = None
    st.warning(f"The images could not be loaded ({exc}); the cards show labels only.", icon=":material/hide_image:")

# every image of the page is read before the first card is drawn, so the cards appear together
thumbs = {int(i): thumbnail(bundle, int(i)) for i in rows["index"]}

for row_start in range(0, len(rows), CARDS_PER_ROW):
    cols = st.columns(CARDS_PER_ROW)
    for col, (pos, r) in zip(cols, rows.iloc[row_start:row_start + CARDS_PER_ROW].iterrows()):
        sid = str(r["sample_id"])
        given, pred = int(r["given"]), int(r["pred"])
        decision, dlabel = r["decision"], int(r["decision_label"])
        focused = pos == focus
        with col.container(border=True, key=f"card_{sid}"):
            img = thumbs.get(int(r["index"]))
            if img is not None:
                st.image(img, width=THUMB)
            else:
                st.caption(":material/hide_image: image unavailable")
            colour, icon = DECISION_BADGE.get(decision, DECISION_BADGE[""])
            badge = f":{colour}-badge[{icon} {an.decision_text(decision, dlabel if dlabel >= 0 else None, names)}]"
            if focused:
                badge += " :orange-badge[:material/keyboard: next up]"
            st.markdown(badge)
            same = pred == given
            cp = r["clean_prob"]
            st.markdown(f"Given **{names[given]}**  \n"
                        f"Suggested **{names[pred]}** ({r['pred_prob']:.0%})" + (" · agrees" if same else "") +
                        f"  \nClean probability **{'< 0.01' if cp < 0.005 else f'{cp:.2f}'}**")
            st.button(f"Relabel to {names[pred]}" if not same else f"Accept: keep {names[pred]}",
                      icon=":material/auto_fix_high:", key=f"accept_{sid}", on_click=record,
                      args=(sid, "relabel", pred) if not same else (sid, "keep"), width="stretch",
                      help="Accept the model's suggestion" if not same else
                           "The suggestion is the given label: accepting keeps it",
                      shortcut=SHORTCUTS["accept"] if focused else None,
                      type="primary" if (decision == "relabel" and dlabel == pred) else "secondary")
            b = st.columns(2)
            b[0].button("Keep", key=f"keep_{sid}", on_click=record,
                        args=(sid, "keep"), width="stretch", help=f"Keep the given label, {names[given]}",
                        shortcut=SHORTCUTS["keep"] if focused else None,
                        type="primary" if decision == "keep" else "secondary")
            b[1].button("Remove", key=f"remove_{sid}", on_click=record,
                        args=(sid, "remove"), width="stretch", help="Leave this sample out of the cleaned set",
                        shortcut=SHORTCUTS["remove"] if focused else None,
                        type="primary" if decision == "remove" else "secondary")
            pick_key = f"relabel_{sid}"
            st.selectbox("Relabel to", names, index=None, key=pick_key, placeholder="Relabel to another class…",
                         label_visibility="collapsed", on_change=record_relabel_choice, args=(sid, pick_key))
            st.caption(sid)

st.caption(f"Decisions are saved in `{run.review_db.name}` inside the run folder the moment you make them; "
           "Export applies them.")
