"""A run is a folder. This module names its files and reads and writes them safely.

Layout:
    config.json          the RunConfig
    status.json          state (queued/running/done/failed/stopped), stage, progress, pid
    events.jsonl         the event log, one JSON object a line
    progress.json        completed stages (what `resume` skips)
    samples.parquet      id, source, split, given label, true label (where known)
    lp/head.pt, lp/history.json
    rounds/rK/           logits.npy (round >= 2), clean_prob.npy, losses.npy, selected.npy, round.json
    checkpoints/last.pt  model + optimizer after the last completed round
    final/               logits.npy, clean_prob.npy, losses.npy, gmm.json (the final model's view)
    audit/               train.parquet, pairs.parquet, meta.json: duplicates, leaks, outliers
    reviewed_labels.parquet  the review decisions a retrained run trains on (turn_backend.retrain)
    projections/         {split}_{stage}_{method}.npy and {split}_subset.npy
    metrics.json         test accuracy, clean-set size, detection metrics, seconds per stage
    review.sqlite        human review decisions (turn_backend.review)
    exports/             cleaned label files
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from turn_backend.detect.result import DetectionResult
from turn_backend.io import atomic_write_json, json_default, read_json

TERMINAL_STATES = ("done", "failed", "stopped")


class RunFolder:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # --- names -------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def name(self) -> str:
        return self.path.name

    def round_dir(self, r: int) -> Path:
        return self.path / "rounds" / f"r{r}"

    @property
    def final_dir(self) -> Path:
        return self.path / "final"

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoints" / "last.pt"

    @property
    def holdout_path(self) -> Path:
        """TURN+'s held-out clean samples (indices into the training set)."""
        return self.path / "choice" / "holdout.npy"

    @property
    def audit_dir(self) -> Path:
        return self.path / "audit"

    @property
    def review_db(self) -> Path:
        return self.path / "review.sqlite"

    def exists(self) -> bool:
        return self.config_path.exists()

    # --- status and events -------------------------------------------------------------
    def status(self) -> dict:
        return read_json(self.path / "status.json", {"state": "new"})

    def set_status(self, **fields) -> None:
        status = self.status()
        status.update(fields, updated=time.time())
        atomic_write_json(self.path / "status.json", status)

    def log(self, stage: str, message: str, **data) -> None:
        event = {"time": time.time(), "stage": stage, "message": message, **data}
        with open(self.path / "events.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(event, default=json_default) + "\n")

    def events(self) -> list[dict]:
        try:
            lines = (self.path / "events.jsonl").read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
        return out

    def completed(self) -> list[str]:
        return read_json(self.path / "progress.json", {"completed": []})["completed"]

    def mark_completed(self, stage: str) -> None:
        done = self.completed()
        if stage not in done:
            atomic_write_json(self.path / "progress.json", {"completed": done + [stage]})

    # --- results -----------------------------------------------------------------------
    def config(self) -> dict:
        return read_json(self.config_path, {})

    def metrics(self) -> dict:
        return read_json(self.path / "metrics.json", {})

    def samples(self):
        """A DataFrame: sample_id, source, split, given_label, true_label (-1: unknown)."""
        import pandas as pd

        return pd.read_parquet(self.path / "samples.parquet")

    def rounds(self) -> list[dict]:
        out = []
        r = 1
        while (self.round_dir(r) / "round.json").exists():
            out.append(read_json(self.round_dir(r) / "round.json"))
            r += 1
        return out

    def final(self) -> dict | None:
        """The final model's clean probabilities, losses, predictions and GMM fits."""
        d = self.final_dir
        if not (d / "gmm.json").exists():
            return None
        logits = np.load(d / "logits.npy")
        shifted = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(shifted)
        probs /= probs.sum(axis=1, keepdims=True)
        return {
            "clean_prob": np.load(d / "clean_prob.npy"),
            "losses": np.load(d / "losses.npy"),
            "pred": logits.argmax(1),
            "pred_prob": probs.max(1),
            "probs": probs,
            **read_json(d / "gmm.json"),
        }

    def detection(self) -> dict | None:
        """The final model's detection evidence (turn_backend.detect), or None for runs without it:
        {"signals": DataFrame (one row per training sample), "noise_counts": (C, C) array,
        "noise_rate": float}."""
        result = DetectionResult.load(self.final_dir)
        if result is None:
            return None
        return {"signals": result.to_frame(), "noise_counts": result.noise_counts,
                "noise_rate": result.noise_rate, "notes": result.notes}

    def audit(self) -> dict | None:
        """Duplicates, leaks and outliers (turn_backend.audit): {"train": DataFrame (one row per
        training sample, in training order), "pairs": DataFrame, "meta": dict}, or None when the
        run has no audit (older runs, or not yet past the features stage)."""
        import pandas as pd

        d = self.audit_dir
        if not (d / "meta.json").exists():
            return None
        return {"train": pd.read_parquet(d / "train.parquet"), "pairs": pd.read_parquet(d / "pairs.parquet"),
                "meta": read_json(d / "meta.json", {})}

    def projection(self, split: str, stage: str, method: str) -> np.ndarray | None:
        p = self.path / "projections" / f"{split}_{stage}_{method}.npy"
        return np.load(p) if p.exists() else None

    def projection_subset(self, split: str) -> np.ndarray | None:
        p = self.path / "projections" / f"{split}_subset.npy"
        return np.load(p) if p.exists() else None


def list_runs(root: str | Path) -> list[RunFolder]:
    """Run folders under `root`, newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = [RunFolder(p) for p in root.iterdir() if (p / "config.json").exists()]
    return sorted(runs, key=lambda r: r.config_path.stat().st_mtime, reverse=True)
