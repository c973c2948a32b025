"""Your own embeddings or predictions: the Dataset page's panel that takes them, and what
the Train page reads from it (turn_backend.given_inputs says what the files hold).

The files are checked against the loaded dataset when the person presses *Use these files*,
and kept in st.session_state["given_inputs"] with the dataset they were checked against: a
run started on another dataset does not take them.
"""

from __future__ import annotations

import streamlit as st

from app import ui
from app.dataset_loading import spec_key
from app.state import user_path
from turn_backend.data.core import DatasetBundle
from turn_backend.given_inputs import GivenInputError, check_files

GIVEN_KEY = "given_inputs"
# RunConfig field -> (label, help)
FIELDS = {
    "features": ("Training features", "A .npy (N, D), row i = training image i in the dataset's order, or a "
                 ".parquet / .csv with a 'path' column and one column per dimension (or one list column)."),
    "test_features": ("Test features (optional)", "The test split's features, as above. Without them the run "
                      "leaves the test split out and reports no test accuracy."),
    "pred_probs": ("Predicted class probabilities (optional)", "(N, C) probabilities of your classifier for the "
                   "training images, as above; rows sum to 1 (softmax logits first). They replace the linear "
                   "probe in detection; no test accuracy is measured."),
}


def given_choice(dataset_spec: dict) -> dict:
    """The given files (RunConfig fields) for a run on `dataset_spec`; {} where none were
    given for that dataset."""
    chosen = st.session_state.get(GIVEN_KEY)
    if not chosen or chosen["dataset"] != spec_key(dataset_spec):
        return {}
    return dict(chosen["files"])


def given_inputs_panel(spec: dict, bundle: DatasetBundle) -> None:
    """Path inputs for the given files, checked against `bundle` (the dataset of `spec`)."""
    chosen = given_choice(spec)
    with st.expander(":material/scatter_plot: Your own embeddings or predictions (optional)", expanded=bool(chosen)):
        st.caption("Already have a model? Give its features (and, optionally, its predicted probabilities) "
                   "and the run uses them instead of the image model: a linear probe (lp-* methods) on your "
                   "features, the detection signals, the audit and the maps. `turn export RUN --format features` "
                   "writes a run's features in this form.")
        for field, (label, help_text) in FIELDS.items():
            st.session_state.setdefault(f"ds_given_{field}", chosen.get(field) or "")
            st.text_input(label, key=f"ds_given_{field}", placeholder=f"/data/{field}.npy", help=help_text)
        use, clear = st.columns(2)
        if use.button("Use these files", icon=":material/check:", key="ds_given_use"):
            files = {f: user_path(st.session_state[f"ds_given_{f}"]) or None for f in FIELDS}
            try:
                if not files["features"] and not files["pred_probs"]:
                    raise GivenInputError("give the training features, the predicted probabilities, or both")
                found = check_files(bundle.train, bundle.test, **files)
            except (GivenInputError, OSError) as exc:
                ui.show_error(exc, "Fix the file or the path, then press Use these files again.")
            else:
                st.session_state[GIVEN_KEY] = {"dataset": spec_key(spec),
                                               "files": {f: p for f, p in files.items() if p}}
                st.toast("Given files checked: " + "; ".join(found), icon=":material/check_circle:")
                chosen = given_choice(spec)
        if chosen and clear.button("Use the image model instead", icon=":material/close:", key="ds_given_clear"):
            st.session_state.pop(GIVEN_KEY, None)
            chosen = {}
        if chosen:
            st.success("Runs started on the Train page use " + ", ".join(
                f"{FIELDS[f][0].split(' (')[0].lower()} `{p}`" for f, p in chosen.items()) + ".",
                icon=":material/check_circle:")
