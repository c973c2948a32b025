"""The combined clean probability: one calibrated number per sample from every signal.

The model behind it is class-conditional label noise: the given label y~ of a sample whose
true class is y* is drawn from T[y~, y*] = P(given = y~ | true = y*). Given an estimate
p*(x) of P(true class | x), Bayes' rule gives the probability that the given label is right,

    P(y* = y~ | x, y~) = T[y~, y~] p*_y~(x) / sum_j T[y~, j] p*_j(x),

a real probability, so tau keeps its meaning (flag where it is <= tau). The steps:

1. out-of-fold linear-probe probabilities and k-NN label votes both estimate P(given | x);
   their average, through cleanlab's confident joint (`cleanlab.count.estimate_joint`),
   gives a first noise matrix T0 and a first posterior. Every noise matrix here is shrunk
   toward noise spread evenly over the other classes, as far as its counts bear
   (`noise_matrix_from_counts`): on small sets of many classes most of its cells rest on one
   or two samples;
2. a second out-of-fold probe, trained on the samples that posterior calls clean, estimates
   P(true | x) rather than P(given | x) (wrong labels barely shape it);
3. p* pools that probe with the in-sample probabilities of a noise-robust classifier where
   one exists (TURN's LP-GCE head, or the fine-tuned model): their weighted geometric mean,
   renormalised (a log-linear pool: a class both call likely stays likely, one either rules
   out is ruled out), the out-of-fold probe weighted 2:1 because it never saw the sample's own
   label while the classifier did. T is refined by EM against p* (each sample's posterior over
   its true class, summed per given class). On the detection benchmark (docs/benchmarks.md)
   the pool ranks better than the probe alone or the plain average in every noise type;
4. but the pool is overconfident that a disputed label is wrong: its classifier saw that very
   label in training and fitted around it, so the posterior drops too low for the hard, clean
   samples (at 20% symmetric noise, of the samples it gave 0.2-0.4, half were clean). The same
   posterior from the out-of-fold probe alone, which never saw the sample's label, ranks a
   little worse but is calibrated (ECE 0.01 there, against 0.03). So the pool ranks and the
   probe calibrates: the combined clean probability is the pool's posterior mapped through
   the logistic curve sigma(a logit(p) + b) that fits the probe's posterior best (`recalibrate`;
   monotone, so every tau still flags a prefix of the pool's ranking). The suggested label is
   the true class with the highest posterior, and the expected (given, true) counts are the
   estimated noise matrix.

Several annotators per image (`annotator_probs`, their aggregator's posterior q over the true
class, the given label their consensus): the annotations and the image are two views of the
same true class, independent given it, so the posterior is P(true = j | x, annotations)
proportional to p*_j(x) q_j / pi_j (pi: the annotators' class prior, the mean of q). This
replaces T, which only summarises how often a consensus is wrong: the annotations themselves
say how far to trust this one. An image its annotators disagree on gets a lower q for its
consensus and so a lower clean probability.

No step reads true labels.
"""

from __future__ import annotations

import numpy as np

from turn_backend.detect.estimates import judge_reliability
from turn_backend.detect.result import DetectionResult, Stopwatch
from turn_backend.detect.signals import (
    DetectionInputError,
    check_inputs,
    given_label_probability,
    gmm_clean_probability,
    knn_label_distribution,
    nearest_neighbours,
    out_of_fold_probabilities,
    reduce_features,
)

EM_ITERATIONS = 10
FIRST_PASS_TAU = 0.6  # the first posterior's cut for the clean probe's training set (the default tau)
PROBE_WEIGHT = 2.0  # the out-of-fold probe's weight against the in-sample classifier's in the pool
RECALIBRATION_SAMPLE = 200_000  # rows the recalibration curve is fitted on (two parameters)
# The prior strengths (pseudo-samples per true class) the noise matrix's shrinkage chooses from
# (`noise_matrix_from_counts`): from next to none to enough to outweigh 100,000 images of a class.
NOISE_PRIOR_STRENGTHS = np.geomspace(0.5, 1e5, 40)
NOISE_CENTRE_FLOOR = 1e-6
# Columns (true classes) the strength is chosen on, at most: the evidence is a sum over columns, and
# on 1,000 classes all of them took 1.8 s per choice, 21 choices per detection run (0.15 s with 100).
NOISE_EVIDENCE_COLUMNS = 100


def log_linear_pool(probs: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """(N, C) the weighted geometric mean of several (N, C) probability estimates, each row
    renormalised to sum to 1 (a row where every class got zero from some estimate stays zero)."""
    total = float(sum(weights))
    log_p = sum(w / total * np.log(np.clip(p, 1e-300, None)) for p, w in zip(probs, weights))
    zero = np.any([p <= 0 for p in probs], axis=0)
    pooled = np.where(zero, 0.0, np.exp(log_p - log_p.max(axis=1, keepdims=True)))
    return pooled / np.clip(pooled.sum(axis=1, keepdims=True), 1e-300, None)


def noise_matrix_from_joint(joint: np.ndarray) -> np.ndarray:
    """T[given, true] = P(given | true) from a joint P(given, true) (columns normalised)."""
    return joint / np.clip(joint.sum(axis=0, keepdims=True), 1e-12, None)


def symmetric_noise_centre(counts: np.ndarray) -> np.ndarray:
    """(C, C) the noise matrix with each true class's own rate of wrong labels (from the (given,
    true) `counts`) and those wrong labels spread evenly over the other classes: what
    `noise_matrix_from_counts` shrinks toward."""
    c = counts.shape[0]
    right = np.diag(counts) / np.clip(counts.sum(axis=0), 1e-12, None)
    centre = np.tile(((1.0 - right) / (c - 1))[None, :], (c, 1))
    centre[np.diag_indices(c)] = right
    centre = np.clip(centre, NOISE_CENTRE_FLOOR, None)  # a Dirichlet needs every share above zero
    return centre / centre.sum(axis=0, keepdims=True)


def dirichlet_multinomial_evidence(counts: np.ndarray, strength: float, centre: np.ndarray) -> float:
    """log P(counts | each column drawn from a Dirichlet with mean centre[:, j] and total
    `strength`), summed over the columns, without the multinomial coefficient (it does not depend
    on the prior). Real-valued counts (expected counts) are taken as they are."""
    from scipy.special import gammaln

    prior = strength * centre
    n = counts.sum(axis=0)
    return float(np.sum(gammaln(strength) - gammaln(n + strength)
                        + np.sum(gammaln(counts + prior) - gammaln(prior), axis=0)))


def noise_matrix_from_counts(counts: np.ndarray) -> np.ndarray:
    """T[given, true] from expected (given, true) counts, each column shrunk toward
    `symmetric_noise_centre` by a Dirichlet prior: (counts + s centre) / (n + s).

    A noise matrix has C x (C - 1) off-diagonal cells, and a class of 10 images leaves most of them
    0 or 1: taken as they stand, those counts read as "class a is mislabelled as b, never as c",
    and Bayes' rule with them ranks the samples by noise in the counts. The prior's strength s is
    chosen from the counts themselves, as the value of NOISE_PRIOR_STRENGTHS under which they are
    likeliest (Dirichlet-multinomial evidence, empirical Bayes): wrong labels that follow a pattern
    (class-pair flips) keep it (s of 2-6 at 10,000 images), wrong labels spread without one are
    spread evenly (s of 700-4,000 at 10,000 images with symmetric noise, the grid's top at 100).
    On two classes the centre is the counts' own matrix: no change. Empty columns (a true class
    no sample is estimated to have) stay zero."""
    n = counts.sum(axis=0)
    if counts.shape[0] < 3 or not (n > 1e-12).any():
        return noise_matrix_from_joint(counts)
    centre = symmetric_noise_centre(counts)
    used = n > 1e-12
    cols = np.flatnonzero(used)
    if len(cols) > NOISE_EVIDENCE_COLUMNS:  # a fixed random subset of the classes (seeded: the same each call)
        cols = np.sort(np.random.default_rng(0).choice(cols, NOISE_EVIDENCE_COLUMNS, replace=False))
    evidence = [dirichlet_multinomial_evidence(counts[:, cols], s, centre[:, cols]) for s in NOISE_PRIOR_STRENGTHS]
    strength = NOISE_PRIOR_STRENGTHS[int(np.argmax(evidence))]
    t = (counts + strength * centre) / (n + strength)[None, :]
    t[:, ~used] = 0.0
    return t


def true_class_posterior(noise_matrix: np.ndarray, labels: np.ndarray, p_true: np.ndarray) -> np.ndarray:
    """(N, C) P(true = j | x, given label) proportional to T[given, j] p*_j(x)."""
    r = noise_matrix[labels] * p_true
    total = r.sum(axis=1, keepdims=True)
    # where the model gives the given label's row zero mass everywhere, trust the label
    empty = total[:, 0] <= 1e-300
    r[empty] = 0.0
    r[empty, labels[empty]] = 1.0
    total[empty] = 1.0
    return r / total


def annotator_posterior(p_true: np.ndarray, annotator_probs: np.ndarray) -> np.ndarray:
    """(N, C) P(true = j | x, annotations) proportional to p*_j(x) q_j / pi_j: the image's and the
    annotators' evidence combined (q: the annotators' posterior, pi: its mean, their class prior)."""
    prior = np.clip(annotator_probs.mean(axis=0, keepdims=True), 1e-12, None)
    r = p_true * annotator_probs / prior
    total = r.sum(axis=1, keepdims=True)
    # where the image rules out every class the annotators allow, the annotators decide
    empty = total[:, 0] <= 1e-300
    r[empty] = annotator_probs[empty]
    return r / r.sum(axis=1, keepdims=True)


def recalibrate(score: np.ndarray, target: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N,) sigma(a logit(score) + b), with a and b fitted so that it matches the probabilities
    `target` best (cross-entropy against them as soft labels; at most RECALIBRATION_SAMPLE rows,
    seeded). Monotone in score: it keeps score's ranking and takes target's calibration."""
    from scipy.special import logit
    from sklearn.linear_model import LogisticRegression

    z = logit(np.clip(score, 1e-12, 1.0 - 1e-12))
    rows = np.arange(len(z))
    if len(rows) > RECALIBRATION_SAMPLE:
        rows = np.random.default_rng(seed).choice(len(z), RECALIBRATION_SAMPLE, replace=False)
    if np.ptp(z[rows]) == 0:  # one value: the best constant is the target's mean
        return np.full(len(z), float(np.mean(target[rows])))
    # a soft label q is a sample counted as clean with weight q and as wrong with weight 1 - q
    x = np.concatenate([z[rows], z[rows]])[:, None]
    y = np.concatenate([np.ones(len(rows)), np.zeros(len(rows))])
    w = np.concatenate([target[rows], 1.0 - target[rows]])
    curve = LogisticRegression(C=1e6).fit(x, y, sample_weight=w)  # next to no penalty: 2 parameters
    return curve.predict_proba(z[:, None])[:, 1]


def with_clean_probability(posterior: np.ndarray, labels: np.ndarray, clean: np.ndarray,
                           p_true: np.ndarray) -> np.ndarray:
    """(N, C) each row with the given label's entry set to `clean` and the other classes sharing
    the rest in their old proportions (where they had none: all of it to the class p_true, the
    estimate of P(true | x), ranks highest after the given one)."""
    n = len(labels)
    out = posterior.copy()
    out[np.arange(n), labels] = 0.0
    rest = out.sum(axis=1)
    none = np.flatnonzero(rest <= 1e-300)
    if len(none):
        others = p_true[none].copy()
        others[np.arange(len(none)), labels[none]] = -np.inf
        out[none, others.argmax(axis=1)] = 1.0
        rest[none] = 1.0
    out *= ((1.0 - clean) / rest)[:, None]
    out[np.arange(n), labels] = clean
    return out


def refine_noise_matrix(noise_matrix: np.ndarray, labels: np.ndarray, p_true: np.ndarray,
                        iterations: int = EM_ITERATIONS) -> np.ndarray:
    """EM for T with p* fixed: expected (given, true) counts from the posterior, turned into T by
    `noise_matrix_from_counts` (a MAP step under its empirically chosen prior)."""
    c = noise_matrix.shape[0]
    t = noise_matrix
    for _ in range(iterations):
        r = true_class_posterior(t, labels, p_true)
        counts = np.zeros((c, c))
        np.add.at(counts, labels, r)
        t = noise_matrix_from_counts(counts)
    return t


def detect_label_issues(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int | None = None,
    *,
    model_probs: np.ndarray | None = None,
    gmm_clean: np.ndarray | None = None,
    oof_probs: np.ndarray | None = None,
    annotator_probs: np.ndarray | None = None,
    neighbours: np.ndarray | None = None,
    k: int = 20,
    folds: int = 5,
    dims: int = 256,
    device: str = "cpu",
    seed: int = 0,
) -> DetectionResult:
    """Every signal and the combined clean probability for one labelled set.

    features: (N, D) features of a (pre-trained or fine-tuned) model; a memory-mapped array works.
    labels: (N,) given labels, integers in [0, C).
    model_probs: (N, C) optional in-sample probabilities of a noise-robust classifier on the
        same samples (TURN's LP-GCE head, or the fine-tuned model): adds TURN's per-class GMM
        signal ("gmm_lp") and joins the estimate of P(true | x).
    gmm_clean: (N,) the caller's own fit of that GMM signal on the same model_probs, so that
        the stored "gmm_lp" is the very fit it selects with (fitted here when not given).
    oof_probs: (N, C) optional out-of-sample probabilities of the caller's own classifier
        (cross-validated, or from a model that never saw these labels; cleanlab's
        `pred_probs`): they take the place of the out-of-fold linear probe's.
    annotator_probs: (N, C) optional posterior over the true class from several annotators per
        sample (turn_backend.annotators), the labels being their consensus: joins the posterior
        (see the module docstring) and adds the "annotators" signal.
    neighbours: (N, >= k) optional indices of each sample's nearest other samples in these
        features, most similar first (the run's audit computes them once: `audit.neighbour_graph`);
        without them the search runs here, on the PCA-reduced features.
    k: neighbours per sample for the k-NN votes (capped below N).
    folds: folds of the out-of-fold linear probes.
    dims: PCA dimensions the probes and the neighbour search work in.

    Returns a DetectionResult; `result.flagged(tau)` is the set to review.
    """
    from cleanlab.count import estimate_joint
    from cleanlab.rank import get_label_quality_scores

    features = np.asarray(features)  # a memory map stays one (no copy)
    labels, c = check_inputs(features, labels, num_classes)
    n = len(labels)
    if n < 2 * c:
        raise DetectionInputError(f"detection needs at least 2 samples per class on average; got {n} for {c} classes")
    if model_probs is not None and np.shape(model_probs) != (n, c):
        raise DetectionInputError(f"model_probs must have shape ({n}, {c}), got {np.shape(model_probs)}")
    if oof_probs is not None and np.shape(oof_probs) != (n, c):
        raise DetectionInputError(f"oof_probs must have shape ({n}, {c}), got {np.shape(oof_probs)}")
    if annotator_probs is not None and np.shape(annotator_probs) != (n, c):
        raise DetectionInputError(f"annotator_probs must have shape ({n}, {c}), got {np.shape(annotator_probs)}")
    if gmm_clean is not None and (model_probs is None or np.shape(gmm_clean) != (n,)):
        raise DetectionInputError(f"gmm_clean needs model_probs and shape ({n},), got {np.shape(gmm_clean)}")
    notes: list[str] = []
    counts = np.bincount(labels, minlength=c)
    tiny = np.flatnonzero((counts > 0) & (counts < folds))
    if len(tiny):
        notes.append(f"class(es) {tiny.tolist()} have fewer samples than folds ({folds}): their labels are kept "
                     "as clean, since a probe cannot learn a class it sees too few times")
    k_eff = int(min(k, n - 1))
    small = np.flatnonzero((counts > 0) & (counts <= k_eff))
    if len(small):
        notes.append(f"class(es) {small.tolist()} have no more samples than k={k_eff}: their k-NN votes cannot "
                     "be unanimous, so that signal is weaker for them")

    if neighbours is not None and (np.shape(neighbours)[0] != n or np.shape(neighbours)[1] < k_eff):
        raise DetectionInputError(f"neighbours must have shape ({n}, >= {k_eff}), got {np.shape(neighbours)}")
    clock = Stopwatch()
    reduced = reduce_features(features, dims, seed)
    clock.lap("reduce")
    p_oof = (np.asarray(oof_probs, dtype=np.float64) if oof_probs is not None
             else out_of_fold_probabilities(reduced, labels, c, folds=folds, seed=seed, device=device))
    clock.lap("probes")
    if neighbours is None:
        neighbours, _ = nearest_neighbours(reduced, k_eff, device=device, seed=seed)
    p_knn = knn_label_distribution(np.asarray(neighbours)[:, :k_eff], labels, c)
    clock.lap("knn")

    # 1. the noisy-label posterior, a first noise matrix and a first clean probability
    p_given = (p_oof + p_knn) / 2
    t0 = noise_matrix_from_counts(estimate_joint(labels, p_given) * n)
    first = given_label_posterior(t0, labels, p_given)
    # 2. P(true | x): a probe trained on the samples that first posterior calls clean
    # (the others keep a token weight, so every class stays learnable)
    p_clean = out_of_fold_probabilities(reduced, labels, c, folds=folds, seed=seed + 1, device=device,
                                        sample_weight=(first > FIRST_PASS_TAU) + 1e-3)
    clock.lap("probes")
    # 3. p* = the probe pooled with the robust classifier where there is one; T refined against it
    p_true = p_clean if model_probs is None else log_linear_pool(
        [p_clean, np.asarray(model_probs, dtype=np.float64)], [PROBE_WEIGHT, 1.0])
    annotations = None if annotator_probs is None else np.asarray(annotator_probs, dtype=np.float64)

    def posterior_from(p: np.ndarray) -> np.ndarray:
        if annotations is not None:
            return annotator_posterior(p, annotations)
        return true_class_posterior(refine_noise_matrix(t0, labels, p), labels, p)

    pooled = posterior_from(p_true)
    clean = pooled[np.arange(n), labels]
    if model_probs is not None:  # 4. the pool ranks, the out-of-fold probe alone calibrates
        clean = recalibrate(clean, posterior_from(p_clean)[np.arange(n), labels], seed)
    clean[np.isin(labels, tiny)] = 1.0
    posterior = with_clean_probability(pooled, labels, clean, p_true)

    signals = {
        "oof_probe": get_label_quality_scores(labels, p_oof),
        "oof_gmm": gmm_clean_probability(p_oof, labels, c, seed),
        "knn": given_label_probability(p_knn, labels),
    }
    if model_probs is not None:
        signals["gmm_lp"] = (np.asarray(gmm_clean, dtype=np.float64) if gmm_clean is not None
                             else gmm_clean_probability(np.asarray(model_probs), labels, c, seed))
    if annotator_probs is not None:
        signals["annotators"] = given_label_probability(annotator_probs, labels)
    expected = np.zeros((c, c))
    np.add.at(expected, labels, posterior)
    # Whether the model confuses whole classes is asked of the pool that ranks the flags: the
    # recalibration borrows the out-of-fold probe's doubt, which on tiny classes (10 images
    # each) is doubt about everything, not a confusion of two classes. The noise matrix's
    # shrinkage keeps a confusion its counts bear out: on the benchmark's 16-px images the share
    # of samples in classes called mostly wrong stays 0.60 with it (the check fires above 0.4).
    pooled_counts = np.zeros((c, c))
    np.add.at(pooled_counts, labels, pooled)
    clock.lap("noise_model")
    return DetectionResult(
        clean_prob=clean, signals=signals,
        suggested_label=posterior.argmax(1), suggested_confidence=posterior.max(1),
        noise_counts=expected, noise_rate=float(1.0 - clean.mean()), notes=notes,
        reliability=judge_reliability(p_oof, p_knn, labels, pooled_counts, model_probs),
        pred_probs=p_oof, knn_probs=p_knn, seconds=clock.seconds,
    )


def given_label_posterior(noise_matrix: np.ndarray, labels: np.ndarray, p: np.ndarray) -> np.ndarray:
    """(N,) the posterior probability that each given label is right."""
    return true_class_posterior(noise_matrix, labels, p)[np.arange(len(labels)), labels]
