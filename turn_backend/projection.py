"""2-D maps (t-SNE, UMAP) of features before and after tuning, cached in the run folder.

Both methods run on a PCA-50 reduction of the L2-normalised features: it keeps the
neighbourhoods, makes the nearest-neighbour search of 100,000 samples take seconds, and is
what the run folder keeps (`{split}_pca_{stage}.npy`, 20 MB at 100k) so that the other
method can be computed later from the app without the full features. t-SNE is openTSNE's
FFT-accelerated one (Linderman et al.), which maps 60,000 samples in minutes on 2 cores.

Files under `projections/`: `{split}_subset.npy` (row positions in the split),
`{split}_pca_{stage}.npy` and `{split}_{stage}_{method}.npy` (N x 2, float32).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from turn_backend.io import atomic_save_npy
from turn_backend.runfolder import RunFolder

PROJECTION_METHODS = ("tsne", "umap")
PCA_DIMS = 50
TSNE_ITERATIONS = (250, 500)  # openTSNE's defaults: early exaggeration, then the main phase
PROGRESS_EVERY = 25  # t-SNE iterations between progress reports
# The FFT gradient has a fixed cost per iteration that only pays off on large sets
# (openTSNE's advice); Barnes-Hut is faster below.
FFT_FROM = 10_000
# Threads beyond the free cores spin against each other: on 2 cores, 2 threads made t-SNE
# 3-5x slower than 1 while the app and other work ran (measured); leave one core free.
TSNE_JOBS = max(1, (os.cpu_count() or 1) - 1)
PCA_FIT_ROWS = 100_000  # rows the PCA basis is fitted on; the rest are only projected on it
# Above this many points a map is fitted on a seeded sample of this many, and every other
# point is placed at the median position of its nearest fitted points (openTSNE's
# `prepare_partial` initialisation): t-SNE's cost grows with N, placement stays cheap.
MAP_FIT_POINTS = 100_000
PLACE_NEIGHBOURS = 10

Progress = Callable[[int, int], None]  # (done, total) steps, as the runner's progress reporter


def reduce(features: np.ndarray, dims: int = PCA_DIMS, seed: int = 0, rows: np.ndarray | None = None,
           chunk: int = 65_536) -> np.ndarray:
    """(N, D) features -> (N, min(D, dims)) float32: L2-normalised, then PCA.

    `rows` picks the rows to reduce (all by default). The PCA is fitted on a seeded sample of
    at most PCA_FIT_ROWS normalised rows (randomised SVD) and applied chunk by chunk, so a
    memory-mapped cache of a million rows is read once and never copied whole.
    """
    features = np.asarray(features)  # a memory map stays one
    rows = np.arange(len(features)) if rows is None else np.asarray(rows, dtype=np.int64)

    def normalised(index: np.ndarray) -> np.ndarray:
        # A diverged model can give NaN or constant features; t-SNE and UMAP crash on those
        # (a segmentation fault inside scikit-learn was seen), so they are zeroed here and
        # `project` draws a flat map.
        x = np.nan_to_num(np.asarray(features[index], dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    n, d = len(rows), features.shape[1]
    if d <= dims or n <= dims:
        return normalised(rows)
    from sklearn.decomposition import PCA

    fit = np.sort(np.random.default_rng(seed).choice(rows, min(n, PCA_FIT_ROWS), replace=False))
    pca = PCA(dims, svd_solver="randomized", random_state=seed).fit(normalised(fit))
    out = np.empty((n, dims), dtype=np.float32)
    for start in range(0, n, chunk):
        out[start:start + chunk] = pca.transform(normalised(rows[start:start + chunk]))
    return out


def _is_degenerate(x: np.ndarray) -> bool:
    return len(x) < 3 or float(np.ptp(x, axis=0).max()) < 1e-6


def embed(reduced: np.ndarray, method: str, seed: int = 0, progress: Progress | None = None) -> np.ndarray:
    """(N, d) reduced features (from `reduce`) -> (N, 2) float32 coordinates. Above
    MAP_FIT_POINTS, the map is fitted on a sample and the other points are placed by it."""
    if method not in PROJECTION_METHODS:
        raise ValueError(f"unknown projection {method!r}; choose one of {', '.join(PROJECTION_METHODS)}")
    x = np.asarray(reduced, dtype=np.float32)
    n = len(x)
    if _is_degenerate(x):
        return np.zeros((n, 2), dtype=np.float32)
    report = progress or (lambda done, total: None)
    if n <= MAP_FIT_POINTS:
        return _fit_map(x, method, seed, report)
    fitted = np.sort(np.random.default_rng(seed).choice(n, MAP_FIT_POINTS, replace=False))
    rest = np.setdiff1d(np.arange(n), fitted, assume_unique=True)
    # the fit takes most of the time: 90% of the bar, the placement the last 10%
    coords = np.empty((n, 2), dtype=np.float32)
    coords[fitted] = _fit_map(x[fitted], method, seed, lambda done, total: report(9 * done, 10 * total))
    coords[rest] = place_by_neighbours(x[fitted], coords[fitted], x[rest])
    report(1, 1)
    return coords


def place_by_neighbours(fitted: np.ndarray, fitted_coords: np.ndarray, queries: np.ndarray,
                        k: int = PLACE_NEIGHBOURS) -> np.ndarray:
    """(Q, 2) positions of `queries` on a map fitted to `fitted`: the median map position of
    each query's k nearest fitted points (cosine, as the maps' features are normalised)."""
    from turn_backend.audit.core import knn_search

    idx, _ = knn_search(fitted, queries, min(k, len(fitted)))
    return np.median(fitted_coords[idx], axis=1).astype(np.float32)


def _fit_map(x: np.ndarray, method: str, seed: int, report: Progress) -> np.ndarray:
    n = len(x)
    total = sum(TSNE_ITERATIONS) if method == "tsne" else 1
    report(0, total)
    if method == "tsne":
        from openTSNE import TSNE

        done = [0]

        def step(iteration, error, embedding) -> None:  # openTSNE callback, every PROGRESS_EVERY iterations
            done[0] = min(total, done[0] + PROGRESS_EVERY)
            report(done[0], total)

        perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
        tsne = TSNE(2, perplexity=perplexity, early_exaggeration_iter=TSNE_ITERATIONS[0],
                    n_iter=TSNE_ITERATIONS[1], initialization="pca", n_jobs=TSNE_JOBS, random_state=seed,
                    negative_gradient_method="fft" if n >= FFT_FROM else "bh",
                    callbacks=step, callbacks_every_iters=PROGRESS_EVERY, verbose=False)
        coords = np.asarray(tsne.fit(x), dtype=np.float32)
    else:
        import umap

        reducer = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed, n_jobs=1)
        coords = reducer.fit_transform(x).astype(np.float32)
    report(total, total)
    return coords


def project(features: np.ndarray, method: str, seed: int = 0, progress: Progress | None = None) -> np.ndarray:
    """(N, D) features -> (N, 2) coordinates (PCA-50 of the normalised features, then t-SNE / UMAP)."""
    return embed(reduce(features, seed=seed), method, seed, progress)


def compute_projections(out_dir: Path, split: str, subset: np.ndarray, features: dict[str, np.ndarray],
                        methods, seed: int = 0, progress: Progress | None = None) -> None:
    """Write the subset, the PCA reduction and every method's map for each stage ("before", "after").

    features[stage]: the subset's rows (len(subset) of them), or the whole split's (a memory
    map is fine), from which the subset's rows are read chunk by chunk."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_save_npy(out_dir / f"{split}_subset.npy", np.asarray(subset, dtype=np.int64))
    jobs = [(stage, method) for stage in features for method in methods]
    for k, (stage, method) in enumerate(jobs):
        pca_path = out_dir / f"{split}_pca_{stage}.npy"
        if not pca_path.exists():
            x = features[stage]
            atomic_save_npy(pca_path, reduce(x, seed=seed, rows=None if len(x) == len(subset) else subset))
        # one progress bar over all maps: map k covers steps [k * 1000, (k + 1) * 1000)
        step = None if progress is None else (
            lambda done, total, k=k: progress(k * 1000 + (1000 * done) // max(total, 1), 1000 * len(jobs)))
        coords = embed(np.load(pca_path), method, seed, step)
        atomic_save_npy(out_dir / f"{split}_{stage}_{method}.npy", coords)


def reduced_path(run_dir: Path, split: str, stage: str) -> Path | None:
    """The stored input of a map: the PCA reduction, or the raw subset features of runs made before it."""
    out_dir = RunFolder(run_dir).projections_dir
    for path in (out_dir / f"{split}_pca_{stage}.npy", out_dir / f"{split}_features_{stage}.npy"):
        if path.exists():
            return path
    return None


def ensure_projection(run_dir: Path, split: str, stage: str, method: str, seed: int = 0,
                      progress: Progress | None = None) -> np.ndarray | None:
    """A map from the run folder, computed from the stored reduction on first use (then saved)."""
    path = RunFolder(run_dir).projection_path(split, stage, method)
    if path.exists():
        return np.load(path)
    source = reduced_path(run_dir, split, stage)
    if source is None:
        return None
    x = np.load(source)
    coords = embed(x, method, seed, progress) if "_pca_" in source.name else project(x, method, seed, progress)
    atomic_save_npy(path, coords)
    return coords
