"""The Label Studio round trip on the Review page (turn_backend.labelstudio): "Send to Label
Studio" downloads the flagged samples as a zip to import there, "Import from Label Studio"
applies a project's JSON export as review decisions. Export offers the same files as a folder."""

from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st

from app import ui
from app.review_data import Decisions
from turn_backend.labelstudio import export_labelstudio, plan_import, read_tasks, zip_export
from turn_backend.runfolder import RunFolder

FORMAT = "label-studio"  # its name among the Export page's folder formats
LARGE = 2_000  # images: past this, the zip is big for a browser download, and the CLI writes a folder instead
SUMMARY_KEY = "labelstudio_import_summary"


def zip_bytes(run: RunFolder, tau: float, inline: bool) -> bytes:
    """The export written to a temporary folder and zipped (its top folder keeps the export's name)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{run.name}-label-studio"
        export_labelstudio(run.path, out, tau=tau, inline=inline)
        return zip_export(out)


def send_panel(run: RunFolder, tau: float, n_flagged: int, n_spot: int = 0) -> None:
    """Download the flagged samples (and the run's spot check, `n_spot` samples) for Label Studio."""
    st.markdown("**:material/upload: Send to Label Studio**")
    inline = st.toggle("Images inside tasks.json", key="labelstudio_inline", value=n_flagged <= 200,
                       help="On: the images travel inside tasks.json (data: URIs): import it in Label Studio as it "
                            "is. Off: an images/ folder beside it, which Label Studio serves as local files "
                            "(LABEL_STUDIO.md in the zip says how); better for many or large images.")
    st.caption(f"The {ui.fmt_int(n_flagged)} samples flagged at τ = {tau:.2f}"
               + (f" and the {ui.fmt_int(n_spot)} of the spot check" if n_spot else "") +
               " as Label Studio tasks, TURN's suggestion pre-selected, with the labelling config "
               "(labeling_config.xml: your classes, *None of these classes*, *Ambiguous*).")
    if n_flagged > LARGE:
        st.caption(f":material/info: {ui.fmt_int(n_flagged)} images make a large download; the command line writes "
                   f"the same folder: `turn export {run.path} --out DIR --format label-studio`")
    st.download_button("Download for Label Studio (zip)", data=lambda: zip_bytes(run, tau, inline),
                       file_name=f"{run.name}-label-studio.zip", mime="application/zip", on_click="ignore",
                       icon=":material/download:", key="labelstudio_download", disabled=n_flagged + n_spot == 0)


def import_panel(run: RunFolder, actions: Decisions) -> None:
    st.markdown("**:material/download: Import from Label Studio**")
    st.caption("The project's export in Label Studio's *JSON* format: the given label is a keep, another class a "
               "relabel, *None of these classes* and *Ambiguous* those decisions. Undo reverts the whole import.")
    upload = st.file_uploader("Label Studio JSON export", type=["json"], key="labelstudio_upload")
    if upload is not None:
        try:
            decisions, summary = plan_import(run.path, read_tasks(upload.getvalue(), upload.name))
        except (ValueError, OSError) as exc:
            ui.show_error(exc)
        else:
            counts = ", ".join(f"{summary.recorded[a]} {a}" for a in ("keep", "relabel", "none", "ambiguous"))
            st.caption(f"`{upload.name}`: {counts}; {summary.unchanged} already so; "
                       f"{summary.n_skipped} task(s) to skip.")
            if decisions:
                st.button(f"Apply {ui.fmt_int(len(decisions))} decision(s)", key="labelstudio_apply",
                          type="primary", icon=":material/done_all:", on_click=_apply,
                          args=(actions, decisions, summary.lines()))
            else:
                st.caption("Nothing new to apply.")
    lines = st.session_state.get(SUMMARY_KEY)
    if lines:
        st.success(lines[0][:1].upper() + lines[0][1:], icon=":material/check_circle:")
        if len(lines) > 1:
            st.caption("\n\n".join(line.strip() for line in lines[1:]))


def _apply(actions: Decisions, decisions: list, summary: list[str]) -> None:
    """Record the import (a callback: the cards drawn after it show the new decisions)."""
    st.session_state.pop("review_error", None)
    actions.record_many(decisions, "Imported from Label Studio")
    if "review_error" not in st.session_state:  # record_many reports a failure there
        st.session_state[SUMMARY_KEY] = summary


def review_panel(run: RunFolder, tau: float, n_flagged: int, actions: Decisions, n_spot: int = 0) -> None:
    """Both actions, side by side in an expander of the Review page."""
    with st.expander("Label Studio round trip", icon=":material/sync_alt:"):
        cols = st.columns(2, gap="large")
        with cols[0]:
            send_panel(run, tau, n_flagged, n_spot)
        with cols[1]:
            import_panel(run, actions)
