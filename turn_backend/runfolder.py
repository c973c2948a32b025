"""A run is a folder. This module names its files and reads and writes them safely: no other
module spells a file name of the run folder (tests/test_architecture.py checks).

Layout:
    config.json          the RunConfig
    status.json          state (queued/running/done/failed/stopped), stage, progress, pid
    events.jsonl         the event log, one JSON object a line
    progress.json        completed stages (what `resume` skips)
    samples.parquet      id, source, split, given label, true label (where known)
    lp/head.pt, lp/history.json
    classes.json         class names, in label order
    timings.json         seconds per stage
    estimate.json        the time and memory estimated before the run (turn_backend.estimate)
    worker.log           the worker process's output
    rounds/rK/           logits.npy (round >= 2), clean_prob.npy, losses.npy, selected.npy, round.json,
                         train_index.npy, train_labels.npy, test_logits.npy, signals.parquet, noise_matrix.json
    checkpoints/last.pt  model + optimizer after the last completed round
    choice/              choice.json, probe_head.pt, holdout.npy, holdout_logits.npy (the final classifier)
    final/               logits.npy, clean_prob.npy, losses.npy, gmm.json, features.npy, signals.parquet,
                         noise_matrix.json (the final model's view)
    audit/               train.parquet, pairs.parquet, meta.json: duplicates, leaks, outliers
    annotators/          several annotators per image: labels.npy (N, A; -1: none), consensus.parquet
                         (per training sample), posterior.npy (N, C), quality.parquet, meta.json
    reviewed_labels.parquet  the review decisions a retrained run trains on (turn_backend.retrain)
    projections/         {split}_{stage}_{method}.npy and {split}_subset.npy
    metrics.json         test accuracy, clean-set size, detection metrics, seconds per stage
    review.sqlite        human review decisions (turn_backend.review)
    exports/             cleaned label files
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Iterable
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from turn_backend.detect.result import DetectionResult
from turn_backend.io import atomic_write_bytes, atomic_write_json, json_default, read_json

if TYPE_CHECKING:  # a type only: the module imports pandas, which `turn status` need not load
    from turn_backend.annotators import AnnotatedLabels


class RunState(str, Enum):
    """A run's state in status.json. A str: `RunState.DONE == "done"`."""

    NEW = "new"  # no status yet
    QUEUED = "queued"  # created, its worker not started
    STARTING = "starting"  # worker launched, not yet running
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    STOPPED = "stopped"  # by the user
    INTERRUPTED = "interrupted"  # the worker died without saying so (killed, OOM)


ACTIVE_STATES = (RunState.QUEUED.value, RunState.STARTING.value, RunState.RUNNING.value)
TERMINAL_STATES = (RunState.DONE.value, RunState.FAILED.value, RunState.STOPPED.value)
RESUMABLE_STATES = (RunState.STOPPED.value, RunState.INTERRUPTED.value, RunState.FAILED.value)
WORKING_STATES = (RunState.STARTING.value, RunState.RUNNING.value)  # a worker process should be alive


def _safe_name(text: str) -> str:
    """`text` with every run of characters unsafe in a folder name replaced by "-"."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", text).strip("-._") or "run"


def new_run_path(root: str | Path, name: str, now: datetime | None = None) -> Path:
    """A folder for a new run under `root`: `{name}-{YYYYmmdd-HHMMSS}`, then `-2`, `-3`, ...
    where that is taken."""
    root = Path(root)
    base = f"{_safe_name(name)}-{(now or datetime.now()):%Y%m%d-%H%M%S}"
    path, k = root / base, 2
    while path.exists():
        path, k = root / f"{base}-{k}", k + 1
    return path


def unique_run_name(name: str, existing: Iterable[str]) -> str:
    """`name`, or `name-2`, `name-3`, ... where the name is taken."""
    taken = set(existing)
    if name not in taken:
        return name
    k = 2
    while f"{name}-{k}" in taken:
        k += 1
    return f"{name}-{k}"


def retrain_run_name(base: str, tau: float, existing: Iterable[str]) -> str:
    """A new run folder name for retraining `base` at tau: base-tau0.45, then -2, -3, ..."""
    # do not grow names like run-tau0.45-tau0.50
    stem = re.sub(r"-tau\d+(\.\d+)?(-\d+)?$", "", base)
    return unique_run_name(f"{stem}-tau{tau:.2f}", existing)


class RunFolder:
    # File names. Top level:
    CONFIG = "config.json"
    STATUS = "status.json"
    EVENTS = "events.jsonl"
    PROGRESS = "progress.json"
    SAMPLES = "samples.parquet"
    CLASSES = "classes.json"
    TIMINGS = "timings.json"
    PEAK_MEMORY = "peak_memory.json"  # each stage's peak memory of the main process
    ESTIMATE = "estimate.json"
    METRICS = "metrics.json"
    WORKER_LOG = "worker.log"
    REVIEW_DB = "review.sqlite"
    REVIEWED_LABELS = "reviewed_labels.parquet"
    # lp/, checkpoints/
    LP_HEAD = "head.pt"
    LP_HISTORY = "history.json"
    CHECKPOINT = "last.pt"
    # a model's view of the training set, in rounds/rK/ and final/
    ROUND = "round.json"
    LOGITS = "logits.npy"
    CLEAN_PROB = "clean_prob.npy"
    LOSSES = "losses.npy"
    SELECTED = "selected.npy"
    GMM = "gmm.json"
    FEATURES = "features.npy"
    SEARCH = "search.npy"  # final/: the features' PCA rows "More like this" searches (large runs)
    SEARCH_SOURCE = "search.json"  # final/: which feature file search.npy was computed from
    TEST_LOGITS = "test_logits.npy"
    TRAIN_INDEX = "train_index.npy"
    TRAIN_LABELS = "train_labels.npy"
    SIGNALS = "signals.parquet"
    NOISE_MATRIX = "noise_matrix.json"
    # choice/
    CHOICE = "choice.json"
    PROBE_HEAD = "probe_head.pt"
    HOLDOUT = "holdout.npy"
    HOLDOUT_LOGITS = "holdout_logits.npy"
    # audit/
    AUDIT_TRAIN = "train.parquet"
    AUDIT_PAIRS = "pairs.parquet"
    AUDIT_META = "meta.json"
    NEIGHBOURS = "neighbours.npy"
    NEIGHBOUR_SIMILARITY = "neighbour_similarity.npy"
    # annotators/ (turn_backend.annotators)
    ANNOTATOR_LABELS = "labels.npy"
    ANNOTATOR_CONSENSUS = "consensus.parquet"
    ANNOTATOR_POSTERIOR = "posterior.npy"
    ANNOTATOR_QUALITY = "quality.parquet"
    ANNOTATOR_META = "meta.json"
    # a benchmark-only method's folder (turn_backend.stages.standalone)
    TRAIN_LOGITS = "train_logits.npy"
    # given/: what a person brought instead of the image model (turn_backend.given_inputs)
    GIVEN_PRED_PROBS = "pred_probs.npy"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # --- names -------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def samples_path(self) -> Path:
        return self.path / self.SAMPLES

    @property
    def classes_path(self) -> Path:
        return self.path / self.CLASSES

    @property
    def metrics_path(self) -> Path:
        return self.path / self.METRICS

    @property
    def timings_path(self) -> Path:
        return self.path / self.TIMINGS

    @property
    def peak_memory_path(self) -> Path:
        return self.path / self.PEAK_MEMORY

    @property
    def estimate_path(self) -> Path:
        return self.path / self.ESTIMATE

    @property
    def worker_log_path(self) -> Path:
        return self.path / self.WORKER_LOG

    @property
    def reviewed_labels_path(self) -> Path:
        """The review decisions a retrained run trains on (turn_backend.reviewed)."""
        return self.path / self.REVIEWED_LABELS

    @property
    def lp_dir(self) -> Path:
        return self.path / "lp"

    @property
    def choice_dir(self) -> Path:
        return self.path / "choice"

    @property
    def projections_dir(self) -> Path:
        return self.path / "projections"

    @property
    def exports_dir(self) -> Path:
        """Where the app suggests writing cleaned label files."""
        return self.path / "exports"

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
        return self.choice_dir / self.HOLDOUT

    @property
    def audit_dir(self) -> Path:
        return self.path / "audit"

    @property
    def given_dir(self) -> Path:
        """Given features and probabilities, checked and in the training set's order."""
        return self.path / "given"

    def given_features_path(self, split: str) -> Path:
        return self.given_dir / f"{split}_features.npy"

    @property
    def annotators_dir(self) -> Path:
        return self.path / "annotators"

    @property
    def review_db(self) -> Path:
        return self.path / self.REVIEW_DB

    def projection_path(self, split: str, stage: str, method: str) -> Path:
        return self.projections_dir / f"{split}_{stage}_{method}.npy"

    def stamp(self, *extra: Path) -> float:
        """Changes when the run's results are rewritten (new data, a resumed run, a new
        detection or audit): a cache key for what the app reads from them. `extra`: further
        files the caller's view depends on (a projection, say)."""
        paths = [self.samples_path, self.final_dir / self.CLEAN_PROB, self.final_dir / self.SIGNALS,
                 self.final_dir / self.NOISE_MATRIX, self.audit_dir / self.AUDIT_META,
                 self.annotators_dir / self.ANNOTATOR_META, *extra]
        total = 0.0
        for p in paths:
            try:
                total += p.stat().st_mtime
            except OSError:
                pass
        return total

    def exists(self) -> bool:
        return self.config_path.exists()

    # --- status and events -------------------------------------------------------------
    def status(self) -> dict:
        return read_json(self.path / self.STATUS, {"state": RunState.NEW.value})

    def set_status(self, **fields) -> None:
        status = self.status()
        status.update(fields, updated=time.time())
        atomic_write_json(self.path / self.STATUS, status)

    def log(self, stage: str, message: str, **data) -> None:
        event = {"time": time.time(), "stage": stage, "message": message, **data}
        with open(self.path / self.EVENTS, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(event, default=json_default) + "\n")

    def events(self) -> list[dict]:
        try:
            lines = (self.path / self.EVENTS).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
        return out

    def summaries(self) -> dict[str, dict]:
        """Each stage's latest summary event (logged with summary=True), by stage name: the
        structured fields a stage states its result in."""
        return {e["stage"]: e for e in self.events() if e.get("summary") and "stage" in e}

    def completed(self) -> list[str]:
        return read_json(self.path / self.PROGRESS, {"completed": []})["completed"]

    def last_completed_time(self) -> float | None:
        """When the run last finished a stage (None before the first)."""
        try:
            return (self.path / self.PROGRESS).stat().st_mtime
        except FileNotFoundError:
            return None

    def mark_completed(self, stage: str) -> None:
        done = self.completed()
        if stage not in done:
            atomic_write_json(self.path / self.PROGRESS, {"completed": done + [stage]})

    # --- results -----------------------------------------------------------------------
    def config(self) -> dict:
        return read_json(self.config_path, {})

    def metrics(self) -> dict:
        return read_json(self.metrics_path, {})

    def class_names(self) -> list[str]:
        """The class names in label order ([] before the data stage)."""
        return read_json(self.classes_path, []) or []

    def lp_history(self) -> list[dict]:
        """The linear probe's per-epoch rows (epoch, loss, accuracies), [] before it trains."""
        return read_json(self.lp_dir / self.LP_HISTORY, []) or []

    def choice(self) -> dict | None:
        """The choice stage's record of the final classifier, None where the run has none."""
        return read_json(self.choice_dir / self.CHOICE, None)

    def estimate(self) -> dict | None:
        """The estimate saved before the run started (turn_backend.estimate), None without one."""
        return read_json(self.estimate_path, None)

    def timings(self) -> dict:
        return read_json(self.timings_path, {}) or {}

    def peak_memory(self) -> dict:
        """Per runner stage ("data", "final", ...), the main process's peak memory while it ran
        (`estimate.StagePeakMemory`): {"resident_mb", "anonymous_mb"}; {} where not measured
        (not Linux, or a run made before it was)."""
        return read_json(self.peak_memory_path, {}) or {}

    def round_info(self, r: int) -> dict:
        """Round r's round.json ({} where the round has not finished)."""
        return read_json(self.round_dir(r) / self.ROUND, {}) or {}

    def gmm_info(self, directory: Path | None = None) -> dict:
        """gmm.json of `directory` (default: final/): per-class fits, notes, clean_prob_source."""
        return read_json((directory or self.final_dir) / self.GMM, {}) or {}

    def worker_log(self) -> str:
        try:
            return self.worker_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def has_samples(self) -> bool:
        return self.samples_path.exists()

    def samples(self):
        """A DataFrame: sample_id, source, split, given_label, true_label (-1: unknown)."""
        import pandas as pd

        return pd.read_parquet(self.samples_path)

    def rounds(self) -> list[dict]:
        out = []
        r = 1
        while (self.round_dir(r) / self.ROUND).exists():
            out.append(read_json(self.round_dir(r) / self.ROUND))
            r += 1
        return out

    def has_final(self) -> bool:
        """Whether the final model's results are written (`final()` is not None), without reading them."""
        return (self.final_dir / self.GMM).exists()

    def final(self) -> dict | None:
        """The final model's clean probabilities, losses, predictions and GMM fits."""
        d = self.final_dir
        if not self.has_final():
            return None
        logits = np.load(d / self.LOGITS)
        shifted = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(shifted)
        probs /= probs.sum(axis=1, keepdims=True)
        return {
            "clean_prob": np.load(d / self.CLEAN_PROB),
            "losses": np.load(d / self.LOSSES),
            "pred": logits.argmax(1),
            "pred_prob": probs.max(1),
            "probs": probs,
            **read_json(d / self.GMM),
        }

    def detection(self) -> dict | None:
        """The final model's detection evidence (turn_backend.detect), or None for runs without it:
        {"signals": DataFrame (one row per training sample), "noise_counts": (C, C) array,
        "noise_rate": float}."""
        result = self.load_detection(self.final_dir)
        if result is None:
            return None
        return {"signals": result.to_frame(), "noise_counts": result.noise_counts,
                "noise_rate": result.noise_rate, "notes": result.notes, "reliability": result.reliability}

    def save_detection(self, directory: Path, result: DetectionResult) -> None:
        """Write `result` atomically into `directory` (a round's folder or final/):
        signals.parquet (one row per training sample) and noise_matrix.json."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        result.to_frame().to_parquet(buf, index=False)
        atomic_write_bytes(d / self.SIGNALS, buf.getvalue())
        atomic_write_json(d / self.NOISE_MATRIX, result.noise_matrix_record())

    def load_detection(self, directory: Path) -> DetectionResult | None:
        """What `save_detection` wrote into `directory`, or None where either file is missing."""
        import pandas as pd  # pandas: only the pages that show detection need it

        d = Path(directory)
        if not (d / self.SIGNALS).exists() or not (d / self.NOISE_MATRIX).exists():
            return None
        return DetectionResult.from_records(pd.read_parquet(d / self.SIGNALS),
                                            json.loads((d / self.NOISE_MATRIX).read_text()))

    def neighbour_graph(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The audit's neighbour graph of the training set's pre-trained features: (N, k)
        indices and cosine similarities, most similar first, memory-mapped; None without one."""
        d = self.audit_dir
        if not (d / self.AUDIT_META).exists() or not (d / self.NEIGHBOURS).exists():
            return None
        return (np.load(d / self.NEIGHBOURS, mmap_mode="r"), np.load(d / self.NEIGHBOUR_SIMILARITY, mmap_mode="r"))

    def audit(self) -> dict | None:
        """Duplicates, leaks and outliers (turn_backend.audit): {"train": DataFrame (one row per
        training sample, in training order), "pairs": DataFrame, "meta": dict}, or None when the
        run has no audit (older runs, or not yet past the features stage)."""
        import pandas as pd

        d = self.audit_dir
        if not (d / self.AUDIT_META).exists():
            return None
        return {"train": pd.read_parquet(d / self.AUDIT_TRAIN), "pairs": pd.read_parquet(d / self.AUDIT_PAIRS),
                "meta": read_json(d / self.AUDIT_META, {})}

    def save_annotators(self, annotated: AnnotatedLabels) -> None:
        """Write the training set's annotator labels and their aggregation into annotators/
        (atomically, file by file; meta.json last, as the mark that the set is complete)."""
        import pandas as pd

        d = self.annotators_dir
        d.mkdir(parents=True, exist_ok=True)
        c = annotated.consensus
        for name, array in ((self.ANNOTATOR_LABELS, annotated.matrix), (self.ANNOTATOR_POSTERIOR, c.probs)):
            buf = io.BytesIO()
            np.save(buf, array)
            atomic_write_bytes(d / name, buf.getvalue())
        consensus = pd.DataFrame({"consensus_label": c.label.astype(np.int64), "agreement": c.agreement,
                                  "n_labels": annotated.n_labels,
                                  "consensus_prob": c.probs[np.arange(len(c.label)), c.label]})
        quality = c.annotators.rename(columns={"agreement": "agreement_with_consensus"})
        for name, frame in ((self.ANNOTATOR_CONSENSUS, consensus), (self.ANNOTATOR_QUALITY, quality)):
            buf = io.BytesIO()
            frame.to_parquet(buf, index=False)
            atomic_write_bytes(d / name, buf.getvalue())
        atomic_write_json(d / self.ANNOTATOR_META, {"method": c.method, "annotators": annotated.names,
                                                    "confusion": {k: v.tolist() for k, v in c.confusion.items()}})

    def has_annotators(self) -> bool:
        return (self.annotators_dir / self.ANNOTATOR_META).exists()

    def annotators(self) -> dict | None:
        """Several annotators per image, or None for a run with one label per image:
        {"method": the aggregator, "names": (A,) in the columns' order, "labels": (N, A) each
        annotator's label of each training sample (-1: none), "consensus": DataFrame (one row per
        training sample: consensus_label, agreement, n_labels, consensus_prob), "posterior":
        (N, C) the annotators' posterior over the true class, "quality": DataFrame (annotator,
        quality, n_labels, agreement_with_consensus; best first), "confusion": annotator ->
        (C, C) counts of (consensus label, their label)}."""
        import pandas as pd

        d = self.annotators_dir
        if not self.has_annotators():
            return None
        meta = read_json(d / self.ANNOTATOR_META, {})
        return {"method": meta["method"], "names": meta["annotators"], "labels": np.load(d / self.ANNOTATOR_LABELS),
                "consensus": pd.read_parquet(d / self.ANNOTATOR_CONSENSUS),
                "posterior": np.load(d / self.ANNOTATOR_POSTERIOR),
                "quality": pd.read_parquet(d / self.ANNOTATOR_QUALITY),
                "confusion": {k: np.asarray(v, dtype=np.int64) for k, v in meta["confusion"].items()}}

    def projection(self, split: str, stage: str, method: str) -> np.ndarray | None:
        p = self.projection_path(split, stage, method)
        return np.load(p) if p.exists() else None

    def projection_subset(self, split: str) -> np.ndarray | None:
        p = self.projections_dir / f"{split}_subset.npy"
        return np.load(p) if p.exists() else None


def list_runs(root: str | Path) -> list[RunFolder]:
    """Run folders under `root`, newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = [RunFolder(p) for p in root.iterdir() if RunFolder(p).exists()]
    return sorted(runs, key=lambda r: r.config_path.stat().st_mtime, reverse=True)
