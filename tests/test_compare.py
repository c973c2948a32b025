"""turn_backend.compare on hand-made run folders: accuracy per round, per-class accuracy,
detection at each run's tau, flags changed over the shared samples."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from turn_backend.compare import compare_runs, per_class_accuracy, retrained_pairs
from turn_backend.runfolder import RunFolder


def fake_run(root, name, clean_prob, given, true, *, test_logits=None, test_labels=(), lp_acc=(0.5, 0.6),
             round_acc=(0.7,), retrained_from=None, train_ids=None):
    path = root / name
    (path / "final").mkdir(parents=True)
    (path / "lp").mkdir()
    n = len(clean_prob)
    ids = train_ids or [f"s{i}" for i in range(n)]
    cfg = {"method": "turn", "model": "m", "tau": 0.5}
    if retrained_from:
        cfg["retrained_from"] = {"run": str(root / retrained_from), "decisions": 1}
    (path / "config.json").write_text(json.dumps(cfg))
    (path / "classes.json").write_text(json.dumps(["a", "b"]))
    test_labels = list(test_labels)
    pd.DataFrame({"sample_id": ids + [f"t{i}" for i in range(len(test_labels))],
                  "source": "", "split": ["train"] * n + ["test"] * len(test_labels),
                  "given_label": list(given) + test_labels, "true_label": list(true) + test_labels}
                 ).to_parquet(path / "samples.parquet")
    np.save(path / "final" / "clean_prob.npy", np.asarray(clean_prob, dtype=np.float32))
    np.save(path / "final" / "losses.npy", np.zeros(n, np.float32))
    np.save(path / "final" / "logits.npy", np.zeros((n, 2), np.float32))
    (path / "final" / "gmm.json").write_text(json.dumps({"fits": []}))
    (path / "lp" / "history.json").write_text(json.dumps([{"epoch": i, "test_acc": a} for i, a in enumerate(lp_acc)]))
    for r, acc in enumerate(round_acc, start=1):
        (path / "rounds" / f"r{r}").mkdir(parents=True)
        (path / "rounds" / f"r{r}" / "round.json").write_text(json.dumps({"round": r, "test_acc": acc}))
    if test_logits is not None:
        np.save(path / "rounds" / f"r{len(round_acc)}" / "test_logits.npy", np.asarray(test_logits, np.float32))
    return path


def test_compare_by_hand(tmp_path):
    # A flags s0, s1 (p <= 0.5); B, retrained without s3, flags s1, s2
    a = fake_run(tmp_path, "a", [0.1, 0.2, 0.9, 0.9], [0, 0, 1, 1], [1, 0, 1, 1],
                 test_logits=[[2, 0], [0, 2], [2, 0], [2, 0]], test_labels=[0, 1, 1, 1])
    b = fake_run(tmp_path, "b", [0.9, 0.2, 0.3], [1, 0, 1], [1, 0, 1], round_acc=(0.8, 0.9), lp_acc=(),
                 retrained_from="a", train_ids=["s0", "s1", "s2"])
    out = compare_runs(a, b)
    assert out["accuracy"] == [[(0, 0.6), (1, 0.7)], [(1, 0.8), (2, 0.9)]]  # round 0: the LP's last epoch
    np.testing.assert_allclose(out["per_class"][0], [1.0, 1 / 3])  # class 0: 1/1 right, class 1: 1/3
    assert out["per_class"][1] is None  # no test logits stored
    det_a, det_b = out["detection"]
    assert det_a["n_flagged"] == 2 and det_a["precision"] == 0.5 and det_a["recall"] == 1.0
    assert det_b["n_flagged"] == 2 and det_b["precision"] == 0.0  # B's labels are all right
    assert out["flags"] == {"shared_samples": 3, "only_a": 1, "only_b": 0, "flagged_both": 1, "flagged_only_a": 1,
                            "flagged_only_b": 1, "changed": 2}
    assert out["runs"][1]["retrained_from"]["decisions"] == 1
    assert [(s.name, r.name) for s, r in retrained_pairs([RunFolder(a), RunFolder(b)])] == [("a", "b")]


def test_per_class_accuracy_ignores_stale_logits_and_compare_needs_runs(tmp_path):
    a = fake_run(tmp_path, "a", [0.1], [0], [0], test_logits=[[1, 0]], test_labels=[0, 1])  # 1 logit row, 2 labels
    assert per_class_accuracy(RunFolder(a)) is None
    with pytest.raises(ValueError, match="not a run folder"):
        compare_runs(a, tmp_path / "missing")
