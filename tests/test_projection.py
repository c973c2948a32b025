import numpy as np

from turn_backend.projection import ensure_projection, project


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


def test_ensure_projection_computes_once_and_caches(tmp_path):
    out = tmp_path / "projections"
    out.mkdir()
    np.save(out / "test_features_before.npy", np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32))
    first = ensure_projection(tmp_path, "test", "before", "tsne")
    assert (out / "test_before_tsne.npy").exists()
    np.testing.assert_array_equal(first, ensure_projection(tmp_path, "test", "before", "tsne"))
    assert ensure_projection(tmp_path, "test", "after", "tsne") is None  # no features stored
