"""How fast and how exact the audit's neighbour search is on a cached feature matrix.

    python -m turn_backend.audit.bench FEATURES.npy [--queries 2000] [--k 10]

Prints the time of the indexed kNN over all rows (what the audit stage runs), its recall
against exact cosine kNN on a seeded sample of queries, and the time of single "more like
this" queries (`neighbours`). A benchmark command, not a test: it takes minutes at 60k.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from turn_backend.audit.core import knn_search, neighbours


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("features", help="an (N, D) float .npy file, e.g. from ~/.cache/turn-studio/features")
    p.add_argument("--queries", type=int, default=2000, help="queries checked against exact search")
    p.add_argument("--k", type=int, default=10)
    args = p.parse_args(argv)
    x = np.load(args.features, mmap_mode="r")
    n = len(x)
    q = np.sort(np.random.default_rng(0).choice(n, min(n, args.queries), replace=False))
    t = time.time()
    idx, _ = knn_search(x, x, args.k, exclude=np.arange(n), exact=False)  # the large-set path, at any size
    t_index = time.time() - t
    t = time.time()
    exact, _ = neighbours(x, q, args.k)
    t_exact = time.time() - t
    recall1 = float(np.mean(idx[q, 0] == exact[:, 0]))
    recall_k = float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(idx[q], exact)]))
    single = []
    for i in q[:20]:
        t = time.time()
        neighbours(x, np.array([i]), 12)
        single.append(time.time() - t)
    print(f"N={n} D={x.shape[1]}: indexed kNN (k={args.k}) over all rows {t_index:.1f} s; against exact search on "
          f"{len(q)} queries ({t_exact:.1f} s) recall@1 {recall1:.3f}, recall@{args.k} {recall_k:.3f}; "
          f"more like this (k=12): median {np.median(single):.2f} s, max {max(single):.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
