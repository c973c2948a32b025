"""Stage "metrics": the run's summary, metrics.json (accuracies, clean sets, detection, timings)."""

from __future__ import annotations

from turn_backend.cleansing import detection_metrics
from turn_backend.detect.estimates import summarise_flags
from turn_backend.io import atomic_write_json
from turn_backend.stages.choice import final_test_accuracy
from turn_backend.stages.context import RunContext
from turn_backend.stages.given import given_summary


def summarise(ctx: RunContext) -> None:
    folder, cfg, train, kind = ctx.folder, ctx.config, ctx.train, ctx.method.kind
    rounds = folder.rounds()
    metrics: dict = {"method": cfg.method, "model": cfg.model, "n_train": len(train),
                     "n_test": len(ctx.test) if ctx.test is not None else 0}
    if kind == "lp":
        history = folder.lp_history()
        accs = [h["test_acc"] for h in history if "test_acc" in h]
    else:
        accs = [r["test_acc"] for r in rounds if "test_acc" in r]
    choice = folder.choice()
    if accs:
        metrics["test_acc_best"] = max(accs)
        metrics["test_acc_last"] = accs[-1]
        metrics["test_acc_per_epoch"] = accs
    if choice is not None:  # the run ends with the classifier the choice stage made
        metrics["final_model"] = choice
        final_acc = final_test_accuracy(choice)  # "fft": the last round's own accuracy again
        if final_acc is not None:
            metrics["test_acc_last"] = final_acc
            metrics["test_acc_best"] = max(metrics.get("test_acc_best", 0.0), final_acc)
    if kind == "turn":
        first = rounds[0] if rounds else {}
        metrics["n_clean"] = first.get("n_unique")
        metrics["clean_purity"] = first.get("purity")
        metrics["clean_per_round"] = [r.get("n_unique") for r in rounds]
        metrics["purity_per_round"] = [r.get("purity") for r in rounds]
        metrics["detection_per_round"] = [r.get("detection") for r in rounds]
    final = folder.final()
    if final is not None:
        # the combined clean probability is the calibrated one; a run that flags by TURN's GMM
        # still counts its expected wrong labels with it
        detection = folder.load_detection(folder.final_dir)
        metrics.update(summarise_flags(
            final["clean_prob"], cfg.tau, calibrated=None if detection is None else detection.clean_prob,
            reliability=None if detection is None else detection.reliability))
    if final is not None and train.true_labels is not None:
        metrics["final_detection"] = detection_metrics(final["clean_prob"] <= cfg.tau, train.labels,
                                                       train.true_labels)
    if train.true_labels is not None:
        metrics["noise_rate"] = float((train.labels != train.true_labels).mean())
    metrics.update(given_summary(ctx))
    metrics["seconds"] = {k: round(v, 3) for k, v in ctx.timings.items()}
    metrics["seconds_total"] = round(sum(ctx.timings.values()), 3)
    if ctx.rt.is_main:
        atomic_write_json(folder.metrics_path, metrics)
    ctx.metrics = metrics
