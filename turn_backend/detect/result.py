"""What detection returns, as arrays, a table (`to_frame`) and a JSON record of the noise
estimate (`noise_matrix_record`); `RunFolder.save_detection` stores them in a run folder."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

# Each signal's clean score in [0, 1], higher = more probably clean. Names are stable: the
# app, the export and the benchmark read them.
SIGNAL_DESCRIPTIONS = {
    "gmm_lp": "TURN: per-class GMM on the linear probe's (GCE) losses",
    "oof_probe": "cleanlab label quality of out-of-fold linear-probe probabilities",
    "oof_gmm": "per-class GMM on out-of-fold linear-probe losses",
    "knn": "share of the k nearest neighbours (feature space) that carry the same label",
    "annotators": "several annotators' posterior probability of the consensus label (their agreement)",
    "combined": "combined clean probability (noise-model posterior of the ensemble)",
}


@dataclass
class DetectionResult:
    """Per-sample clean probabilities and the evidence behind them.

    clean_prob: (N,) the combined clean probability; a sample is flagged where it is <= tau.
    signals: name -> (N,) clean score in [0, 1] of each signal (see SIGNAL_DESCRIPTIONS).
    suggested_label: (N,) the most likely true class; suggested_confidence: (N,) its probability.
    noise_counts: (C, C) estimated number of samples with given label (row) and true label (column).
    noise_rate: estimated fraction of wrong labels.
    reliability: whether the model can judge these labels at all (`estimates.judge_reliability`);
        empty for results saved before the check existed.
    seconds: how long each part took ("reduce", "probes", "knn", "noise_model").
    """

    clean_prob: np.ndarray
    signals: dict[str, np.ndarray]
    suggested_label: np.ndarray
    suggested_confidence: np.ndarray
    noise_counts: np.ndarray
    noise_rate: float
    suggested_source: str = "ensemble"
    notes: list[str] = field(default_factory=list)
    reliability: dict = field(default_factory=dict)
    # (N, C) out-of-fold probe and k-NN vote probabilities, for callers who want them (e.g.
    # cleanlab's own filters); not saved with a run
    pred_probs: np.ndarray | None = None
    knn_probs: np.ndarray | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def flagged(self, tau: float = 0.6) -> np.ndarray:
        """Boolean mask of the samples whose label is probably wrong at threshold tau."""
        return self.clean_prob <= tau

    def to_frame(self):
        import pandas as pd

        columns = {"combined": self.clean_prob.astype(np.float32)}
        columns.update({k: np.asarray(v, dtype=np.float32) for k, v in self.signals.items() if k != "combined"})
        columns["suggested_label"] = self.suggested_label.astype(np.int64)
        columns["suggested_confidence"] = self.suggested_confidence.astype(np.float32)
        columns["suggested_source"] = self.suggested_source
        return pd.DataFrame(columns)

    def noise_matrix_record(self) -> dict:
        """The JSON record of the noise estimate (what `from_records` reads back)."""
        return {"counts": np.asarray(self.noise_counts, dtype=np.float64).round(3).tolist(),
                "noise_rate": float(self.noise_rate), "notes": self.notes, "reliability": self.reliability,
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()}}

    @classmethod
    def from_records(cls, frame, meta: dict) -> DetectionResult:
        """A result from `to_frame()`'s table and `noise_matrix_record()` (as a run folder
        stores them: `RunFolder.save_detection` / `load_detection`)."""
        signals = {k: frame[k].to_numpy() for k in SIGNAL_DESCRIPTIONS if k in frame and k != "combined"}
        source = str(frame["suggested_source"].iloc[0]) if len(frame) else "ensemble"
        return cls(clean_prob=frame["combined"].to_numpy(), signals=signals,
                   suggested_label=frame["suggested_label"].to_numpy(),
                   suggested_confidence=frame["suggested_confidence"].to_numpy(),
                   noise_counts=np.asarray(meta["counts"], dtype=np.float64), noise_rate=float(meta["noise_rate"]),
                   suggested_source=source, notes=list(meta.get("notes", [])),
                   reliability=dict(meta.get("reliability", {})), seconds=dict(meta.get("seconds", {})))


class Stopwatch:
    """Seconds per named part of a computation: `lap(name)` adds the time since the last lap."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last
        self._last = now
