"""What every stage of a run reads and writes: the config, the runtime, the run folder's
bookkeeping (event log, status, timings) and what earlier stages made for later ones."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from turn_backend.data.core import DatasetBundle, ImageSet
from turn_backend.engine import Runtime
from turn_backend.features import feature_cache_path
from turn_backend.io import atomic_write_json
from turn_backend.models.core import Classifier, LoadedModel, Preprocess, StageHParams
from turn_backend.runfolder import RunFolder

if TYPE_CHECKING:  # types only: config imports the methods registry, whose methods run these stages
    from turn_backend.config import RunConfig
    from turn_backend.methods import Method


def stage_seed(config: RunConfig, *parts) -> int:
    """The seed of one stage (or round, or step) of a run: a hash of (config.seed, *parts)."""
    digest = hashlib.sha256(repr((config.seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little")


class RunContext:
    """One execution (or resumption) of a run folder, in one process of possibly several."""

    def __init__(self, run_dir: Path, config: RunConfig) -> None:
        self.folder = RunFolder(run_dir)
        self.config = config
        self.method: Method = config.method_spec
        self.rt = Runtime(config.device, config.mixed_precision)
        self.timings: dict[str, float] = {}
        # made by the stages, in the order they run
        self.bundle: DatasetBundle | None = None
        self.reviewed = None  # turn_backend.retrain.ReviewedData of a "retrain with my decisions" run
        self.held_clean: np.ndarray | None = None  # samples a person vouched for: never flagged or dropped
        self.annotator_probs: np.ndarray | None = None  # (N, C) several annotators' posterior, where the data has them
        self.loaded: LoadedModel | None = None
        self.pre: Preprocess | None = None
        self.lp_hp: StageHParams | None = None
        self.fft_hp: StageHParams | None = None
        self.workers = 0
        self.feats = self.test_feats = None  # the pre-trained features (memory-mapped cache files)
        self.head: dict | None = None  # the linear head (the probe's, or the chosen probe's)
        self.model: Classifier | None = None  # the fine-tuned model; None when the final model is a probe
        self.holdout_index: np.ndarray | None = None  # TURN+'s held-out clean samples
        self.metrics: dict = {}

    @property
    def train(self) -> ImageSet:
        return self.bundle.train

    @property
    def test(self) -> ImageSet | None:
        return self.bundle.test

    # --- bookkeeping -------------------------------------------------------------------
    def log(self, stage: str, message: str, **data) -> None:
        """An event in the run's log: `message` for people, `data` as fields for code. A stage
        marks the event that sums up its result with `summary=True` and states that result in
        fields (RunFolder.summaries() reads them; nothing reads the message text)."""
        if self.rt.is_main:
            self.folder.log(stage, message, **data)

    def stage_done(self, stage: str) -> bool:
        """Whether `stage` was completed by an earlier execution of this run (resume skips it).

        Every process reads the run's progress before any may go on, so that none sees the
        main process mark the stage done in this execution and skips the stage (and its
        collectives) while the others run it: with several processes that hung the run."""
        done = stage in self.folder.completed()
        self.rt.barrier()
        return done

    def status(self, **fields) -> None:
        if self.rt.is_main:
            self.folder.set_status(**fields)

    def progress(self, stage: str, label: str):
        """A (done, total) callback that shows a stage's progress in status.json, twice a second at most."""
        last = [0.0]

        def report(done: int, total: int) -> None:
            now = time.time()
            if self.rt.is_main and (now - last[0] > 0.5 or done >= total):
                last[0] = now
                self.folder.set_status(stage=stage, stage_label=label, stage_done=done, stage_total=total,
                                       gpu=self.rt.gpu_memory())

        return report

    def notice(self, stage: str):
        """A callback that writes an engine message (e.g. a batch halved after GPU OOM) to the event log."""
        return lambda message: self.log(stage, message)

    def add_time(self, stage: str, start: float) -> None:
        """Add the seconds since `start` to `stage`'s entry of timings.json."""
        self.timings[stage] = self.timings.get(stage, 0.0) + time.time() - start
        if self.rt.is_main:
            atomic_write_json(self.folder.timings_path, self.timings)

    def feature_path(self, images: ImageSet, split: str) -> Path:
        """The feature-cache file of `images` under this run's model and preprocessing; the
        run's own copy of given features (stages/given.py)."""
        if self.config.features:
            return self.folder.given_features_path(split)
        return feature_cache_path(images, self.loaded.name, self.config.checkpoint, self.config.pretrained,
                                  self.pre, split)
