"""`turn bench --detection`: how well each signal finds the wrong labels, no fine-tuning.

On cached pre-trained features (Fashion-MNIST, EfficientNet-Lite0 at 48 px by default) and
each noise setting x seed: TURN's linear probe (GCE), then every signal of turn_backend.detect
and the combined clean probability. Each is scored against the true labels:

- F1 / precision / recall of its flagged set at its default decision: clean probability
  <= tau (0.6) for the GMMs and the combination, cleanlab's own `find_label_issues` on the
  out-of-fold probabilities, and "the k-NN vote's majority is another class" for k-NN;
- AUROC and average precision of its score (ranking the wrong labels first).

Also a small two-class set (T-shirt/top vs Shirt, the look-alike pair, a few hundred
images), since people audit small sets too. Writes OUT/detection.csv and the "Detection"
section of docs/benchmarks.md.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from turn_backend.bench.grid import parse_setting
from turn_backend.bench.machine import choose_threads, machine_info, progress_log
from turn_backend.data.demo import load_demo
from turn_backend.noise import apply_noise

SECTION_TITLE = "## Detection: which labels are wrong"
DEFAULT_DOCS = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"
SETTINGS = ["sym20", "sym60", "asym40", "inst40"]
SMALL_SETTINGS = ["sym20", "sym40"]
SMALL_CLASSES = (0, 6)  # T-shirt/top, Shirt
REVIEW_BUDGET = 100  # a simulated review: the 100 least probably clean samples and a spot check of 100
REVIEW_FALLBACK_TAU = 0.6  # where the recalibrated estimates suggest no tau
CHANCE_DRAWS = 200  # outcome draws behind the ECE a calibrated probability shows by chance
SIGNALS = ["gmm_lp", "cleanlab", "oof_gmm", "knn", "combined"]
SIGNAL_LABELS = {
    "gmm_lp": "TURN: per-class GMM on LP-GCE losses (tau 0.6)",
    "cleanlab": "cleanlab find_label_issues on out-of-fold probe probabilities",
    "oof_gmm": "per-class GMM on out-of-fold probe losses (tau 0.6)",
    "knn": "k-NN vote (k = 20, cosine) disagrees with the label",
    "combined": "**combined clean probability (tau 0.6)**",
}


def score_signals(features: np.ndarray, labels: np.ndarray, num_classes: int, lp_probs: np.ndarray,
                  tau: float, seed: int, device: str = "cpu", neighbours: np.ndarray | None = None):
    """Each signal's (flagged mask, clean score), the seconds detection took, and the
    DetectionResult; `neighbours`: a precomputed neighbour graph of the features."""
    from cleanlab.filter import find_label_issues

    from turn_backend.detect import detect_label_issues  # torch

    t0 = time.time()
    result = detect_label_issues(features, labels, num_classes, model_probs=lp_probs, seed=seed, device=device,
                                 neighbours=neighbours)
    seconds = time.time() - t0
    s = result.signals
    return {
        "gmm_lp": (s["gmm_lp"] <= tau, s["gmm_lp"]),
        "cleanlab": (find_label_issues(labels, result.pred_probs, n_jobs=1), s["oof_probe"]),
        "oof_gmm": (s["oof_gmm"] <= tau, s["oof_gmm"]),
        "knn": (result.knn_probs.argmax(1) != labels, s["knn"]),
        "combined": (result.flagged(tau), result.clean_prob),
    }, seconds, result


def metrics(flagged: np.ndarray, clean_score: np.ndarray, noisy: np.ndarray) -> dict:
    from sklearn.metrics import average_precision_score, roc_auc_score

    tp = int((flagged & noisy).sum())
    precision = tp / max(1, int(flagged.sum()))
    recall = tp / max(1, int(noisy.sum()))
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    both = 0 < noisy.sum() < len(noisy)
    return {"f1": f1, "precision": precision, "recall": recall,
            "auroc": roc_auc_score(noisy, -clean_score) if both else float("nan"),
            "ap": average_precision_score(noisy, -clean_score) if both else float("nan"),
            "n_flagged": int(flagged.sum())}


def load_features(n_train: int, image_size: int, model_name: str, classes: tuple[int, ...] | None, log, rt):
    """(train ImageSet, its features, the LP hyperparameters) of `n_train` demo images."""
    k = len(classes) if classes else 10
    train = load_demo(n_train, 10 * k, list(classes) if classes else None).train
    feats, hparams = image_features(train, image_size, model_name, log, rt)
    return train, feats, hparams


def image_features(train, image_size: int, model_name: str, log, rt):
    """(features, LP hyperparameters) of an ImageSet under the model: from the feature cache
    that runs share, or extracted once into it."""
    # torch (and timm) on use: `turn bench --help` and the report stay light
    from turn_backend.engine import extract_features
    from turn_backend.features import feature_cache_path
    from turn_backend.models.core import Preprocess
    from turn_backend.models.registry import load_model

    loaded = load_model(model_name, None, pretrained=True)
    pre = Preprocess(image_size, loaded.preprocess.mean, loaded.preprocess.std, loaded.preprocess.interpolation)
    path = feature_cache_path(train, loaded.name, None, True, pre, "train")
    cached = path.exists()
    t0 = time.time()
    feats = extract_features(loaded.extractor, train, pre, path, rt, 128, 0)
    log(f"features of {len(train)} images: {time.time() - t0:.0f} s ({'cached' if cached else 'extracted'})")
    return np.asarray(feats), loaded.hparams.lp


def expected_calibration_error(clean_prob: np.ndarray, is_clean: np.ndarray, bins: int = 10) -> float:
    """ECE of a clean probability against the truth: over 10 equal-width bins of the probability
    (`estimates.reliability_bins`), the sample-weighted mean of |mean probability - share truly clean|."""
    from turn_backend.detect.estimates import reliability_bins

    table = reliability_bins(clean_prob, is_clean, bins)
    return float(np.sum(table[:, 2] * np.abs(table[:, 0] - table[:, 1])) / max(len(clean_prob), 1))


def chance_calibration_error(clean_prob: np.ndarray, draws: int = CHANCE_DRAWS, seed: int = 0) -> float:
    """The ECE that `clean_prob` would still show were it perfectly calibrated: its mean ECE
    against outcomes drawn from it (`draws` times, seeded). On a few hundred samples this alone
    can exceed the calibration bar of 0.05."""
    rng = np.random.default_rng(seed)
    p = np.asarray(clean_prob, dtype=np.float64)
    return float(np.mean([expected_calibration_error(p, rng.random(len(p)) < p) for _ in range(draws)]))


def _bins_json(clean_prob: np.ndarray, is_clean: np.ndarray) -> str:
    """`estimates.reliability_bins` as JSON, to keep in calibration.csv for the reliability diagrams."""
    from turn_backend.detect.estimates import reliability_bins

    return json.dumps(np.round(reliability_bins(clean_prob, is_clean), 5).tolist())


def calibration_row(result, lp_signal: np.ndarray, signals: dict, noisy: np.ndarray, tau: float) -> dict:
    """What a user sees without ground truth (turn_backend.detect.estimates), beside the truth."""
    from turn_backend.detect import estimates

    p = result.clean_prob
    estimate = estimates.estimate_noise_rate(p)
    suggested = estimates.suggest_tau(p)
    row = {"true_noise": float(noisy.mean()), "est_noise": estimate["rate"], "est_low": estimate["low"],
           "est_high": estimate["high"], "ece": expected_calibration_error(p, ~noisy), "bins": _bins_json(p, ~noisy),
           "ece_chance": chance_calibration_error(p),
           "ece_gmm": expected_calibration_error(lp_signal, ~noisy), "suggested_tau": suggested,
           "reliable": bool(result.reliability["reliable"]), "rough": bool(result.reliability["cautions"]),
           "signal_agreement": result.reliability["signal_agreement"],
           "implausible_class_share": result.reliability["implausible_class_share"],
           "best_single_f1": max(metrics(f, score, noisy)["f1"] for name, (f, score) in signals.items()
                                 if name != "combined")}
    for name, t in (("06", tau), ("s", suggested if suggested is not None else tau)):
        est = estimates.estimates_at(p, t)
        true = metrics(p <= t, p, noisy)
        row.update({f"est_precision_{name}": est["precision"], f"true_precision_{name}": true["precision"],
                    f"est_recall_{name}": est["recall"], f"true_recall_{name}": true["recall"],
                    f"f1_{name}": true["f1"]})
    return row | reviewed_calibration_row(p, noisy)


def simulated_review(clean_prob: np.ndarray, budget: int = REVIEW_BUDGET) -> tuple[np.ndarray, np.ndarray]:
    """(rows, at_random): the samples a person decides in a simulated review, the `budget` least
    probably clean (Review's order) and the product's spot check of `budget` random samples
    (`review.spot_check_rows`), each at most a quarter of the set; and which are of the spot check."""
    from turn_backend.review import spot_check_rows

    k = min(budget, len(clean_prob) // 4)
    lowest = np.argsort(clean_prob, kind="stable")[:k]
    spot = spot_check_rows(len(clean_prob), k)
    rows = np.union1d(lowest, spot)
    return rows, np.isin(rows, spot)


def reviewed_calibration_row(p: np.ndarray, noisy: np.ndarray) -> dict:
    """The estimates recalibrated on a simulated review (`simulated_review`, decided as the truth
    has it, as a careful person would): the noise rate with its interval, and precision / recall /
    F1 at the tau they suggest. ECE over the undecided samples only (the decided ones are exact)."""
    from turn_backend.detect import estimates

    rows, at_random = simulated_review(p)
    fit = estimates.calibrate_on_decisions(p, rows, noisy[rows], at_random)
    if fit is None:
        return {}
    q = fit["probability"]
    suggested = estimates.suggest_tau(p, calibrated=q)
    t = suggested if suggested is not None else REVIEW_FALLBACK_TAU
    est, true = estimates.estimates_at(p, t, calibrated=q), metrics(p <= t, p, noisy)
    undecided = np.ones(len(p), dtype=bool)
    undecided[rows] = False
    return {"rev_decisions": len(rows), "rev_noise": fit["noise_rate"]["rate"], "rev_low": fit["noise_rate"]["low"],
            "rev_high": fit["noise_rate"]["high"], "rev_suggested_tau": suggested,
            "rev_ece": expected_calibration_error(q[undecided], ~noisy[undecided]),
            "rev_bins": _bins_json(q[undecided], ~noisy[undecided]),
            "rev_est_precision": est["precision"], "rev_true_precision": true["precision"],
            "rev_est_recall": est["recall"], "rev_true_recall": true["recall"], "rev_f1": true["f1"]}


def oracle_true_class_probabilities(features: np.ndarray, true_labels: np.ndarray, num_classes: int,
                                    seed: int = 0) -> np.ndarray:
    """(N, C) P(true class | x) as a reference that knows the true labels can estimate it: the
    detection layer's own out-of-fold linear probe (on the same PCA features) trained on the set's
    TRUE labels, softened by the temperature that fits them best (`estimates.held_out_temperature`).
    A reference, not a bound (another learner might do better), that reads what no product can:
    where the product misses a bar that it meets, learning from noisy labels is what fails."""
    from scipy.special import softmax

    from turn_backend.detect.estimates import held_out_temperature
    from turn_backend.detect.signals import out_of_fold_probabilities, reduce_features

    q = out_of_fold_probabilities(reduce_features(features, 256, seed), true_labels, num_classes, seed=seed)
    t = held_out_temperature(q, true_labels, seed)
    return softmax(np.log(np.clip(q, 1e-300, None)) / t, axis=1)


def oracle_clean_probability(true_class_probs: np.ndarray, true_labels: np.ndarray,
                             labels: np.ndarray) -> np.ndarray:
    """(N,) the probability that each given label is right by Bayes' rule, from the oracle's
    P(true | x) and the realised noise matrix T[given, true] (counted from the truth), as
    `combine.true_class_posterior` does with estimated ones."""
    from turn_backend.detect.combine import noise_matrix_from_joint, true_class_posterior

    c = true_class_probs.shape[1]
    joint = np.zeros((c, c))
    np.add.at(joint, (labels, true_labels), 1.0)
    posterior = true_class_posterior(noise_matrix_from_joint(joint), labels, true_class_probs)
    return posterior[np.arange(len(labels)), labels]


def oracle_calibration_row(p: np.ndarray, noisy: np.ndarray) -> dict:
    """The estimates the oracle's clean probability gives (`oracle_clean_probability`), beside the truth."""
    from turn_backend.detect import estimates

    suggested = estimates.suggest_tau(p)
    t = suggested if suggested is not None else REVIEW_FALLBACK_TAU
    est, true = estimates.estimates_at(p, t), metrics(p <= t, p, noisy)
    return {"oracle_noise": float(1.0 - p.mean()), "oracle_ece": expected_calibration_error(p, ~noisy),
            "oracle_suggested_tau": suggested, "oracle_est_precision": est["precision"],
            "oracle_true_precision": true["precision"], "oracle_est_recall": est["recall"],
            "oracle_true_recall": true["recall"], "oracle_f1": true["f1"]}


def run_grid(train, feats, lp_hparams, settings: list[str], seeds: list[int], dataset: str, tau: float, log,
             device: str = "cpu", calibration: list[dict] | None = None,
             neighbours: np.ndarray | None = None) -> list[dict]:
    """Every signal's detection metrics per setting and seed; with `calibration`, a list that
    also gets each run's `calibration_row`; `neighbours`: the features' neighbour graph,
    computed once for every setting (it does not depend on the labels)."""
    from turn_backend.detect.signals import softmax
    from turn_backend.engine import head_logits, train_linear_probe

    rows = []
    # what a reference that knows the true labels makes of these features (once: the labels' noise does not enter)
    oracle = (None if calibration is None
              else oracle_true_class_probabilities(feats, train.true_labels, train.num_classes))
    for setting in settings:
        kind, rate = parse_setting(setting)
        for seed in seeds:
            t0 = time.time()
            noise = apply_noise(train.true_labels, train.num_classes, kind, rate, seed,
                                class_names=train.class_names, images=train.pixel_matrix(None))
            labels, noisy = noise.noisy, noise.noisy != noise.true
            head, _ = train_linear_probe(feats, labels, train.num_classes, lp_hparams, "gce", 20, 128, seed)
            lp_seconds = time.time() - t0
            signals, detect_seconds, result = score_signals(feats, labels, train.num_classes,
                                                            softmax(head_logits(head, feats)), tau, seed, device,
                                                            neighbours)
            for name, (flagged, score) in signals.items():
                rows.append({"dataset": dataset, "setting": setting, "seed": seed, "signal": name,
                             "noise_rate": float(noisy.mean()), "lp_seconds": lp_seconds,
                             "detect_seconds": detect_seconds, **metrics(flagged, score, noisy)})
            combined = [r for r in rows[-len(signals):] if r["signal"] == "combined"][0]
            if calibration is not None:
                calibration.append({"dataset": dataset, "n": len(labels), "classes": train.num_classes,
                                    "setting": setting, "seed": seed,
                                    **calibration_row(result, signals["gmm_lp"][1], signals, noisy, tau),
                                    **oracle_calibration_row(oracle_clean_probability(oracle, noise.true, labels),
                                                             noisy)})
            log(f"{dataset} {setting} seed {seed}: combined F1 {combined['f1']:.1%} AUROC {combined['auroc']:.1%}; "
                f"LP {lp_seconds:.0f} s, detection {detect_seconds:.0f} s")
    return rows


def table(df: pd.DataFrame, dataset: str, settings: list[str], value: str) -> str:
    sub = df[df.dataset == dataset]
    lines = ["| signal | " + " | ".join(settings) + " |", "| --- |" + " --- |" * len(settings)]
    means = sub.groupby(["signal", "setting"])[value].agg(["mean", "std"])
    best = {s: max(means.loc[(g, s), "mean"] for g in SIGNALS if g != "combined") for s in settings}
    for g in SIGNALS:
        cells = []
        for s in settings:
            m, sd = means.loc[(g, s), "mean"], means.loc[(g, s), "std"]
            text = f"{100 * m:.1f} ± {100 * (0 if np.isnan(sd) else sd):.1f}"
            if g == "combined":
                text += " ✓" if m >= best[s] - 1e-12 else " ✗"
            cells.append(text)
        lines.append(f"| {SIGNAL_LABELS[g]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


CALIBRATION_TITLE = "## Calibration: the numbers a user sees without ground truth"
CALIBRATION_SMALL = [(100, SMALL_CLASSES), (1000, SMALL_CLASSES), (100, None), (1000, None)]
LOW_NOISE_SETTINGS = ["none", "sym2"]
LONG_TAIL_RATIO = 10  # the largest class 10x the smallest, sizes falling geometrically


def long_tail_index(labels: np.ndarray, num_classes: int, ratio: float, seed: int) -> np.ndarray:
    """Indices of a class-imbalanced subset: class c keeps a share falling geometrically from all
    of the smallest class's count (class 0) to 1/ratio of it (the last class)."""
    rng = np.random.default_rng(seed)
    per = np.bincount(labels, minlength=num_classes).min()
    keep = np.round(per * np.geomspace(1.0, 1.0 / ratio, num_classes)).astype(int)
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), keep[c], replace=False)
                                   for c in range(num_classes)]))


SPLIT_INTO = 10
TINY_IMAGE_SIZE = 16
DIGIT_PAIR = (4, 9)  # two digits often mistaken for each other


def digits_set(classes: tuple[int, ...] | None = None):
    """scikit-learn's 1,797 handwritten digits (8x8 px, 16 grey levels) as an ImageSet, or the
    images of some digits only: data the detection defaults were never tuned on."""
    from sklearn.datasets import load_digits

    from turn_backend.data.core import ImageSet

    digits = load_digits()
    keep = np.flatnonzero(np.isin(digits.target, classes)) if classes else np.arange(len(digits.target))
    names = [str(d) for d in (sorted(classes) if classes else range(10))]
    labels = np.searchsorted([int(n) for n in names], digits.target[keep])
    pixels = np.clip(digits.images[keep] * 16, 0, 255).astype(np.uint8)
    return ImageSet(ids=[f"digit-{i}" for i in keep], labels=labels, class_names=names, true_labels=labels,
                    arrays=pixels)


def split_classes(train, parts: int, seed: int):
    """The set with each class split at random into `parts` classes: labels the features cannot
    separate, as a model too weak for fine-grained classes sees them."""
    rng = np.random.default_rng(seed)
    true = train.true_labels * parts + rng.integers(0, parts, len(train))
    names = [f"{name} {k}" for name in train.class_names for k in range(parts)]
    return replace(train, labels=true, true_labels=true, class_names=names)


def _mark(ok: bool) -> str:
    return " ✓" if ok else " ✗"


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def _noise_cell(estimate: float, true: float) -> str:
    """An estimated noise rate in %, marked against its bar (within 2 points of the true one)."""
    return f"{_pct(estimate)}{_mark(abs(estimate - true) <= 0.02)}"


def _true_and_estimate(true: float, estimate: float, bar: float) -> str:
    """'true / estimated' in %, marked against |estimated - true| <= `bar` points."""
    return f"{_pct(true)} / {_pct(estimate)}{_mark(abs(estimate - true) * 100 <= bar)}"


def _seed_means(cal: pd.DataFrame, column: str):
    """Per set and setting whose runs have `column`: (dataset, setting, the seeds' rows, their
    means, the precision / recall bar in points: 5 from 1,000 images up, 10 below)."""
    for (dataset, setting), g in cal.groupby(["dataset", "setting"], sort=False):
        if column in g and not g[column].isna().all():
            yield dataset, setting, g, g.mean(numeric_only=True), 5 if g["n"].iloc[0] >= 1000 else 10


def calibration_section(cal: pd.DataFrame, tau: float, figure: str | None = None) -> str:
    """The calibration table: per dataset and setting, means over seeds, each marked against its bar
    (noise within 2 points; precision and recall at the suggested tau within 5 points from 1,000
    images up, 10 below; ECE <= 0.05; F1 at the suggested tau >= the best single signal's)."""
    from turn_backend.detect import estimates

    out = [CALIBRATION_TITLE, "",
           "The same runs as the detection tables (and the extra sets below), scored on what a user sees without "
           "ground truth (`turn_backend.detect.estimates`): the estimated noise rate (mean of 1 − the combined "
           "clean probability, with its 95% interval), the estimated precision and recall of the flagged set, "
           "the suggested tau (highest estimated F1), and the reliability check; beside each, the truth. "
           "Means over seeds, in %. ECE: 10 equal-width bins of the clean probability against the truly-clean "
           "indicator. Marks: |estimated − true noise| ≤ 2; precision and recall at the suggested tau within 5 "
           "points (1,000 images and up) or 10 (fewer); ECE ≤ 0.05; F1 at the suggested tau ≥ the best single "
           "signal's F1 at its own default. 'Check' counts the seeds on which the reliability check passed, and "
           "'rough' those on which the run called its estimates rough (fewer than "
           f"{estimates.MIN_IMAGES_PER_CLASS} images per class, or a probe overconfident on held-out images: "
           f"temperature above {estimates.MAX_PROBE_TEMPERATURE}).", "",
           f"| set | setting | true noise | estimated (95% interval) | ECE | ECE, TURN's GMM | precision at {tau} "
           "true / est. | recall at " + f"{tau} true / est. | suggested tau | precision there true / est. | "
           "recall there true / est. | F1 there | best single F1 | check |",
           "|" + " --- |" * 14]
    for dataset, setting, g, m, bar in _seed_means(cal, "est_noise"):
        out.append(
            f"| {dataset} | {setting} | {_pct(m.true_noise)} | {_pct(m.est_noise)} ({_pct(m.est_low)}–"
            f"{_pct(m.est_high)}){_mark(abs(m.est_noise - m.true_noise) <= 0.02)} | "
            f"{m.ece:.3f}{_mark(m.ece <= 0.05)} | {m.ece_gmm:.3f} | "
            f"{_pct(m.true_precision_06)} / {_pct(m.est_precision_06)} | "
            f"{_pct(m.true_recall_06)} / {_pct(m.est_recall_06)} | "
            + (f"{g['suggested_tau'].mean():.2f}" if g["suggested_tau"].notna().any() else "none") + " | "
            + (f"{_true_and_estimate(m.true_precision_s, m.est_precision_s, bar)} | "
               f"{_true_and_estimate(m.true_recall_s, m.est_recall_s, bar)} | "
               f"{_pct(m.f1_s)}{_mark(m.f1_s >= m.best_single_f1 - 1e-12)} | {_pct(m.best_single_f1)} | "
               if m.true_noise > 0 else "– | – | – | – | ")
            + f"{int(g['reliable'].sum())}/{len(g)}"
            + (f", rough {int(g['rough'].sum())}/{len(g)}" if g["rough"].any() else "") + " |")
    if figure:
        out += ["", "Reliability diagrams of the combined clean probability against the truth, pooled over seeds "
                "(blue: the model's own; orange: recalibrated after the simulated review below, on the samples it "
                "left undecided; marker area: samples in the bin). A calibrated probability lies on the dotted "
                "diagonal; below it, the model calls labels clean more often than they are.", "",
                f"![Reliability diagrams]({figure})"]
    return "\n".join(out) + "\n\n" + reviewed_section(cal) + "\n" + oracle_section(cal)


def _pooled_bins(column: pd.Series) -> np.ndarray:
    """The reliability bins of several seeds (JSON, `_bins_json`) pooled: count-weighted means."""
    tables = np.array([json.loads(v) for v in column.dropna()])
    count = tables[:, :, 2].sum(0)
    safe = np.maximum(count, 1.0)
    return np.stack([(tables[:, :, 0] * tables[:, :, 2]).sum(0) / safe,
                     (tables[:, :, 1] * tables[:, :, 2]).sum(0) / safe, count], axis=1)


def reliability_figure(cal: pd.DataFrame, path: Path) -> Path:
    """Reliability diagrams, one panel per set and setting with label noise (the reliability check's
    deliberate failures left out): the combined clean probability against the share truly clean,
    pooled over seeds, as the model gives it and after the simulated review (undecided samples
    only); marker area by the samples in the bin. Written as a PNG to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(key, g) for key, g in cal.groupby(["dataset", "setting"], sort=False)
              if g["true_noise"].mean() > 0 and not str(key[0]).startswith("Check") and "bins" in g]
    cols = 4
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 3.1 * rows), squeeze=False)
    for ax, ((dataset, setting), g) in zip(axes.flat, groups):
        ax.plot([0, 1], [0, 1], color="#9e9e9e", lw=1, ls=":")
        for column, colour, label in (("bins", "#1565c0", "model's own"), ("rev_bins", "#ef6c00", "after a review")):
            if column not in g or g[column].isna().all():
                continue
            table = _pooled_bins(g[column])
            used = table[:, 2] > 0
            ax.plot(table[used, 0], table[used, 1], color=colour, lw=1.5, label=label)
            ax.scatter(table[used, 0], table[used, 1], s=8 + 120 * table[used, 2] / table[:, 2].sum(), color=colour)
        ax.set_title(textwrap.fill(f"{dataset} · {setting} · {len(g)} seeds", 46), fontsize=7.5)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("clean probability", fontsize=7)
        ax.set_ylabel("share truly clean", fontsize=7)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def reviewed_section(cal: pd.DataFrame) -> str:
    """The same runs with the estimates recalibrated on a simulated review (`reviewed_calibration_row`),
    beside the model's own, each marked against the same bars."""
    out = ["### After a review: the estimates recalibrated on the person's decisions", "",
           f"Each run above again, after a simulated review: the {REVIEW_BUDGET} samples with the lowest clean "
           f"probability (Review's order) and a spot check of {REVIEW_BUDGET} random ones (the Threshold page's "
           "button), each at most a quarter of the set, decided as the truth has them. The clean probabilities are "
           "then recalibrated on those decisions (`estimates.calibrate_on_decisions`, what the Threshold page and "
           "`turn status` do) and every estimate is counted again. The true labels are read only where a person "
           "would have decided. 'Covered': seeds on which the noise rate's 95% interval (the fit's uncertainty "
           "and the sampling spread) holds the true rate. ECE over the undecided samples only. Marks as above; "
           "F1 is marked against the best single signal's.", "",
           "| set | setting | decisions | true noise | estimated (95% interval) | covered | model's own | ECE | "
           "suggested tau | precision there true / est. | recall there true / est. | F1 there | model's own F1 |",
           "|" + " --- |" * 13]
    for dataset, setting, g, m, bar in _seed_means(cal, "rev_noise"):
        covered = int(((g["rev_low"] <= g["true_noise"]) & (g["true_noise"] <= g["rev_high"])).sum())
        out.append(
            f"| {dataset} | {setting} | {m.rev_decisions:.0f} | {_pct(m.true_noise)} | {_pct(m.rev_noise)} "
            f"({_pct(m.rev_low)}–{_pct(m.rev_high)}){_mark(abs(m.rev_noise - m.true_noise) <= 0.02)} | "
            f"{covered}/{len(g)} | {_noise_cell(m.est_noise, m.true_noise)} | "
            f"{m.rev_ece:.3f}{_mark(m.rev_ece <= 0.05)} | "
            + (f"{g['rev_suggested_tau'].mean():.2f}" if g["rev_suggested_tau"].notna().any() else "none") + " | "
            + (f"{_true_and_estimate(m.rev_true_precision, m.rev_est_precision, bar)} | "
               f"{_true_and_estimate(m.rev_true_recall, m.rev_est_recall, bar)} | "
               f"{_pct(m.rev_f1)}{_mark(m.rev_f1 >= m.best_single_f1 - 1e-12)} | {_pct(m.f1_s)} |"
               if m.true_noise > 0 else "– | – | – | – |"))
    return "\n".join(out) + "\n"


def oracle_section(cal: pd.DataFrame) -> str:
    """The same estimates from a reference that knows the true labels (`oracle_clean_probability`),
    beside the product's own, marked against the same bars: where the reference misses a bar, no
    method on these features and this many images can be expected to meet it."""
    out = ["### What the features allow: a reference that knows the true labels", "",
           "Each run above again, with the clean probability of a reference no product can be: the detection "
           "layer's own out-of-fold probe trained on the set's *true* labels, softened by the temperature that fits "
           "them, and the realised noise matrix, combined by Bayes' rule (`bench.detection.oracle_clean_probability`)."
           " A reference, not a bound: where it misses too, the features and the number of images are the likely "
           "cause; where only the product misses, it is learning P(true class | image) from noisy labels. "
           "'By chance': the ECE the product's "
           "clean probability would show even if it were perfectly calibrated (its mean ECE against outcomes "
           f"drawn from it, {CHANCE_DRAWS} draws), the floor that the set's size puts under the ECE bar. "
           "Marks as above.", "",
           "| set | setting | true noise | reference's estimate | product's | ECE, reference | product's | by chance | "
           "precision at its suggested tau, true / est. | recall there, true / est. | F1 there | product's F1 |",
           "|" + " --- |" * 12]
    for dataset, setting, _, m, bar in _seed_means(cal, "oracle_noise"):
        out.append(
            f"| {dataset} | {setting} | {_pct(m.true_noise)} | {_noise_cell(m.oracle_noise, m.true_noise)} | "
            f"{_noise_cell(m.est_noise, m.true_noise)} | "
            f"{m.oracle_ece:.3f}{_mark(m.oracle_ece <= 0.05)} | {m.ece:.3f}{_mark(m.ece <= 0.05)} | "
            f"{m.ece_chance:.3f} | "
            + (f"{_true_and_estimate(m.oracle_true_precision, m.oracle_est_precision, bar)} | "
               f"{_true_and_estimate(m.oracle_true_recall, m.oracle_est_recall, bar)} | "
               f"{_pct(m.oracle_f1)} | {_pct(m.f1_s)} |" if m.true_noise > 0 else "– | – | – | – |"))
    return "\n".join(out) + "\n"


def section(df: pd.DataFrame, datasets: list[tuple[str, list[str]]], command: str, machine: str, wall: float) -> str:
    out = [SECTION_TITLE, "",
           f"Generated by `{command}` on {dt.date.today().isoformat()} ({machine}); {wall / 60:.1f} min in all. "
           "No fine-tuning: cached EfficientNet-Lite0 features (48 px), TURN's linear probe (GCE, 20 epochs), "
           "then every signal of `turn_backend.detect`. Mean ± sd over seeds, in %. ✓ / ✗: the combined clean "
           "probability is at least / below the best single signal in that column.", ""]
    for dataset, settings in datasets:
        sub = df[df.dataset == dataset]
        n_seeds = sub.seed.nunique()
        per_cell = sub[sub.signal == "combined"][["lp_seconds", "detect_seconds"]].mean()
        out += [f"### {dataset}", "",
                f"{n_seeds} seed(s); per cell LP-GCE {per_cell.lp_seconds:.0f} s, detection (every signal and the "
                f"combination) {per_cell.detect_seconds:.0f} s.", ""]
        for value, title in (("f1", "Detection F1"), ("auroc", "AUROC"), ("precision", "Precision"),
                             ("recall", "Recall"), ("ap", "Average precision")):
            out += [f"{title}:", "", table(df, dataset, settings, value), ""]
    return "\n".join(out) + "\n"


def replace_section(docs: Path, title: str, text: str) -> None:
    """Replace the section that starts with `title` in `docs` (or append it); other sections stay."""
    old = docs.read_text() if docs.exists() else ""
    start = old.find(title)
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text if old else text
    else:
        end = old.find("\n## ", start + len(title))
        new = old[:start] + (text.rstrip("\n") + "\n\n" + old[end + 1:] if end >= 0 else text)
    docs.write_text(new)


def main(args) -> int:
    import torch

    from turn_backend.engine import Runtime

    t_start = time.time()
    out = Path(args.out or "runs/bench-detection")
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    threads, _ = choose_threads(getattr(args, "threads", None))
    torch.set_num_threads(threads)

    log = progress_log(args.quiet)

    n_train = args.n_train or 10_000
    seeds = list(range(args.seeds or 3))
    settings = args.settings or SETTINGS
    image_size = args.image_size or 48
    rows, datasets, cal = [], [], []
    rt = Runtime(getattr(args, "device", "cpu") or "cpu", "no")  # full precision: the same features on any device
    device = str(rt.device)
    train, feats, hp = load_features(n_train, image_size, args.model, None, log, rt)
    name = f"Fashion-MNIST, {len(train):,} training images, 10 classes"
    rows += run_grid(train, feats, hp, settings, seeds, name, 0.6, log, device, cal)
    datasets.append((name, settings))
    if not args.no_small:
        # calibration only: low noise, a long tail, and small sets
        run_grid(train, feats, hp, LOW_NOISE_SETTINGS, seeds, name, 0.6, log, device, cal)
        tail = long_tail_index(train.true_labels, train.num_classes, LONG_TAIL_RATIO, 0)
        run_grid(train.subset(tail), feats[tail], hp, ["sym20"], seeds,
                 f"Long tail {LONG_TAIL_RATIO}:1, {len(tail):,} images, 10 classes", 0.6, log, device, cal)
        for n_small, classes in CALIBRATION_SMALL:
            t_small, f_small, hp_small = load_features(n_small, image_size, args.model, classes, log, rt)
            run_grid(t_small, f_small, hp_small, ["sym20"], seeds,
                     f"Small: {n_small:,} images, {t_small.num_classes} classes", 0.6, log, device, cal)
        # where the reliability check must fire: no information in the labels, classes the model
        # cannot tell apart (each garment split at random into 10 classes), features from tiny images
        run_grid(train, feats, hp, ["sym90"], seeds[:1], f"Check: shuffled labels, {len(train):,} images", 0.6, log,
                 device, cal)
        split = split_classes(train, SPLIT_INTO, 0)
        run_grid(split, feats, hp, ["sym20"], seeds[:1], f"Check: {split.num_classes} classes the features cannot "
                 f"separate (each class split at random in {SPLIT_INTO}), {len(split):,} images", 0.6, log, device, cal)
        # data nothing was tuned on: do the estimates hold there too?
        for classes in (None, DIGIT_PAIR):
            digits = digits_set(classes)
            f_digits, hp_digits = image_features(digits, image_size, args.model, log, rt)
            what = "10 classes" if classes is None else f"digits {' and '.join(digits.class_names)}"
            run_grid(digits, f_digits, hp_digits, ["sym20"], seeds,
                     f"Unseen: scikit-learn digits, {len(digits):,} images, {what}", 0.6, log, device, cal)
        t_tiny, f_tiny, hp_tiny = load_features(2000, TINY_IMAGE_SIZE, args.model, None, log, rt)
        run_grid(t_tiny, f_tiny, hp_tiny, ["sym20"], seeds[:1], f"Check: {TINY_IMAGE_SIZE}-px images, 2,000 images",
                 0.6, log, device, cal)
        train, feats, hp = load_features(400, image_size, args.model, SMALL_CLASSES, log, rt)
        name = f"Small: {len(train)} images, two look-alike classes (T-shirt/top vs Shirt)"
        rows += run_grid(train, feats, hp, SMALL_SETTINGS, seeds, name, 0.6, log, device, cal)
        datasets.append((name, SMALL_SETTINGS))
    df = pd.DataFrame(rows)
    df.to_csv(out / "detection.csv", index=False)
    cal_df = pd.DataFrame(cal)
    cal_df.to_csv(out / "calibration.csv", index=False)
    info = machine_info(device)
    load = info.get("load_average", [float("nan")])[0]
    machine = (f"{info['cpu']}, {info['cores']} cores" + (f", {info['gpu']} (`{device}`)" if info.get("gpu") else "")
               + f", load average {load:.1f} at the end")
    flags = (("--n-train", args.n_train), ("--seeds", args.seeds), ("--device", getattr(args, "device", "auto")))
    command = "turn bench --detection" + "".join(f" {flag} {value}" for flag, value in flags
                                                 if value not in (None, "auto"))
    title = f"## {args.docs_section}" if getattr(args, "docs_section", None) else SECTION_TITLE
    text = section(df, datasets, command, machine, time.time() - t_start).replace(SECTION_TITLE, title, 1)
    cal_title = CALIBRATION_TITLE + (f" ({args.docs_section})" if getattr(args, "docs_section", None) else "")
    docs = Path(args.docs) if args.docs else DEFAULT_DOCS
    figure = "calibration-reliability" + ("-" + re.sub(r"[^a-z0-9]+", "-", args.docs_section.lower()).strip("-")
                                          if getattr(args, "docs_section", None) else "") + ".png"
    reliability_figure(cal_df, out / figure)
    if not args.no_docs:
        (docs.parent / "images").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / figure, docs.parent / "images" / figure)
    cal_text = calibration_section(cal_df, 0.6, figure if args.no_docs else f"images/{figure}").replace(
        CALIBRATION_TITLE, cal_title, 1)
    (out / "detection.md").write_text(text + "\n" + cal_text)
    print(text + "\n" + cal_text)
    if not args.no_docs:
        replace_section(docs, title + "\n", text)
        replace_section(docs, cal_title + "\n", cal_text)
        log(f"wrote the \"{title[3:]}\" and \"{cal_title[3:]}\" sections of {docs}")
    return 0
