"""Export: the cleaned label file (CSV, Parquet, JSON), dataset folders other tools load
(ImageFolder, Hugging Face datasets), the decision log, and "Retrain with my decisions"."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import labelstudio, ui
from app.retrain import retrain_panel
from app.state import user_path
from turn_backend.annotator_export import annotator_table, beside
from turn_backend.export import (
    FOLDER_FORMATS,
    FORMATS,
    LINK_MODES,
    SCOPES,
    ExportError,
    build_decision_log,
    build_export,
    default_tau,
    export_hf,
    export_imagefolder,
    summary,
    to_bytes,
    write_export,
)
from turn_backend.labelstudio import export_labelstudio

PREVIEW_ROWS = 200
MIME = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet", "json": "application/json"}
FORMAT_LABELS = {"csv": "CSV", "parquet": "Parquet", "json": "JSON"}
SCOPE_LABELS = {"all": "All samples", "kept": "Kept (not removed or none)", "clean": "Clean only"}

ui.page_header("Export", ":material/download:",
               "The cleaned label file: one row per training sample, with your review decisions applied.")

run = ui.require_finished_run("Its labels can be exported")

tau = default_tau(run)

# ------------------------------------------------------------------------------ options

opts = st.columns([2.2, 1.3, 1.5], vertical_alignment="top")
scope = opts[0].radio("Rows", list(SCOPES), format_func=lambda s: SCOPE_LABELS.get(s, s), key="export_scope",
                      horizontal=True, captions=None,
                      help="All: every training sample (removed ones and those of none of the classes with an "
                           "empty final label). Kept: every sample not removed or marked none of these in review "
                           "(ambiguous ones stay, with their given label). Clean only: also leaves out flagged "
                           "samples nobody reviewed.")
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
m = st.columns(6)
m[0].metric("Rows in the file", ui.fmt_int(len(df)), help=f"{ui.fmt_int(s['rows'])} training samples in all",
            border=True)
m[1].metric("Kept", ui.fmt_int(s["kept"]), help="Reviewed and kept with the given label", border=True)
m[2].metric("Relabelled", ui.fmt_int(s["relabelled"]), help="Reviewed and given another label", border=True)
m[3].metric("Removed", ui.fmt_int(s["removed"]), help="Reviewed and left out (empty final label)", border=True)
m[4].metric("None / ambiguous", f"{ui.fmt_int(s['none'])} / {ui.fmt_int(s['ambiguous'])}", border=True,
            help="Marked none of these classes (empty final label, left out of the ImageFolder and Hugging Face "
                 "exports) / ambiguous (kept with the given label; the decision column says so)")
m[5].metric("Flagged, not reviewed", ui.fmt_int(s["flagged_unreviewed"]),
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
    if run.has_annotators():  # several annotators per image: their quality table too
        st.download_button("Download the annotators table", data=lambda: to_bytes(annotator_table(run.path), fmt),
                           file_name=f"{run.name}-annotators.{fmt}", mime=MIME.get(fmt), icon=":material/groups:",
                           key="export_annotators_download", on_click="ignore",
                           help="One row per annotator: annotator, quality, n_labels, agreement_with_consensus")

with out[1]:
    st.subheader(":material/save: Write to a folder", anchor=False)
    folder = st.text_input("Folder", value=str(run.exports_dir), key=f"export_folder_{run.name}",
                           help="Written atomically: a failure leaves any earlier file there as it was.")
    st.caption(f"Writes `{file_name}` there (an existing file of that name is replaced)"
               + (f", and the annotators table `{beside(file_name).name}` beside it." if run.has_annotators() else "."))
    if st.button("Write the file", icon=":material/save:", key="export_write"):
        target = Path(user_path(folder) or run.exports_dir) / file_name  # relative: from start_dir()
        try:
            written = write_export(df, target, fmt)
            if run.has_annotators():  # the annotators table beside the label file, as `turn export` writes it
                write_export(annotator_table(run.path), beside(written), "csv")
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

# ---------------------------------------------------------------------- folder exports

st.subheader(":material/folder_zip: Datasets other tools load", anchor=False)
FOLDER_LABELS = {"imagefolder": "ImageFolder tree", "hf": "Hugging Face datasets folder",
                 labelstudio.FORMAT: "Label Studio import"}
LOADERS = {"imagefolder": "load it with `torchvision.datasets.ImageFolder`", "hf": "load it with "
           "`datasets.load_from_disk`", labelstudio.FORMAT: "its LABEL_STUDIO.md says how to import it"}
fx = st.columns([2.4, 1, 2], vertical_alignment="bottom")
folder_fmt = fx[0].segmented_control("Folder format", [*FOLDER_FORMATS, labelstudio.FORMAT], default=FOLDER_FORMATS[0],
                                     format_func=lambda f: FOLDER_LABELS.get(f, f), key="export_folder_format",
                                     help="ImageFolder: one folder per final label (torchvision.datasets.ImageFolder). "
                                          "Hugging Face: datasets.load_from_disk, with the final labels and the "
                                          "review columns. Removed samples are left out of both. Label Studio: "
                                          "the flagged samples and the spot check as tasks to label there (tasks.json, "
                                          "labeling_config.xml, images/); Review imports the answers.")
link = fx[1].selectbox("Image files", LINK_MODES, key="export_link",
                       disabled=folder_fmt not in ("imagefolder", labelstudio.FORMAT),
                       help="Hard links cost no space (copies where the file system cannot link); array datasets "
                            "are written as PNG")
folder_scope = "clean" if scope == "clean" else "kept"
default_out = run.exports_dir / f"{run.name}-{folder_fmt or 'imagefolder'}"
out_dir = fx[2].text_input("Output folder", value=str(default_out), key=f"export_out_{run.name}_{folder_fmt}",
                           help="Created, or replaced if it holds an earlier TURN export; any other folder is left "
                                "alone")
st.caption(("Writes the samples flagged at τ among the " if folder_fmt == labelstudio.FORMAT else "Writes the ")
           + f"{SCOPE_LABELS[folder_scope].lower()} samples ({SCOPES[folder_scope]}).")
if st.button("Write the dataset folder", icon=":material/create_new_folder:", key="export_folder_write",
             disabled=folder_fmt is None):
    target = Path(user_path(out_dir) or default_out)
    try:
        with st.spinner("Writing the images…"):
            if folder_fmt == "hf":
                info = export_hf(run.path, target, tau=tau, scope=folder_scope)
            elif folder_fmt == labelstudio.FORMAT:
                info = {"rows": export_labelstudio(run.path, target, tau=tau, scope=folder_scope, link=link).rows}
            else:
                info = export_imagefolder(run.path, target, tau=tau, scope=folder_scope, link=link)
    except (ExportError, OSError, ValueError, ImportError) as exc:
        st.session_state.pop("export_folder_written", None)
        ui.show_error(exc)
    else:
        st.session_state["export_folder_written"] = (str(target), int(info["rows"]), folder_fmt)
written_folder = st.session_state.get("export_folder_written")
if written_folder and Path(written_folder[0]).exists():
    st.success(f"Written: `{written_folder[0]}` ({ui.fmt_int(written_folder[1])} images); "
               f"{LOADERS[written_folder[2]]}.", icon=":material/check_circle:")

st.subheader(":material/history: Decision log", anchor=False)
st.caption("One row per reviewed sample: given and final label, the decision and when, τ, the clean probability, "
           "the detection signals and the audit columns.")
n_decisions = s["kept"] + s["relabelled"] + s["removed"] + s["none"] + s["ambiguous"]
if not n_decisions:
    st.caption("No decision yet.")
else:
    # built when the download starts: a pass over every decision is not needed on each rerun
    st.download_button(f"Download the decision log ({ui.fmt_int(n_decisions)} rows, {FORMAT_LABELS[fmt]})",
                       data=lambda: to_bytes(build_decision_log(run.path, tau=tau), fmt),
                       file_name=f"{run.name}-decisions.{fmt}", mime=MIME.get(fmt), icon=":material/download:",
                       key="export_log_download", on_click="ignore")

retrain_panel(run, n_decisions, key="export_retrain")
