"""Stage "choice" (where the "holdout" option is set; off by default): the fine-tuned model, or a
linear probe on the frozen features trained on the cleaned labels (the last round's training
set), whichever is more accurate on the held-out clean samples. On small sets fine-tuning
often does not pay; this decides it from the data, never from the test set (its accuracies
are recorded beside the choice, not used)."""

from __future__ import annotations

import time

import numpy as np
import torch

from turn_backend.engine import accuracy_from_logits, compute_logits, head_logits, train_linear_probe
from turn_backend.runfolder import atomic_write_json, read_json
from turn_backend.stages.context import RunContext, stage_seed
from turn_backend.stages.rounds import cleansed_round


def choose_final_model(ctx: RunContext) -> None:
    """Leaves ctx.model None and ctx.head the probe's when the probe wins."""
    folder, cfg, rt, train, test, feats = ctx.folder, ctx.config, ctx.rt, ctx.train, ctx.test, ctx.feats
    if not cfg.turn_option("holdout"):
        return
    probe_path = folder.path / "choice" / "probe_head.pt"
    choice_path = folder.path / "choice" / "choice.json"
    if "choice" in folder.completed() and choice_path.exists():
        if read_json(choice_path)["chosen"] == "probe":
            ctx.model, ctx.head = None, torch.load(probe_path, weights_only=True)
        return
    t0 = time.time()
    held = ctx.holdout_index
    if held is None or not len(held):
        ctx.log("choice", "no held-out samples (too few confidently clean ones): keeping the fine-tuned model")
        return
    ctx.status(stage="choice", stage_label="Choosing the final model on held-out clean samples")
    last = folder.round_dir(cleansed_round(ctx, cfg.rounds))
    index = np.load(last / "train_index.npy")
    index, first = np.unique(index, return_index=True)
    labels = np.load(last / "train_labels.npy")[first]
    probe, _ = train_linear_probe(np.asarray(feats[index]), labels, train.num_classes, ctx.lp_hp, "ce",
                                  cfg.lp_epochs, cfg.batch_size, stage_seed(cfg, "probe"))
    held_logits = compute_logits(ctx.model, train.subset(held), ctx.pre,
                                 folder.path / "choice" / "holdout_logits.npy", rt, cfg.batch_size, ctx.workers,
                                 notify=ctx.notice("choice"))
    choice = {
        "n_holdout": int(len(held)),
        "holdout_acc_fft": accuracy_from_logits(held_logits, train.labels[held]),
        "holdout_acc_probe": accuracy_from_logits(head_logits(probe, feats[held]), train.labels[held]),
        "n_probe_train": int(len(index)),
    }
    choice["chosen"] = "probe" if choice["holdout_acc_probe"] > choice["holdout_acc_fft"] else "fft"
    if test is not None:
        choice["test_acc_probe"] = accuracy_from_logits(head_logits(probe, ctx.test_feats), test.labels)
        choice["test_acc_fft"] = read_json(folder.round_dir(cfg.rounds) / "round.json", {}).get("test_acc")
    if rt.is_main:
        probe_path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(probe, probe_path)
        atomic_write_json(choice_path, choice)
        folder.mark_completed("choice")
    ctx.log("choice", f"final model: {'the linear probe on the cleaned labels' if choice['chosen'] == 'probe' else 'the fine-tuned model'} "
            f"(held-out accuracy {choice['holdout_acc_probe']:.1%} probe, {choice['holdout_acc_fft']:.1%} fine-tuned, "
            f"{choice['n_holdout']} samples)", **choice)
    ctx.add_time("choice", t0)
    rt.barrier()
    if choice["chosen"] == "probe":
        ctx.model, ctx.head = None, probe
