"""Stage "rounds": fine-tuning rounds. Each round of a method that cleanses first scores the
training set, selects the samples it trusts (TURN's step 2-1: per-class GMM on the losses,
or the combined detection score), relabels the confidently mislabelled, holds out the
"holdout" option's validation samples, then fine-tunes the whole model one epoch (step 2-2). Methods that do not
cleanse fine-tune on every sample. Where a round's model fails the detection's reliability check (a fine-tuning
that diverged), the round trains on the previous round's clean set again instead of one its flags would pick at
random. A checkpoint after each round makes the stage resumable.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from turn_backend.cleansing import detection_metrics, fit_clean_probability, select_clean, stratified_holdout
from turn_backend.detect import DetectionResult
from turn_backend.detect.signals import softmax
from turn_backend.engine import accuracy_from_logits, compute_logits, fft_epoch, head_logits, make_optimizer, to_device
from turn_backend.io import atomic_save_npy, atomic_write_json
from turn_backend.losses import make_loss, per_sample_ce
from turn_backend.models.core import Classifier
from turn_backend.runfolder import RunFolder
from turn_backend.stages.context import RunContext, stage_seed
from turn_backend.stages.scoring import detect, tuned_features_and_logits


@dataclass
class Cleansing:
    """One round's selection: what it trains on, what it recorded, and the scores behind it."""

    index: np.ndarray  # the selected samples (class-balanced: may repeat)
    info: dict  # recorded in the round's round.json
    clean_prob: np.ndarray
    detection: DetectionResult | None  # with "ensemble" scoring


def cleansed_round(ctx: RunContext, r: int) -> int | None:
    """The round whose cleansing chooses what round r trains on (r itself when round r
    cleanses), or None when the method trains on every sample."""
    cleansing = ctx.config.turn_option("cleansing") or "none"
    if cleansing == "none":
        return None
    if cleansing == "once":
        return 1
    interval = ctx.config.turn_option("cleanse_interval")
    return r - (r - 1) % interval


def round_lr_factor(decay: str | None, r: int, rounds: int) -> float:
    """The fine-tuning LR of round r (1..rounds) as a share of the model's LR."""
    if decay == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * (r - 1) / max(1, rounds)))
    return 1.0


def fine_tune(ctx: RunContext) -> None:
    cfg, folder, rt, train, test = ctx.config, ctx.folder, ctx.rt, ctx.train, ctx.test
    head = ctx.head
    model = Classifier(ctx.loaded.extractor, train.num_classes)
    if head is not None:
        model.head.load_state_dict(head)
    else:
        torch.manual_seed(stage_seed(cfg, "head"))
        model.head.reset_parameters()
    warmup = cfg.turn_option("warmup_backbone_lr")
    relabel = cfg.turn_option("relabel_confidence")
    holdout = cfg.turn_option("holdout")
    ctx.holdout_index = np.load(folder.holdout_path) if holdout and folder.holdout_path.exists() else None
    if warmup is not None:  # two groups, so that round 1 can scale the backbone's LR alone
        params = [{"params": model.extractor.parameters()}, {"params": model.head.parameters()}]
    else:
        params = model.parameters()
    optimizer = make_optimizer(params, ctx.fft_hp)
    criterion = make_loss(ctx.method.loss, len(train), train.num_classes, cfg.gce_q)
    labels = train.true_labels if ctx.method.trains_on_true_labels else train.labels
    if labels is None:
        raise ValueError(f"{cfg.method} needs true labels; this dataset has none")
    start = 1
    if folder.checkpoint_path.exists():
        ckpt = torch.load(folder.checkpoint_path, weights_only=True, map_location="cpu")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if "elr_targets" in ckpt:
            criterion.targets = ckpt["elr_targets"]
        start = int(ckpt["round"]) + 1
        ctx.log("resume", f"resuming after round {ckpt['round']}")
    to_device(model, rt, ctx.pre.image_size)
    ddp_model, optimizer = rt.accelerator.prepare(model, optimizer)
    for r in range(start, cfg.rounds + 1):
        round_t0 = time.time()
        info: dict = {"round": r}
        round_labels = labels
        decay = round_lr_factor(cfg.turn_option("lr_decay"), r, cfg.rounds)
        for k, group in enumerate(optimizer.param_groups):  # group 0 is the backbone where there are two
            group["lr"] = ctx.fft_hp.lr * decay * (warmup if warmup is not None and r == 1 and k == 0 else 1.0)
        source = cleansed_round(ctx, r)
        if source == r:
            t0 = time.time()
            round_feats = None
            if r == 1:
                # The backbone is still the frozen pre-trained one: the cached features
                # and the LP head give exactly the model's logits, no forward pass needed.
                logits, round_feats = head_logits(head, ctx.feats), ctx.feats
            elif cfg.turn_option("scoring") == "ensemble":  # detection needs the tuned features too
                round_feats, logits = tuned_features_and_logits(
                    ctx, model, folder.round_dir(r) / folder.FEATURES, f"round {r}",
                    f"Round {r}: scoring the training set")
            else:
                logits = compute_logits(model, train, ctx.pre, folder.round_dir(r) / folder.LOGITS, rt,
                                        cfg.batch_size, ctx.workers,
                                        ctx.progress(f"round {r}", f"Round {r}: scoring the training set"),
                                        notify=ctx.notice(f"round {r}"))
            ctx.add_time("scoring", t0)
            cleansing = cleanse(ctx, r, logits, round_feats)
            if r > 1 and round_feats is not None and rt.is_main:  # 4 bytes x N x D a round: not kept
                del round_feats
                (folder.round_dir(r) / folder.FEATURES).unlink(missing_ok=True)
            index, sel_info = cleansing.index, cleansing.info
            info.update(sel_info)
            previous = cleansed_round(ctx, r - 1) if r > 1 else None
            if previous is not None and not judges_labels(cleansing):
                # A model that cannot judge the labels (a fine-tuning that diverged) flags them at random:
                # its selection and relabels would replace a good clean set with noise.
                index, round_labels = _clean_set_of(folder, previous, labels)
                info["clean_set_of_round"] = previous
                ctx.log("cleanse", f"round {r}: the fine-tuned model cannot judge the labels "
                        f"({'; '.join(cleansing.detection.reliability['reasons'])}); training on the clean set "
                        f"of round {previous} again", round=r)
            else:
                ctx.log("cleanse", f"round {r}: clean set of {sel_info['n_selected']} ({sel_info['per_class']} per "
                        "class)", **{k: v for k, v in sel_info.items() if k != 'notes'})
                if relabel is not None:
                    index, round_labels, rel_info = relabel_flagged(ctx, cleansing, logits, relabel)
                    info.update(rel_info)
                if holdout:
                    if ctx.holdout_index is None:
                        ctx.holdout_index = hold_out(ctx, index, cleansing.clean_prob, holdout)
                    index = index[~np.isin(index, ctx.holdout_index)]
                    info["n_holdout"] = int(len(ctx.holdout_index))
            if rt.is_main:  # what this round trains on; rounds that do not cleanse train on it again
                atomic_save_npy(folder.round_dir(r) / folder.TRAIN_INDEX, index)
                atomic_save_npy(folder.round_dir(r) / folder.TRAIN_LABELS, round_labels[index])
        elif source is not None:  # an earlier round's clean set (and its relabels), again
            index, round_labels = _clean_set_of(folder, source, labels)
            info["clean_set_of_round"] = source
        else:
            index = np.arange(len(train))
        t0 = time.time()
        loss = fft_epoch(ddp_model, optimizer, train, index, round_labels, ctx.pre, rt, criterion, cfg.batch_size,
                         stage_seed(cfg, "fft", r), ctx.workers, cfg.freeze_bn_stats,
                         ctx.progress(f"round {r}", f"Round {r}: fine-tuning on {len(index)} samples"))
        info["train_loss"] = loss
        info["fft_seconds"] = round(time.time() - t0, 3)
        ctx.add_time("fft", t0)
        if test is not None:
            t0 = time.time()
            test_logits = compute_logits(model, test, ctx.pre, folder.round_dir(r) / folder.TEST_LOGITS, rt,
                                         cfg.batch_size, ctx.workers,
                                         ctx.progress(f"round {r}", f"Round {r}: testing"),
                                         notify=ctx.notice(f"round {r}"))
            info["test_acc"] = accuracy_from_logits(test_logits, test.labels)
            ctx.add_time("eval", t0)
        info["gpu"] = rt.gpu_memory()
        info["seconds"] = round(time.time() - round_t0, 3)  # the whole round (turn status: estimate vs actual)
        if rt.is_main:
            atomic_write_json(folder.round_dir(r) / folder.ROUND, info)
            _save_checkpoint(ctx, r, ddp_model, optimizer, criterion)
            folder.mark_completed(f"round-{r}")
        rt.barrier()
        ctx.log("round", f"round {r}/{cfg.rounds} done" +
                (f": test accuracy {info['test_acc']:.2%}" if "test_acc" in info else ""),
                round=r, test_acc=info.get("test_acc"), train_loss=loss)
    ctx.model = rt.accelerator.unwrap_model(ddp_model)


def judges_labels(cleansing: Cleansing) -> bool:
    """Whether the model behind a round's selection can judge the labels: its detection's
    reliability check (`detect.estimates.judge_reliability`) passed, or the round scored by
    TURN's GMM alone, which has no such check."""
    return cleansing.detection is None or bool(cleansing.detection.reliability.get("reliable", True))


def _clean_set_of(folder: RunFolder, r: int, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index, labels): what round r trained on, its relabels applied to a copy of `labels`."""
    index = np.load(folder.round_dir(r) / folder.TRAIN_INDEX)
    round_labels = labels.copy()
    round_labels[index] = np.load(folder.round_dir(r) / folder.TRAIN_LABELS)
    return index, round_labels


def _save_checkpoint(ctx: RunContext, r: int, ddp_model, optimizer, criterion) -> None:
    """The model, optimiser and ELR targets after round r: what a resumed run continues from."""
    path = ctx.folder.checkpoint_path
    state = {"round": r, "model": ctx.rt.accelerator.unwrap_model(ddp_model).state_dict(),
             "optimizer": optimizer.state_dict()}
    if hasattr(criterion, "targets"):
        state["elr_targets"] = criterion.targets
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def cleanse(ctx: RunContext, r: int, logits: np.ndarray, features=None) -> Cleansing:
    """Step 2-1 of round r: per-sample CE and per-class GMM (TURN), or the combined clean
    probability of turn_backend.detect (scoring "ensemble"); balanced selection at tau."""
    cfg, train, tau = ctx.config, ctx.train, ctx.config.tau
    t0 = time.time()
    losses = per_sample_ce(torch.from_numpy(np.asarray(logits, dtype=np.float64)),
                           torch.from_numpy(train.labels)).numpy()
    fit = fit_clean_probability(losses, train.labels, train.num_classes, seed=stage_seed(cfg, "gmm", r))
    fit_seconds = time.time() - t0
    clean_prob = fit.clean_prob
    detection = None
    if cfg.turn_option("scoring") == "ensemble":
        ctx.add_time("gmm", t0)
        detection = detect(ctx, features, logits, ctx.folder.round_dir(r), f"round {r}", fit.clean_prob)
        clean_prob = detection.clean_prob.astype(np.float64)
        t0 = time.time()  # "detect" timed itself
    if ctx.held_clean is not None:  # kept or relabelled in review: a person vouched, never dropped
        clean_prob[ctx.held_clean] = 1.0
    balance = cfg.turn_option("balance")
    sel = select_clean(clean_prob, train.labels, train.num_classes, tau,
                       np.random.default_rng(stage_seed(cfg, "select", r)), balance)
    if ctx.held_clean is not None:  # class balancing must not drop them either
        sel.indices = np.concatenate([sel.indices, np.setdiff1d(np.flatnonzero(ctx.held_clean), sel.indices)])
    info = {
        "round": r, "tau": tau, "balance": balance,
        "candidates_per_class": sel.candidates_per_class.tolist(),
        "per_class": sel.per_class, "n_selected": int(len(sel.indices)),
        "n_unique": int(len(sel.unique)), "notes": fit.notes + sel.notes,
        "gmm_seconds": round(fit_seconds, 4), "scoring": cfg.turn_option("scoring"),
    }
    if detection is not None:
        info["noise_rate_estimate"] = detection.noise_rate
    if train.true_labels is not None:
        uniq = sel.unique
        info["purity"] = float((train.labels[uniq] == train.true_labels[uniq]).mean()) if len(uniq) else 0.0
        info["detection"] = detection_metrics(clean_prob <= tau, train.labels, train.true_labels)
    for note in info["notes"]:
        ctx.log("cleanse", note, round=r)
    if ctx.rt.is_main:
        d = ctx.folder.round_dir(r)
        d.mkdir(parents=True, exist_ok=True)
        atomic_save_npy(d / RunFolder.LOSSES, losses.astype(np.float32))
        atomic_save_npy(d / RunFolder.CLEAN_PROB, clean_prob.astype(np.float32))
        atomic_save_npy(d / RunFolder.SELECTED, sel.indices)
        atomic_write_json(d / RunFolder.GMM, {"fits": fit.fits_as_dicts()})
    ctx.add_time("gmm", t0)
    return Cleansing(sel.indices, info, clean_prob, detection)


def relabel_flagged(ctx: RunContext, cleansing: Cleansing, logits: np.ndarray,
                    confidence: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """TURN variant: flagged samples (clean prob <= tau) that are predicted with probability
    >= `confidence` as another class join the round with the predicted label. With ensemble
    scoring the prediction is detection's suggested label (the noise-model posterior), else
    the model's softmax. Returns the round's index, its labels and what to record."""
    train = ctx.train
    if cleansing.detection is not None:
        pred, conf = cleansing.detection.suggested_label, cleansing.detection.suggested_confidence
    else:
        p = softmax(logits)
        pred, conf = p.argmax(1), p.max(1)
    chosen = np.flatnonzero((cleansing.clean_prob <= ctx.config.tau) & (conf >= confidence) & (pred != train.labels))
    labels = train.labels.copy()
    labels[chosen] = pred[chosen]
    info: dict = {"n_relabelled": int(len(chosen))}
    if train.true_labels is not None and len(chosen):
        info["relabel_accuracy"] = float((pred[chosen] == train.true_labels[chosen]).mean())
    return np.concatenate([cleansing.index, chosen]).astype(np.int64), labels, info


def hold_out(ctx: RunContext, index: np.ndarray, clean_prob: np.ndarray, fraction: float) -> np.ndarray:
    """The "holdout" option's validation set: a stratified `fraction` of round 1's confidently
    clean samples (of `index`, what the round would train on), kept out of training so that the
    final model is chosen on data it has not seen (cleansing.stratified_holdout). Saved with the run."""
    train = ctx.train
    held = stratified_holdout(index, clean_prob, train.labels, train.num_classes, fraction,
                              np.random.default_rng(stage_seed(ctx.config, "holdout")))
    if ctx.rt.is_main:
        ctx.folder.holdout_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_npy(ctx.folder.holdout_path, held)
    return held
