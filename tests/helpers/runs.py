"""Runs for tests: one trained in the test's own process, and a finished run with planted
evidence, for the pages that show detection and audit results."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pandas as pd

from turn_backend.detect.result import DetectionResult
from turn_backend.io import atomic_write_json
from turn_backend.runfolder import RunFolder


def run_here(config, path: Path) -> dict:
    """Train `config` into run folder `path` in this process (TURN_CACHE_DIR as the test set it);
    its metrics."""
    from turn_backend.runner import run_turn

    return _keeping_sigterm(run_turn, config, path)


def execute_here(path: Path) -> dict:
    """Run the queued run folder `path` (made by create_run, say) in this process; its metrics."""
    from turn_backend.runner import execute_run

    return _keeping_sigterm(execute_run, path)


def _keeping_sigterm(fn, *args):
    """fn(*args), with the SIGTERM handler the runner installs put back afterwards."""
    old = signal.getsignal(signal.SIGTERM)
    try:
        return fn(*args)
    finally:
        signal.signal(signal.SIGTERM, old)


def train_frame(run: Path) -> pd.DataFrame:
    samples = RunFolder(run).samples()
    return samples[samples["split"] == "train"].reset_index(drop=True)


# Planted cases, by training position (the tiny run has 200 training samples, 10 classes).
DUP_A, DUP_B, LEAK, OUTLIER = 0, 1, 2, 3
SIMILAR = [10, 11, 12, 13]  # one tight cluster in feature space


def write_audit_evidence(tiny_run: Path) -> Path:
    """The tiny run with a detection result and an audit written in the documented formats, with
    planted cases: a duplicate pair with two labels (DUP_A, DUP_B), a train/test leak (LEAK), an
    outlier the clean probability alone would never flag (OUTLIER), and features in which the
    SIMILAR samples sit next to each other."""
    folder = RunFolder(tiny_run)
    train = train_frame(tiny_run)
    test_ids = RunFolder(tiny_run).samples().query("split == 'test'")["sample_id"].astype(str).tolist()
    n, c = len(train), 10
    given = train["given_label"].to_numpy()
    clean = np.asarray(folder.final()["clean_prob"], dtype=np.float64)
    clean[[DUP_A, DUP_B, LEAK, OUTLIER]] = 0.99  # flagged only by the audit
    np.save(folder.final_dir / "clean_prob.npy", clean.astype(np.float32))
    rng = np.random.default_rng(0)
    suggested = (given + 1) % c
    counts = np.full((c, c), 1.0) + np.diag(np.full(c, 15.0))
    counts[3, 6] = 9.0  # the largest confusion: given class 3, likely class 6
    folder.save_detection(folder.final_dir, DetectionResult(
        clean_prob=clean, signals={"gmm_lp": np.clip(clean + 0.01, 0, 1), "knn": np.full(n, 0.05),
                                   "oof_probe": rng.uniform(size=n)},
        suggested_label=suggested, suggested_confidence=np.full(n, 0.87), noise_counts=counts, noise_rate=0.37,
    ))
    ids = train["sample_id"].astype(str).to_numpy()
    audit = pd.DataFrame({
        "duplicate_of": [""] * n, "duplicate_similarity": np.full(n, np.nan),
        "duplicate_label_conflict": np.zeros(n, bool), "test_duplicate": [""] * n,
        "test_similarity": np.full(n, np.nan), "outlier": np.zeros(n, bool), "outlier_score": np.zeros(n),
    })
    audit.loc[DUP_A, ["duplicate_of", "duplicate_similarity", "duplicate_label_conflict"]] = [ids[DUP_B], 0.99, True]
    audit.loc[DUP_B, ["duplicate_of", "duplicate_similarity", "duplicate_label_conflict"]] = [ids[DUP_A], 0.99, True]
    audit.loc[LEAK, ["test_duplicate", "test_similarity"]] = [test_ids[0], 1.0]
    audit.loc[OUTLIER, ["outlier", "outlier_score"]] = [True, 3.5]
    pairs = pd.DataFrame({
        "a_id": [ids[DUP_A], ids[LEAK], ids[20]], "b_id": [ids[DUP_B], test_ids[0], ids[21]],
        "a_split": ["train", "train", "train"], "b_split": ["train", "test", "train"],
        "similarity": [0.99, 1.0, 0.93], "kind": ["near", "exact", "near"],
        "label_conflict": [given[DUP_A] != given[DUP_B], False, False],
    })
    d = folder.path / "audit"
    d.mkdir(exist_ok=True)
    audit.to_parquet(d / "train.parquet", index=False)
    pairs.to_parquet(d / "pairs.parquet", index=False)
    atomic_write_json(d / "meta.json", {"threshold": 0.97, "floor": 0.9})
    feats = rng.normal(size=(n, 16)).astype(np.float32)
    feats[SIMILAR] = feats[SIMILAR[0]] + 0.01 * rng.normal(size=(len(SIMILAR), 16)).astype(np.float32)
    np.save(folder.final_dir / "features.npy", feats)
    return tiny_run
