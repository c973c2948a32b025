"""Stage "choice": the run's final classifier, where a method's options ask for more than the
fine-tuned model. Both options start from a linear probe on the frozen pre-trained features,
trained on the cleaned labels (the last round's training set, relabels included):

- "probe_ensemble" (TURN+'s default): the final classifier averages the fine-tuned model's
  class probabilities with the probe's. The probe cannot memorise noise the way fine-tuning
  can, and the fine-tuned model adapts the features where the probe cannot.
- "holdout" (off by default; it takes precedence): whichever of the fine-tuned model and the
  probe is more accurate on the held-out clean samples. On small sets fine-tuning often does
  not pay; this decides it from the data.

The test set never decides anything here: its accuracies are recorded beside the result.
The stage leaves ctx.model the fine-tuned model (the final stage's flags and maps read its
features) unless the held-out choice picks the probe.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from turn_backend.detect.signals import softmax
from turn_backend.engine import accuracy_from_logits, compute_logits, head_logits, train_linear_probe
from turn_backend.io import atomic_write_json, read_json
from turn_backend.runfolder import RunFolder
from turn_backend.stages.context import RunContext, stage_seed
from turn_backend.stages.rounds import cleansed_round


def choose_final_model(ctx: RunContext) -> None:
    folder, cfg = ctx.folder, ctx.config
    holdout, ensemble = cfg.turn_option("holdout"), cfg.turn_option("probe_ensemble")
    if not (holdout or ensemble):
        return
    probe_path, choice_path = folder.choice_dir / folder.PROBE_HEAD, folder.choice_dir / folder.CHOICE
    if ctx.stage_done("choice") and choice_path.exists():
        if read_json(choice_path)["chosen"] == "probe":
            ctx.model, ctx.head = None, torch.load(probe_path, weights_only=True)
        return
    t0 = time.time()
    if holdout:
        choice, probe = _held_out_choice(ctx)
    else:
        choice, probe = _probe_ensemble(ctx)
    if choice is None:
        return
    if ctx.rt.is_main:
        probe_path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(probe, probe_path)
        atomic_write_json(choice_path, choice)
        folder.mark_completed("choice")
    ctx.add_time("choice", t0)
    ctx.rt.barrier()
    if choice["chosen"] == "probe":
        ctx.model, ctx.head = None, probe


def final_test_accuracy(choice: dict) -> float | None:
    """The test accuracy of the classifier a choice.json says the run ends with ("fft", "probe"
    or "ensemble"); None where the run had no test set."""
    return choice.get(f"test_acc_{choice.get('chosen')}")


def cleaned_label_probe(ctx: RunContext) -> tuple[dict, int]:
    """A CE linear probe on the frozen pre-trained features of the last round's training set,
    with that round's labels (relabels included; each sample once); and how many it saw."""
    cfg = ctx.config
    last = ctx.folder.round_dir(cleansed_round(ctx, cfg.rounds))
    index, first = np.unique(np.load(last / RunFolder.TRAIN_INDEX), return_index=True)
    labels = np.load(last / RunFolder.TRAIN_LABELS)[first]
    probe, _ = train_linear_probe(np.asarray(ctx.feats[index]), labels, ctx.train.num_classes, ctx.lp_hp, "ce",
                                  cfg.lp_epochs, cfg.batch_size, stage_seed(cfg, "probe"))
    return probe, int(len(index))


def ensemble_probabilities(fine_tuned_logits: np.ndarray, probe_logits: np.ndarray) -> np.ndarray:
    """(N, C) the final classifier of probe_ensemble: the mean of the two models' softmax."""
    return (softmax(fine_tuned_logits) + softmax(probe_logits)) / 2


def _probe_ensemble(ctx: RunContext) -> tuple[dict, dict]:
    cfg, test = ctx.config, ctx.test
    ctx.status(stage="choice", stage_label="Training the linear probe of the final classifier")
    probe, n_probe = cleaned_label_probe(ctx)
    choice: dict = {"chosen": "ensemble", "n_probe_train": n_probe}
    if test is not None:
        tuned = np.load(ctx.folder.round_dir(cfg.rounds) / RunFolder.TEST_LOGITS)
        probe_logits = head_logits(probe, ctx.test_feats)
        choice["test_acc_fft"] = accuracy_from_logits(tuned, test.labels)
        choice["test_acc_probe"] = accuracy_from_logits(probe_logits, test.labels)
        choice["test_acc_ensemble"] = accuracy_from_logits(ensemble_probabilities(tuned, probe_logits), test.labels)
    ctx.log("choice", "final classifier: the fine-tuned model averaged with a linear probe on the cleaned labels "
            f"({n_probe} samples)" + (f", test accuracy {choice['test_acc_ensemble']:.1%} (fine-tuned alone "
                                      f"{choice['test_acc_fft']:.1%}, probe alone {choice['test_acc_probe']:.1%})"
                                      if test is not None else ""), **choice)
    return choice, probe


def _held_out_choice(ctx: RunContext) -> tuple[dict | None, dict | None]:
    folder, cfg, rt, train, test, feats = ctx.folder, ctx.config, ctx.rt, ctx.train, ctx.test, ctx.feats
    held = ctx.holdout_index
    if held is None or not len(held):
        ctx.log("choice", "no held-out samples (too few confidently clean ones): keeping the fine-tuned model")
        return None, None
    ctx.status(stage="choice", stage_label="Choosing the final model on held-out clean samples")
    probe, n_probe = cleaned_label_probe(ctx)
    held_logits = compute_logits(ctx.model, train.subset(held), ctx.pre,
                                 folder.choice_dir / folder.HOLDOUT_LOGITS, rt, cfg.batch_size, ctx.workers,
                                 notify=ctx.notice("choice"))
    choice = {
        "n_holdout": int(len(held)),
        "holdout_acc_fft": accuracy_from_logits(held_logits, train.labels[held]),
        "holdout_acc_probe": accuracy_from_logits(head_logits(probe, feats[held]), train.labels[held]),
        "n_probe_train": n_probe,
    }
    choice["chosen"] = "probe" if choice["holdout_acc_probe"] > choice["holdout_acc_fft"] else "fft"
    if test is not None:
        choice["test_acc_probe"] = accuracy_from_logits(head_logits(probe, ctx.test_feats), test.labels)
        choice["test_acc_fft"] = folder.round_info(cfg.rounds).get("test_acc")
    chosen = "the linear probe on the cleaned labels" if choice["chosen"] == "probe" else "the fine-tuned model"
    ctx.log("choice", f"final model: {chosen} "
            f"(held-out accuracy {choice['holdout_acc_probe']:.1%} probe, {choice['holdout_acc_fft']:.1%} fine-tuned, "
            f"{choice['n_holdout']} samples)", **choice)
    return choice, probe
