"""The audit of a run's dataset: duplicates, train/test leaks and outliers, as tables.

`audit_tables` turns arrays (ids, labels, content hashes, pre-trained features) into the
three results; `run_audit` computes them for two ImageSets and writes the run folder's
`audit/` atomically:

    audit/train.parquet  one row per training sample, in training order: duplicate_of,
                         duplicate_similarity, duplicate_label_conflict, test_duplicate,
                         test_similarity, outlier, outlier_score
    audit/pairs.parquet  candidate pairs above the floor similarity: a_id, b_id, a_split,
                         b_split, similarity, kind ("exact" | "near"), label_conflict
    audit/meta.json      thresholds, counts, seconds
    audit/neighbours.npy, audit/neighbour_similarity.npy
                         the neighbour graph of the training features: each sample's
                         GRAPH_NEIGHBOURS most similar others (int32 indices, float32 cosine),
                         computed once per run and read by detection's k-NN votes and the
                         app's "More like this" (`RunFolder.neighbour_graph`)
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from turn_backend.audit.core import (
    EXACT_PAIRS,
    content_hashes,
    exact_duplicate_of,
    exact_matches,
    knn_search,
    outlier_scores,
    robust_threshold,
)
from turn_backend.io import atomic_write_json
from turn_backend.runfolder import RunFolder

# Cosine similarity of pre-trained features at or above which two images count as near
# duplicates; pairs down to FLOOR are stored so that the app can move the threshold.
# Measured on Fashion-MNIST (60k, EfficientNet-Lite0 at 48 px, docs/benchmarks.md): pairs at
# 0.99 and above are the same product photo, 0.97-0.985 look-alikes of one kind (and already
# 45k pairs with ~3k "label conflicts" on clean labels at 0.97, none at 0.99).
DUPLICATE_THRESHOLD = 0.99
PAIR_FLOOR = 0.97
NEIGHBOURS = 10  # k of the kNN outlier score (and the near-duplicate candidates per sample)
TEST_NEIGHBOURS = 3  # test candidates per training sample (leaks)
GRAPH_NEIGHBOURS = 20  # columns of the stored graph: detection's k-NN votes use 20 (detect_label_issues' k)
OUTLIER_MADS = 4.0  # outlier: score above median + this many (scaled) MADs

PAIR_COLUMNS = ["a_id", "b_id", "a_split", "b_split", "similarity", "kind", "label_conflict"]


@dataclass
class AuditSettings:
    threshold: float = DUPLICATE_THRESHOLD
    floor: float = PAIR_FLOOR
    k: int = NEIGHBOURS
    k_test: int = TEST_NEIGHBOURS
    outlier_mads: float = OUTLIER_MADS

    def __post_init__(self) -> None:
        if not -1.0 <= self.floor <= self.threshold <= 1.0:
            raise ValueError(f"need -1 <= floor <= threshold <= 1, got floor {self.floor}, threshold {self.threshold}")
        if self.k < 1 or self.k_test < 1:
            raise ValueError("k and k_test must be at least 1")


def _pick_duplicate(labels: np.ndarray, exact: np.ndarray, nn_idx: np.ndarray, nn_sim: np.ndarray,
                    threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Per sample, the duplicate to report and its similarity ((N,) int64 -1: none, (N,) float NaN).

    Preference: a differently labelled duplicate (the label-error signal), exact before
    near, then the most similar.
    """
    n = len(labels)
    near_ok = (nn_idx >= 0) & (nn_sim >= threshold)
    conflict = near_ok & (labels[np.maximum(nn_idx, 0)] != labels[:, None])
    rows = np.arange(n)

    def first(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # most similar column where mask holds
        has = mask.any(axis=1)
        col = mask.argmax(axis=1)
        return np.where(has, nn_idx[rows, col], -1), np.where(has, nn_sim[rows, col], np.nan)

    near_conflict, near_conflict_sim = first(conflict)
    near_any, near_any_sim = first(near_ok)
    exact_conflict = (exact >= 0) & (labels[np.maximum(exact, 0)] != labels)
    choice = np.where(exact_conflict, exact,
                      np.where(near_conflict >= 0, near_conflict, np.where(exact >= 0, exact, near_any)))
    similarity = np.where(exact_conflict, 1.0,
                          np.where(near_conflict >= 0, near_conflict_sim,
                                   np.where(exact >= 0, 1.0, near_any_sim)))
    return choice.astype(np.int64), similarity.astype(np.float64)


def _pairs(a_idx: np.ndarray, b_idx: np.ndarray, sim: np.ndarray, exact: np.ndarray,
           a_ids: np.ndarray, b_ids: np.ndarray, a_labels: np.ndarray, b_labels: np.ndarray,
           a_split: str, b_split: str) -> pd.DataFrame:
    return pd.DataFrame({
        "a_id": a_ids[a_idx], "b_id": b_ids[b_idx], "a_split": a_split, "b_split": b_split,
        "similarity": sim.astype(np.float64), "kind": np.where(exact, "exact", "near"),
        "label_conflict": a_labels[a_idx] != b_labels[b_idx],
    })


def audit_tables(
    train_ids, train_labels: np.ndarray, train_hashes: np.ndarray, train_features: np.ndarray,
    test_ids=None, test_labels: np.ndarray | None = None, test_hashes: np.ndarray | None = None,
    test_features: np.ndarray | None = None, settings: AuditSettings | None = None,
    progress_for: Callable[[str], Callable[[int, int], None]] | None = None,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Duplicates, leaks and outliers from arrays.

    train_ids (N,), train_labels (N,) int, train_hashes (N,) str (see `content_hashes`),
    train_features (N, D) float; the test_* arguments likewise with M rows, or None.
    neighbours: the training features' graph from `neighbour_graph` with at least k columns
    (computed here when not given).
    Returns (train table (N rows), pairs table, meta dict) as described in this module.
    """
    s = settings or AuditSettings()
    step = progress_for or (lambda label: None)
    ids = np.asarray(train_ids, dtype=object)
    labels = np.asarray(train_labels, dtype=np.int64)
    n = len(ids)
    if not (len(labels) == len(train_hashes) == len(train_features) == n):
        raise ValueError("train ids, labels, hashes and features must have one row per sample")
    clock = {"start": time.time()}
    if neighbours is None:
        neighbours = neighbour_graph(train_features, s.k, step("Audit: nearest neighbours"))
    nn_idx, nn_sim = (np.asarray(a)[:, :s.k] for a in neighbours)
    scores = outlier_scores(nn_sim)
    cut = robust_threshold(scores, s.outlier_mads)

    exact = exact_duplicate_of(train_hashes, labels)
    dup, dup_sim = _pick_duplicate(labels, exact, nn_idx, nn_sim, s.threshold)
    table = pd.DataFrame({
        "duplicate_of": np.where(dup >= 0, ids[np.maximum(dup, 0)], ""),
        "duplicate_similarity": dup_sim,
        "duplicate_label_conflict": (dup >= 0) & (labels[np.maximum(dup, 0)] != labels),
        "test_duplicate": "",
        "test_similarity": np.nan,
        "outlier": scores > cut,
        "outlier_score": scores,
    })

    # train-train pairs: kNN candidates above the floor (each unordered pair once) + exact groups
    rows, cols = np.nonzero((nn_idx >= 0) & (nn_sim >= s.floor))
    a, b = np.minimum(rows, nn_idx[rows, cols]), np.maximum(rows, nn_idx[rows, cols])
    sim = nn_sim[rows, cols]
    ea = np.flatnonzero(exact >= 0)
    a = np.concatenate([a, np.minimum(ea, exact[ea])])
    b = np.concatenate([b, np.maximum(ea, exact[ea])])
    sim = np.concatenate([sim, np.ones(len(ea), dtype=np.float32)])
    hashes = np.asarray(train_hashes)
    is_exact = hashes[a] == hashes[b]
    sim = np.where(is_exact, 1.0, sim)
    pair_frames = []
    if len(a):
        _, first = np.unique(a.astype(np.int64) * n + b, return_index=True)
        pair_frames.append(_pairs(a[first], b[first], sim[first], is_exact[first], ids, ids, labels, labels,
                                  "train", "train"))

    n_test = 0
    if test_features is not None and test_ids is not None and len(test_ids):
        t_ids = np.asarray(test_ids, dtype=object)
        t_labels = np.asarray(test_labels, dtype=np.int64)
        n_test = len(t_ids)
        clock["neighbours"] = time.time()
        t_idx, t_sim = knn_search(test_features, train_features, s.k_test, progress=step("Audit: train/test leaks"))
        clock["leaks"] = time.time()
        t_exact = exact_matches(hashes, np.asarray(test_hashes)) if test_hashes is not None else np.full(n, -1)
        has_near = (t_idx[:, 0] >= 0) & (t_sim[:, 0] >= s.threshold)
        leak = np.where(t_exact >= 0, t_exact, np.where(has_near, t_idx[:, 0], -1))
        table["test_duplicate"] = np.where(leak >= 0, t_ids[np.maximum(leak, 0)], "")
        table["test_similarity"] = np.where(t_exact >= 0, 1.0, np.where(has_near, t_sim[:, 0], np.nan))
        rows, cols = np.nonzero((t_idx >= 0) & (t_sim >= s.floor))
        a, b, sim = rows, t_idx[rows, cols], t_sim[rows, cols]
        ea = np.flatnonzero(t_exact >= 0)
        a, b = np.concatenate([a, ea]), np.concatenate([b, t_exact[ea]])
        sim = np.concatenate([sim, np.ones(len(ea), dtype=np.float32)])
        is_exact = hashes[a] == np.asarray(test_hashes)[b] if test_hashes is not None else np.zeros(len(a), bool)
        sim = np.where(is_exact, 1.0, sim)
        if len(a):
            _, first = np.unique(a.astype(np.int64) * n_test + b, return_index=True)
            pair_frames.append(_pairs(a[first], b[first], sim[first], is_exact[first], ids, t_ids, labels, t_labels,
                                      "train", "test"))

    pairs = (pd.concat(pair_frames, ignore_index=True) if pair_frames
             else pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(
                 PAIR_COLUMNS, [object, object, object, object, float, object, bool])}))
    pairs = pairs.sort_values("similarity", ascending=False, kind="stable").reset_index(drop=True)
    clock.setdefault("neighbours", time.time())
    meta = {
        # duplicates and outliers (and the train kNN, where no graph was given)
        "seconds_neighbours": round(clock["neighbours"] - clock["start"], 3),
        "seconds_leaks": round(clock["leaks"] - clock["neighbours"], 3) if "leaks" in clock else 0.0,
        "threshold": s.threshold, "floor": s.floor, "k": s.k, "k_test": s.k_test,
        "outlier_mads": s.outlier_mads, "outlier_threshold": float(cut),
        "search": "exact" if n * n <= EXACT_PAIRS else "faiss HNSW on PCA-128, exact re-ranking",
        "n_train": n, "n_test": n_test,
        "n_exact_duplicates": int((exact >= 0).sum()),
        "n_duplicates": int((table["duplicate_of"] != "").sum()),
        "n_label_conflicts": int(table["duplicate_label_conflict"].sum()),
        "n_test_duplicates": int((table["test_duplicate"] != "").sum()),
        "n_outliers": int(table["outlier"].sum()),
        "n_pairs": int(len(pairs)),
    }
    return table, pairs, meta


def neighbour_graph(features: np.ndarray, k: int = GRAPH_NEIGHBOURS,
                    progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(N, k) indices and cosine similarities of each sample's k most similar other samples."""
    return knn_search(features, features, k, exclude=np.arange(len(features)), progress=progress)


def run_audit(out_dir: str | Path, train, train_features: np.ndarray, test=None, test_features=None,
              settings: AuditSettings | None = None,
              progress_for: Callable[[str], Callable[[int, int], None]] | None = None) -> dict:
    """Audit two ImageSets (test optional) with their pre-trained features; write `out_dir`.

    The folder is built beside `out_dir` and renamed into place, so a reader sees the old
    audit or the new one, never half of one. Returns meta (also in meta.json).
    """
    t0 = time.time()
    step = progress_for or (lambda label: None)
    hashes = content_hashes(train, step("Audit: hashing training images"))
    test_hashes = content_hashes(test, step("Audit: hashing test images")) if test is not None else None
    seconds_hashes = round(time.time() - t0, 3)
    graph = neighbour_graph(train_features, max(GRAPH_NEIGHBOURS, (settings or AuditSettings()).k),
                            step("Audit: nearest neighbours"))
    seconds_graph = round(time.time() - t0 - seconds_hashes, 3)
    table, pairs, meta = audit_tables(
        train.ids, train.labels, hashes, train_features,
        None if test is None else test.ids, None if test is None else test.labels, test_hashes,
        test_features if test is not None else None, settings, progress_for, neighbours=graph,
    )
    meta["seconds_hashes"] = seconds_hashes
    meta["seconds_graph"] = seconds_graph
    meta["seconds"] = round(time.time() - t0, 3)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    tmp.chmod(0o755)  # like the rest of the run folder, not mkdtemp's 0700
    try:
        table.to_parquet(tmp / RunFolder.AUDIT_TRAIN, index=False)
        pairs.to_parquet(tmp / RunFolder.AUDIT_PAIRS, index=False)
        np.save(tmp / RunFolder.NEIGHBOURS, graph[0].astype(np.int32))
        np.save(tmp / RunFolder.NEIGHBOUR_SIMILARITY, graph[1].astype(np.float32))
        atomic_write_json(tmp / RunFolder.AUDIT_META, meta)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def replace_dir(new: Path, dest: Path) -> None:
    """Move the finished folder `new` to `dest`, replacing what was there (old one moved aside first)."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}-{time.time_ns()}")
        os.replace(dest, old)
    os.replace(new, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
