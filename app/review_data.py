"""What the Review page reads and shows that is not layout: the sorted review queue and the
features "More like this" searches (both cached per run), and the badges that say why a
sample is flagged."""

from __future__ import annotations

import html

import numpy as np
import streamlit as st

from app import annotator_view, audit_data, ui
from turn_backend import analysis as an
from turn_backend import run_features
from turn_backend.review import ReviewStore, label_errors_found, spot_check_mask
from turn_backend.runfolder import RunFolder


@st.cache_resource(show_spinner=False, max_entries=8)
def review_index(run_dir: str, stamp: float, tau: float, annotator: str | None = None,
                 spot_check_size: int = 0) -> an.ReviewIndex:
    """The queue, sorted once per run, tau and spot check (then every click is array slicing);
    with `annotator`, that annotator's disagreements with the consensus join it, and with
    `spot_check_size`, that many random samples (`review.spot_check_rows`)."""
    disagrees = None if annotator is None else annotator_view.disagreement_mask(run_dir, stamp, annotator)
    inputs = audit_data.review_inputs(RunFolder(run_dir))
    spot = spot_check_mask(len(inputs["ids"]), spot_check_size) if spot_check_size else None
    return an.ReviewIndex.for_run(inputs, tau, disagrees, spot)


def verdict_counts(decisions: dict[str, tuple[str, int | None]], inputs: dict, spot_check_size: int) -> tuple[int, int]:
    """(training samples kept or relabelled, of them drawn for the spot check of `spot_check_size`):
    the decisions the estimates are recalibrated on (`review.label_errors_found`, as
    `detect.estimates.calibrate_on_decisions` gets them); `inputs`: the run's `review_inputs`."""
    import pandas as pd

    rows, _ = label_errors_found(decisions, pd.Index(inputs["ids"]), inputs["given"])
    return len(rows), int(spot_check_mask(len(inputs["ids"]), spot_check_size)[rows].sum())


@st.cache_resource(show_spinner="Loading the run's features…", max_entries=2)
def search_features(run_dir: str, stamp: float) -> np.ndarray:
    """The features "More like this" searches, one row per training sample (memory-mapped
    where stored whole): `run_features.search_features`."""
    return run_features.search_features(run_dir)


@st.cache_resource(show_spinner="Indexing the run's features for similarity search (once per run)…",
                   max_entries=2)
def search_matrix(run_dir: str, stamp: float) -> np.ndarray | None:
    """A large run's reduced search features (computed and saved with the run the first time,
    about 8 s at 1,000,000 samples); None for a run small enough to search whole."""
    return run_features.ensure_search_matrix(run_dir, search_features(run_dir, stamp))


def preload_search(run_dir: str, stamp: float) -> None:
    """Load a large run's search matrix in the background (256 MB at 1,000,000 samples), so that
    the first More like this does not wait for it; only where it is saved with the run and its
    features are found without the image model (a run without them computes it on first use)."""
    folder = RunFolder(run_dir)
    final = folder.final_dir
    if (final / folder.SEARCH).exists() and ((final / folder.SEARCH_SOURCE).exists()
                                             or (final / folder.FEATURES).exists()):
        ui.preload(_load_search, run_dir, stamp)


def _load_search(run_dir: str, stamp: float) -> None:
    search_features(run_dir, stamp)
    search_matrix(run_dir, stamp)


@st.cache_resource(show_spinner=False, max_entries=512)
def similar_samples(run_dir: str, stamp: float, position: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """"More like this": the k training samples nearest to the one at `position`, and their
    cosine similarities (`neighbours`). Raises ValueError, OSError or ImportError where the
    features cannot be read."""
    from turn_backend.audit import neighbours

    nn, sims = neighbours(search_features(run_dir, stamp), np.array([position]), k,
                          reduced=search_matrix(run_dir, stamp))
    return nn[0], sims[0]


def preload_similar(folder: RunFolder, stamp: float, positions: list[int], k: int, thumb_px: int) -> None:
    """Find the nearest samples of the cards on screen, and their pictures, in the background,
    so that More like this on any of them shows at once (at 1,000,000 samples the search
    reads some 256 rows of a 5 GB file)."""
    ui.preload(_load_similar, str(folder.path.resolve()), stamp, tuple(positions), k, thumb_px)


def _load_similar(run_dir: str, stamp: float, positions: tuple[int, ...], k: int, thumb_px: int) -> None:
    folder = RunFolder(run_dir)
    for position in positions:
        try:
            nn, _ = similar_samples(run_dir, stamp, position, k)
        except (ValueError, OSError, ImportError):
            return  # the panel shows the error when it is opened
        for j in nn[nn >= 0]:
            audit_data.thumbnail_html(folder, int(j), thumb_px)


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
    if "spot" in kinds:
        chips.append(":blue-badge[:material/casino: spot check]")
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
