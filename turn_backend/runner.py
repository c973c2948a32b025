"""The orchestrator: runs a method's stages in order and records everything in a run folder.

`run_turn(config, run_dir)` starts a run; `resume(run_dir)` continues one that was killed
from its last completed stage. Every stage re-seeds from (seed, stage), so a resumed run
ends with the same result as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from turn_backend.cleansing import detection_metrics, fit_clean_probability, select_clean, stratified_holdout
from turn_backend.audit import run_audit
from turn_backend.config import RunConfig, method_loss
from turn_backend.detect import DetectionResult, detect_label_issues
from turn_backend.detect.signals import softmax
from turn_backend.data.core import DatasetBundle, ImageSet
from turn_backend.engine import (
    Runtime,
    accuracy_from_logits,
    compute_logits,
    extract_features,
    fft_epoch,
    head_logits,
    make_optimizer,
    to_device,
    train_linear_probe,
)
from turn_backend.features import before_map_files, copy_files, feature_cache_path, shared_maps_dir
from turn_backend.losses import make_loss, per_sample_ce
from turn_backend.models.core import Classifier, LoadedModel, Preprocess, StageHParams
from turn_backend.models.registry import load_model
from turn_backend.pipeline import default_workers, preprocessed_batches
from turn_backend.projection import compute_projections
from turn_backend.retrain import apply_reviewed_labels
from turn_backend.runfolder import RunFolder, atomic_save_npy, atomic_write_json, read_json
from turn_backend.rundata import load_run_data  # noqa: F401 - also imported from here


class StopRequested(Exception):
    """The user pressed Stop (SIGTERM to the worker)."""


def resolve_hparams(config: RunConfig, loaded: LoadedModel) -> tuple[StageHParams, StageHParams]:
    """The paper's settings for the model family, overridden by anything the config sets."""
    lp, fft = loaded.hparams.lp, loaded.hparams.fft
    lp = StageHParams(config.lp_optimizer or lp.optimizer, config.lp_lr or lp.lr,
                      lp.weight_decay if config.lp_weight_decay is None else config.lp_weight_decay)
    fft = StageHParams(config.fft_optimizer or fft.optimizer, config.fft_lr or fft.lr,
                       fft.weight_decay if config.fft_weight_decay is None else config.fft_weight_decay)
    return lp, fft


def _seed(config: RunConfig, *parts) -> int:
    digest = hashlib.sha256(repr((config.seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little")


class TurnRun:
    """One execution (or resumption) of a run folder, in one process of possibly several."""

    def __init__(self, run_dir: Path, config: RunConfig) -> None:
        self.folder = RunFolder(run_dir)
        self.config = config
        self.rt = Runtime(config.device, config.mixed_precision)
        self.timings: dict[str, float] = {}
        self._detection: DetectionResult | None = None  # the current round's, with ensemble scoring

    # --- bookkeeping -------------------------------------------------------------------
    def log(self, stage: str, message: str, **data) -> None:
        if self.rt.is_main:
            self.folder.log(stage, message, **data)

    def status(self, **fields) -> None:
        if self.rt.is_main:
            self.folder.set_status(**fields)

    def progress(self, stage: str, label: str):
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

    def _time(self, stage: str, start: float) -> None:
        self.timings[stage] = self.timings.get(stage, 0.0) + time.time() - start
        if self.rt.is_main:
            atomic_write_json(self.folder.path / "timings.json", self.timings)

    # --- the run -----------------------------------------------------------------------
    def execute(self) -> dict:
        cfg, folder = self.config, self.folder
        self.timings = read_json(folder.path / "timings.json", {})
        self.status(state="running", pid=os.getpid(), error=None, processes=self.rt.world)
        self.log("start", f"{cfg.method} on {cfg.model}, {self.rt.world} process(es), device {self.rt.device}")

        t0 = time.time()
        self.status(stage="data", stage_label="Loading the dataset")
        bundle = load_run_data(cfg)
        # "retrain with my decisions": reviewed labels applied, removed samples left out
        reviewed = apply_reviewed_labels(bundle, folder.path)
        if reviewed is not None:
            bundle = reviewed.bundle
        self.held_clean = None if reviewed is None else reviewed.held_clean
        self.bundle = bundle
        if self.rt.is_main and not (folder.path / "samples.parquet").exists():
            self._write_samples(bundle)
        if bundle.skipped:
            self.log("data", f"skipped {len(bundle.skipped)} unreadable item(s)",
                     skipped=[s.__dict__ for s in bundle.skipped[:50]])
        loaded = load_model(cfg.model, cfg.checkpoint, pretrained=cfg.pretrained)
        pre = loaded.preprocess
        if cfg.image_size:
            pre = Preprocess(cfg.image_size, pre.mean, pre.std, pre.interpolation)
        self.loaded, self.pre = loaded, pre
        self.lp_hp, self.fft_hp = resolve_hparams(cfg, loaded)
        self.workers = default_workers(bundle.train) if cfg.num_workers is None else cfg.num_workers
        self._time("data", t0)

        train, test = bundle.train, bundle.test
        if reviewed is not None:
            reviewed.reuse_cached_features(self._feature_path)
        feats, test_feats = self._features(train, test)
        self._audit(train, test, feats, test_feats)
        result = {"rounds": []}
        if cfg.kind in ("turn", "lp"):
            head = self._linear_probe(feats, train, test, test_feats)
        else:
            head = None
        model = None
        if cfg.kind in ("turn", "fft"):
            model = self._fine_tune(head, feats, train, test)
        if cfg.kind == "turn" and cfg.turn_option("holdout"):
            model, head = self._choose_final_model(model, head, feats, train, test, test_feats)
        self._final(model, head, feats, train)
        self._projections(model, test if cfg.projection_split == "test" and test is not None else train)
        metrics = self._metrics(train)
        self.status(state="done", stage="done", stage_label="Finished")
        self.log("done", "run finished", test_acc_last=metrics.get("test_acc_last"))
        result.update(metrics)
        return result

    def _write_samples(self, bundle: DatasetBundle) -> None:
        frames = []
        for split, s in (("train", bundle.train), ("test", bundle.test)):
            if s is None:
                continue
            frames.append(pd.DataFrame({
                "sample_id": s.ids,
                "source": [s.source(i) for i in range(len(s))],
                "split": split,
                "given_label": s.labels,
                "true_label": s.true_labels if s.true_labels is not None else np.full(len(s), -1),
            }))
        df = pd.concat(frames, ignore_index=True)
        tmp = self.folder.path / ".samples.tmp.parquet"
        df.to_parquet(tmp, index=False)
        os.replace(tmp, self.folder.path / "samples.parquet")
        atomic_write_json(self.folder.path / "classes.json", bundle.class_names)

    def _feature_path(self, images: ImageSet, split: str) -> Path:
        return feature_cache_path(images, self.loaded.name, self.config.checkpoint, self.config.pretrained,
                                  self.pre, split)

    def _features(self, train: ImageSet, test: ImageSet | None):
        t0 = time.time()
        # every run and method on the same images and model shares the cache (turn demo's four do)
        from_cache = all(self._feature_path(s, split).exists() for s, split in ((train, "train"), (test, "test"))
                         if s is not None)
        feats = extract_features(
            self.loaded.extractor, train, self.pre, self._feature_path(train, "train"), self.rt,
            self.config.batch_size, self.workers, self.progress("features", "Extracting train features"),
            notify=self.notice("features"),
        )
        test_feats = None
        if test is not None:
            test_feats = extract_features(
                self.loaded.extractor, test, self.pre, self._feature_path(test, "test"), self.rt,
                self.config.batch_size, self.workers, self.progress("features", "Extracting test features"),
                notify=self.notice("features"),
            )
        bad = {split: (images, int((~np.isfinite(np.asarray(z))).any(axis=1).sum()))
               for images, split, z in ((train, "train", feats), (test, "test", test_feats)) if z is not None}
        bad = {split: v for split, v in bad.items() if v[1]}
        if bad:
            if self.rt.is_main:  # never reuse them from the cache
                for split, (images, _) in bad.items():
                    self._feature_path(images, split).unlink(missing_ok=True)
            counts = " and ".join(f"{n} {split}" for split, (_, n) in bad.items())
            raise ValueError(f"the model produced NaN or infinite features for {counts} image(s); "
                             "check the model, its weights and its preprocessing (nothing was cached)")
        self._time("features", t0)
        if "features" not in self.folder.completed():
            self.log("features", f"features ready: {feats.shape[0]} train x {feats.shape[1]} dims"
                     + (" (from the cache)" if from_cache else ""), seconds=round(time.time() - t0, 2),
                     from_cache=from_cache)
            if self.rt.is_main:
                self.folder.mark_completed("features")
        return feats, test_feats

    def _audit(self, train: ImageSet, test: ImageSet | None, feats, test_feats) -> None:
        """Duplicates, train/test leaks and outliers on the pre-trained features (turn_backend.audit)."""
        if "audit" in self.folder.completed():
            return
        t0 = time.time()
        if self.rt.is_main:
            try:
                meta = run_audit(self.folder.audit_dir, train, feats, test, test_feats,
                                 progress_for=lambda label: self.progress("audit", label))
            except (ValueError, OSError, ImportError, MemoryError) as exc:
                # the audit adds findings; it must not cost the user the training run
                self.log("audit", f"audit skipped: {type(exc).__name__}: {exc}")
            else:
                self.folder.mark_completed("audit")
                self.log("audit", f"audit: {meta['n_duplicates']} duplicate(s) ({meta['n_label_conflicts']} with "
                         f"another label), {meta['n_test_duplicates']} in the test set, "
                         f"{meta['n_outliers']} outlier(s)", **meta)
        self._time("audit", t0)
        self.rt.barrier()

    def _linear_probe(self, feats, train: ImageSet, test: ImageSet | None, test_feats) -> dict:
        cfg, folder = self.config, self.folder
        head_path = folder.path / "lp" / "head.pt"
        if "lp" in folder.completed() and head_path.exists():
            return torch.load(head_path, weights_only=True)
        t0 = time.time()
        loss = "gce" if cfg.kind == "turn" else method_loss(cfg.method)
        report = self.progress("lp", "Linear probing")
        report(0, cfg.lp_epochs)

        def on_epoch(row: dict) -> None:
            report(row["epoch"], cfg.lp_epochs)
            self.log("lp", f"LP epoch {row['epoch']}/{cfg.lp_epochs}", **row)

        head, history = train_linear_probe(
            feats, train.labels, train.num_classes, self.lp_hp, loss, cfg.lp_epochs, cfg.batch_size,
            _seed(cfg, "lp"), test_feats, None if test is None else test.labels, on_epoch, q=cfg.gce_q,
        )
        if self.rt.is_main:
            head_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = head_path.with_suffix(".tmp")
            torch.save(head, tmp)
            os.replace(tmp, head_path)
            atomic_write_json(folder.path / "lp" / "history.json", history)
            folder.mark_completed("lp")
        self._time("lp", t0)
        return head

    def _detect(self, features, logits: np.ndarray, train: ImageSet, out_dir: Path, stage: str) -> DetectionResult:
        """Every detection signal and the combined clean probability (turn_backend.detect) on
        `features` of the training set and the model's `logits`, saved in `out_dir`. Computed
        by the main process; the others read it back, so all select the same samples."""
        t0 = time.time()
        if self.rt.is_main:
            self.status(stage=stage, stage_label="Scoring the labels (probes, neighbours, noise model)",
                        stage_done=0, stage_total=1)
            result = detect_label_issues(features, train.labels, train.num_classes, model_probs=softmax(logits),
                                         device=str(self.rt.device), seed=_seed(self.config, "detect", stage))
            result.save(out_dir)
            for note in result.notes:
                self.log("detect", f"{stage}: {note}")
            self.log("detect", f"{stage}: estimated noise rate {result.noise_rate:.1%}",
                     seconds=round(time.time() - t0, 2))
        self.rt.barrier()
        self._time("detect", t0)
        return DetectionResult.load(out_dir)

    def _cleanse(self, r: int, logits: np.ndarray, train: ImageSet, tau: float, features=None) -> tuple[np.ndarray, dict]:
        """Step 2-1 of round r: per-sample CE and per-class GMM (TURN), or the combined clean
        probability of turn_backend.detect (scoring "ensemble"); balanced selection at tau."""
        cfg = self.config
        t0 = time.time()
        losses = per_sample_ce(torch.from_numpy(np.asarray(logits, dtype=np.float64)),
                               torch.from_numpy(train.labels)).numpy()
        fit = fit_clean_probability(losses, train.labels, train.num_classes, seed=_seed(cfg, "gmm", r))
        fit_seconds = time.time() - t0
        clean_prob = fit.clean_prob
        self._detection = None
        if cfg.turn_option("scoring") == "ensemble":
            self._time("gmm", t0)
            self._detection = self._detect(features, logits, train, self.folder.round_dir(r), f"round {r}")
            clean_prob = self._detection.clean_prob.astype(np.float64)
            t0 = time.time()  # "detect" timed itself
        if self.held_clean is not None:  # kept or relabelled in review: a person vouched, never dropped
            clean_prob[self.held_clean] = 1.0
        balance = cfg.turn_option("balance")
        sel = select_clean(clean_prob, train.labels, train.num_classes, tau,
                           np.random.default_rng(_seed(cfg, "select", r)), balance)
        if self.held_clean is not None:  # class balancing must not drop them either
            sel.indices = np.concatenate([sel.indices, np.setdiff1d(np.flatnonzero(self.held_clean), sel.indices)])
        info = {
            "round": r, "tau": tau, "balance": balance,
            "candidates_per_class": sel.candidates_per_class.tolist(),
            "per_class": sel.per_class, "n_selected": int(len(sel.indices)),
            "n_unique": int(len(sel.unique)), "notes": fit.notes + sel.notes,
            "gmm_seconds": round(fit_seconds, 4), "scoring": cfg.turn_option("scoring"),
        }
        if self._detection is not None:
            info["noise_rate_estimate"] = self._detection.noise_rate
        if train.true_labels is not None:
            uniq = sel.unique
            info["purity"] = float((train.labels[uniq] == train.true_labels[uniq]).mean()) if len(uniq) else 0.0
            info["detection"] = detection_metrics(clean_prob <= tau, train.labels, train.true_labels)
        for note in info["notes"]:
            self.log("cleanse", note, round=r)
        if self.rt.is_main:
            d = self.folder.round_dir(r)
            d.mkdir(parents=True, exist_ok=True)
            atomic_save_npy(d / "losses.npy", losses.astype(np.float32))
            atomic_save_npy(d / "clean_prob.npy", clean_prob.astype(np.float32))
            atomic_save_npy(d / "selected.npy", sel.indices)
            atomic_write_json(d / "gmm.json", {"fits": fit.fits_as_dicts()})
        self._time("gmm", t0)
        self._clean_prob = clean_prob
        return sel.indices, info

    def _relabel(self, logits: np.ndarray, train: ImageSet, index: np.ndarray, tau: float,
                 confidence: float) -> tuple[np.ndarray, np.ndarray, dict]:
        """TURN variant: flagged samples (clean prob <= tau) that are predicted with probability
        >= `confidence` as another class join the round with the predicted label. With ensemble
        scoring the prediction is detection's suggested label (the noise-model posterior), else
        the model's softmax."""
        if self._detection is not None:
            pred, conf = self._detection.suggested_label, self._detection.suggested_confidence
        else:
            p = softmax(logits)
            pred, conf = p.argmax(1), p.max(1)
        chosen = np.flatnonzero((self._clean_prob <= tau) & (conf >= confidence) & (pred != train.labels))
        labels = train.labels.copy()
        labels[chosen] = pred[chosen]
        info: dict = {"n_relabelled": int(len(chosen))}
        if train.true_labels is not None and len(chosen):
            info["relabel_accuracy"] = float((pred[chosen] == train.true_labels[chosen]).mean())
        return np.concatenate([index, chosen]).astype(np.int64), labels, info

    def _fine_tune(self, head: dict | None, feats, train: ImageSet, test: ImageSet | None):
        cfg, folder, rt = self.config, self.folder, self.rt
        model = Classifier(self.loaded.extractor, train.num_classes)
        if head is not None:
            model.head.load_state_dict(head)
        else:
            torch.manual_seed(_seed(cfg, "head"))
            model.head.reset_parameters()
        warmup = cfg.turn_option("warmup_backbone_lr") if cfg.kind == "turn" else None
        relabel = cfg.turn_option("relabel_confidence") if cfg.kind == "turn" else None
        holdout = cfg.turn_option("holdout") if cfg.kind == "turn" else None
        self.holdout_index = np.load(folder.holdout_path) if holdout and folder.holdout_path.exists() else None
        if warmup is not None:  # two groups, so that round 1 can scale the backbone's LR alone
            params = [{"params": model.extractor.parameters()}, {"params": model.head.parameters()}]
        else:
            params = model.parameters()
        optimizer = make_optimizer(params, self.fft_hp)
        criterion = make_loss(
            method_loss(cfg.method),
            len(train), train.num_classes, cfg.gce_q,
        )
        labels = train.true_labels if cfg.method == "fft-true" else train.labels
        if cfg.method == "fft-true" and labels is None:
            raise ValueError("fft-true needs true labels; this dataset has none")
        start = 1
        if folder.checkpoint_path.exists():
            ckpt = torch.load(folder.checkpoint_path, weights_only=True, map_location="cpu")
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            if "elr_targets" in ckpt:
                criterion.targets = ckpt["elr_targets"]
            start = int(ckpt["round"]) + 1
            self.log("resume", f"resuming after round {ckpt['round']}")
        to_device(model, rt)
        ddp_model, optimizer = rt.accelerator.prepare(model, optimizer)
        for r in range(start, cfg.rounds + 1):
            info: dict = {"round": r}
            round_labels = labels
            if warmup is not None:
                optimizer.param_groups[0]["lr"] = self.fft_hp.lr * (warmup if r == 1 else 1.0)
            source = self._cleansed_round(r)
            if source == r:
                t0 = time.time()
                round_feats = None
                if r == 1:
                    # The backbone is still the frozen pre-trained one: the cached features
                    # and the LP head give exactly the model's logits, no forward pass needed.
                    logits, round_feats = head_logits(head, feats), feats
                elif cfg.turn_option("scoring") == "ensemble":  # detection needs the tuned features too
                    round_feats, logits = self._tuned_features_and_logits(
                        model, train, folder.round_dir(r) / "features.npy", f"round {r}",
                        f"Round {r}: scoring the training set")
                else:
                    logits = compute_logits(model, train, self.pre, folder.round_dir(r) / "logits.npy", rt,
                                            cfg.batch_size, self.workers,
                                            self.progress(f"round {r}", f"Round {r}: scoring the training set"),
                                            notify=self.notice(f"round {r}"))
                self._time("scoring", t0)
                index, sel_info = self._cleanse(r, logits, train, cfg.tau, round_feats)
                if r > 1 and round_feats is not None and rt.is_main:  # 4 bytes x N x D a round: not kept
                    del round_feats
                    (folder.round_dir(r) / "features.npy").unlink(missing_ok=True)
                info.update(sel_info)
                self.log("cleanse", f"round {r}: clean set of {sel_info['n_selected']} "
                         f"({sel_info['per_class']} per class)", **{k: v for k, v in sel_info.items() if k != 'notes'})
                if relabel is not None:
                    index, round_labels, rel_info = self._relabel(logits, train, index, cfg.tau, relabel)
                    info.update(rel_info)
                if holdout:
                    if self.holdout_index is None:
                        self.holdout_index = self._hold_out(train, index, holdout)
                    index = index[~np.isin(index, self.holdout_index)]
                    info["n_holdout"] = int(len(self.holdout_index))
                if rt.is_main:  # what this round trains on; rounds that do not cleanse train on it again
                    atomic_save_npy(folder.round_dir(r) / "train_index.npy", index)
                    atomic_save_npy(folder.round_dir(r) / "train_labels.npy", round_labels[index])
            elif source is not None:  # an earlier round's clean set (and its relabels), again
                index = np.load(folder.round_dir(source) / "train_index.npy")
                round_labels = labels.copy()
                round_labels[index] = np.load(folder.round_dir(source) / "train_labels.npy")
                info["clean_set_of_round"] = source
            else:
                index = np.arange(len(train))
            t0 = time.time()
            loss = fft_epoch(ddp_model, optimizer, train, index, round_labels, self.pre, rt, criterion, cfg.batch_size,
                             _seed(cfg, "fft", r), self.workers, cfg.freeze_bn_stats,
                             self.progress(f"round {r}", f"Round {r}: fine-tuning on {len(index)} samples"))
            info["train_loss"] = loss
            info["fft_seconds"] = round(time.time() - t0, 3)
            self._time("fft", t0)
            if test is not None:
                t0 = time.time()
                test_logits = compute_logits(model, test, self.pre, folder.round_dir(r) / "test_logits.npy", rt,
                                             cfg.batch_size, self.workers,
                                             self.progress(f"round {r}", f"Round {r}: testing"),
                                             notify=self.notice(f"round {r}"))
                info["test_acc"] = accuracy_from_logits(test_logits, test.labels)
                self._time("eval", t0)
            info["gpu"] = rt.gpu_memory()
            if rt.is_main:
                atomic_write_json(folder.round_dir(r) / "round.json", info)
                state = {"round": r, "model": rt.accelerator.unwrap_model(ddp_model).state_dict(),
                         "optimizer": optimizer.state_dict()}
                if hasattr(criterion, "targets"):
                    state["elr_targets"] = criterion.targets
                folder.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
                tmp = folder.checkpoint_path.with_suffix(".tmp")
                torch.save(state, tmp)
                os.replace(tmp, folder.checkpoint_path)
                folder.mark_completed(f"round-{r}")
            rt.barrier()
            self.log("round", f"round {r}/{cfg.rounds} done" +
                     (f": test accuracy {info['test_acc']:.2%}" if "test_acc" in info else ""),
                     round=r, test_acc=info.get("test_acc"), train_loss=loss)
        return rt.accelerator.unwrap_model(ddp_model)

    def _cleansed_round(self, r: int) -> int | None:
        """The round whose cleansing chooses what round r trains on (r itself when round r
        cleanses), or None when the method trains on every sample."""
        cfg = self.config
        cleansing = cfg.turn_option("cleansing") if cfg.kind == "turn" else "none"
        if cleansing == "none":
            return None
        if cleansing == "once":
            return 1
        interval = cfg.turn_option("cleanse_interval")
        return r - (r - 1) % interval

    def _hold_out(self, train: ImageSet, index: np.ndarray, fraction: float) -> np.ndarray:
        """TURN+'s validation set: a stratified `fraction` of round 1's confidently clean
        samples, kept out of training so that the final model is chosen on data it has not
        seen (cleansing.stratified_holdout). Saved with the run."""
        held = stratified_holdout(index, self._clean_prob, train.labels, train.num_classes, fraction,
                                  np.random.default_rng(_seed(self.config, "holdout")))
        if self.rt.is_main:
            self.folder.holdout_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_save_npy(self.folder.holdout_path, held)
        return held

    def _choose_final_model(self, model: Classifier, head: dict, feats, train: ImageSet, test: ImageSet | None,
                            test_feats) -> tuple[Classifier | None, dict]:
        """TURN+'s last step: the fine-tuned model, or a linear probe on the frozen features
        trained on the cleaned labels (the last round's training set), whichever is more
        accurate on the held-out clean samples. On small sets fine-tuning often does not pay;
        this decides it from the data, never from the test set (its accuracies are recorded
        beside the choice, not used). Returns (model, head): model None when the probe won."""
        folder, cfg, rt = self.folder, self.config, self.rt
        probe_path = folder.path / "choice" / "probe_head.pt"
        choice_path = folder.path / "choice" / "choice.json"
        if "choice" in folder.completed() and choice_path.exists():
            choice = read_json(choice_path)
            return (None, torch.load(probe_path, weights_only=True)) if choice["chosen"] == "probe" else (model, head)
        t0 = time.time()
        held = self.holdout_index
        if held is None or not len(held):
            self.log("choice", "no held-out samples (too few confidently clean ones): keeping the fine-tuned model")
            return model, head
        self.status(stage="choice", stage_label="Choosing the final model on held-out clean samples")
        last = folder.round_dir(self._cleansed_round(cfg.rounds))
        index = np.load(last / "train_index.npy")
        index, first = np.unique(index, return_index=True)
        labels = np.load(last / "train_labels.npy")[first]
        probe, _ = train_linear_probe(np.asarray(feats[index]), labels, train.num_classes, self.lp_hp, "ce",
                                      cfg.lp_epochs, cfg.batch_size, _seed(cfg, "probe"))
        held_logits = compute_logits(model, train.subset(held), self.pre, folder.path / "choice" / "holdout_logits.npy",
                                     rt, cfg.batch_size, self.workers, notify=self.notice("choice"))
        choice = {
            "n_holdout": int(len(held)),
            "holdout_acc_fft": accuracy_from_logits(held_logits, train.labels[held]),
            "holdout_acc_probe": accuracy_from_logits(head_logits(probe, feats[held]), train.labels[held]),
            "n_probe_train": int(len(index)),
        }
        choice["chosen"] = "probe" if choice["holdout_acc_probe"] > choice["holdout_acc_fft"] else "fft"
        if test is not None:
            choice["test_acc_probe"] = accuracy_from_logits(head_logits(probe, test_feats), test.labels)
            choice["test_acc_fft"] = read_json(folder.round_dir(cfg.rounds) / "round.json", {}).get("test_acc")
        if rt.is_main:
            probe_path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(probe, probe_path)
            atomic_write_json(choice_path, choice)
            folder.mark_completed("choice")
        self.log("choice", f"final model: {'the linear probe on the cleaned labels' if choice['chosen'] == 'probe' else 'the fine-tuned model'} "
                 f"(held-out accuracy {choice['holdout_acc_probe']:.1%} probe, {choice['holdout_acc_fft']:.1%} fine-tuned, "
                 f"{choice['n_holdout']} samples)", **choice)
        self._time("choice", t0)
        rt.barrier()
        return (None, probe) if choice["chosen"] == "probe" else (model, head)

    def _final(self, model, head, feats, train: ImageSet) -> None:
        """The final model's losses and clean probabilities: what Threshold, Review and Export use."""
        folder, cfg = self.folder, self.config
        if "final" in folder.completed():
            return
        t0 = time.time()
        d = folder.final_dir
        if model is None:
            logits = head_logits(head, feats).astype(np.float32)
            if self.rt.is_main:
                d.mkdir(parents=True, exist_ok=True)
                atomic_save_npy(d / "logits.npy", logits)
            final_feats = feats
        else:
            # the tuned features of the training set (kept: detection, maps and More like this read them)
            final_feats, logits = self._tuned_features_and_logits(model, train, d / "features.npy", "final",
                                                                  "Scoring the training set")
            if self.rt.is_main:
                atomic_save_npy(d / "logits.npy", logits.astype(np.float32))
        losses = per_sample_ce(torch.from_numpy(np.asarray(logits, dtype=np.float64)),
                               torch.from_numpy(train.labels)).numpy()
        fit = fit_clean_probability(losses, train.labels, train.num_classes, seed=_seed(cfg, "gmm", "final"))
        # every run gets the evidence (Review shows it); turn+ also flags by it
        detection = self._detect(final_feats, logits, train, d, "final")
        clean_prob = fit.clean_prob
        if cfg.kind == "turn" and cfg.turn_option("scoring") == "ensemble":
            clean_prob = detection.clean_prob.astype(np.float64)
        if self.held_clean is not None:  # decisions a person made stay made: never flagged again
            clean_prob = np.where(self.held_clean, 1.0, clean_prob)
        if self.rt.is_main:
            atomic_save_npy(d / "losses.npy", losses.astype(np.float32))
            atomic_save_npy(d / "clean_prob.npy", np.asarray(clean_prob, dtype=np.float32))
            atomic_write_json(d / "gmm.json", {"fits": fit.fits_as_dicts(), "notes": fit.notes})
            folder.mark_completed("final")
        self._time("final", t0)
        self.rt.barrier()

    def _tuned_features_and_logits(self, model: Classifier, train: ImageSet, path: Path, stage: str,
                                   label: str) -> tuple[np.ndarray, np.ndarray]:
        """The fine-tuned extractor's features of the training set (saved at `path`) and the
        model's logits computed from them: one forward pass gives both."""
        path.unlink(missing_ok=True)  # extract_features reuses a file it finds; this model is new
        feats = extract_features(model.extractor, train, self.pre, path, self.rt, self.config.batch_size,
                                 self.workers, self.progress(stage, label), notify=self.notice(stage))
        head = {k: v.detach().float().cpu() for k, v in model.head.state_dict().items()}
        return feats, head_logits(head, feats)

    def _projections(self, model, images: ImageSet) -> None:
        folder, cfg = self.folder, self.config
        if "projections" in folder.completed() or not cfg.projection_methods:
            return
        t0 = time.time()
        split = "test" if images is self.bundle.test else "train"
        if self.rt.is_main:
            rng = np.random.default_rng(_seed(cfg, "projection"))
            classes = np.arange(images.num_classes)
            if len(classes) > cfg.projection_classes:
                classes = np.sort(rng.choice(classes, cfg.projection_classes, replace=False))
            pool = np.flatnonzero(np.isin(images.labels, classes))
            subset = np.sort(rng.choice(pool, min(len(pool), cfg.projection_max_samples), replace=False))
            # "before": the pre-trained features, already cached by the features stage
            cached = np.load(self._feature_path(images, split), mmap_mode="r")
            features = {"before": np.asarray(cached[subset])}
            if model is not None:  # a linear probe leaves the features as they were
                # the final stage may have stored the tuned features of the whole training set
                tuned = folder.final_dir / "features.npy"
                if split == "train" and tuned.exists():
                    features["after"] = np.asarray(np.load(tuned, mmap_mode="r")[subset])
                else:
                    features["after"] = self._model_features(model, images.subset(subset))
            # the "before" maps are the same for every run on these features (turn demo's four)
            shared = shared_maps_dir(self._feature_path(images, split), subset, cfg.seed)
            before = before_map_files(split, cfg.projection_methods)
            reused = copy_files(before, shared, folder.path / "projections")
            if reused:
                del features["before"]
            compute_projections(folder.path / "projections", split, subset, features, cfg.projection_methods,
                                seed=cfg.seed, progress=self.progress("projection", "Embedding projections"))
            if not reused:
                copy_files(before, folder.path / "projections", shared)
            folder.mark_completed("projections")
            self.log("projection", f"projections of {len(subset)} {split} samples ready"
                     + (" (pre-trained maps from the cache)" if reused else ""), seconds=round(time.time() - t0, 2),
                     maps_from_cache=reused)
        self._time("projection", t0)
        self.rt.barrier()

    def _model_features(self, model: Classifier, images: ImageSet) -> np.ndarray:
        out = []
        model.eval()
        with torch.inference_mode():
            for x, _ in preprocessed_batches(images, self.pre, self.config.batch_size, self.rt.device):
                with self.rt.autocast():
                    out.append(model.extractor(x).float().cpu().numpy())
        return np.concatenate(out)

    def _metrics(self, train: ImageSet) -> dict:
        folder, cfg = self.folder, self.config
        rounds = folder.rounds()
        metrics: dict = {"method": cfg.method, "model": cfg.model, "n_train": len(train),
                         "n_test": len(self.bundle.test) if self.bundle.test is not None else 0}
        if cfg.kind == "lp":
            history = read_json(folder.path / "lp" / "history.json", [])
            accs = [h["test_acc"] for h in history if "test_acc" in h]
        else:
            accs = [r["test_acc"] for r in rounds if "test_acc" in r]
        choice = read_json(folder.path / "choice" / "choice.json", None)
        if accs:
            metrics["test_acc_best"] = max(accs)
            metrics["test_acc_last"] = accs[-1]
            metrics["test_acc_per_epoch"] = accs
        if choice is not None:  # the run's own final model is the one it chose
            metrics["final_model"] = choice
            if choice.get("test_acc_probe") is not None and choice["chosen"] == "probe":
                metrics["test_acc_last"] = choice["test_acc_probe"]
                metrics["test_acc_best"] = max(metrics.get("test_acc_best", 0.0), choice["test_acc_probe"])
        if cfg.kind == "turn":
            first = rounds[0] if rounds else {}
            metrics["n_clean"] = first.get("n_unique")
            metrics["clean_purity"] = first.get("purity")
            metrics["clean_per_round"] = [r.get("n_unique") for r in rounds]
            metrics["purity_per_round"] = [r.get("purity") for r in rounds]
            metrics["detection_per_round"] = [r.get("detection") for r in rounds]
        final = folder.final()
        if final is not None and train.true_labels is not None:
            metrics["final_detection"] = detection_metrics(final["clean_prob"] <= cfg.tau, train.labels,
                                                           train.true_labels)
        if train.true_labels is not None:
            metrics["noise_rate"] = float((train.labels != train.true_labels).mean())
        metrics["seconds"] = {k: round(v, 3) for k, v in self.timings.items()}
        metrics["seconds_total"] = round(sum(self.timings.values()), 3)
        if self.rt.is_main:
            atomic_write_json(folder.path / "metrics.json", metrics)
        return metrics


_stop_signalled = False  # set by the SIGTERM handler: a library may wrap StopRequested in its own error


def _install_stop_handler() -> None:
    def handler(signum, frame):
        global _stop_signalled
        _stop_signalled = True
        raise StopRequested()

    signal.signal(signal.SIGTERM, handler)


def execute_run(run_dir: str | Path) -> dict:
    """Run (or continue) the run folder `run_dir` in this process; records failures."""
    folder = RunFolder(run_dir)
    config = RunConfig.from_json(folder.config_path)
    _install_stop_handler()
    run = None
    try:
        run = TurnRun(folder.path, config)
        return run.execute()
    except BaseException as exc:
        # torch's load_state_dict, for one, re-raises the handler's StopRequested as a RuntimeError
        if isinstance(exc, StopRequested) or _stop_signalled:
            folder.set_status(state="stopped", stage_label="Stopped by the user")
            folder.log("stop", "stopped by the user; `turn resume` continues from the last completed stage")
            if isinstance(exc, StopRequested):
                raise
            raise StopRequested() from exc
        if run is None or run.rt.is_main:
            folder.set_status(state="failed", error=f"{type(exc).__name__}: {exc}")
            folder.log("error", f"{type(exc).__name__}: {exc}")
        raise


def create_run(config: RunConfig, run_dir: str | Path) -> RunFolder:
    folder = RunFolder(run_dir)
    if folder.exists():
        raise FileExistsError(f"{run_dir} already holds a run; use `turn resume {run_dir}` or another folder")
    folder.path.mkdir(parents=True, exist_ok=True)
    config.to_json(folder.config_path)
    folder.set_status(state="queued", stage="queued", stage_label="Waiting to start")
    return folder


def run_turn(config: RunConfig, run_dir: str | Path) -> dict:
    """Start a run in this process and return its metrics."""
    create_run(config, run_dir)
    return execute_run(run_dir)


def resume(run_dir: str | Path) -> dict:
    """Continue a killed or stopped run from its last completed stage."""
    folder = RunFolder(run_dir)
    if not folder.exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.json)")
    folder.log("resume", "resuming")
    return execute_run(run_dir)
