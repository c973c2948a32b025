"""The detectors of the dataset audit: pure functions over arrays (numpy in, numpy out).

Every similarity here is the cosine similarity of feature vectors, i.e. the inner product
of L2-normalised rows. Nearest-neighbour search is exact (chunked matrix products) for
small sets; for large ones a faiss HNSW index over PCA-reduced features proposes
candidates that are then ranked by their exact cosine, so that memory and time grow about
linearly with the number of samples and the features are read chunk by chunk.
"""

from __future__ import annotations

import hashlib
import mmap
from collections.abc import Callable

import numpy as np

# Up to this many query x base pairs the search is an exact chunked matmul; above, an index.
EXACT_PAIRS = 100_000_000
REDUCED_DIMS = 128  # dimensions of the index's features (PCA), candidates only
PCA_SAMPLE = 20_000  # rows the PCA basis is fitted on
# "More like this" over a large set: candidates by a product over this many PCA dimensions of
# every row (held in memory), then exact cosine on this many candidates' full features
SEARCH_DIMS = 64
SEARCH_CANDIDATES = 256
# The indexed search groups its work by this many coarse k-means cells (at most 1 per 256 rows).
COARSE_CELLS = 1024
# Rows of queries x base similarities held at once in the exact search (~256 MB of float32).
_BLOCK_FLOATS = 64 * 1024 * 1024

Progress = Callable[[int, int], None]


def _check_matrix(name: str, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (samples x dims), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must hold floats, got {x.dtype}")
    return x


def l2_normalise(features: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """Rows scaled to unit length, as a new float32 array, shape (N, D).

    Works chunk by chunk so that a memory-mapped float32 (or float16) cache is read once
    without a float64 copy of the whole matrix. All-zero rows stay zero (cosine 0 to all).
    """
    features = _check_matrix("features", features)
    out = np.empty(features.shape, dtype=np.float32)
    for start in range(0, len(features), chunk):
        block = np.asarray(features[start:start + chunk], dtype=np.float32)
        if not np.isfinite(block).all():
            raise ValueError("features contain NaN or infinite values; recompute them")
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        out[start:start + chunk] = block / np.where(norms > 0, norms, 1.0)
    return out


def row_norms(features: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """(N,) float32 Euclidean norm of each row, chunk by chunk (a memory map is read once)."""
    features = _check_matrix("features", features)
    out = np.empty(len(features), dtype=np.float32)
    for start in range(0, len(features), chunk):
        out[start:start + chunk] = np.linalg.norm(np.asarray(features[start:start + chunk], dtype=np.float32), axis=1)
    if not np.isfinite(out).all():
        raise ValueError("features contain NaN or infinite values; recompute them")
    return out


def _exact_search(base: np.ndarray, queries: np.ndarray, k: int, exclude: np.ndarray | None,
                  progress: Progress | None) -> tuple[np.ndarray, np.ndarray]:
    """Cosine kNN by chunked matrix products over raw features (both normalised here)."""
    base = l2_normalise(base)
    n, q = len(base), len(queries)
    idx = np.empty((q, k), dtype=np.int64)
    sim = np.empty((q, k), dtype=np.float32)
    step = max(1, _BLOCK_FLOATS // max(n, 1))
    for start in range(0, q, step):
        stop = min(q, start + step)
        s = l2_normalise(queries[start:stop]) @ base.T  # (chunk, N)
        if exclude is not None:
            rows = np.arange(stop - start)
            valid = exclude[start:stop] >= 0
            s[rows[valid], exclude[start:stop][valid]] = -np.inf
        idx[start:stop], sim[start:stop] = _top_k(s, np.arange(n)[None, :].repeat(stop - start, 0), k)
        if progress is not None:
            progress(stop, q)
    return idx, sim


def _top_k(sim: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest entries of each row of sim (Q, M), with their idx, most similar first."""
    if k < sim.shape[1]:
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        sim, idx = np.take_along_axis(sim, top, axis=1), np.take_along_axis(idx, top, axis=1)
    order = np.argsort(-sim, axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(sim, order, axis=1)


def pca_basis(features: np.ndarray, dims: int = REDUCED_DIMS, sample: int = PCA_SAMPLE, seed: int = 0) -> np.ndarray:
    """The top `dims` directions of the normalised features (uncentred, so inner products
    are kept), from a seeded sample of at most `sample` rows: shape (D, min(dims, D))."""
    n, d = features.shape
    rows = np.sort(np.random.default_rng(seed).choice(n, min(n, sample), replace=False))
    x = l2_normalise(np.asarray(features[rows])).astype(np.float64)
    values, vectors = np.linalg.eigh(x.T @ x)  # ascending
    return np.ascontiguousarray(vectors[:, ::-1][:, :min(dims, d)], dtype=np.float32)


def _project(features: np.ndarray, basis: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """Normalised rows projected on `basis`, (N, d) float32, chunk by chunk."""
    out = np.empty((len(features), basis.shape[1]), dtype=np.float32)
    for start in range(0, len(features), chunk):
        out[start:start + chunk] = l2_normalise(features[start:start + chunk]) @ basis
    return out


def _cell_order(coarse, x: np.ndarray) -> np.ndarray:
    """Row order of x grouped by its nearest coarse centroid (stable within a cell)."""
    _, cell = coarse.search(x, 1)
    return np.argsort(cell[:, 0], kind="stable")


def _indexed_search(base: np.ndarray, queries: np.ndarray, k: int, exclude: np.ndarray | None,
                    progress: Progress | None, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Cosine kNN for large sets: candidates from a faiss HNSW index over PCA-reduced features,
    then exact cosine on the full features to rank them and report their similarity.

    Points are added, and queries searched and re-ranked, grouped by a coarse k-means cell:
    consecutive operations then touch the same part of the graph and the same feature rows,
    which stay in the CPU's caches. In input order, the build and search of a million points
    grew about 40x from 60k (cache misses), against 21x for N log N.

    Memory: the reduced copies (N x 128 floats, and Q x 128 for separate queries) and the
    index; the full features are read chunk by chunk (a memory map stays on disk)."""
    import faiss

    basis = pca_basis(base)
    base_r = _project(base, basis)
    queries_r = base_r if queries is base else _project(queries, basis)
    n, q = len(base), len(queries)
    total = n + 2 * q  # one progress bar: build, search, rescore
    cells = max(1, min(COARSE_CELLS, n // 256))
    coarse = faiss.Kmeans(base_r.shape[1], cells, niter=4, seed=0, spherical=True)
    sample = np.sort(np.random.default_rng(0).choice(n, min(n, 100 * cells), replace=False))
    coarse.train(base_r[sample])
    base_order = _cell_order(coarse.index, base_r)
    query_order = base_order if queries is base else _cell_order(coarse.index, queries_r)
    # 8-bit codes: a quarter of the memory traffic of floats, for 0.1 point of recall at 1M
    index = faiss.IndexHNSWSQ(base_r.shape[1], faiss.ScalarQuantizer.QT_8bit, 32, faiss.METRIC_INNER_PRODUCT)
    index.train(base_r[sample])
    index.hnsw.efConstruction = 64
    wide = min(n, 3 * k + 1)  # candidates per query, re-ranked on the full features
    index.hnsw.efSearch = max(64, 2 * wide)
    step = 16_384
    for start in range(0, n, step):
        index.add(base_r[base_order[start:start + step]])  # index position i is row base_order[i]
        if progress is not None:
            progress(min(n, start + step), total)
    cand = np.empty((q, wide), dtype=np.int64)
    for start in range(0, q, step):
        rows = query_order[start:start + step]
        _, found = index.search(queries_r[rows], wide)
        cand[rows] = np.where(found >= 0, base_order[np.maximum(found, 0)], -1)
        if progress is not None:
            progress(n + min(q, start + step), total)
    del index, base_r, queries_r
    # Re-ranking reads each candidate's row as it is and divides by its norm, computed once:
    # normalising the gathered rows of every chunk instead made this step 10x slower at 1M.
    norms = row_norms(base)
    norms[norms == 0] = 1.0  # an all-zero row stays at cosine 0 to all
    idx = np.empty((q, k), dtype=np.int64)
    sim = np.empty((q, k), dtype=np.float32)
    for start in range(0, q, chunk):
        rows = np.sort(query_order[start:start + chunk])  # one cell's queries share candidates
        c = cand[rows]
        valid = c >= 0
        if exclude is not None:
            valid &= c != exclude[rows, None]
        gather = np.where(valid, c, 0)
        qn = l2_normalise(queries[rows])
        s = np.empty(c.shape, dtype=np.float32)
        for j in range(c.shape[1]):  # one candidate column at a time: (chunk, D) stays in cache
            s[:, j] = np.einsum("qd,qd->q", qn, np.asarray(base[gather[:, j]], dtype=np.float32))
        s = np.where(valid, s / norms[gather], -np.inf).astype(np.float32)
        idx[rows], sim[rows] = _top_k(s, np.where(valid, c, -1), k)
        if progress is not None:
            progress(n + q + min(q, start + chunk), total)
    return idx, sim


def knn_search(base: np.ndarray, queries: np.ndarray, k: int, exclude: np.ndarray | None = None,
               progress: Progress | None = None, exact: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k most similar base rows of every query row, by cosine similarity.

    base: (N, D) and queries: (Q, D) raw features (float, a memory map is fine; rows are
    normalised here chunk by chunk). exclude: (Q,) int, a base row to leave out for each
    query (its own row when the queries are the base itself; -1 for none).
    exact: None picks by size: chunked exact products while N * Q <= EXACT_PAIRS, else
    candidates from a faiss index over PCA-reduced features, re-ranked exactly (a true
    neighbour can be missed; every reported similarity is exact).
    Returns indices (Q, k) int64 and cosine similarities (Q, k) float32, most similar first.
    Where fewer than k rows exist, the missing entries have index -1 and similarity -inf.
    """
    self_search = queries is base
    base = _check_matrix("base", base)
    queries = base if self_search else _check_matrix("queries", queries)  # kept the same object
    if base.shape[1] != queries.shape[1]:
        raise ValueError(f"base and queries differ in dimension: {base.shape[1]} vs {queries.shape[1]}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    available = len(base) - (1 if exclude is not None else 0)
    kk = max(0, min(k, available))
    if kk == 0 or len(queries) == 0:
        return np.full((len(queries), k), -1, dtype=np.int64), np.full((len(queries), k), -np.inf, dtype=np.float32)
    if exclude is not None:
        exclude = np.asarray(exclude, dtype=np.int64)
    use_exact = len(base) * len(queries) <= EXACT_PAIRS if exact is None else exact
    search = _exact_search if use_exact else _indexed_search
    idx, sim = search(base, queries, kk, exclude, progress)
    if kk < k:  # pad to the requested width
        idx = np.concatenate([idx, np.full((len(idx), k - kk), -1, dtype=np.int64)], axis=1)
        sim = np.concatenate([sim, np.full((len(sim), k - kk), -np.inf, dtype=np.float32)], axis=1)
    return idx, sim


def neighbours(features: np.ndarray, query: np.ndarray, k: int, reduced: np.ndarray | None = None,
               candidates: int = SEARCH_CANDIDATES) -> tuple[np.ndarray, np.ndarray]:
    """"More like this": the k nearest samples of each query sample, by cosine similarity.

    features: (N, D) raw features (normalised here). query: (Q,) row indices into features.
    reduced: `search_matrix(features)`, for a large set: then the `candidates` rows nearest
    in it are ranked by their exact cosine, instead of reading all N rows per query (a true
    neighbour outside the candidates can be missed; every similarity reported is exact).
    Returns indices (Q, k) int64 and similarities (Q, k) float32, most similar first; a
    query is never its own neighbour. With fewer than k other samples the tail is -1 / -inf.
    """
    if reduced is not None:
        _no_read_ahead(features)  # only the candidates' rows are read
    features = _check_matrix("features", features)
    query = np.asarray(query, dtype=np.int64).reshape(-1)
    n = len(features)
    if len(query) and (query.min() < 0 or query.max() >= n):
        raise ValueError(f"query rows must be between 0 and {n - 1}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if reduced is not None:
        if len(reduced) != n:
            raise ValueError(f"the search matrix has {len(reduced)} rows for {n} samples")
        return _reduced_neighbours(features, reduced, query, k, candidates)
    # One pass over the (possibly memory-mapped) matrix, chunk by chunk: raw inner products
    # divided by the row norms, never a normalised copy of all N x D (the app calls this per click).
    q = l2_normalise(np.asarray(features[query]))
    sim = np.empty((len(query), n), dtype=np.float32)
    step = max(1, _BLOCK_FLOATS // max(features.shape[1], 1))
    for start in range(0, n, step):
        block = np.asarray(features[start:start + step], dtype=np.float32)
        norms = np.linalg.norm(block, axis=1)
        sim[:, start:start + step] = (q @ block.T) / np.where(norms > 0, norms, 1.0)
    sim[np.arange(len(query)), query] = -np.inf  # a sample is not its own neighbour
    kk = min(k, n - 1)
    idx = np.full((len(query), k), -1, dtype=np.int64)
    out = np.full((len(query), k), -np.inf, dtype=np.float32)
    if kk > 0:
        top = np.argpartition(-sim, kk - 1, axis=1)[:, :kk]
        top_sim = np.take_along_axis(sim, top, axis=1)
        order = np.argsort(-top_sim, axis=1, kind="stable")
        idx[:, :kk] = np.take_along_axis(top, order, axis=1)
        out[:, :kk] = np.take_along_axis(top_sim, order, axis=1)
    return idx, out


def search_matrix(features: np.ndarray, dims: int = SEARCH_DIMS, seed: int = 0,
                  progress: Progress | None = None, chunk: int = 65_536) -> np.ndarray:
    """(N, dims) float32: each row's normalised features projected on their top PCA directions
    and normalised again, so that a row product approximates the cosine. What
    `neighbours(..., reduced=)` searches: one pass over the (memory-mapped) features."""
    mapped = features if isinstance(features, np.memmap) and features.flags.c_contiguous else None
    features = _check_matrix("features", features)
    basis = pca_basis(features, dims, seed=seed)
    out = np.empty((len(features), basis.shape[1]), dtype=np.float32)
    for start in range(0, len(features), chunk):
        block = features[start:start + chunk] if mapped is None else _read_rows(mapped, start, start + chunk)
        out[start:start + chunk] = l2_normalise(l2_normalise(block) @ basis)
        if progress is not None:
            progress(min(len(features), start + chunk), len(features))
    return out


def _read_rows(mapped: np.memmap, start: int, stop: int) -> np.ndarray:
    """Rows of a memory-mapped matrix read with a plain file read: pages touched through the
    map would count in this process's resident memory (5 GB for 1,000,000 x 1,280 floats)."""
    stop = min(stop, len(mapped))
    row_bytes = mapped.dtype.itemsize * mapped.shape[1]
    with open(mapped.filename, "rb") as f:
        f.seek(mapped.offset + start * row_bytes)
        return np.fromfile(f, dtype=mapped.dtype, count=(stop - start) * mapped.shape[1]).reshape(-1, mapped.shape[1])


def _reduced_neighbours(features: np.ndarray, reduced: np.ndarray, query: np.ndarray, k: int,
                        candidates: int) -> tuple[np.ndarray, np.ndarray]:
    """`neighbours` with candidates from `reduced` (search_matrix's rows), ranked by their
    exact cosine: reads only the queries' and the candidates' rows of the full features."""
    n = len(features)
    wide = min(n, max(candidates, k + 1))
    sim = reduced[query] @ reduced.T
    sim[np.arange(len(query)), query] = -np.inf
    cand = np.argpartition(-sim, wide - 1, axis=1)[:, :wide]
    idx = np.full((len(query), k), -1, dtype=np.int64)
    out = np.full((len(query), k), -np.inf, dtype=np.float32)
    kk = min(k, n - 1)
    for r, (q, rows) in enumerate(zip(query, cand)):
        rows = np.sort(rows[rows != q])  # in file order: a memory map reads forward
        exact = l2_normalise(np.asarray(features[rows])) @ l2_normalise(np.asarray(features[[q]]))[0]
        best = np.argsort(-exact, kind="stable")[:kk]
        idx[r, :kk], out[r, :kk] = rows[best], exact[best]
    return idx, out


def _no_read_ahead(features: np.ndarray) -> None:
    """Tell the kernel that a memory-mapped matrix is read at random rows: its read-ahead
    otherwise reads some 128 kB around each 5 kB row, and 256 rows of a 5 GB file that is not
    in memory took 1.0 s instead of 0.04 s."""
    mapping = getattr(features, "_mmap", None)  # numpy's memmap keeps its mmap.mmap there
    if mapping is not None and hasattr(mmap, "MADV_RANDOM"):
        mapping.madvise(mmap.MADV_RANDOM)


def content_hashes(images, progress: Progress | None = None) -> np.ndarray:
    """A 128-bit hash of each image's content, as hex strings, shape (N,) object.

    `images` is an ImageSet: array data hashes its pixels (with the shape), file data hashes
    the file's bytes (no decoding). Equal hashes mean byte-identical images.
    """
    n = len(images)
    out = np.empty(n, dtype=object)
    for i in range(n):
        h = hashlib.blake2b(digest_size=16)
        if images.arrays is not None:
            a = np.ascontiguousarray(images.arrays[i])
            h.update(str(a.shape).encode())
            h.update(a.tobytes())
        else:
            with open(images.paths[i], "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        out[i] = h.hexdigest()
        if progress is not None and (i % 2048 == 0 or i == n - 1):
            progress(i + 1, n)
    return out


def exact_duplicate_of(hashes: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """For each sample, another sample with the same hash, shape (N,) int64 (-1: none).

    The first member of a group points to its second, every other member to the first.
    With `labels`, a member points to a differently labelled member where one exists (the
    label-error signal comes first).
    """
    hashes = np.asarray(hashes)
    n = len(hashes)
    out = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return out
    _, inverse, counts = np.unique(hashes, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(counts)[:-1]
    for group in np.split(order, bounds):
        if len(group) < 2:
            continue
        out[group[0]] = group[1]
        out[group[1:]] = group[0]
        if labels is not None:
            for i in group:
                other = group[(labels[group] != labels[i])]
                if len(other):
                    out[i] = other[0]
    return out


def exact_matches(hashes: np.ndarray, other_hashes: np.ndarray) -> np.ndarray:
    """For each of `hashes`, the first index in `other_hashes` with the same hash, (N,) int64, -1: none."""
    first: dict = {}
    for j, h in enumerate(other_hashes):
        first.setdefault(h, j)
    return np.array([first.get(h, -1) for h in hashes], dtype=np.int64)


def outlier_scores(knn_sim: np.ndarray) -> np.ndarray:
    """Mean cosine distance (1 - similarity) to the k nearest training samples, shape (N,).

    knn_sim: (N, k) similarities from `knn_search` (padding -inf entries are ignored).
    Higher = further from every class: a sample in no dense region of any class.
    """
    sim = np.asarray(knn_sim, dtype=np.float64)
    valid = np.isfinite(sim)
    dist = np.where(valid, 1.0 - sim, 0.0)
    count = valid.sum(axis=1)
    return np.where(count > 0, dist.sum(axis=1) / np.maximum(count, 1), np.nan)


def robust_threshold(scores: np.ndarray, a: float = 4.0) -> float:
    """median + a * MAD (scaled by 1.4826, the normal-consistent MAD) of the finite scores.

    With a = 4, about 0.003% of normally distributed scores lie above; the long right tail of
    kNN distances in real data gives a few tenths of a percent.
    """
    s = np.asarray(scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    if not len(s):
        return float("inf")
    med = float(np.median(s))
    spread = 1.4826 * float(np.median(np.abs(s - med)))
    if spread == 0.0:  # more than half the scores equal: fall back to the mean deviation
        spread = 1.2533 * float(np.mean(np.abs(s - med)))
    return med + a * spread
