"""Several annotators per image: a consensus label, how far the annotators agree on it, and
how good each annotator is.

The aggregators are the crowdsourcing literature's, called from their libraries, not
re-derived: majority vote, Dawid-Skene, GLAD and MACE from crowd-kit, and CROWDLAB
(cleanlab.multiannotator), which also weighs a classifier's out-of-fold probabilities.

Input is long form, one row per (item, annotator): `item` (int, 0..N-1), `annotator` (str)
and `label` (int, 0..C-1); `wide_to_long` turns one column per annotator into that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

AGGREGATORS = ("majority", "dawid-skene", "glad", "mace", "crowdlab")


class AnnotationError(ValueError):
    """Annotations that cannot be aggregated; the message says what to fix."""


@dataclass
class Consensus:
    """label: (N,) consensus class; probs: (N, C) the aggregator's posterior over the true class;
    agreement: (N,) share of an item's annotators who gave the consensus label;
    annotators: one row per annotator: annotator, quality (expected accuracy under the
    posterior: the mean probability the posterior gives each of their labels), n_labels,
    agreement (share of their labels equal to the consensus); confusion: annotator ->
    (C, C) counts of (consensus label, their label)."""

    method: str
    label: np.ndarray
    probs: np.ndarray
    agreement: np.ndarray
    annotators: pd.DataFrame
    confusion: dict[str, np.ndarray]


@dataclass
class AnnotatedLabels:
    """A split's labels from several annotators and their consensus: names (A,) in column order;
    matrix (N, A) each annotator's label of each item, -1 where they gave none; consensus."""

    names: list[str]
    matrix: np.ndarray
    consensus: Consensus

    @property
    def n_labels(self) -> np.ndarray:
        """(N,) how many annotators labelled each item."""
        return (self.matrix >= 0).sum(1)

    def subset(self, index: np.ndarray) -> AnnotatedLabels:
        """The same annotators on the items `index` (the aggregation is not redone)."""
        c = self.consensus
        sub = Consensus(method=c.method, label=c.label[index], probs=c.probs[index], agreement=c.agreement[index],
                        annotators=c.annotators, confusion=c.confusion)
        return AnnotatedLabels(self.names, self.matrix[index], sub)


def disagreements(labels: np.ndarray, names: list[str], consensus: np.ndarray, annotator: str) -> np.ndarray:
    """(N,) bool: the items `annotator` labelled otherwise than the consensus. `labels`: (N, A)
    with -1 where missing, columns in the order of `names`."""
    if annotator not in names:
        raise AnnotationError(f"no annotator {annotator!r}; the annotators are {', '.join(names)}")
    theirs = labels[:, names.index(annotator)]
    return (theirs >= 0) & (theirs != consensus)


def label_matrix(long: pd.DataFrame, num_items: int) -> tuple[list[str], np.ndarray]:
    """Long-form annotations -> (annotator names, sorted; (N, A) labels, -1 where missing)."""
    names = sorted(long["annotator"].astype(str).unique())
    matrix = np.full((num_items, len(names)), -1, dtype=np.int64)
    column = {name: k for k, name in enumerate(names)}
    matrix[long["item"].to_numpy(dtype=np.int64), long["annotator"].astype(str).map(column).to_numpy()] = \
        long["label"].to_numpy(dtype=np.int64)
    return names, matrix


def wide_to_long(frame: pd.DataFrame, annotator_columns: list[str]) -> pd.DataFrame:
    """One label column per annotator (missing: NaN or empty) -> long form (item, annotator, label)."""
    long = frame[annotator_columns].reset_index(drop=True).rename_axis("item").reset_index().melt(
        id_vars="item", var_name="annotator", value_name="label")
    long = long[long["label"].notna() & (long["label"].astype(str) != "")]
    return long.astype({"label": np.int64}).reset_index(drop=True)


def check_annotations(long: pd.DataFrame, num_items: int, num_classes: int) -> pd.DataFrame:
    """Validate long-form annotations; returns them with clean dtypes and one label per (item, annotator)."""
    missing = {"item", "annotator", "label"} - set(long.columns)
    if missing:
        raise AnnotationError(f"annotations need the columns item, annotator, label; missing {sorted(missing)}")
    out = long[["item", "annotator", "label"]].copy()
    try:
        out["item"] = out["item"].astype(np.int64)
        out["label"] = out["label"].astype(np.int64)
    except (TypeError, ValueError) as exc:
        raise AnnotationError(f"item and label must be integers: {exc}") from exc
    out["annotator"] = out["annotator"].astype(str)
    bad = out[(out["label"] < 0) | (out["label"] >= num_classes)]
    if len(bad):
        raise AnnotationError(f"{len(bad)} label(s) outside 0..{num_classes - 1}, e.g. item {bad['item'].iloc[0]} "
                              f"by {bad['annotator'].iloc[0]}: label {bad['label'].iloc[0]}")
    outside = out[(out["item"] < 0) | (out["item"] >= num_items)]
    if len(outside):
        raise AnnotationError(f"{len(outside)} annotation(s) of items outside 0..{num_items - 1}")
    unlabelled = np.setdiff1d(np.arange(num_items), out["item"].unique())
    if len(unlabelled):
        raise AnnotationError(f"{len(unlabelled)} item(s) have no label from any annotator, e.g. item {unlabelled[0]}")
    # an annotator who labelled an item twice: their last label counts
    return out.drop_duplicates(["item", "annotator"], keep="last").reset_index(drop=True)


def majority_vote(long: pd.DataFrame, num_items: int, num_classes: int) -> np.ndarray:
    """(N, C) vote shares per item (ties stay ties; the consensus takes the lowest class among them)."""
    votes = np.zeros((num_items, num_classes))
    np.add.at(votes, (long["item"].to_numpy(), long["label"].to_numpy()), 1.0)
    return votes / votes.sum(1, keepdims=True)


def _crowdkit_probs(model, long: pd.DataFrame, num_items: int, num_classes: int) -> np.ndarray:
    import warnings

    data = long.rename(columns={"item": "task", "annotator": "worker"})
    with warnings.catch_warnings():  # crowd-kit 1.4 calls pandas APIs that pandas 3 deprecates
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        probas = model.fit(data).probas_
    out = np.zeros((num_items, num_classes))
    cols = [int(c) for c in probas.columns]
    out[np.ix_(probas.index.to_numpy(dtype=np.int64), cols)] = probas.to_numpy()
    # an item whose posterior is all zero (no usable label) falls back to its votes
    empty = out.sum(1) <= 0
    if empty.any():
        out[empty] = majority_vote(long, num_items, num_classes)[empty]
    return out / out.sum(1, keepdims=True)


def _crowdlab(long: pd.DataFrame, num_items: int, num_classes: int, pred_probs: np.ndarray | None) -> np.ndarray:
    from cleanlab.multiannotator import get_label_quality_multiannotator

    if pred_probs is None:
        raise AnnotationError("crowdlab needs pred_probs: a classifier's out-of-fold probabilities (N, C)")
    wide = long.pivot(index="item", columns="annotator", values="label").reindex(range(num_items))
    result = get_label_quality_multiannotator(wide, np.asarray(pred_probs), verbose=False,
                                              return_detailed_quality=False, return_annotator_stats=False)
    quality = result["label_quality"]
    label = quality["consensus_label"].to_numpy(dtype=np.int64)
    confidence = quality["consensus_quality_score"].to_numpy(dtype=np.float64)
    # cleanlab gives the consensus and its quality score, not a posterior: the score on the
    # consensus, the rest spread as the classifier spreads it
    rest = np.asarray(pred_probs, dtype=np.float64).copy()
    rest[np.arange(num_items), label] = 0.0
    rest /= np.clip(rest.sum(1, keepdims=True), 1e-12, None)
    probs = rest * (1.0 - confidence)[:, None]
    probs[np.arange(num_items), label] = confidence
    return probs


def aggregate(long: pd.DataFrame, num_items: int, num_classes: int, method: str = "dawid-skene", *,
              pred_probs: np.ndarray | None = None, seed: int = 0) -> Consensus:
    """The consensus of several annotators by `method` (one of AGGREGATORS)."""
    if method not in AGGREGATORS:
        raise AnnotationError(f"unknown aggregator {method!r}; choose one of {', '.join(AGGREGATORS)}")
    long = check_annotations(long, num_items, num_classes)
    if method == "majority":
        probs = majority_vote(long, num_items, num_classes)
    elif method == "crowdlab":
        probs = _crowdlab(long, num_items, num_classes, pred_probs)
    else:
        from crowdkit.aggregation import GLAD, MACE, DawidSkene

        model = {"dawid-skene": lambda: DawidSkene(n_iter=100), "glad": lambda: GLAD(n_iter=100),
                 "mace": lambda: MACE(random_state=seed)}[method]()
        probs = _crowdkit_probs(model, long, num_items, num_classes)
    label = probs.argmax(1)
    item, annotator, given = long["item"].to_numpy(), long["annotator"].to_numpy(), long["label"].to_numpy()
    agrees = given == label[item]
    agreement = np.bincount(item, weights=agrees, minlength=num_items) / np.bincount(item, minlength=num_items)
    per = pd.DataFrame({"annotator": annotator, "p_label": probs[item, given], "agrees": agrees})
    stats = per.groupby("annotator", sort=True).agg(quality=("p_label", "mean"), n_labels=("p_label", "size"),
                                                   agreement=("agrees", "mean")).reset_index()
    confusion = {}
    for name in stats["annotator"]:
        mine = annotator == name
        counts = np.zeros((num_classes, num_classes), dtype=np.int64)
        np.add.at(counts, (label[item[mine]], given[mine]), 1)
        confusion[name] = counts
    return Consensus(method=method, label=label, probs=probs, agreement=agreement,
                     annotators=stats.sort_values("quality", ascending=False, kind="stable").reset_index(drop=True),
                     confusion=confusion)
