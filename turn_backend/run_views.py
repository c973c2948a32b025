"""What the app reads from a run folder, assembled for a page: Review's per-sample inputs, what
the run's clean probability is, its estimates against (and recalibrated on) the Review decisions,
and the reference run the Embeddings page compares with.
(The pure helpers that work on these arrays are in `turn_backend.analysis`.)"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from turn_backend.analysis.review_queue import SIGNAL_LABELS
from turn_backend.config import RunConfig
from turn_backend.runfolder import list_runs


def review_inputs(folder) -> dict:
    """What Review shows per training sample, from a finished run folder.

    names, ids, given, clean_prob (the final model's, as Threshold and Export use),
    suggested / confidence / source (the detection layer's suggested label where the run
    has one, else the final model's prediction), signals (name -> (n,) clean score, or
    None) and audit (audit/train.parquet as a DataFrame, or None). Detection or audit
    files written for another training set (a stale folder) are ignored.
    """
    final = folder.final()
    if final is None:
        raise ValueError(f"run {folder.name} has no final results yet")
    samples = folder.samples()
    train = samples[samples["split"] == "train"].reset_index(drop=True)
    names = folder.class_names() or [str(c) for c in range(int(train["given_label"].max()) + 1)]
    detection = folder.detection()
    signals = None if detection is None else detection["signals"]
    audit = folder.audit()
    signals = signals if signals is not None and len(signals) == len(train) else None
    out = {
        "names": list(names),
        "ids": train["sample_id"].astype(str).to_numpy(),
        "given": train["given_label"].to_numpy(dtype=np.int64),
        "clean_prob": np.asarray(final["clean_prob"], dtype=np.float64),
        "suggested": np.asarray(final["pred"], dtype=np.int64),
        "confidence": np.asarray(final["pred_prob"], dtype=np.float64),
        "source": "final model",
        "clean_source": clean_prob_source(folder),
        "signals": None,
        "audit": audit["train"] if audit is not None and len(audit["train"]) == len(train) else None,
    }
    if signals is not None:
        out["suggested"] = signals["suggested_label"].to_numpy(dtype=np.int64)
        out["confidence"] = signals["suggested_confidence"].to_numpy(dtype=np.float64)
        out["source"] = str(signals["suggested_source"].iloc[0]) if len(signals) else "ensemble"
        out["signals"] = {k: signals[k].to_numpy(dtype=np.float32) for k in SIGNAL_LABELS if k in signals}
    return out


def clean_prob_source(folder) -> str:
    """What the run's final clean probability is: "combined" (the detection layer's) or "GMM"
    (TURN's per-class GMM on the final model's losses), as the final stage recorded it; for
    a run folder older than that record, "combined" only where TURN+ scoring chose it."""
    recorded = folder.gmm_info().get("clean_prob_source")
    if recorded in ("combined", "GMM"):
        return recorded
    try:
        config = RunConfig.from_json(folder.config_path)
    except (OSError, ValueError):
        return "GMM"
    return "combined" if config.turn_option("scoring") == "ensemble" else "GMM"


def counting_probability(clean_prob: np.ndarray, detection) -> np.ndarray:
    """What expected wrong labels are counted with: the detection layer's combined (calibrated)
    clean probability where the run has one for this training set, also where it flags by TURN's
    GMM; else the final clean probability itself."""
    if detection is not None and len(detection.clean_prob) == len(clean_prob):
        return np.asarray(detection.clean_prob, dtype=np.float64)
    return np.asarray(clean_prob, dtype=np.float64)


def review_estimates(folder, tau: float) -> tuple[dict | None, dict | None]:
    """(check, calibrated) from the decisions made in the run's Review, the training samples kept or
    relabelled (`review.label_errors_found`), read once for both:

    - check: the run's estimates against them (`estimates.review_agreement`), counted with the
      probability the estimates use (the detection layer's combined one where the folder has it for
      this training set, else the final clean probability);
    - calibrated: the estimates at `tau` recounted with that probability recalibrated on them
      (`estimates.calibrate_on_decisions`): `estimates.summarise_flags`' fields (suggested_tau,
      estimated_precision / _recall / _f1), the fit's estimated_noise_rate (its interval covers the
      fit's uncertainty too), "decisions", "spot_check_decisions", "a", "b" and "prior"; None with
      fewer than `estimates.MIN_RANDOM_DECISIONS` decisions of the spot check.

    (None, None) without a finished run or any such decision."""
    import pandas as pd

    from turn_backend.detect.estimates import calibrate_on_decisions, review_agreement, summarise_flags
    from turn_backend.review import VERDICT_ACTIONS, ReviewStore, label_errors_found, spot_check_mask

    if not folder.review_db.exists() or not folder.has_final():
        return None, None
    store = ReviewStore(folder.review_db)
    decisions = store.current()
    if not any(action in VERDICT_ACTIONS for action, _ in decisions.values()):
        return None, None
    samples = folder.samples()
    train = samples[samples["split"] == "train"]
    clean_prob = np.asarray(folder.final()["clean_prob"], dtype=np.float64)
    counting = counting_probability(clean_prob, folder.load_detection(folder.final_dir))
    rows, wrong = label_errors_found(decisions, pd.Index(train["sample_id"].to_numpy()),
                                     train["given_label"].to_numpy(dtype=np.int64))
    if not len(rows):
        return None, None
    check = review_agreement(counting[rows], wrong)
    at_random = spot_check_mask(len(clean_prob), store.spot_check_size())[rows]
    fit = calibrate_on_decisions(counting, rows, wrong, at_random)
    if fit is None:
        return check, None
    reliability = folder.metrics().get("flags_reliability")
    summary = summarise_flags(clean_prob, tau, calibrated=fit["probability"], reliability=reliability)
    return check, {key: summary[key] for key in ("tau", "suggested_tau", "estimated_precision", "estimated_recall",
                                                 "estimated_f1")} | {
        "estimated_noise_rate": fit["noise_rate"], "decisions": fit["n"],
        "spot_check_decisions": int(at_random.sum()), "a": fit["a"], "b": fit["b"], "prior": fit["prior"]}


def _same_data(a: Mapping, b: Mapping) -> bool:
    def norm(spec):
        return {k: v for k, v in (spec or {}).items() if v is not None}

    return norm(a.get("dataset")) == norm(b.get("dataset")) and \
        norm(a.get("noise") or {"kind": "none"}) == norm(b.get("noise") or {"kind": "none"})


def find_reference_run(root: str | Path, config: Mapping, method: str = "fft-ce",
                       exclude: str | Path | None = None):
    """The newest finished run under `root` of `method` on the same data and noise, or None.

    "Finished" means status done with final results; the same data means equal dataset and
    noise dicts in config.json, and (for the projections to be comparable) the same
    projection split.
    """
    exclude = Path(exclude).resolve() if exclude else None
    for run in list_runs(root):
        if exclude is not None and run.path.resolve() == exclude:
            continue
        cfg = run.config()
        if cfg.get("method") != method or not _same_data(cfg, config):
            continue
        if cfg.get("projection_split", "test") != config.get("projection_split", "test"):
            continue
        if run.status().get("state") == "done":
            return run
    return None
