"""What the clean probabilities say without ground truth, and whether to believe them.

A clean probability p_i is the model's probability that sample i's given label is right, so
1 - p_i is the expected number of wrong labels it holds. Summed, these give estimates that
need no true label (each is unbiased exactly when the p_i are calibrated; docs/benchmarks.md,
"Calibration", measures how far they are on data with known noise):

- the noise rate, mean(1 - p), with the interval its Poisson-binomial variance gives;
- for the flagged set at tau (p <= tau): estimated precision sum_{flagged}(1 - p) / n_flagged,
  recall sum_{flagged}(1 - p) / sum(1 - p), and F1, for every tau at the cost of one sort;
- a suggested tau: the one with the highest estimated F1, or the lowest that reaches a
  precision the user asks for;
- expected wrong labels per class;
- against the decisions a person has made in Review (true labels, for those samples), whether
  the probabilities expected as many wrong labels as they found (`review_agreement`), and the
  probabilities recalibrated on those decisions (`calibrate_on_decisions`), so that every
  estimate above can be recounted with them.

`judge_reliability` says whether the model behind the probabilities can judge the labels at
all: when its features do not separate the classes, or it confuses whole classes, a low p
means "the model is unsure", not "the label is wrong", and the estimates above mean nothing.

Pure numpy, with scipy for the fits and intervals and scikit-learn for Cohen's kappa; no project imports.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Z_95 = 1.959964  # two-sided 95% normal quantile
MIN_EXPECTED_WRONG = 0.5  # below this many expected wrong labels there is nothing to suggest a tau for

# The reliability check's bars. Chance-corrected agreement between the out-of-fold probe's and
# the k-NN vote's predicted classes: both read the same features, so when the features
# separate the classes they agree (kappa 0.35-0.83 on every benchmark setting, 0.1-0.2 with
# shuffled labels or random features), whatever the label noise.
MIN_SIGNAL_AGREEMENT = 0.25
# Share of the samples whose given class the noise model calls mostly wrong (some other true
# class more likely than the given one). Label noise does not do that to whole classes (at 60%
# symmetric noise on 10 classes the given class stays 6x likelier than any other); a model too
# weak to tell look-alike classes apart does (0.7 with 2-D features that keep 20% accuracy).
MAX_IMPLAUSIBLE_CLASS_SHARE = 0.4
# The classifier's agreement with the given labels above always guessing the largest class,
# as a share of the most it could gain: (accuracy - majority) / (1 - majority). Noisy labels
# lower it, but a classifier that learnt the classes keeps it well above this (0.33 for TURN's
# probe at 60% symmetric noise, 0.37 on the two look-alike classes at 40%); a fine-tuning run
# that diverged to one class falls below it.
MIN_MODEL_LIFT = 0.1
# Below this many images per class the flags can still be the best there is, but the estimates
# are rough: the model behind them has few examples of each class to learn from, and the
# interval above covers sampling only. On the benchmark's 100-image sets the estimated noise
# rate was off by 21 points with 10 images per class and by 1 with 50; from 100 per class up,
# by 0-3, except 6 on the ten digits and 11 on two look-alike classes at 40% noise (docs/benchmarks.md, Calibration).
MIN_IMAGES_PER_CLASS = 100
# A probe whose held-out predictions explain the given labels best only once softened by more
# than this temperature (`held_out_temperature`) is more confident than its labels bear out: it
# has overfit, and the clean probabilities calibrated on it cannot be trusted either way. On the
# benchmark (docs/benchmarks.md, Calibration) it was 0.84-1.23 on every set of ten classes and
# 1.5-20 on every set of two (look-alike garments, 100-1,000 images; two digits, 361), where the
# estimated precision at the suggested tau was 14-22 points off: too high on the garments, too
# low on the digits. Not every miss shows here: on the ten digits (1.03) it was 15 points low.
MAX_PROBE_TEMPERATURE = 1.5
TEMPERATURE_SAMPLE = 100_000  # rows the temperature is fitted on (one parameter)
# What a user can do about rough estimates (said once, after the last caution)
ROUGH_ESTIMATES_ADVICE = ("decide a spot check of random samples in Review (Threshold page), on which the estimates "
                          "are recalibrated, and add images where you can")
# Recalibration on Review decisions needs this many of them on samples drawn at random (a spot
# check). Review lists the least probably clean first, and decisions on those alone leave the rest
# to extrapolation: on simulated reviews of the benchmark's sets, 100 of them and no random ones
# moved the noise estimate from 1.8 to 8-12.6 points off on two classes of 1,000 images and from
# 0.6 to 12 on 10,000 with class-pair flips; 20 random ones besides brought both back within 2.6
# and 4.1 (docs/benchmarks.md, Calibration).
MIN_RANDOM_DECISIONS = 20
# How strongly the fit is pulled toward the model's own calibration (a = 0, b = 1): the weight of a
# Gaussian prior, a penalty prior * (a^2 + (b - 1)^2). Chosen per run from the decisions themselves,
# as the weight of this grid under which they are likeliest (the Laplace approximation of the
# marginal likelihood, empirical Bayes): decisions that bear the model out keep it near its own
# calibration, decisions that contradict it let it move. On simulated reviews of the benchmark
# (docs/benchmarks.md, Calibration) it chose 30-100 on well-calibrated 10,000-image sets and
# 0.3-1 on the 100-image and digit sets, where any one fixed weight lost on one of the two.
CALIBRATION_PRIOR_GRID = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
CALIBRATION_SLOPE_BOUNDS = (0.05, 10.0)  # a slope at or below 0 would reverse the model's ranking
CALIBRATION_DRAWS = 400  # posterior draws of the fit for the noise rate's interval
CALIBRATION_SAMPLE = 100_000  # undecided samples each draw's expected wrong labels are counted on


def default_tau_grid(step: float = 0.01) -> np.ndarray:
    """0.01, 0.02, ..., 0.99: the taus the curves and the suggestion use."""
    return np.round(np.arange(step, 1.0 - step / 2, step), 6)


def _as_probs(clean_prob: Sequence[float]) -> np.ndarray:
    p = np.asarray(clean_prob, dtype=np.float64).ravel()
    if p.size and (not np.isfinite(p).all() or p.min() < 0 or p.max() > 1):
        raise ValueError("clean probabilities must be finite and lie in [0, 1]")
    return p


def estimate_noise_rate(clean_prob: Sequence[float]) -> dict:
    """{"rate", "low", "high"}: the expected share of wrong labels, mean(1 - p), and its 95%
    interval from the variance of a sum of independent Bernoulli(1 - p_i) (the spread the
    p's themselves imply; it does not cover a miscalibration of the p's)."""
    p = _as_probs(clean_prob)
    if not p.size:
        return {"rate": 0.0, "low": 0.0, "high": 0.0}
    rate = float(1.0 - p.mean())
    half = Z_95 * float(np.sqrt(np.sum(p * (1.0 - p)))) / p.size
    return {"rate": rate, "low": max(0.0, rate - half), "high": min(1.0, rate + half)}


def estimated_flag_curves(clean_prob: Sequence[float], taus: Sequence[float] | None = None, *,
                          calibrated: Sequence[float] | None = None) -> dict[str, np.ndarray]:
    """Estimated quality of the flagged set (clean_prob <= tau) at every tau: arrays "tau",
    "n_flagged", "share_flagged", "expected_wrong" (wrong labels expected among the flagged),
    "precision", "recall", "f1". An empty flagged set has precision 0; no expected wrong label,
    recall 0.

    calibrated: (N,) the probabilities to count expected wrong labels with, where the flags come
    from a score that is no probability of its own (TURN's per-class GMM flags; the combined
    clean probability says how many of them are wrong). Default: clean_prob itself."""
    p = _as_probs(clean_prob)
    q = p if calibrated is None else _as_probs(calibrated)
    if len(q) != len(p):
        raise ValueError(f"{len(q)} calibrated probabilities for {len(p)} clean probabilities")
    taus = default_tau_grid() if taus is None else np.asarray(taus, dtype=np.float64).ravel()
    order = np.argsort(p, kind="stable")
    cum_wrong = np.concatenate([[0.0], np.cumsum(1.0 - q[order])])
    k = np.searchsorted(p[order], taus, side="right")
    wrong = cum_wrong[k]
    total = cum_wrong[-1]
    precision = np.where(k > 0, wrong / np.maximum(k, 1), 0.0)
    recall = wrong / total if total > 0 else np.zeros(len(taus))
    f1 = np.where(k + total > 0, 2 * wrong / np.maximum(k + total, 1e-300), 0.0)
    return {"tau": taus, "n_flagged": k, "share_flagged": k / max(p.size, 1), "expected_wrong": wrong,
            "precision": precision, "recall": recall, "f1": f1}


def estimates_at(clean_prob: Sequence[float], tau: float, *, calibrated: Sequence[float] | None = None) -> dict:
    """Estimated precision, recall, F1 and size of the flagged set at one tau (see estimated_flag_curves)."""
    row = estimated_flag_curves(clean_prob, [tau], calibrated=calibrated)
    return {name: float(row[name][0]) for name in ("precision", "recall", "f1")} | {
        "n_flagged": int(row["n_flagged"][0])}


def suggest_tau(clean_prob: Sequence[float], min_precision: float | None = None,
                taus: Sequence[float] | None = None, *, calibrated: Sequence[float] | None = None,
                curves: dict[str, np.ndarray] | None = None) -> float | None:
    """The tau of the grid with the highest estimated F1 (the lowest such tau on a tie), or, with
    `min_precision`, the highest tau whose estimated precision still reaches it (the most flags
    at that precision). None where the probabilities expect fewer than half a wrong label, or no
    tau reaches `min_precision`. `curves`: `estimated_flag_curves(clean_prob, taus,
    calibrated=calibrated)` where the caller has them already (each sorts all N samples)."""
    wrong_in_all = float(np.sum(1.0 - _as_probs(clean_prob if calibrated is None else calibrated)))
    if wrong_in_all < MIN_EXPECTED_WRONG:
        return None
    if curves is None:
        curves = estimated_flag_curves(clean_prob, taus, calibrated=calibrated)
    if min_precision is None:
        return float(curves["tau"][int(np.argmax(curves["f1"]))])
    ok = np.flatnonzero((curves["precision"] >= min_precision) & (curves["n_flagged"] > 0))
    return float(curves["tau"][ok[-1]]) if len(ok) else None


def reliability_bins(clean_prob: Sequence[float], is_clean: Sequence[float], bins: int = 10) -> np.ndarray:
    """(bins, 3): for each of `bins` equal-width bins of the clean probability, the mean probability,
    the share of its samples that are clean (`is_clean`: truth or a person's decisions, 0/1) and
    their count; an empty bin is (0, 0, 0). What a reliability diagram draws: a calibrated
    probability lies on the diagonal."""
    p = _as_probs(clean_prob)
    clean = np.asarray(is_clean, dtype=np.float64).ravel()
    if len(clean) != len(p):
        raise ValueError(f"{len(clean)} outcomes for {len(p)} clean probabilities: give one per sample")
    which = np.clip((p * bins).astype(np.int64), 0, bins - 1)
    count = np.bincount(which, minlength=bins).astype(np.float64)
    safe = np.maximum(count, 1.0)
    return np.stack([np.bincount(which, weights=p, minlength=bins) / safe,
                     np.bincount(which, weights=clean, minlength=bins) / safe, count], axis=1)


def expected_wrong_per_class(clean_prob: Sequence[float], labels: Sequence[int], num_classes: int) -> np.ndarray:
    """(C,) the expected number of wrong labels among the samples labelled c: sum of (1 - p)."""
    p = _as_probs(clean_prob)
    y = np.asarray(labels, dtype=np.int64).ravel()
    if len(y) != len(p):
        raise ValueError(f"{len(p)} clean probabilities for {len(y)} labels: give one per sample")
    return np.bincount(y, weights=1.0 - p, minlength=num_classes)


def review_agreement(clean_prob: Sequence[float], wrong: Sequence[bool]) -> dict:
    """How the clean probabilities of the samples a person has decided compare with what they
    found: {"n", "expected_wrong" (sum of 1 - p), "found_wrong", "low" and "high" (the Wilson 95%
    interval of the share found wrong), "agrees" (the expected share lies inside it)}.

    A person's decisions are true labels, so this checks the probabilities without a benchmark.
    Which samples get decided may depend on p (the flagged ones come first): the comparison is
    made on those very samples, so it stays fair; it says nothing about the undecided ones."""
    from scipy.stats import binomtest

    p = _as_probs(clean_prob)
    found = np.asarray(wrong, dtype=bool).ravel()
    if len(found) != len(p):
        raise ValueError(f"{len(found)} decisions for {len(p)} clean probabilities: give one per sample")
    n, k = int(len(p)), int(found.sum())
    expected = float(np.sum(1.0 - p))
    if n == 0:
        return {"n": 0, "expected_wrong": 0.0, "found_wrong": 0, "low": 0.0, "high": 1.0, "agrees": True}
    interval = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return {"n": n, "expected_wrong": expected, "found_wrong": k, "low": float(interval.low),
            "high": float(interval.high), "agrees": bool(interval.low <= expected / n <= interval.high)}


def _recalibration_fit(x: np.ndarray, found: np.ndarray, prior: float) -> tuple[float, float, np.ndarray, float]:
    """(a, b, Hessian, log evidence) of P(wrong) = sigmoid(a + b x) fitted to `found` with the Gaussian
    prior prior * (a^2 + (b - 1)^2); the log evidence is the Laplace approximation of the marginal
    likelihood of the decisions under that prior (-inf without a prior)."""
    from scipy.optimize import minimize
    from scipy.special import expit

    def penalised_nll(theta: np.ndarray) -> tuple[float, np.ndarray]:
        a, b = theta
        z = a + b * x
        residual = expit(z) - found
        loss = float(np.sum(np.logaddexp(0.0, z) - found * z)) + prior * (a * a + (b - 1.0) ** 2)
        grad = np.array([residual.sum() + 2 * prior * a, residual @ x + 2 * prior * (b - 1.0)])
        return loss, grad

    fit = minimize(penalised_nll, np.array([0.0, 1.0]), jac=True, method="L-BFGS-B",
                   bounds=[(None, None), CALIBRATION_SLOPE_BOUNDS])
    a, b = (float(v) for v in fit.x)
    s = expit(a + b * x)
    design = np.stack([np.ones_like(x), x], axis=1)
    hessian = design.T @ ((s * (1.0 - s))[:, None] * design) + 2.0 * prior * np.eye(2)
    evidence = -float(fit.fun) + np.log(2.0 * prior) - 0.5 * np.linalg.slogdet(hessian)[1] if prior > 0 else -np.inf
    return a, b, hessian, float(evidence)


def calibrate_on_decisions(clean_prob: Sequence[float], rows: Sequence[int], wrong: Sequence[bool],
                           at_random: Sequence[bool], prior: float | None = None) -> dict | None:
    """The clean probabilities recalibrated on a person's Review decisions, or None with fewer than
    MIN_RANDOM_DECISIONS of them on samples drawn at random.

    rows: (n,) the decided samples' positions in clean_prob; wrong: (n,) whether each given label
    was found wrong; at_random: (n,) whether each sample was drawn at random (a spot check).

    Fits P(wrong | p) = sigmoid(a + b * logit(1 - p)) by maximum likelihood on every decided
    sample, with `prior` * (a^2 + (b - 1)^2) added, which pulls the fit toward the model's own
    calibration (a = 0, b = 1) when the decisions are few; None: the weight of
    CALIBRATION_PRIOR_GRID the decisions are likeliest under. Review lists the lowest p first, so
    which samples get decided depends on p alone: the fit of P(wrong | p) stays unbiased by that,
    but it reaches the high-p samples only through the random ones.

    Returns {"probability": (N,) recalibrated clean probabilities, with each decided sample's set to
    what the person found (1 kept, 0 relabelled), "a", "b", "prior", "n", "noise_rate": {"rate",
    "low", "high"}, whose 95% interval covers the fit's uncertainty as well as the sampling spread}."""
    from scipy.special import expit, logit

    p = _as_probs(clean_prob)
    rows = np.asarray(rows, dtype=np.int64).ravel()
    found = np.asarray(wrong, dtype=np.float64).ravel()
    drawn = np.asarray(at_random, dtype=bool).ravel()
    if not len(found) == len(drawn) == len(rows):
        raise ValueError(f"{len(found)} decisions and {len(drawn)} spot-check marks for {len(rows)} decided samples: "
                         "give one per sample")
    if drawn.sum() < MIN_RANDOM_DECISIONS:
        return None
    eps = 1e-6
    x = logit(np.clip(1.0 - p[rows], eps, 1.0 - eps))
    fits = {weight: _recalibration_fit(x, found, weight)
            for weight in (CALIBRATION_PRIOR_GRID if prior is None else (prior,))}
    prior = max(fits, key=lambda weight: fits[weight][3])
    a, b, hessian, _ = fits[prior]
    q = 1.0 - expit(a + b * logit(np.clip(1.0 - p, eps, 1.0 - eps)))
    q[rows] = 1.0 - found

    # The noise rate's interval: the fit's own uncertainty (draws of (a, b) from the Laplace
    # approximation of its posterior, each giving the expected wrong labels of the undecided
    # samples) and the sampling spread of those samples (`estimate_noise_rate`), in quadrature.
    # With few decisions the first dominates: 100 lowest-p and 100 random decisions leave some
    # 3-9 points (docs/benchmarks.md, Calibration).
    rng = np.random.default_rng(0)
    draws = rng.multivariate_normal([a, b], np.linalg.inv(hessian), CALIBRATION_DRAWS)
    draws[:, 1] = np.clip(draws[:, 1], *CALIBRATION_SLOPE_BOUNDS)
    undecided = np.ones(len(p), dtype=bool)
    undecided[rows] = False
    undecided = np.flatnonzero(undecided)
    sample = undecided if len(undecided) <= CALIBRATION_SAMPLE else rng.choice(undecided, CALIBRATION_SAMPLE,
                                                                                 replace=False)
    x_undecided = logit(np.clip(1.0 - p[sample], eps, 1.0 - eps))
    wrong_undecided = expit(draws[:, :1] + draws[:, 1:] * x_undecided[None, :]).mean(1) * len(undecided)
    rates = (wrong_undecided + found.sum()) / len(p)
    sampling = estimate_noise_rate(q)
    rate = sampling["rate"]
    low, high = np.quantile(rates, [0.025, 0.975])
    spread = (sampling["high"] - sampling["low"]) / 2
    noise_rate = {"rate": rate, "low": max(0.0, rate - float(np.hypot(rate - low, spread))),
                  "high": min(1.0, rate + float(np.hypot(high - rate, spread)))}
    return {"probability": q, "a": a, "b": b, "prior": prior, "n": int(len(rows)), "noise_rate": noise_rate}


def held_out_temperature(probs: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """The temperature t whose softened probabilities, each row softmax(log p / t), give the given
    labels the highest likelihood (at most TEMPERATURE_SAMPLE rows, seeded). probs must be
    out-of-sample (out-of-fold), so that t measures how far to trust them: 1, as confident as the
    labels bear out; above 1, overconfident; below, too timid."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if len(y) > TEMPERATURE_SAMPLE:
        sample = np.random.default_rng(seed).choice(len(y), TEMPERATURE_SAMPLE, replace=False)
        p, y = p[sample], y[sample]
    log_p = np.log(np.clip(p, 1e-300, None))
    rows = np.arange(len(y))

    def loss(log_t: float) -> float:
        return -float(np.mean(log_softmax(log_p / np.exp(log_t), axis=1)[rows, y]))

    return float(np.exp(minimize_scalar(loss, bounds=(np.log(0.05), np.log(100.0)), method="bounded").x))


def judge_reliability(probe_probs: np.ndarray, knn_probs: np.ndarray, labels: np.ndarray,
                      noise_counts: np.ndarray, model_probs: np.ndarray | None = None) -> dict:
    """Can the model behind the flags tell wrong labels from its own mistakes?

    probe_probs, knn_probs: (N, C) out-of-fold probe and k-NN vote probabilities of the given
    labels; labels: (N,) given labels; noise_counts: (C, C) expected (given, true) counts;
    model_probs: (N, C) the classifier the flags rest on (TURN's probe, the fine-tuned model), if any.

    Returns {"reliable": bool, "reasons": [str], "fixes": [str], and the measurements:
    "signal_agreement" (Cohen's kappa of the two predicted classes), "probe_accuracy" (against
    the given labels), "majority_share" (the largest class's share, the accuracy of always
    guessing it), "implausible_class_share" (samples whose given class the noise model calls
    mostly wrong), "implausible_classes" (those classes), "model_accuracy" (the classifier's
    agreement with the given labels; None without one), "images_per_class" (mean over the
    classes present), "probe_temperature" (`held_out_temperature` of the probe) and "cautions":
    [str], what makes the estimates rough without making the flags untrustworthy}.
    """
    from sklearn.metrics import cohen_kappa_score

    y = np.asarray(labels, dtype=np.int64)
    probe_pred, knn_pred = np.asarray(probe_probs).argmax(1), np.asarray(knn_probs).argmax(1)
    agreement = float(cohen_kappa_score(probe_pred, knn_pred)) if len(np.unique(
        np.concatenate([probe_pred, knn_pred]))) > 1 else 0.0
    counts = np.asarray(noise_counts, dtype=np.float64)
    rows = counts.sum(1)
    implausible = [int(c) for c in np.flatnonzero((rows > 0) & (counts.argmax(1) != np.arange(len(counts))))]
    implausible_share = float(rows[implausible].sum() / max(rows.sum(), 1e-12))
    majority = float(np.bincount(y).max() / len(y))
    model_accuracy = None if model_probs is None else float((np.asarray(model_probs).argmax(1) == y).mean())
    reasons, fixes = [], []
    if model_accuracy is not None and (model_accuracy - majority) / max(1.0 - majority, 1e-12) < MIN_MODEL_LIFT:
        reasons.append(f"the classifier predicts the given labels hardly better than always guessing the most "
                       f"common class ({model_accuracy:.0%} against {majority:.0%}): it has learnt too little to "
                       "judge them by")
        fixes += ["more training epochs, or a lower learning rate if fine-tuning diverged"]
    if agreement < MIN_SIGNAL_AGREEMENT:
        reasons.append(f"the features do not separate the classes: the linear probe and the nearest neighbours "
                       f"agree on a sample's class little more than chance would (kappa {agreement:.2f}, "
                       f"reliable runs reach {MIN_SIGNAL_AGREEMENT})")
        fixes += ["a larger image size", "another pre-trained model, closer to this kind of image"]
    if implausible_share > MAX_IMPLAUSIBLE_CLASS_SHARE:
        reasons.append(f"the model calls most labels of {len(implausible)} class(es) wrong, {implausible_share:.0%} "
                       "of the samples: it confuses whole classes, so it cannot tell its own errors from "
                       "wrong labels")
        fixes += ["fine-tuning (TURN+) or a stronger model", "more images per class"]
    per_class = len(y) / max(int((rows > 0).sum()), 1)
    cautions = []
    if per_class < MIN_IMAGES_PER_CLASS:
        cautions.append(f"with about {per_class:.0f} images per class the model has few examples to learn each "
                        "class from, so the estimated noise rate, precision and recall are rough (on the "
                        "benchmark's 100-image sets they were off by up to 21 points)")
    temperature = held_out_temperature(probe_probs, y)
    if temperature > MAX_PROBE_TEMPERATURE:
        cautions.append(f"the linear probe is more confident on held-out images than their labels bear out "
                        f"(temperature {temperature:.1f}; well-fitted runs stay below {MAX_PROBE_TEMPERATURE}): it has "
                        "overfit classes its features barely separate, so the estimated noise rate, precision and "
                        "recall can be off either way (by 14-22 points on the benchmark's two-class sets)")
    if cautions:  # what to do about them, said once
        cautions[-1] += ": " + ROUGH_ESTIMATES_ADVICE
    return {"reliable": not reasons, "reasons": reasons, "fixes": list(dict.fromkeys(fixes)), "cautions": cautions,
            "images_per_class": per_class, "probe_temperature": temperature,
            "signal_agreement": agreement, "probe_accuracy": float((probe_pred == y).mean()),
            "majority_share": majority, "model_accuracy": model_accuracy,
            "implausible_class_share": implausible_share, "implausible_classes": implausible}


def summarise_flags(clean_prob: Sequence[float], tau: float, *, calibrated: Sequence[float] | None = None,
                    reliability: dict | None = None) -> dict:
    """The fields metrics.json stores about a run's flags, none of which reads a true label:
    estimated_noise_rate {rate, low, high}, suggested_tau (None where the flags cannot be
    trusted: no tau makes them right), estimated_precision / _recall / _f1 at `tau`, and, where
    the reliability check ran, flags_reliable with flags_reliability."""
    q = clean_prob if calibrated is None else calibrated
    at = estimates_at(clean_prob, tau, calibrated=calibrated)
    trusted = not reliability or reliability.get("reliable", True)
    out = {"tau": float(tau), "estimated_noise_rate": estimate_noise_rate(q),
           "suggested_tau": suggest_tau(clean_prob, calibrated=calibrated) if trusted else None,
           "estimated_precision": at["precision"], "estimated_recall": at["recall"], "estimated_f1": at["f1"]}
    if reliability:
        out["flags_reliable"] = bool(reliability["reliable"])
        out["flags_reliability"] = reliability
    return out
