import numpy as np
import pytest

from turn_backend import analysis as an
from turn_backend.projection import PCA_DIMS, compute_projections, ensure_projection, project, reduce


def test_projection_separates_two_clusters():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.1, (30, 16)) + 3, rng.normal(0, 0.1, (30, 16)) - 3])
    xy = project(x, "tsne", seed=0)
    assert xy.shape == (60, 2) and np.isfinite(xy).all()
    a, b = xy[:30].mean(0), xy[30:].mean(0)
    spread = max(xy[:30].std(0).max(), xy[30:].std(0).max())
    assert np.linalg.norm(a - b) > 3 * spread


def test_degenerate_features_give_a_flat_projection_not_a_crash():
    nan = np.full((20, 8), np.nan)
    assert (project(nan, "tsne") == 0).all()
    constant = np.ones((20, 8))
    assert (project(constant, "tsne") == 0).all()


def test_unknown_method_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown projection 'pca'"):
        project(np.ones((5, 3)), "pca")


def test_reduce_normalises_then_keeps_the_top_components():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 80)) * 5
    small = reduce(x[:, :10])  # 10 dims: only normalised
    np.testing.assert_allclose(np.linalg.norm(small, axis=1), 1, rtol=1e-5)
    r = reduce(x)
    assert r.shape == (200, PCA_DIMS) and r.dtype == np.float32
    # PCA keeps distances among the normalised rows up to the dropped variance
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    kept = np.linalg.norm(r - r.mean(0), axis=1) ** 2
    total = np.linalg.norm(unit - unit.mean(0), axis=1) ** 2
    assert 0.5 * PCA_DIMS / 80 < kept.sum() / total.sum() <= 1.0 + 1e-5


def test_compute_projections_stores_reduction_and_maps_with_progress(tmp_path):
    rng = np.random.default_rng(0)
    feats = {"before": rng.normal(size=(40, 64)).astype(np.float32),
             "after": rng.normal(size=(40, 64)).astype(np.float32)}
    reports = []
    compute_projections(tmp_path, "train", np.arange(40), feats, ["tsne"], progress=lambda d, t: reports.append((d, t)))
    for stage in ("before", "after"):
        assert np.load(tmp_path / f"train_pca_{stage}.npy").shape == (40, 64)  # fewer rows than PCA_DIMS: kept
        assert np.load(tmp_path / f"train_{stage}_tsne.npy").shape == (40, 2)
    np.testing.assert_array_equal(np.load(tmp_path / "train_subset.npy"), np.arange(40))
    done = [d for d, _ in reports]
    assert done == sorted(done) and reports[-1][0] == reports[-1][1] == 2000  # two maps, 1000 steps each


def test_ensure_projection_computes_once_and_caches(tmp_path):
    out = tmp_path / "projections"
    out.mkdir()
    np.save(out / "test_features_before.npy", np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32))
    first = ensure_projection(tmp_path, "test", "before", "tsne")
    assert (out / "test_before_tsne.npy").exists()
    np.testing.assert_array_equal(first, ensure_projection(tmp_path, "test", "before", "tsne"))
    assert ensure_projection(tmp_path, "test", "after", "tsne") is None  # no features stored


def test_ensure_projection_uses_the_stored_reduction(tmp_path):
    out = tmp_path / "projections"
    out.mkdir()
    rng = np.random.default_rng(1)
    reduced = np.concatenate([rng.normal(0, 0.05, (15, 5)) + 1, rng.normal(0, 0.05, (15, 5)) - 1]).astype(np.float32)
    np.save(out / "train_pca_after.npy", reduced)
    xy = ensure_projection(tmp_path, "train", "after", "tsne")
    assert xy.shape == (30, 2) and (out / "train_after_tsne.npy").exists()
    assert np.linalg.norm(xy[:15].mean(0) - xy[15:].mean(0)) > 3 * xy[:15].std(0).max()


def test_coords_by_index_lines_maps_up_by_sample():
    coords = np.array([[0, 0], [1, 1], [2, 2]], dtype=np.float32)
    subset = np.array([10, 4, 7])  # another run's map, of samples 10, 4, 7 in that order
    got = an.coords_by_index(coords, subset, np.array([4, 5, 10]))
    np.testing.assert_array_equal(got[0], [1, 1])
    assert np.isnan(got[1]).all()  # sample 5 is not on that map
    np.testing.assert_array_equal(got[2], [0, 0])
    with pytest.raises(ValueError, match="stale"):
        an.coords_by_index(coords[:2], subset, np.array([4]))


def test_a_large_map_is_fitted_on_a_sample_and_places_the_rest_by_their_neighbours(monkeypatch):
    import turn_backend.projection as projection

    monkeypatch.setattr(projection, "MAP_FIT_POINTS", 60)
    rng = np.random.default_rng(0)
    centres = np.array([[4.0, 0, 0, 0], [0, 4.0, 0, 0], [0, 0, 4.0, 0]])
    cluster = np.repeat(np.arange(3), 80)
    x = (centres[cluster] + rng.normal(0, 0.2, (240, 4))).astype(np.float32)
    reports = []
    xy = projection.embed(projection.reduce(x), "tsne", progress=lambda d, t: reports.append(d / t))
    assert xy.shape == (240, 2) and np.isfinite(xy).all()
    # every point, fitted or placed, sits nearer its own cluster's centre than any other's
    centre_xy = np.stack([np.median(xy[cluster == c], axis=0) for c in range(3)])
    nearest = np.linalg.norm(xy[:, None, :] - centre_xy[None], axis=2).argmin(1)
    assert (nearest == cluster).all()
    assert reports[-1] == 1.0 and reports == sorted(reports)


def test_reduce_reads_only_the_rows_asked_for():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 80)).astype(np.float32)
    rows = np.arange(0, 300, 3)
    np.testing.assert_allclose(reduce(x, rows=rows, seed=0), reduce(x[rows], seed=0), atol=1e-5)
