"""What the Annotators page and Review's cards read of a run with several annotators per image
(turn_backend.annotators, stored in the run's annotators/ folder), cached per run."""

from __future__ import annotations

import html

import numpy as np
import streamlit as st

from turn_backend.annotators import disagreements
from turn_backend.runfolder import RunFolder

REVIEW_ANNOTATOR_KEY = "review_annotator"  # set: Review shows this annotator's disagreements with the consensus
OPEN_REVIEW_KEY = "annotators_open_review"


@st.cache_resource(show_spinner=False, max_entries=4)
def annotators(run_dir: str, stamp: float) -> dict | None:
    """RunFolder.annotators() of the run (None for one label per image)."""
    return RunFolder(run_dir).annotators()


def disagreement_mask(run_dir: str, stamp: float, name: str) -> np.ndarray:
    """(N,) bool: the training samples annotator `name` labelled otherwise than the consensus."""
    data = annotators(run_dir, stamp)
    return disagreements(data["labels"], data["names"], data["consensus"]["consensus_label"].to_numpy(), name)


def open_review(name: str) -> None:
    """Review on annotator `name`'s disagreements, the other Review filters cleared. Set in a
    callback; the page switch happens in the script run that follows."""
    st.session_state[REVIEW_ANNOTATOR_KEY] = name
    for key in ("review_given_filter", "review_pred_filter", "review_kind_filter", "review_decided_filter",
                "review_pair"):
        st.session_state.pop(key, None)
    st.session_state["review_page"] = 0
    st.session_state[OPEN_REVIEW_KEY] = True


def card_line(data: dict, i: int, html_names: list[str]) -> str:
    """Sample i's label from each annotator who gave one, orange where it is not the consensus:
    'careful **Shirt** · careless :orange[**Coat**]'."""
    consensus = int(data["consensus"]["consensus_label"].iloc[i])
    parts = []
    for name, label in zip(data["names"], data["labels"][i]):
        if label < 0:
            continue
        text = f"**{html_names[label]}**"
        parts.append(f"{html.escape(name, quote=False)} " + (text if label == consensus else f":orange[{text}]"))
    return ":material/groups: " + " · ".join(parts)


def dataset_note(annotated) -> str:
    """The Dataset page's line on a dataset with several annotators per image
    (turn_backend.annotators.AnnotatedLabels)."""
    c = annotated.consensus
    method = {"dawid-skene": "Dawid-Skene", "majority": "majority-vote"}.get(c.method, c.method.upper())
    return (f"**{len(annotated.names)} annotators** ({html.escape(', '.join(annotated.names))}), "
            f"{annotated.n_labels.mean():.1f} labels per image, {float((c.agreement >= 1).mean()):.0%} of the images "
            f"unanimous. The given labels are their {method} consensus; after training, the Annotators page ranks "
            "the annotators and opens their disagreements in Review.")
