"""`turn bench --annotators`: which aggregator recovers the true labels from several simulated
annotators, and whether each ranks the annotators by their true accuracy.

Four annotators label Fashion-MNIST training images, each with a realistic profile:

- careful: every image, 5% of labels at random;
- careless: every image, 30% at random;
- confuser: every image, 40% of look-alike classes swapped for their partner
  (T-shirt/top <-> Shirt, Pullover <-> Coat, Sneaker <-> Ankle boot), 3% at random otherwise;
- half: half of the images, 10% at random.

Each aggregator of turn_backend.annotators is scored by its consensus accuracy against the
true labels (beside plain majority vote), and by the Spearman correlation of its estimated
annotator quality with the annotators' true accuracy (1: the true order). CROWDLAB gets the
out-of-fold probabilities of a linear probe on the cached pre-trained features, trained on
the majority vote.

Agreement as a detection signal: with the Dawid-Skene consensus as the given labels (as `turn
run` does), turn_backend.detect flags the wrong consensus labels once from the features alone
and once with the annotators' posterior joined in (`annotator_probs`), beside that posterior
alone as the clean probability; each is scored against
the true labels (F1 at tau 0.6, average precision, and the estimated beside the true rate of
wrong consensus labels). Writes OUT/annotators.csv, OUT/annotator_detection.csv and the
"Several annotators" section of docs/benchmarks.md.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import numpy as np
import pandas as pd

from turn_backend.annotators import AGGREGATORS, aggregate, majority_vote
from turn_backend.bench.detection import DEFAULT_DOCS, load_features, replace_section
from turn_backend.noise import default_pairs

SECTION_TITLE = "## Several annotators: consensus and annotator quality"
PROFILES = {  # name: (share of images labelled, share of labels at random, share of look-alikes swapped)
    "careful": (1.0, 0.05, 0.0),
    "careless": (1.0, 0.30, 0.0),
    "confuser": (1.0, 0.03, 0.40),
    "half": (0.5, 0.10, 0.0),
}


def simulate_annotators(true: np.ndarray, num_classes: int, pairs: dict[int, int], seed: int) -> pd.DataFrame:
    """Long-form labels (item, annotator, label) of the PROFILES annotators for true labels `true`."""
    rng = np.random.default_rng(seed)
    partner = np.array([pairs.get(c, c) for c in range(num_classes)])
    frames = []
    for name, (cover, random_share, swap_share) in PROFILES.items():
        items = np.flatnonzero(rng.random(len(true)) < cover)
        label = true[items].copy()
        swap = (rng.random(len(items)) < swap_share) & (partner[label] != label)
        label[swap] = partner[label[swap]]
        noise = ~swap & (rng.random(len(items)) < random_share)
        label[noise] = (label[noise] + rng.integers(1, num_classes, noise.sum())) % num_classes
        frames.append(pd.DataFrame({"item": items, "annotator": name, "label": label}))
    return pd.concat(frames, ignore_index=True)


DETECTION_TAU = 0.6  # the default tau


def detection_with_and_without_agreement(features: np.ndarray, consensus, true: np.ndarray, num_classes: int,
                                         seed: int) -> list[dict]:
    """Detection of the wrong consensus labels, from the features alone and with the annotators'
    posterior, and by that posterior alone: one row each (F1, precision, recall, AP at DETECTION_TAU;
    estimated and true rate)."""
    from turn_backend.bench.detection import metrics
    from turn_backend.detect import detect_label_issues

    wrong = consensus.label != true
    rows = []
    for signal, annotator_probs in (("features only", None), ("with agreement", consensus.probs)):
        result = detect_label_issues(features, consensus.label, num_classes, annotator_probs=annotator_probs,
                                     seed=seed)
        rows.append({"seed": seed, "detection": signal, **metrics(result.flagged(DETECTION_TAU), result.clean_prob,
                                                                   wrong),
                     "estimated_rate": result.noise_rate, "true_rate": float(wrong.mean())})
    # the annotators alone: their posterior probability of the consensus as the clean probability
    alone = consensus.probs[np.arange(len(true)), consensus.label]
    rows.append({"seed": seed, "detection": "agreement only", **metrics(alone <= DETECTION_TAU, alone, wrong),
                 "estimated_rate": float(1 - alone.mean()), "true_rate": float(wrong.mean())})
    return rows


def run(features: np.ndarray, true: np.ndarray, num_classes: int, pairs: dict[int, int], seeds: list[int],
        log) -> tuple[pd.DataFrame, pd.DataFrame]:
    from scipy.stats import spearmanr

    from turn_backend.detect.signals import out_of_fold_probabilities, reduce_features

    reduced = reduce_features(features, 256, 0)
    rows, detection = [], []
    for seed in seeds:
        long = simulate_annotators(true, num_classes, pairs, seed)
        true_acc = (long["label"].to_numpy() == true[long["item"].to_numpy()])
        true_quality = pd.Series(true_acc).groupby(long["annotator"].to_numpy()).mean()
        majority = majority_vote(long, len(true), num_classes).argmax(1)
        pred_probs = out_of_fold_probabilities(reduced, majority, num_classes, seed=seed)
        for method in AGGREGATORS:
            t0 = time.time()
            consensus = aggregate(long, len(true), num_classes, method, pred_probs=pred_probs, seed=seed)
            seconds = time.time() - t0
            estimated = consensus.annotators.set_index("annotator")["quality"].reindex(true_quality.index)
            rows.append({"seed": seed, "method": method, "accuracy": float((consensus.label == true).mean()),
                         "majority_accuracy": float((majority == true).mean()),
                         "quality_spearman": float(spearmanr(estimated, true_quality).statistic),
                         "true_order": " > ".join(true_quality.sort_values(ascending=False).index),
                         "estimated_order": " > ".join(estimated.sort_values(ascending=False).index),
                         "seconds": seconds})
            log(f"seed {seed} {method}: consensus accuracy {rows[-1]['accuracy']:.1%}, quality Spearman "
                f"{rows[-1]['quality_spearman']:.2f} ({seconds:.1f} s)")
            if method == "dawid-skene":
                detection += detection_with_and_without_agreement(reduced, consensus, true, num_classes, seed)
                log(f"seed {seed} detection F1: " + ", ".join(f"{r['detection']} {r['f1']:.2f}"
                                                             for r in detection[-2:]))
    return pd.DataFrame(rows), pd.DataFrame(detection)


def section(df: pd.DataFrame, detection: pd.DataFrame, n_items: int, command: str, wall: float) -> str:
    out = [SECTION_TITLE, "",
           f"Generated by `{command}` on {dt.date.today().isoformat()}; {wall / 60:.1f} min in all. "
           f"{n_items:,} Fashion-MNIST training images, four simulated annotators (careful: 5% of labels at random; "
           "careless: 30%; confuser: 40% of look-alike classes swapped with their partner; half: half the images, "
           "10% at random). Consensus accuracy against the true labels, and the Spearman correlation of each "
           "aggregator's estimated annotator quality with their true accuracy (1.00: the true order). Means over "
           f"{df.seed.nunique()} seed(s). CROWDLAB uses a linear probe's out-of-fold probabilities on the "
           "pre-trained features (EfficientNet-Lite0, 48 px), trained on the majority vote.", "",
           "| aggregator | consensus accuracy | vs majority vote | quality Spearman | estimated order | seconds |",
           "| --- | --- | --- | --- | --- | --- |"]
    for method, g in df.groupby("method", sort=False):
        gain = 100 * (g.accuracy - g.majority_accuracy).mean()
        out.append(f"| {method} | {100 * g.accuracy.mean():.1f} | {gain:+.1f} | {g.quality_spearman.mean():.2f} | "
                   f"{g.estimated_order.iloc[0]} | {g.seconds.mean():.1f} |")
    out += ["", f"True order of the annotators: {df.true_order.iloc[0]}.", "",
            "Their agreement as a detection signal: the Dawid-Skene consensus as the given labels (as `turn run` "
            "takes them), its wrong labels flagged by turn_backend.detect from the pre-trained features alone "
            "(out-of-fold probe and k-NN votes, no fine-tuned model), with the annotators' posterior joined in, and "
            "by the annotators' posterior alone. "
            f"F1, precision and recall at tau {DETECTION_TAU}, average precision of the clean probability, and "
            "the estimated rate of wrong consensus labels beside the true one (calibration).", "",
            "| detection | F1 | precision | recall | AP | estimated wrong | true wrong |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for signal, g in detection.groupby("detection", sort=False):
        out.append(f"| {signal} | {g.f1.mean():.2f} | {g.precision.mean():.2f} | {g.recall.mean():.2f} | "
                   f"{g.ap.mean():.2f} | {100 * g.estimated_rate.mean():.1f}% | {100 * g.true_rate.mean():.1f}% |")
    return "\n".join(out) + "\n"


def main(args) -> int:
    import torch

    from turn_backend.bench.machine import choose_threads, progress_log
    from turn_backend.engine import Runtime

    t_start = time.time()
    out = Path(args.out or "runs/bench-annotators")
    out.mkdir(parents=True, exist_ok=True)
    threads, _ = choose_threads(getattr(args, "threads", None))
    torch.set_num_threads(threads)

    log = progress_log(args.quiet)

    rt = Runtime(getattr(args, "device", "cpu") or "cpu", "no")
    train, feats, _ = load_features(args.n_train or 10_000, args.image_size or 48, args.model, None, log, rt)
    df, detection = run(feats, train.true_labels, train.num_classes, default_pairs(train.class_names),
                        list(range(args.seeds or 3)), log)
    df.to_csv(out / "annotators.csv", index=False)
    detection.to_csv(out / "annotator_detection.csv", index=False)
    command = "turn bench --annotators" + "".join(
        f" {flag} {value}" for flag, value in (("--n-train", args.n_train), ("--seeds", args.seeds)) if value)
    text = section(df, detection, len(train), command, time.time() - t_start)
    (out / "annotators.md").write_text(text)
    print(text)
    if not args.no_docs:
        docs = Path(args.docs) if args.docs else DEFAULT_DOCS
        replace_section(docs, SECTION_TITLE + "\n", text)
        log(f"wrote the \"{SECTION_TITLE[3:]}\" section of {docs}")
    return 0
