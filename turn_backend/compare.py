"""Two runs side by side: what the Compare runs page shows, from the run folders alone.

`compare_runs(run_a, run_b)` reads each run's metrics, rounds, final clean probabilities and
review settings and returns plain Python / numpy data (no Streamlit):

- `runs`: per run its name, method, model, tau, state of `retrained_from`;
- `accuracy`: test accuracy per round (round 0 = the linear probe's last epoch), per run;
- `detection`: flagged count and estimated noise rate at the run's applied tau, and (with
  ground truth) precision / recall / F1 of the flags;
- `per_class`: test accuracy per class of each run's last round (None where the run stored
  no test logits, e.g. linear-probe-only runs);
- `flags`: on the training samples both runs share (a retrained run may have dropped some),
  how many are flagged by both, by A only, by B only.

Runs trained on different data are compared all the same; the flag counts then cover only
the shared sample ids and say so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from turn_backend.cleansing import detection_metrics
from turn_backend.export import default_tau
from turn_backend.runfolder import RunFolder


def _folder(run) -> RunFolder:
    folder = run if isinstance(run, RunFolder) else RunFolder(run)
    if not folder.exists():
        raise ValueError(f"{folder.path} is not a run folder (no config.json)")
    return folder


def _tau(folder: RunFolder) -> float:
    return default_tau(folder)


def accuracy_per_round(folder: RunFolder) -> list[tuple[int, float]]:
    """(round, test accuracy): round 0 is the linear probe's last epoch, then each FFT round."""
    out: list[tuple[int, float]] = []
    history = folder.lp_history()
    lp = [h["test_acc"] for h in history if isinstance(h, dict) and h.get("test_acc") is not None]
    if lp:
        out.append((0, float(lp[-1])))
    for info in folder.rounds():
        if info.get("test_acc") is not None:
            out.append((int(info.get("round", len(out))), float(info["test_acc"])))
    return out


def _last_test_logits(folder: RunFolder) -> np.ndarray | None:
    rounds = folder.rounds()
    for r in range(len(rounds), 0, -1):
        path = folder.round_dir(r) / folder.TEST_LOGITS
        if path.exists():
            return np.load(path)
    return None


def per_class_accuracy(folder: RunFolder, samples=None) -> np.ndarray | None:
    """Test accuracy per class of the run's last round, NaN for a class absent from the test
    set; None when the run stored no test logits."""
    logits = _last_test_logits(folder)
    if logits is None:
        return None
    samples = folder.samples() if samples is None else samples
    labels = samples.loc[samples["split"] == "test", "given_label"].to_numpy(dtype=np.int64)
    if len(labels) != len(logits):
        return None  # stale logits from another test set: better nothing than wrong numbers
    num_classes = logits.shape[1]
    correct = logits.argmax(1) == labels
    totals = np.bincount(labels, minlength=num_classes).astype(np.float64)
    hits = np.bincount(labels, weights=correct, minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, hits / np.maximum(totals, 1), np.nan)


def _detection(folder: RunFolder, train, final: dict | None, tau: float) -> dict:
    if final is None:
        return {"tau": tau}
    flagged = np.asarray(final["clean_prob"]) <= tau
    out: dict = {"tau": tau, "n_train": int(len(flagged)), "n_flagged": int(flagged.sum()),
                 "flagged_rate": float(flagged.mean()) if len(flagged) else 0.0}
    true = train["true_label"].to_numpy(dtype=np.int64)
    known = true >= 0
    if known.any() and len(true) == len(flagged):
        given = train["given_label"].to_numpy(dtype=np.int64)
        m = detection_metrics(flagged[known], given[known], true[known])
        out.update(precision=m["precision"], recall=m["recall"], f1=m["f1"], purity=m["purity"],
                   true_noise_rate=float((given[known] != true[known]).mean()))
    return out


def compare_runs(run_a: str | Path | RunFolder, run_b: str | Path | RunFolder) -> dict:
    """Everything the comparison view shows about two runs (see the module docstring)."""
    folders = [_folder(run_a), _folder(run_b)]
    runs, accuracy, detection, per_class, flagged_ids = [], [], [], [], []
    names: list[str] = []
    for folder in folders:
        cfg = folder.config()
        samples = folder.samples() if folder.has_samples() else None
        final = folder.final()
        tau = _tau(folder)
        runs.append({"name": folder.name, "path": str(folder.path), "method": cfg.get("method"),
                     "model": cfg.get("model"), "tau": tau, "retrained_from": cfg.get("retrained_from"),
                     "finished": final is not None})
        accuracy.append(accuracy_per_round(folder))
        names = names or folder.class_names()
        if samples is None:
            detection.append({"tau": tau})
            per_class.append(None)
            flagged_ids.append(None)
            continue
        train = samples[samples["split"] == "train"].reset_index(drop=True)
        detection.append(_detection(folder, train, final, tau))
        per_class.append(per_class_accuracy(folder, samples))
        if final is None or len(final["clean_prob"]) != len(train):
            flagged_ids.append(None)
        else:
            ids = train["sample_id"].astype(str).to_numpy()
            flagged_ids.append((set(ids), set(ids[np.asarray(final["clean_prob"]) <= tau])))
    flags = None
    if flagged_ids[0] is not None and flagged_ids[1] is not None:
        (ids_a, fa), (ids_b, fb) = flagged_ids
        shared = ids_a & ids_b
        fa, fb = fa & shared, fb & shared
        flags = {"shared_samples": len(shared), "only_a": len(ids_a - shared), "only_b": len(ids_b - shared),
                 "flagged_both": len(fa & fb), "flagged_only_a": len(fa - fb), "flagged_only_b": len(fb - fa),
                 "changed": len(fa ^ fb)}
    return {"runs": runs, "class_names": names, "accuracy": accuracy, "detection": detection,
            "per_class": per_class, "flags": flags}


def retrained_pairs(runs) -> list[tuple[RunFolder, RunFolder]]:
    """(source, retrained) for each run among `runs` whose config names a `retrained_from`
    source that still exists: the pairs the Compare page offers first."""
    out = []
    for run in runs:
        path = (run.config().get("retrained_from") or {}).get("run")
        if path and RunFolder(path).exists():
            out.append((RunFolder(path), run))
    return out
