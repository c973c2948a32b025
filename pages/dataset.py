"""Dataset: choose the images and labels to audit, look at them, optionally add synthetic noise.

The choice is handed to the Train page in st.session_state["dataset_spec"] and
["noise_spec"]. The default (the Fashion-MNIST demo with 40% symmetric noise) is loaded by
itself, so a new user can go straight to Train.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import annotator_view, ui
from app.dataset_loading import save_upload, spec_key, thumbnail, try_load
from app.given_inputs import given_inputs_panel
from app.state import start_dir, user_path
from turn_backend.data import DatasetError, apply_label_noise
from turn_backend.thumbnails import preview_image

MAX_UPLOAD_MB = 50
SAMPLES_PER_CLASS = 6
SOURCES = {
    "demo": ":material/checkroom: Demo",
    "folder": ":material/folder: Image folder",
    "manifest": ":material/table: Manifest",
    "hf": ":material/hub: Hugging Face",
}
NOISE_KINDS = {
    "none": "None",
    "symmetric": "Symmetric",
    "asymmetric": "Asymmetric",
    "instance": "Instance-dependent",
}
NOISE_HELP = {
    "none": "The labels are used as they are (real data).",
    "symmetric": "A share of the labels is replaced by a label drawn uniformly from the other classes.",
    "asymmetric": "A share of each class flips to a fixed partner class (Fashion-MNIST: T-shirt↔Shirt, "
                  "Pullover↔Coat, Sneaker↔Ankle boot).",
    "instance": "The chance of a flip, and the wrong class, depend on the image (Xia et al. 2020).",
}
DEMO_TRAIN_SIZES = [200, 500, 1000, 2000, 3000, 6000]
DEMO_TEST_SIZES = [100, 200, 500, 1000, 2000]


# ------------------------------------------------------------------------ widget defaults
# Widgets are keyed; when the page is opened again their values come back from the chosen
# spec (Streamlit forgets the state of widgets that were not on the last page).

spec0, noise0 = ui.dataset_choice()
kind0 = spec0.get("kind") if spec0.get("kind") in SOURCES else "demo"
defaults = {
    "ds_source": kind0,
    "ds_demo_train": spec0.get("n_train", 3000) if kind0 == "demo" else 3000,
    "ds_demo_test": spec0.get("n_test", 1000) if kind0 == "demo" else 1000,
    "ds_folder_path": spec0.get("path", "") if kind0 == "folder" else "",
    "ds_manifest_mode": "Path on disk",
    "ds_manifest_path": spec0.get("path", "") if kind0 == "manifest" else "",
    "ds_manifest_root": spec0.get("root", "") if kind0 == "manifest" else "",
    "ds_hf_path": spec0.get("path", "") if kind0 == "hf" else "",
    "ds_hf_train_split": spec0.get("train_split", "") if kind0 == "hf" else "",
    "ds_hf_test_split": spec0.get("test_split", "") if kind0 == "hf" else "",
    "ds_noise_kind": noise0.get("kind", "none") if noise0.get("kind") in NOISE_KINDS else "none",
    "ds_noise_rate": float(noise0.get("rate", 0.4)) if noise0.get("kind", "none") != "none" else 0.4,
    "ds_noise_seed": int(noise0.get("seed", 0)),
}
for key, value in defaults.items():
    st.session_state.setdefault(key, value)
if st.session_state["ds_demo_train"] not in DEMO_TRAIN_SIZES:
    st.session_state["ds_demo_train"] = 3000
if st.session_state["ds_demo_test"] not in DEMO_TEST_SIZES:
    st.session_state["ds_demo_test"] = 1000


# ------------------------------------------------------------------------------- the page

ui.page_header("Dataset", ":material/dataset:",
               "Choose the images and the labels you do not fully trust. "
               "Synthetic noise lets you measure how well TURN finds mislabelled samples.")

source_col, noise_col = st.columns([3, 2], gap="large")

with source_col:
    st.subheader(":material/input: Source", anchor=False)
    source = st.radio("Where are the images?", list(SOURCES), format_func=SOURCES.get, key="ds_source",
                      horizontal=True, label_visibility="collapsed")
    spec: dict | None = None
    load_clicked = False
    if source == "demo":
        c1, c2 = st.columns(2)
        n_train = c1.select_slider("Train images", DEMO_TRAIN_SIZES, key="ds_demo_train",
                                   help="Balanced over the 10 classes. Up to 6,000 ship with the app.")
        n_test = c2.select_slider("Test images", DEMO_TEST_SIZES, key="ds_demo_test")
        st.caption("Fashion-MNIST (Zalando, MIT licence): 28×28 grey images of 10 kinds of clothing, "
                   "with clean labels, so synthetic noise can be measured exactly.")
        spec = {"kind": "demo", "n_train": int(n_train), "n_test": int(n_test)}
    elif source == "folder":
        path = st.text_input("Folder", key="ds_folder_path", placeholder="/data/my-images",
                             help="One subfolder per class (cat/, dog/, ...), optionally under train/ and "
                                  "test/ (or val/). The subfolder name is the given label.")
        spec = {"kind": "folder", "path": user_path(path)}
    elif source == "manifest":
        mode = st.radio("Manifest", ["Path on disk", "Upload"], key="ds_manifest_mode", horizontal=True)
        if mode == "Path on disk":
            path = st.text_input("Manifest file", key="ds_manifest_path", placeholder="/data/labels.csv",
                                 help="CSV, TSV or Parquet with columns path and label "
                                      "(optional: split, true_label, id). Several annotators per image: one row "
                                      "per image and annotator with an annotator column, or one column "
                                      "annotator_NAME per annotator; their consensus becomes the label.")
        else:
            upload = st.file_uploader("Manifest file (CSV, TSV or Parquet)", type=["csv", "tsv", "parquet"],
                                      key="ds_manifest_upload", max_upload_size=MAX_UPLOAD_MB,
                                      help=f"At most {MAX_UPLOAD_MB} MB; for larger files use a path on disk.")
            path = ""
            if upload is not None:
                if upload.size > MAX_UPLOAD_MB * 2**20:
                    ui.show_error(f"{upload.name} is {upload.size / 2**20:.0f} MB; uploads are limited to "
                                  f"{MAX_UPLOAD_MB} MB.", "Put the file on disk and choose “Path on disk”.")
                else:
                    path = str(save_upload(upload))
        root = st.text_input("Image root folder", key="ds_manifest_root", placeholder="/data/images",
                             help="The folder the manifest's image paths are relative to "
                                  "(default: the manifest's own folder; required for uploads).")
        spec = {"kind": "manifest", "path": user_path(path)}
        if root.strip():
            spec["root"] = user_path(root)
        elif mode == "Upload" and path:
            st.caption(":material/info: An uploaded manifest needs the image root folder.")
    else:
        path = st.text_input("Dataset folder", key="ds_hf_path", placeholder="/data/my-dataset",
                             help="A folder written by `datasets.Dataset.save_to_disk` (or a DatasetDict), "
                                  "with an image column and a label column.")
        c1, c2 = st.columns(2)
        train_split = c1.text_input("Train split", key="ds_hf_train_split", placeholder="train")
        test_split = c2.text_input("Test split", key="ds_hf_test_split", placeholder="test")
        spec = {"kind": "hf", "path": user_path(path)}
        if train_split.strip():
            spec["train_split"] = train_split.strip()
        if test_split.strip():
            spec["test_split"] = test_split.strip()

    loaded = st.session_state.get("ds_loaded")
    is_loaded = loaded is not None and loaded[0] == spec_key(spec)
    if source == "demo":
        if not is_loaded:  # the demo is small: load it as soon as its sizes change
            try_load(spec)
    else:
        b1, b2 = st.columns([1, 3])
        load_clicked = b1.button("Load dataset" if not is_loaded else "Reload", icon=":material/upload_file:",
                                 type="primary" if not is_loaded else "secondary", key="ds_load")
        if load_clicked:
            if not spec.get("path"):
                ui.show_error("Give a path first.", "Type the folder or file to read, then press Load dataset.")
            else:
                try_load(spec)
        elif not is_loaded:
            b2.caption("Press **Load dataset** to check the files and see the classes.")
        st.caption(f":material/folder_open: Relative paths are read from `{start_dir()}`.")

loaded = st.session_state.get("ds_loaded")
bundle = loaded[1] if loaded else None

with noise_col:
    st.subheader(":material/shuffle: Synthetic label noise", anchor=False)
    noise_kind = st.selectbox("Noise", list(NOISE_KINDS), format_func=NOISE_KINDS.get, key="ds_noise_kind",
                              help="Flips a share of the train labels on purpose, seeded; the original labels "
                                   "are kept as ground truth to measure detection. Leave it at None for real data.")
    rate = st.slider("Noise rate", 0.0, 0.9, step=0.05, key="ds_noise_rate", disabled=noise_kind == "none",
                     format="%.2f", help="The share of train labels to flip. With 10 classes stay within 20–60% "
                                         "(at 90% symmetric noise the labels carry no information).")
    st.caption(NOISE_HELP[noise_kind])
    seed = st.number_input("Seed", min_value=0, max_value=2**31 - 1, step=1, key="ds_noise_seed")
    noise_spec = {"kind": noise_kind, "rate": float(rate) if noise_kind != "none" else 0.0, "seed": int(seed)}
    st.session_state["noise_spec"] = noise_spec

if bundle is None:
    st.divider()
    ui.empty_state("No dataset loaded yet: choose a source above and load it, or keep the Fashion-MNIST demo.",
                   icon=":material/dataset:")
    st.stop()

# ------------------------------------------------------------------------- apply noise
noisy, actual = bundle, None
if noise_spec["kind"] != "none" and noise_spec["rate"] > 0:
    cache_key = spec_key([loaded[0], noise_spec])
    cached = st.session_state.get("ds_noisy")
    if cached and cached[0] == cache_key:
        noisy, actual = cached[1], cached[2]
    else:
        try:
            with st.spinner("Applying label noise…"):
                noisy, actual = apply_label_noise(bundle, noise_spec["kind"], noise_spec["rate"], noise_spec["seed"])
            st.session_state["ds_noisy"] = (cache_key, noisy, actual)
        except (DatasetError, ValueError) as exc:
            with noise_col:
                ui.show_error(exc, "Choose another noise type (asymmetric noise needs a known dataset).")
            noisy, actual = bundle, None
            st.session_state["noise_spec"] = {**noise_spec, "kind": "none", "rate": 0.0}
with noise_col:
    if actual is not None:
        st.metric("Actual noise rate", ui.fmt_pct(actual),
                  help=f"The share of train labels that changed (requested {noise_spec['rate']:.0%})")

train, test = noisy.train, noisy.test
names = train.class_names
given_inputs_panel(st.session_state["dataset_spec"], bundle)

# ------------------------------------------------------------------------------ summary
st.divider()
head_left, head_right = st.columns([4, 1])
chosen = st.session_state.get("dataset_spec") or {}
title = ui.dataset_label(chosen) if chosen.get("kind") == "demo" else (noisy.name or ui.dataset_label(chosen))
head_left.subheader(f":material/inventory_2: {title}", anchor=False)
with head_right:
    ui.page_link("train", label="Continue to Train", icon=":material/arrow_forward:")
m = st.columns(5)
m[0].metric("Train images", ui.fmt_int(len(train)))
m[1].metric("Test images", ui.fmt_int(len(test)) if test is not None else "none")
m[2].metric("Classes", ui.fmt_int(len(names)))
m[3].metric("Skipped items", ui.fmt_int(len(noisy.skipped)))
m[4].metric("Mislabelled (known)", ui.fmt_pct(actual) if actual is not None else (
    ui.fmt_pct(float((train.labels != train.true_labels).mean())) if train.true_labels is not None else "unknown"))
if test is None:
    st.caption(":material/info: No test split: test accuracy will not be reported.")
for warning in noisy.info.get("warnings", []) or []:
    st.warning(warning, icon=":material/warning:")
if noisy.info.get("annotators") is not None:  # a manifest with several annotators per image
    st.info(annotator_view.dataset_note(noisy.info["annotators"]), icon=":material/groups:")

counts_col, skipped_col = st.columns([3, 2], gap="large")
with counts_col:
    st.markdown("**Train images per given label**")
    given = np.bincount(train.labels, minlength=len(names))
    fig = go.Figure()
    if train.true_labels is not None and (train.labels != train.true_labels).any():
        flipped = np.bincount(train.labels[train.labels != train.true_labels], minlength=len(names))
        fig.add_bar(x=names, y=given - flipped, name="correct label", marker_color="#4C78A8")
        fig.add_bar(x=names, y=flipped, name="wrong label (noise)", marker_color="#E45756")
        fig.update_layout(barmode="stack")
    else:
        fig.add_bar(x=names, y=given, name="images", marker_color="#4C78A8")
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=10, b=10),
                      legend=dict(orientation="h", y=1.1, traceorder="normal"),
                      yaxis_title="images", xaxis_tickangle=-30 if len(names) > 6 else 0)
    st.plotly_chart(fig, width="stretch", key="ds_counts_chart")
with skipped_col:
    st.markdown("**Skipped items**")
    if noisy.skipped:
        st.warning(f"{len(noisy.skipped):,} item(s) could not be read and are left out.", icon=":material/warning:")
        with st.expander("Show skipped items and reasons"):
            st.dataframe(pd.DataFrame([{"source": s.source, "reason": s.reason} for s in noisy.skipped]),
                         hide_index=True, width="stretch")
    else:
        st.success("Every item was read.", icon=":material/check_circle:")
    if noisy.info.get("noise"):
        pairs = noisy.info["noise"].get("pairs")
        if pairs:
            st.caption("Asymmetric pairs: " + ", ".join(f"{a} → {b}" for a, b in pairs.items()))

# ------------------------------------------------------------------------------ samples
st.subheader(":material/grid_view: Samples", anchor=False)
show_classes = list(range(len(names)))
if len(names) > 10:
    picked = st.multiselect("Classes to show", names, default=names[:10], key="ds_show_classes")
    show_classes = [names.index(n) for n in picked]
only_wrong = False
if train.true_labels is not None and (train.labels != train.true_labels).any():
    only_wrong = st.toggle("Only mislabelled samples", key="ds_only_wrong",
                           help="Samples whose given label differs from the true one")
st.caption(f"Up to {SAMPLES_PER_CLASS} train images per given label. "
           "Mislabelled images (known where the noise is synthetic) have a red frame and name their true class.")


rng = np.random.default_rng(0)
pairs_of_classes = [show_classes[i:i + 2] for i in range(0, len(show_classes), 2)]
for pair in pairs_of_classes:
    cols = st.columns(2, gap="large")
    for col, c in zip(cols, pair):
        mask = train.labels == c
        if only_wrong:
            mask &= train.labels != train.true_labels
        idx = np.flatnonzero(mask)
        if len(idx) > SAMPLES_PER_CLASS:
            idx = np.sort(rng.choice(idx, SAMPLES_PER_CLASS, replace=False))
        with col:
            st.markdown(f"**{names[c]}** · {int((train.labels == c).sum()):,} images")
            if len(idx) == 0:
                st.caption("No images here.")
                continue
            cells = st.columns(SAMPLES_PER_CLASS)
            for cell, i in zip(cells, idx):
                true = None if train.true_labels is None else int(train.true_labels[i])
                wrong = true is not None and true != c
                try:
                    img = thumbnail(preview_image(train, int(i)), wrong)
                except Exception as exc:  # noqa: BLE001 - an image that broke after loading
                    cell.caption(f":red[unreadable: {exc}]")
                    continue
                cell.image(img, caption=f"true: {names[true]}" if wrong else names[c], width="stretch")
