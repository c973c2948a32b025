"""The Review queue: why each sample is in it (`FLAG_KINDS`), the queue sorted once per tau
with its filters and pages (`ReviewIndex`), decisions as codes, and the card texts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# Why a sample is in the review queue. A sample can be flagged for several reasons; the
# queue keeps one bit per reason. "label": clean probability <= tau; "duplicate": a
# training duplicate with another given label; "outlier": far from every class; "leak": the
# same image is in the test set (audit/train.parquet); "annotator": one annotator's label
# differs from the consensus (queued only when Review is opened on that annotator); "spot": drawn
# at random for a spot check (`turn_backend.review.spot_check_rows`).
FLAG_KINDS = {"label": "Label error", "duplicate": "Duplicate, other label", "outlier": "Outlier",
              "leak": "Test leak", "annotator": "Annotator disagrees", "spot": "Spot check"}
KIND_BITS = {kind: 1 << i for i, kind in enumerate(FLAG_KINDS)}
ACTION_CODES = {"": 0, "keep": 1, "relabel": 2, "remove": 3, "none": 4, "ambiguous": 5}
ACTIONS_BY_CODE = {code: action for action, code in ACTION_CODES.items()}


@dataclass(eq=False)
class ReviewIndex:
    """The review queue of one run at one tau, sorted once; filters and pages are array slices.

    Built once per (run, tau) and cached by the page, so that a click (next page, keep,
    undo) costs a few array lookups, not a pass over a DataFrame of every sample. All
    arrays are in training order except `order` / `kinds`, which are in review order:
    lowest clean probability first, ties by the most confident suggestion, then sample order.
    """

    ids: np.ndarray  # (n,) str
    given: np.ndarray  # (n,) int64
    suggested: np.ndarray  # (n,) int64, the most likely true class
    confidence: np.ndarray  # (n,) float, its probability
    clean_prob: np.ndarray  # (n,) float
    order: np.ndarray  # (q,) training positions of the flagged samples, in review order
    kinds: np.ndarray  # (q,) uint8, KIND_BITS of each
    positions: pd.Index  # sample id -> training position
    _views: dict = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, sample_ids: Sequence[str], clean_prob: Sequence[float], given: Sequence[int],
              suggested: Sequence[int], confidence: Sequence[float], tau: float, *,
              duplicate_conflict: Sequence[bool] | None = None, outlier: Sequence[bool] | None = None,
              leak: Sequence[bool] | None = None, annotator: Sequence[bool] | None = None,
              spot: Sequence[bool] | None = None) -> ReviewIndex:
        ids = np.asarray(list(sample_ids), dtype=object).astype(str)
        p = np.asarray(clean_prob, dtype=np.float64).ravel()
        given = np.asarray(given, dtype=np.int64).ravel()
        suggested = np.asarray(suggested, dtype=np.int64).ravel()
        confidence = np.asarray(confidence, dtype=np.float64).ravel()
        extra = {"duplicate": duplicate_conflict, "outlier": outlier, "leak": leak, "annotator": annotator,
                 "spot": spot}
        lengths = {len(ids), len(p), len(given), len(suggested), len(confidence)}
        lengths |= {len(v) for v in extra.values() if v is not None}
        if len(lengths) != 1:
            raise ValueError("sample ids, clean probabilities, labels, suggestions and audit flags must have one "
                             "entry per training sample")
        bits = np.where(p <= tau, KIND_BITS["label"], 0).astype(np.uint8)
        for kind, flags in extra.items():
            if flags is not None:
                bits |= np.where(np.asarray(flags, dtype=bool), KIND_BITS[kind], 0).astype(np.uint8)
        queued = np.flatnonzero(bits)
        queued = queued[np.lexsort((-confidence[queued], p[queued]))]
        positions = pd.Index(ids)
        positions.get_indexer(ids[:1])  # its hash table built now, not at the first decision (0.3 s at 1,000,000)
        return cls(ids, given, suggested, confidence, p, queued, bits[queued], positions)

    @classmethod
    def for_run(cls, inputs: Mapping, tau: float, annotator_disagrees: Sequence[bool] | None = None,
                spot_check: Sequence[bool] | None = None) -> ReviewIndex:
        """The queue of a run from `review_inputs(folder)`: label errors at tau, and the audit's
        duplicates with another label, test leaks and outliers where the run has an audit;
        `annotator_disagrees` and `spot_check` (one bool per training sample each) queue those
        samples too."""
        audit = inputs["audit"]
        flags = {} if annotator_disagrees is None else {"annotator": annotator_disagrees}
        if spot_check is not None:
            flags["spot"] = spot_check
        if audit is not None:
            flags |= {"duplicate_conflict": audit["duplicate_label_conflict"].fillna(False).to_numpy(dtype=bool),
                     "outlier": audit["outlier"].fillna(False).to_numpy(dtype=bool),
                     "leak": audit["test_duplicate"].fillna("").astype(str).to_numpy() != ""}
        return cls.build(inputs["ids"], inputs["clean_prob"], inputs["given"], inputs["suggested"],
                         inputs["confidence"], tau, **flags)

    def __len__(self) -> int:
        return len(self.order)

    def kind_counts(self) -> dict[str, int]:
        return {kind: int((self.kinds & bit).astype(bool).sum()) for kind, bit in KIND_BITS.items()}

    def view(self, given_classes: Iterable[int] = (), suggested_classes: Iterable[int] = (),
             kinds: Iterable[str] = (), pair: tuple[int, int] | None = None) -> np.ndarray:
        """Positions in `order` of the samples matching every filter (an empty filter: all).

        `pair` = (given, suggested) picks one cell of the noise matrix. Cached per filter.
        """
        key = (tuple(sorted(set(given_classes))), tuple(sorted(set(suggested_classes))),
               tuple(sorted(set(kinds))), None if pair is None else (int(pair[0]), int(pair[1])))
        if key not in self._views:
            g, s = self.given[self.order], self.suggested[self.order]
            mask = np.ones(len(self.order), dtype=bool)
            if key[0]:
                mask &= np.isin(g, key[0])
            if key[1]:
                mask &= np.isin(s, key[1])
            if key[2]:
                unknown = set(key[2]) - set(KIND_BITS)
                if unknown:
                    raise ValueError(f"unknown flag kind(s) {', '.join(sorted(unknown))}; use {', '.join(KIND_BITS)}")
                mask &= (self.kinds & sum(KIND_BITS[k] for k in key[2])).astype(bool)
            if key[3] is not None:
                mask &= (g == key[3][0]) & (s == key[3][1])
            self._views[key] = np.flatnonzero(mask)
        return self._views[key]

    def decision_arrays(self, decisions: Mapping[str, tuple[str, int | None]] | None) -> tuple[np.ndarray, np.ndarray]:
        """(action code per training sample (ACTION_CODES), new label per sample or -1)."""
        codes = np.zeros(len(self.ids), dtype=np.int8)
        labels = np.full(len(self.ids), -1, dtype=np.int64)
        if decisions:
            keys = list(decisions)
            pos = self.positions.get_indexer(keys)
            known = pos >= 0  # decisions about samples this run no longer has are ignored
            vals = [decisions[k] for k, ok in zip(keys, known) if ok]
            codes[pos[known]] = [ACTION_CODES.get(a or "", 0) for a, _ in vals]
            labels[pos[known]] = [-1 if lab is None else int(lab) for _, lab in vals]
        return codes, labels

    def undecided(self, view: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """The positions of `view` whose sample has no decision."""
        return view[codes[self.order[view]] == 0]

    def decided_as(self, view: np.ndarray, codes: np.ndarray, actions: Iterable[str]) -> np.ndarray:
        """The positions of `view` whose sample's standing decision is one of `actions`
        (ACTION_CODES keys; "" is undecided). No actions: `view` as it is."""
        actions = list(actions)
        if not actions:
            return view
        unknown = set(actions) - set(ACTION_CODES)
        if unknown:
            raise ValueError(f"unknown decision(s) {', '.join(sorted(unknown))}; use "
                             f"{', '.join(a for a in ACTION_CODES if a)}")
        return view[np.isin(codes[self.order[view]], [ACTION_CODES[a] for a in actions])]

    def progress(self, codes: np.ndarray) -> tuple[int, int]:
        """(queued samples without a decision, queued samples)."""
        return int((codes[self.order] == 0).sum()), len(self.order)

    def rows(self, view_positions: np.ndarray, codes: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
        """One row per queued sample at these positions of `order` (a page of cards).

        Columns: index (training position), sample_id, given, pred (the suggestion),
        pred_prob, clean_prob, kinds (list of FLAG_KINDS keys), decision ('' when
        undecided), decision_label (-1 unless relabelled).
        """
        idx = self.order[view_positions]
        bits = self.kinds[view_positions]
        return pd.DataFrame({
            "index": idx,
            "sample_id": self.ids[idx],
            "given": self.given[idx],
            "pred": self.suggested[idx],
            "pred_prob": self.confidence[idx],
            "clean_prob": self.clean_prob[idx],
            "kinds": [[k for k, bit in KIND_BITS.items() if b & bit] for b in bits],
            "decision": [ACTIONS_BY_CODE[int(c)] for c in codes[idx]],
            "decision_label": labels[idx],
        })


# Each detection signal's short name on a Review card (turn_backend.detect.result.SIGNAL_DESCRIPTIONS).
SIGNAL_LABELS = {"combined": "combined", "gmm_lp": "GMM", "oof_probe": "OOF probe", "oof_gmm": "OOF GMM",
                 "knn": "kNN", "annotators": "annotators"}


def paginate(n: int, page: int, per_page: int = 12) -> tuple[int, int, int, int]:
    """(page clamped to 0..pages-1, start, stop, pages) for n items."""
    per_page = max(1, int(per_page))
    pages = max(1, -(-int(n) // per_page))
    page = min(max(0, int(page)), pages - 1)
    start = page * per_page
    return page, start, min(n, start + per_page), pages


def bulk_accept(rows: pd.DataFrame) -> list[tuple[str, str, int | None]]:
    """Accept the model's suggestion for each row: relabel where it differs, else keep."""
    out: list[tuple[str, str, int | None]] = []
    for sid, g, p in zip(rows["sample_id"], rows["given"], rows["pred"]):
        if int(p) != int(g):
            out.append((str(sid), "relabel", int(p)))
        else:
            out.append((str(sid), "keep", None))
    return out


def decision_text(action: str | None, label: int | None, class_names: Sequence[str]) -> str:
    """'Undecided', 'Kept', 'Relabelled to X', 'Removed', 'None of these classes', 'Ambiguous'."""
    if not action:
        return "Undecided"
    if action == "keep":
        return "Kept"
    if action == "remove":
        return "Removed"
    if action == "none":
        return "None of these classes"
    if action == "ambiguous":
        return "Ambiguous"
    if action == "relabel":
        name = class_names[label] if label is not None and 0 <= label < len(class_names) else str(label)
        return f"Relabelled to {name}"
    return str(action)
