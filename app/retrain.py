""""Retrain with my decisions": the action that Review and Export share.

It makes a new run folder from the current run's review decisions
(`turn_backend.retrain.create_retrain_run`: relabelled samples carry their new label,
removed ones and those decided "none of these classes" leave the training set, kept ones
are held clean, ambiguous ones are left out or kept with their label as the user picks
beside the button), starts its worker as the Train page does, and links to the Train page
for its progress and to Compare runs.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import ui
from app.state import runs_root, set_current_run
from turn_backend import worker
from turn_backend.runfolder import RunFolder, unique_run_name

STARTED_KEY = "retrain_decisions_started"
AMBIGUOUS_LABELS = {"drop": "Leave out", "keep": "Keep their label"}


def retrained_name(base: str, existing) -> str:
    """`base-reviewed`, then `-reviewed-2`, ...; a retrain of a retrain does not grow the name."""
    stem = base.split("-reviewed")[0]
    return unique_run_name(f"{stem}-reviewed", existing)


def start_retrain(run: RunFolder, ambiguous: str = "drop") -> RunFolder:
    """Create the retrain run under the runs root and launch its worker; `ambiguous`: "drop"
    or "keep" the images decided ambiguous."""
    from turn_backend.retrain import create_retrain_run  # imports the runner, and torch: only when asked

    root = runs_root()
    name = retrained_name(run.name, [p.name for p in root.iterdir()])
    new = create_retrain_run(run.path, root / name, ambiguous=ambiguous)
    worker.launch(new.path, processes=max(1, int(new.config().get("num_processes") or 1)))
    return new


def retrain_panel(run: RunFolder, n_decisions: int, key: str) -> None:
    """The button, and once pressed, where the new run is and how to follow it."""
    with st.container(border=True):
        st.markdown("**:material/model_training: Retrain with my decisions**")
        st.caption("A new run with the same settings, trained on the reviewed labels: relabelled samples carry "
                   "their new label, removed ones and those of none of the classes leave the training set, kept "
                   "ones are never cleansed away. This run stays as it is.")
        row = st.columns([1.4, 1], vertical_alignment="bottom")
        ambiguous = row[1].segmented_control(
            "Ambiguous images", list(AMBIGUOUS_LABELS), format_func=AMBIGUOUS_LABELS.get, default="drop",
            key=f"{key}_ambiguous", help="Images you marked ambiguous (could be more than one class): leave them "
                                         "out of training, or train them with their given label") or "drop"
        if row[0].button(f"Retrain with my {ui.fmt_int(n_decisions)} decision(s)", icon=":material/rocket_launch:",
                         key=key, disabled=n_decisions == 0, type="primary",
                         help="Make at least one decision first" if n_decisions == 0 else None):
            try:
                new = start_retrain(run, ambiguous)
            except (ValueError, OSError) as exc:
                ui.show_error(exc, "The new run could not be started; check that the runs folder is writable.")
            else:
                st.session_state[STARTED_KEY] = str(new.path)
        started = st.session_state.get(STARTED_KEY)
        if not started or not RunFolder(started).exists():
            return
        source = (RunFolder(started).config().get("retrained_from") or {})
        if Path(str(source.get("run", ""))).name != run.name:
            return  # started from another run: not this page's news
        st.success(f"Started **{Path(started).name}** from {ui.fmt_int(source.get('decisions'))} decision(s). "
                   "It keeps going if you close the tab.", icon=":material/rocket_launch:")
        cols = st.columns(2)
        if cols[0].button("Follow it on the Train page", icon=":material/arrow_forward:", key=f"{key}_follow"):
            set_current_run(started)
            ui.switch_page("train")
        if cols[1].button("Compare the two runs", icon=":material/compare_arrows:", key=f"{key}_compare"):
            st.session_state["compare_runs"] = [run.name, Path(started).name]
            ui.switch_page("compare")

