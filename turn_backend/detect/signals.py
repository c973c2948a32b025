"""Label-noise signals: pure functions, arrays in, one clean score per sample out.

Every signal returns a clean score in [0, 1] (higher = the given label is more probably
right) and never needs the true labels. Shapes: N samples, D feature dimensions, C classes.
Labels are integers in [0, C).
"""

from __future__ import annotations

import numpy as np
import torch

from turn_backend.cleansing import fit_clean_probability


class DetectionInputError(ValueError):
    """Input that detection cannot work with; the message says what to fix."""


def check_inputs(features: np.ndarray | None, labels: np.ndarray,
                 num_classes: int | None = None) -> tuple[np.ndarray, int]:
    """Validate labels (and features when given); returns labels as int64 and C."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not len(labels):
        raise DetectionInputError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DetectionInputError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.min() < 0:
        raise DetectionInputError("labels must be >= 0 (class indices)")
    c = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    if labels.max() >= c:
        raise DetectionInputError(f"label {labels.max()} is outside 0..{c - 1} (num_classes={c})")
    if c < 2:
        raise DetectionInputError("detection needs at least 2 classes")
    if features is not None:
        if features.ndim != 2 or features.shape[0] != len(labels):
            raise DetectionInputError(
                f"features must have shape (N, D) with N = {len(labels)} labels, got {features.shape}")
        bad = int((~np.isfinite(np.asarray(features[: min(len(features), 200_000)]))).any(axis=1).sum())
        if bad:
            raise DetectionInputError(
                f"{bad} sample(s) have NaN or infinite features; check the model and its preprocessing")
    return labels.astype(np.int64), c


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def given_label_probability(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N,) probability each row of `probs` gives to the sample's given label."""
    return np.asarray(probs)[np.arange(len(labels)), labels]


# ------------------------------------------------------------------------------ GMM on losses


def gmm_clean_probability(probs: np.ndarray, labels: np.ndarray, num_classes: int, seed: int = 0) -> np.ndarray:
    """TURN's step 2-1 as a signal: the per-class two-component GMM posterior of the low-loss
    component, on the cross-entropy of `probs` (N, C) against the given labels."""
    losses = -np.log(np.clip(given_label_probability(probs, labels), 1e-12, 1.0))
    return fit_clean_probability(losses, labels, num_classes, seed=seed).clean_prob


# ------------------------------------------------------------------ out-of-fold linear probe


def reduce_features(features: np.ndarray, dims: int = 256, seed: int = 0, chunk: int = 65536) -> np.ndarray:
    """(N, min(D, dims)) float32 PCA projection of the features (centred; randomised SVD on a
    sample of at most 50,000 rows, applied in chunks so a memory-mapped array is never copied whole).

    Linear probes and neighbour search on it are several times faster than on the raw
    features and lose little: a pre-trained model's features lie close to a low-dim subspace.
    """
    n, d = features.shape
    dims = min(dims, n)  # a PCA has at most N components
    if d <= dims:
        return np.asarray(features, dtype=np.float32)
    rng = np.random.default_rng(seed)
    fit_rows = np.sort(rng.choice(n, size=min(n, 50_000), replace=False))
    sample = torch.as_tensor(np.asarray(features[fit_rows]), dtype=torch.float32)
    mean = sample.mean(0, keepdim=True)
    torch.manual_seed(seed)
    _, _, v = torch.pca_lowrank(sample - mean, q=dims, center=False, niter=4)
    out = np.empty((n, dims), dtype=np.float32)
    for start in range(0, n, chunk):
        block = torch.as_tensor(np.asarray(features[start:start + chunk]), dtype=torch.float32)
        out[start:start + chunk] = ((block - mean) @ v).numpy()
    return out


def _standardise(x: torch.Tensor) -> torch.Tensor:
    """Centred, and scaled by one number so that an average dimension has unit variance.
    Not per dimension: that would whiten PCA components, blowing the low-variance (mostly
    noise) ones up to the size of the informative ones, which hurts most on small sets."""
    x = x - x.mean(0, keepdim=True)
    return x / x.pow(2).mean().sqrt().clamp_min(1e-12)


def fit_softmax_regressions(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float,
                            weights: torch.Tensor, max_iter: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    """F independent multinomial logistic regressions on the same (N, D) features, fitted as
    one problem by full-batch L-BFGS: regression f minimises its weighted mean CE (weights[:, f],
    (N, F), zero for samples it must not see) + l2/2 |W_f|^2. Returns W (F, D, C) and b (F, C).

    One joint fit instead of F separate ones: the objectives share no parameters, so the
    optimum is each one's own, and one matrix product per step serves all F (the k folds of
    a cross-validation). The gradient is written out, not taken by autograd, which spends more
    time on bookkeeping than on arithmetic at these sizes.
    """
    n, d = x.shape
    f, c = weights.shape[1], num_classes
    m = (weights / weights.sum(0, keepdim=True).clamp_min(1e-12)).to(x.dtype)[:, :, None]  # (N, F, 1)
    onehot = torch.nn.functional.one_hot(y, c).to(x.dtype)[:, None, :]  # (N, 1, C)
    w = torch.zeros(d, f * c, dtype=x.dtype, device=x.device)
    b = torch.zeros(f * c, dtype=x.dtype, device=x.device)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-6, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure():
        z = (x @ w + b).view(n, f, c)
        log_p = z - torch.logsumexp(z, dim=2, keepdim=True)  # 4x faster than log_softmax on CPU for small C
        loss = -(m * log_p * onehot).sum() + 0.5 * l2 * w.pow(2).sum()
        g = ((log_p.exp() - onehot) * m).view(n, f * c)  # d loss / d logits
        w.grad = x.T @ g + l2 * w
        b.grad = g.sum(0)
        return loss

    with torch.no_grad():
        opt.step(closure)
    return w.view(d, f, c).permute(1, 0, 2).contiguous(), b.view(f, c)


def fit_softmax_regression(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float,
                           weight: torch.Tensor | None = None, max_iter: int = 60) -> torch.nn.Linear:
    """Multinomial logistic regression, full-batch L-BFGS: mean (weighted) CE + l2/2 |W|^2."""
    weights = torch.ones(len(y), 1, dtype=x.dtype, device=x.device) if weight is None else weight.reshape(-1, 1)
    w, b = fit_softmax_regressions(x, y, num_classes, l2, weights, max_iter)
    head = torch.nn.Linear(x.shape[1], num_classes).to(x.device, x.dtype)
    with torch.no_grad():
        head.weight.copy_(w[0].T)
        head.bias.copy_(b[0])
    return head


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """(N,) fold index of each sample, classes spread evenly over the folds."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        fold[members] = (np.arange(len(members)) + offset) % folds
        offset += len(members)
    return fold


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, num_classes: int | None = None, *,
                              folds: int = 5, l2: float | None = None, seed: int = 0, device: str = "cpu",
                              sample_weight: np.ndarray | None = None) -> np.ndarray:
    """(N, C) out-of-fold predicted probabilities of a linear probe on the features.

    Each sample is scored by a softmax regression trained (full-batch L-BFGS, in torch on
    `device`) on the other folds, so its own, possibly wrong, label never shaped its
    prediction. Features are centred and scaled (`_standardise`). `l2` (mean cross-entropy +
    l2/2 |W|^2) defaults to 1/sqrt(N), stronger for smaller sets. `sample_weight` (N,) weights
    the training loss, e.g. by clean probability.
    """
    labels, c = check_inputs(features, labels, num_classes)
    n = len(labels)
    folds = int(max(2, min(folds, n)))
    dev = torch.device(device)
    x = _standardise(torch.as_tensor(np.asarray(features), dtype=torch.float32, device=dev))
    y = torch.as_tensor(labels, device=dev)
    wt = None if sample_weight is None else torch.as_tensor(np.asarray(sample_weight, dtype=np.float32), device=dev)
    fold = stratified_folds(labels, folds, seed)
    if l2 is None:
        l2 = 1.0 / np.sqrt(n)
    # (N, F) training weight of each sample in each fold's probe: zero in its own fold
    weights = torch.as_tensor(fold[:, None] != np.arange(folds)[None, :], dtype=torch.float32, device=dev)
    if wt is not None:
        weights = weights * wt[:, None]
    w, b = fit_softmax_regressions(x, y, c, l2, weights)
    fold_t = torch.as_tensor(fold, device=dev)
    every = torch.einsum("nd,fdc->nfc", x, w) + b  # (N, F, C): each probe on each sample
    logits = every[torch.arange(n, device=dev), fold_t]  # each sample by the probe that never saw it
    # classes absent from a fold's training samples cannot be predicted by its probe
    present = torch.stack([torch.as_tensor(np.bincount(labels[fold != k], minlength=c) > 0, device=dev)
                           for k in range(folds)])
    logits = logits.masked_fill(~present[fold_t], -torch.inf)
    return torch.softmax(logits.double(), dim=1).cpu().numpy()


# ------------------------------------------------------------------------------ k-NN votes

EXACT_KNN_MAX = 30_000  # on a CPU: above this many samples, an approximate index (pynndescent)
EXACT_KNN_MAX_CUDA = 2_000_000  # on a GPU the exact products stay fast far longer
SIMILARITY_BLOCK = 1 << 28  # floats of one chunk's similarity rows (1 GiB of float32)


def nearest_neighbours(features: np.ndarray, k: int, *, chunk: int = 2048, device: str = "cpu",
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(N, k) indices and cosine similarities of each sample's k nearest other samples.

    Exact (chunked matrix products in torch on `device`) up to EXACT_KNN_MAX samples on a
    CPU and EXACT_KNN_MAX_CUDA on a GPU; an approximate pynndescent index above (recall
    close to 1 at these k).
    """
    n = len(features)
    k = int(min(k, n - 1))
    if k < 1:
        raise DetectionInputError("k-NN needs at least 2 samples")
    dev = torch.device(device)
    x = torch.as_tensor(np.asarray(features), dtype=torch.float32, device=dev)
    x = torch.nn.functional.normalize(x, dim=1)
    if n <= (EXACT_KNN_MAX_CUDA if dev.type == "cuda" else EXACT_KNN_MAX):
        chunk = max(1, min(chunk, SIMILARITY_BLOCK // n))
        idx = np.empty((n, k), dtype=np.int64)
        sim = np.empty((n, k), dtype=np.float32)
        for start in range(0, n, chunk):
            s = x[start:start + chunk] @ x.T
            rows = torch.arange(s.shape[0], device=s.device)
            s[rows, rows + start] = -torch.inf  # not its own neighbour
            top = torch.topk(s, k, dim=1)
            idx[start:start + chunk] = top.indices.cpu().numpy()
            sim[start:start + chunk] = top.values.cpu().numpy()
        return idx, sim
    from pynndescent import NNDescent

    data = x.cpu().numpy()
    index = NNDescent(data, n_neighbors=k + 1, metric="cosine", random_state=seed, n_jobs=-1)
    nbr, dist = index.neighbor_graph
    # drop the sample itself (usually column 0; duplicates can reorder it)
    keep = nbr != np.arange(n)[:, None]
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    nbr = np.take_along_axis(nbr, order, 1)
    dist = np.take_along_axis(dist, order, 1)
    return nbr.astype(np.int64), (1.0 - dist).astype(np.float32)


def knn_label_distribution(neighbour_index: np.ndarray, labels: np.ndarray, num_classes: int,
                           smoothing: float = 1.0) -> np.ndarray:
    """(N, C) share of each sample's neighbours per given label (SimiFeat-style votes),
    smoothed towards the label frequencies with `smoothing` pseudo-votes."""
    labels = np.asarray(labels, dtype=np.int64)
    n, k = neighbour_index.shape
    votes = np.zeros((n, num_classes), dtype=np.float64)
    np.add.at(votes, (np.repeat(np.arange(n), k), labels[neighbour_index].ravel()), 1.0)
    prior = np.bincount(labels, minlength=num_classes) / len(labels)
    return (votes + smoothing * prior) / (k + smoothing)
