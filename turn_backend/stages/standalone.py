"""What the benchmark-only methods (turn_backend.methods: dividemix-lp, unicon-lp,
cleanlab-fft) need, outside a run folder: the run's data and noise, the model and its
hyperparameters, the cached features (the same cache file as a run's), timings, and their
metrics in the shape `run_turn` returns, with the final detection from the same per-class
GMM every method's comes from."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from turn_backend.cleansing import detection_metrics, fit_clean_probability
from turn_backend.engine import Runtime, extract_features
from turn_backend.features import feature_cache_path
from turn_backend.losses import per_sample_ce
from turn_backend.models.registry import load_model
from turn_backend.pipeline import default_workers
from turn_backend.rundata import load_run_data
from turn_backend.runfolder import RunFolder
from turn_backend.stages.context import stage_seed
from turn_backend.stages.data import resolve_hparams, resolve_preprocess

if TYPE_CHECKING:  # a type only: config imports the methods registry, whose methods run these stages
    from turn_backend.config import RunConfig


class StandaloneRun:
    """Data, model, hyperparameters and cached features of one benchmark-only method's run."""

    def __init__(self, config: RunConfig, run_dir: Path) -> None:
        self.method, self.cfg, self.dir = config.method, config, Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        config.to_json(RunFolder(self.dir).config_path)
        self.rt = Runtime(config.device, config.mixed_precision)
        self.timings: dict[str, float] = {}
        t0 = time.time()
        self.bundle = load_run_data(config)
        self.loaded = load_model(config.model, config.checkpoint, pretrained=config.pretrained)
        self.pre = resolve_preprocess(config, self.loaded)
        self.lp_hp, self.fft_hp = resolve_hparams(config, self.loaded.hparams)
        self.train, self.test = self.bundle.train, self.bundle.test
        self.workers = default_workers(self.train, self.rt.device) if config.num_workers is None else config.num_workers
        self.tick("data", t0)
        t0 = time.time()
        self.feats = np.asarray(self._extract(self.train, "train"))
        self.test_feats = np.asarray(self._extract(self.test, "test"))
        self.tick("features", t0)

    def _extract(self, images, split: str):
        path = feature_cache_path(images, self.loaded.name, self.cfg.checkpoint, self.cfg.pretrained, self.pre, split)
        return extract_features(self.loaded.extractor, images, self.pre, path, self.rt, self.cfg.batch_size,
                                self.workers)

    def tick(self, stage: str, start: float) -> None:
        """Add the seconds since `start` to `stage`'s timing."""
        self.timings[stage] = self.timings.get(stage, 0.0) + time.time() - start

    def finish(self, accs: list[float], final_logits: np.ndarray, extra: dict) -> dict:
        """Metrics in the shape `run_turn` returns, written to metrics.json."""
        t0 = time.time()
        train = self.train
        losses = per_sample_ce(torch.from_numpy(np.asarray(final_logits, dtype=np.float64)),
                               torch.from_numpy(train.labels)).numpy()
        fit = fit_clean_probability(losses, train.labels, train.num_classes, seed=stage_seed(self.cfg, "gmm", "final"))
        self.tick("final", t0)
        m = {"method": self.method, "model": self.cfg.model, "n_train": len(train), "n_test": len(self.test),
             "test_acc_best": max(accs), "test_acc_last": accs[-1], "test_acc_per_epoch": accs, **extra}
        if train.true_labels is not None:
            m["final_detection"] = detection_metrics(fit.clean_prob <= self.cfg.tau, train.labels, train.true_labels)
            m["noise_rate"] = float((train.labels != train.true_labels).mean())
        m["seconds"] = {k: round(v, 3) for k, v in self.timings.items()}
        m["seconds_total"] = round(sum(self.timings.values()), 3)
        RunFolder(self.dir).metrics_path.write_text(json.dumps(m, indent=2))
        return m

    def selection_stats(self, clean_mask: np.ndarray) -> tuple[float | None, dict | None]:
        """Purity of the kept samples and detection metrics of the rest, where true labels exist."""
        t = self.train
        if t.true_labels is None:
            return None, None
        kept = np.flatnonzero(clean_mask)
        purity = float((t.labels[kept] == t.true_labels[kept]).mean()) if len(kept) else 0.0
        return purity, detection_metrics(~clean_mask, t.labels, t.true_labels)
