"""2-D projections (t-SNE, UMAP) of features before and after tuning, cached in the run folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from turn_backend.runfolder import atomic_save_npy

PROJECTION_METHODS = ("tsne", "umap")


def project(features: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """(N, D) features -> (N, 2) coordinates. Features are L2-normalised first."""
    x = np.asarray(features, dtype=np.float32)
    # A diverged model can give NaN or constant features; t-SNE and UMAP crash on those
    # (a segmentation fault inside scikit-learn was seen), so they get a flat projection.
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = len(x)
    if n < 3 or float(np.ptp(x, axis=0).max()) < 1e-6:
        return np.zeros((n, 2), dtype=np.float32)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
        return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x).astype(np.float32)
    if method == "umap":
        import umap

        reducer = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed, n_jobs=1)
        return reducer.fit_transform(x).astype(np.float32)
    raise ValueError(f"unknown projection {method!r}; choose one of {', '.join(PROJECTION_METHODS)}")


def compute_projections(out_dir: Path, split: str, subset: np.ndarray, features: dict[str, np.ndarray],
                        methods, seed: int = 0) -> None:
    """Write {split}_subset.npy and {split}_{stage}_{method}.npy for each stage and method."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_save_npy(out_dir / f"{split}_subset.npy", np.asarray(subset, dtype=np.int64))
    atomic_save_npy(out_dir / f"{split}_features_before.npy", np.asarray(features["before"], dtype=np.float32))
    if "after" in features:
        atomic_save_npy(out_dir / f"{split}_features_after.npy", np.asarray(features["after"], dtype=np.float32))
    for stage, feats in features.items():
        for method in methods:
            atomic_save_npy(out_dir / f"{split}_{stage}_{method}.npy", project(feats, method, seed))


def ensure_projection(run_dir: Path, split: str, stage: str, method: str, seed: int = 0) -> np.ndarray | None:
    """A projection from the run folder, computed from the stored subset features on first use."""
    out_dir = Path(run_dir) / "projections"
    path = out_dir / f"{split}_{stage}_{method}.npy"
    if path.exists():
        return np.load(path)
    feats_path = out_dir / f"{split}_features_{stage}.npy"
    if not feats_path.exists():
        return None
    coords = project(np.load(feats_path), method, seed)
    atomic_save_npy(path, coords)
    return coords
