""""More like this" on a large run: candidates from the reduced search features, ranked by
exact cosine (turn_backend.audit.neighbours with `reduced=`), and the run's saved copy of
them (turn_backend.run_features.ensure_search_matrix), on small synthetic features."""

from __future__ import annotations

import numpy as np
import pytest

from turn_backend import run_features
from turn_backend.audit import neighbours, search_matrix
from turn_backend.runfolder import RunFolder


def clustered(n: int = 600, d: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, d))
    return (centres[rng.integers(0, 6, n)] + 0.3 * rng.normal(size=(n, d))).astype(np.float32)


def test_reduced_search_finds_the_exact_neighbours_with_exact_similarities():
    x = clustered()
    reduced = search_matrix(x, dims=16)
    assert reduced.shape == (600, 16) and np.allclose(np.linalg.norm(reduced, axis=1), 1, atol=1e-5)
    query = np.array([0, 17, 599])
    exact_idx, exact_sim = neighbours(x, query, 11)
    idx, sim = neighbours(x, query, 11, reduced=reduced, candidates=64)
    assert idx.tolist() == exact_idx.tolist()
    assert np.allclose(sim, exact_sim, atol=1e-5)
    assert not (idx == query[:, None]).any()  # a sample is not its own neighbour


def test_reduced_search_on_a_memory_mapped_file_matches_the_array(tmp_path):
    x = clustered()
    np.save(tmp_path / "features.npy", x)
    mapped = np.load(tmp_path / "features.npy", mmap_mode="r")  # read at random rows (no read-ahead)
    reduced, query = search_matrix(x, dims=16), np.array([3, 250])
    idx, sim = neighbours(mapped, query, 11, reduced=reduced, candidates=64)
    expected_idx, expected_sim = neighbours(x, query, 11, reduced=reduced, candidates=64)
    assert idx.tolist() == expected_idx.tolist() and np.allclose(sim, expected_sim)
    assert np.allclose(np.asarray(mapped), x)  # the file reads as before afterwards


def test_reduced_search_pads_when_fewer_samples_than_k():
    x = clustered(n=5)
    idx, sim = neighbours(x, np.array([2]), 6, reduced=search_matrix(x, dims=4))
    assert sorted(idx[0, :4].tolist()) == [0, 1, 3, 4] and idx[0, 4:].tolist() == [-1, -1]
    assert np.isneginf(sim[0, 4:]).all()


def test_reduced_search_refuses_a_matrix_of_another_size():
    x = clustered(n=50)
    with pytest.raises(ValueError, match="search matrix"):
        neighbours(x, np.array([0]), 3, reduced=search_matrix(x[:40], dims=4))


def test_ensure_search_matrix_saves_it_with_a_large_run_only(tmp_path, monkeypatch):
    folder = RunFolder(tmp_path / "run")
    x = clustered(n=300)
    assert run_features.ensure_search_matrix(folder.path, x) is None  # small: searched whole
    assert not (folder.final_dir / folder.SEARCH).exists()
    monkeypatch.setattr(run_features, "SEARCH_MATRIX_MIN_ROWS", 100)
    first = run_features.ensure_search_matrix(folder.path, x)
    assert first.shape[0] == 300 and (folder.final_dir / folder.SEARCH).exists()
    assert np.array_equal(run_features.ensure_search_matrix(folder.path, x), first)  # read back
    again = run_features.ensure_search_matrix(folder.path, x[:200])  # stale (another size): recomputed
    assert again.shape[0] == 200


def test_search_matrix_reads_a_memory_mapped_file_as_it_reads_an_array(tmp_path):
    x = clustered(n=300)
    np.save(tmp_path / "features.npy", x)
    mapped = np.load(tmp_path / "features.npy", mmap_mode="r")
    assert np.allclose(search_matrix(mapped, dims=8, chunk=64), search_matrix(x, dims=8, chunk=64), atol=1e-5)


def test_search_features_come_from_the_file_the_search_matrix_was_computed_from(tmp_path, monkeypatch):
    monkeypatch.setattr(run_features, "SEARCH_MATRIX_MIN_ROWS", 100)
    np.save(tmp_path / "features.npy", clustered(n=300))
    mapped = np.load(tmp_path / "features.npy", mmap_mode="r")
    run_dir = tmp_path / "run"
    run_features.ensure_search_matrix(run_dir, mapped)
    found = run_features.search_features(run_dir)  # no image model loaded: the named file
    assert isinstance(found, np.memmap) and np.array_equal(found, mapped)
