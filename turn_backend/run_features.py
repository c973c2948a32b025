"""A run's pre-trained features of its training set, for "More like this" in Review and for
`turn export RUN --format features` (features to reuse with `turn run --features` or other
tools): the run's copy of given features, or the shared feature cache's file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from turn_backend.config import RunConfig
from turn_backend.io import read_json
from turn_backend.runfolder import RunFolder


def pretrained_features(run_dir: str | Path, split: str = "train") -> np.ndarray:
    """(N, D) the pre-trained features of the run's `split` ("train" / "test"), in
    samples.parquet's order (memory-mapped where they are stored whole). Loads the image
    model (torch) only to find the cache file of a run on the image model."""
    folder = RunFolder(run_dir)
    given = folder.given_features_path(split)
    if given.exists():  # stored in the run's own order
        return np.load(given, mmap_mode="r")
    from turn_backend.features import feature_cache_path
    from turn_backend.models import load_model
    from turn_backend.models.core import Preprocess
    from turn_backend.rundata import load_run_data

    cfg = RunConfig.from_json(folder.config_path)
    loaded = load_model(cfg.model, cfg.checkpoint, pretrained=cfg.pretrained)
    pre = loaded.preprocess
    if cfg.image_size:  # as the runner sizes its inputs
        pre = Preprocess(cfg.image_size, pre.mean, pre.std, pre.interpolation)
    # the cache holds the whole training set (a retrained run reuses it without its removed samples)
    full = getattr(load_run_data(cfg), split)
    ids = split_samples(folder, split)["sample_id"].astype(str).tolist()
    if full is None or not ids:
        raise FileNotFoundError(f"run {folder.name} has no {split} split")
    path = feature_cache_path(full, loaded.name, cfg.checkpoint, cfg.pretrained, pre, split)
    if not path.exists():
        raise FileNotFoundError("this run's features are no longer cached (the feature cache was cleared); "
                                "retrain the run to compute them again")
    feats = np.load(path, mmap_mode="r")
    if len(ids) == len(full):
        return feats
    return np.asarray(feats[pd.Index(full.ids).get_indexer(ids)])


# From this many training samples on, "More like this" searches a reduced copy of the features
# (audit.search_matrix, saved as final/search.npy) instead of reading all of them per click:
# 1,000,000 x 1,280 float32 features are 5 GB, the reduced copy 256 MB (11 ms a search).
SEARCH_MATRIX_MIN_ROWS = 200_000


def search_features(run_dir: str | Path) -> np.ndarray:
    """The training features "More like this" searches, one row per sample: the fine-tuned
    model's (final/features.npy, memory-mapped) or, for a run without them, the pre-trained
    ones: from the file final/search.json names where it still holds them (finding the
    feature cache's file otherwise loads the image model and hashes every image)."""
    folder = RunFolder(run_dir)
    path = folder.final_dir / folder.FEATURES
    if path.exists():
        return np.load(path, mmap_mode="r")
    source = read_json(folder.final_dir / folder.SEARCH_SOURCE, {}) or {}
    named = Path(source.get("features") or "")
    if source.get("features") and named.is_file():
        feats = np.load(named, mmap_mode="r")
        if len(feats) == source.get("rows"):
            return feats
    return pretrained_features(run_dir)


def ensure_search_matrix(run_dir: str | Path, features: np.ndarray) -> np.ndarray | None:
    """The run's reduced search features (final/search.npy), computed from `features` and saved
    with the run if missing; None for a run smaller than SEARCH_MATRIX_MIN_ROWS (searched whole).
    A memory-mapped `features` file is named in final/search.json, for `search_features`."""
    from turn_backend.audit import search_matrix
    from turn_backend.io import atomic_save_npy, atomic_write_json

    if len(features) < SEARCH_MATRIX_MIN_ROWS:
        return None
    folder = RunFolder(run_dir)
    path = folder.final_dir / folder.SEARCH
    if path.exists():
        reduced = np.load(path)
        if len(reduced) == len(features):
            return reduced
    reduced = search_matrix(features)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_npy(path, reduced)
    if isinstance(features, np.memmap) and features.filename:
        atomic_write_json(folder.final_dir / folder.SEARCH_SOURCE,
                          {"features": str(Path(features.filename).resolve()), "rows": len(features)})
    return reduced


def split_samples(folder: RunFolder, split: str) -> pd.DataFrame:
    """samples.parquet's rows of `split` (sample_id, source, ...), in the run's order."""
    samples = folder.samples()
    return samples[samples["split"] == split].reset_index(drop=True)


def export_features(run_dir: str | Path, out: str | Path, split: str = "train") -> dict:
    """Write the run's pre-trained features of `split` to `out`, a file `turn run --features`
    (`--test-features`) reads back: .npy (rows in the split's order), .parquet (a `path` column and one
    list column, `features`) or .csv (`path`, f0 ... f{D-1}), keyed by each image's path
    (an array dataset's sample id). Written atomically. Returns rows and dims."""
    from turn_backend.export import ExportError, write_export
    from turn_backend.given_inputs import KEY_COLUMN, SUFFIXES
    from turn_backend.io import atomic_write_bytes

    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in SUFFIXES:
        raise ExportError(f"--out {out.name}: name a {', '.join(SUFFIXES)} file for --format features")
    folder = RunFolder(run_dir)
    if not folder.has_samples() or "features" not in folder.completed():
        raise ExportError(f"run {folder.name} has no features yet; export them once its features stage is done")
    feats = np.asarray(pretrained_features(run_dir, split), dtype=np.float32)
    if suffix == ".npy":
        import io

        buf = io.BytesIO()
        np.save(buf, feats)
        atomic_write_bytes(out, buf.getvalue())
    else:
        sources = split_samples(folder, split)["source"].astype(str).tolist()
        if suffix == ".parquet":
            table = pd.DataFrame({KEY_COLUMN: sources, "features": list(feats)})
        else:
            table = pd.DataFrame(feats, columns=[f"f{j}" for j in range(feats.shape[1])])
            table.insert(0, KEY_COLUMN, sources)
        write_export(table, out, suffix.lstrip("."))
    return {"rows": int(feats.shape[0]), "dims": int(feats.shape[1])}
