"""Export: the cleaned label file, with the review decisions applied, as CSV, Parquet or JSON."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import ui
from turn_backend.export import (
    FORMATS,
    SCOPES,
    ExportError,
    build_export,
    default_tau,
    summary,
    to_bytes,
    write_export,
)

PREVIEW_ROWS = 200
MIME = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet", "json": "application/json"}
FORMAT_LABELS = {"csv": "CSV", "parquet": "Parquet", "json": "JSON"}
SCOPE_LABELS = {"all": "All samples", "kept": "Kept (not removed)", "clean": "Clean only"}

ui.page_header("Export", ":material/download:",
               "The cleaned label file: one row per training sample, with your review decisions applied.")

run = ui.require_finished_run("Its labels can be exported")

tau = default_tau(run)

# ------------------------------------------------------------------------------ options

opts = st.columns([2.2, 1.3, 1.5], vertical_alignment="top")
scope = opts[0].radio("Rows", list(SCOPES), format_func=lambda s: SCOPE_LABELS.get(s, s), key="export_scope",
                      horizontal=True, captions=None,
                      help="All: every training sample (removed ones with an empty final label). Kept: every sample "
                           "not removed in review. Clean only: also leaves out flagged samples nobody reviewed.")
opts[0].caption(SCOPES[scope].capitalize() + ".")
fmt = opts[1].radio("Format", list(FORMATS), format_func=lambda f: FORMAT_LABELS.get(f, f), key="export_format",
                    horizontal=True)
with opts[2]:
    st.markdown(f"Flagged at τ = **{tau:.2f}**")
    ui.page_link("threshold", label="Change τ", icon=":material/tune:")

try:
    full = build_export(run.path, tau=tau, scope="all")
    df = full if scope == "all" else build_export(run.path, tau=tau, scope=scope)
except (ExportError, ValueError, OSError, KeyError) as exc:
    ui.show_error(exc, "The run folder looks incomplete; open the Runs page and pick another run.")
    st.stop()

# ------------------------------------------------------------------------------ summary

s = summary(full)
m = st.columns(5)
m[0].metric("Rows in the file", ui.fmt_int(len(df)), help=f"{ui.fmt_int(s['rows'])} training samples in all",
            border=True)
m[1].metric("Kept", ui.fmt_int(s["kept"]), help="Reviewed and kept with the given label", border=True)
m[2].metric("Relabelled", ui.fmt_int(s["relabelled"]), help="Reviewed and given another label", border=True)
m[3].metric("Removed", ui.fmt_int(s["removed"]), help="Reviewed and left out (empty final label)", border=True)
m[4].metric("Flagged, not reviewed", ui.fmt_int(s["flagged_unreviewed"]),
            help=f"Clean probability ≤ τ and no decision yet ({ui.fmt_int(s['flagged'])} flagged in all)",
            border=True)
if s["flagged_unreviewed"]:
    st.caption(f":material/info: {ui.fmt_int(s['flagged_unreviewed'])} flagged samples have no decision: they keep "
               "their given label in *All* and *Kept*, and are left out of *Clean only*.")
    ui.page_link("review", label="Review them", icon=":material/rate_review:")

# ------------------------------------------------------------------------------ preview

st.subheader(":material/table_view: Preview", anchor=False)
st.caption(f"The first {min(PREVIEW_ROWS, len(df))} of {ui.fmt_int(len(df))} rows.")
st.dataframe(
    df.head(PREVIEW_ROWS), hide_index=True, width="stretch", height=320, key="export_preview",
    column_config={
        "clean_prob": st.column_config.ProgressColumn("clean_prob", format="%.2f", min_value=0.0, max_value=1.0),
        "flagged": st.column_config.CheckboxColumn("flagged"),
    },
)

# ------------------------------------------------------------------------------- output

file_name = f"{run.name}-labels-{scope}.{fmt}"


def payload(frame=df, fmt=fmt) -> bytes:
    """The file's bytes, made when the download starts (a big CSV need not be built on every rerun)."""
    return to_bytes(frame, fmt)


out = st.columns(2, gap="large")
with out[0]:
    st.subheader(":material/download: Download", anchor=False)
    st.caption(f"`{file_name}` · {ui.fmt_int(len(df))} rows · {FORMAT_LABELS[fmt]}")
    st.download_button("Download the label file", data=payload, file_name=file_name, mime=MIME.get(fmt),
                       icon=":material/download:", type="primary", key="export_download", on_click="ignore")

with out[1]:
    st.subheader(":material/save: Write to a folder", anchor=False)
    folder = st.text_input("Folder", value=str(run.path / "exports"), key=f"export_folder_{run.name}",
                           help="Written atomically: a failure leaves any earlier file there as it was.")
    st.caption(f"Writes `{file_name}` there (an existing file of that name is replaced).")
    if st.button("Write the file", icon=":material/save:", key="export_write"):
        target = Path(folder.strip() or run.path / "exports").expanduser() / file_name
        try:
            written = write_export(df, target, fmt)
        except (ExportError, OSError, ValueError) as exc:
            st.session_state.pop("export_written", None)
            msg = str(exc)
            if "previous file" not in msg:
                msg += ". The previous file, if any, is intact; choose a folder you can write to, with free space"
            ui.show_error(msg)
        else:
            st.session_state["export_written"] = str(written)
    written = st.session_state.get("export_written")
    if written and Path(written).exists():
        st.success(f"Written: `{written}`", icon=":material/check_circle:")
