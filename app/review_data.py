"""What the Review page reads and shows that is not layout: the sorted review queue and the
features "More like this" searches (both cached per run), and the badges that say why a
sample is flagged."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import streamlit as st

from app import annotator_view, audit_data
from turn_backend import analysis as an
from turn_backend.config import RunConfig
from turn_backend.review import ReviewStore
from turn_backend.rundata import load_run_data
from turn_backend.runfolder import RunFolder


@st.cache_resource(show_spinner=False, max_entries=8)
def review_index(run_dir: str, stamp: float, tau: float, annotator: str | None = None) -> an.ReviewIndex:
    """The queue, sorted once per run and tau (then every click is array slicing); with
    `annotator`, that annotator's disagreements with the consensus join it."""
    disagrees = None if annotator is None else annotator_view.disagreement_mask(run_dir, stamp, annotator)
    return an.ReviewIndex.for_run(audit_data.review_inputs(RunFolder(run_dir)), tau, disagrees)


@st.cache_resource(show_spinner="Loading the run's features…", max_entries=2)
def search_features(run_dir: str, stamp: float) -> np.ndarray:
    """The features "More like this" searches, one row per training sample: the fine-tuned
    model's (final/features.npy, memory-mapped) or, for a run without them, the cached
    pre-trained ones."""
    folder = RunFolder(run_dir)
    path = folder.final_dir / folder.FEATURES
    if path.exists():
        return np.load(path, mmap_mode="r")
    # torch (the model and its features), only for a run without stored features
    from turn_backend.features import feature_cache_path
    from turn_backend.models import load_model
    from turn_backend.models.core import Preprocess

    cfg = RunConfig.from_json(folder.config_path)
    loaded = load_model(cfg.model, cfg.checkpoint, pretrained=cfg.pretrained)
    pre = loaded.preprocess
    if cfg.image_size:  # as the runner sizes its inputs
        pre = Preprocess(cfg.image_size, pre.mean, pre.std, pre.interpolation)
    # the cache holds the whole training set (a retrained run reuses it without its removed samples)
    full = load_run_data(cfg).train
    path = feature_cache_path(full, loaded.name, cfg.checkpoint, cfg.pretrained, pre, "train")
    if not path.exists():
        raise FileNotFoundError("this run's features are no longer cached (the feature cache was cleared); "
                                "retrain the run to search by similarity")
    feats = np.load(path, mmap_mode="r")
    ids = audit_data.review_inputs(folder)["ids"]
    if len(ids) == len(full):
        return feats
    return np.asarray(feats[pd.Index(full.ids).get_indexer(ids)])


def signal_chips(data: dict, tau: float, i: int) -> str:
    """Each detection signal's clean score for sample i, red at or below τ."""
    if data["signals"] is None:
        return ""
    chips = []
    for key, label in an.SIGNAL_LABELS.items():
        if key in data["signals"]:
            score = float(data["signals"][key][i])
            colour = "red" if score <= tau else "green"
            chips.append(f":{colour}-badge[{label} {score:.2f}]")
    return " ".join(chips)


def audit_chips(data: dict, index: an.ReviewIndex, html_names: list[str], i: int, kinds: list[str]) -> str:
    """Why sample i is in the queue: a label error, a duplicate (of which sample, its label), a
    test leak, an outlier. `html_names`: the class names, HTML-escaped."""
    audit = data["audit"]
    chips = []
    if "label" in kinds:
        chips.append(":red-badge[:material/label_off: label error]")
    if audit is not None:
        row = audit.iloc[i]
        if str(row["duplicate_of"]):
            other = str(row["duplicate_of"])
            pos = index.positions.get_indexer([other])[0]
            other_label = f" ({html_names[int(data['given'][pos])]})" if pos >= 0 else ""
            colour = "violet" if bool(row["duplicate_label_conflict"]) else "gray"
            chips.append(f":{colour}-badge[:material/content_copy: duplicate of {html.escape(other)}{other_label} "
                         f"{float(row['duplicate_similarity']):.2f}]")
        if str(row["test_duplicate"]):
            chips.append(f":red-badge[:material/science: in test: {html.escape(str(row['test_duplicate']))} "
                         f"{float(row['test_similarity']):.2f}]")
        if bool(row["outlier"]):
            chips.append(f":orange-badge[:material/scatter_plot: outlier {float(row['outlier_score']):.2f}]")
    return " ".join(chips)


class Decisions:
    """The Review page's writes to the run's review database, for one browser tab (`session_id`):
    each reports through session state (review_error, review_notice), and Undo reverts the
    last action whole, bulk actions included. `names`: the class names, in label order."""

    def __init__(self, store: ReviewStore, session_id: str, names: list[str]) -> None:
        self.store, self.session_id, self.names = store, session_id, names

    def _push_undo(self, n: int) -> None:
        """Remember how many rows the last action wrote, so that Undo reverts a bulk action whole."""
        st.session_state.setdefault("review_undo_stack", []).append(int(n))

    def record(self, sample_id: str, action: str, label: int | None = None) -> None:
        try:
            self.store.record(sample_id, action, label, session=self.session_id)
        except Exception as exc:  # noqa: BLE001 - shown to the user, never a traceback
            st.session_state["review_error"] = f"The decision was not saved: {exc}"
            return
        self._push_undo(1)

    def record_relabel_choice(self, sample_id: str, key: str) -> None:
        choice = st.session_state.get(key)
        if choice is not None and choice in self.names:
            self.record(sample_id, "relabel", self.names.index(choice))
        st.session_state[key] = None

    def record_many(self, decisions: list[tuple[str, str, int | None]], what: str) -> None:
        """Several decisions in one transaction; one Undo reverts them all."""
        if not decisions:
            st.session_state["review_notice"] = "Nothing selected."
            return
        try:
            self.store.record_many(decisions, session=self.session_id)
        except Exception as exc:  # noqa: BLE001
            st.session_state["review_error"] = f"The decisions were not saved: {exc}"
            return
        self._push_undo(len(decisions))
        st.session_state["review_notice"] = f"{what} for {len(decisions)} sample(s)."

    def record_bulk(self, rows) -> None:
        todo = rows[rows["decision"] == ""]
        if todo.empty:
            st.session_state["review_notice"] = "Every card on this page already has a decision."
            return
        self.record_many(an.bulk_accept(todo), "Accepted the suggestion")

    def undo(self) -> None:
        stack = st.session_state.get("review_undo_stack") or []
        n = stack.pop() if stack else 1
        undone = []
        try:
            for _ in range(n):
                sid = self.store.undo_last(self.session_id)
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
            st.session_state["review_notice"] = f"Undid the last bulk action ({len(undone)} samples)."
