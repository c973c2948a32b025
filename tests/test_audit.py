"""The dataset audit: each detector on hand-made arrays, and planted cases in a real run."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from turn_backend.audit import (
    AuditSettings,
    audit_tables,
    content_hashes,
    exact_duplicate_of,
    knn_search,
    l2_normalise,
    neighbours,
    outlier_scores,
    robust_threshold,
)
from turn_backend.data.core import ImageSet


def test_l2_normalise_scales_rows_and_leaves_zero_rows():
    out = l2_normalise(np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [0.0, -1.0]])
    assert out.dtype == np.float32
    with pytest.raises(ValueError, match="NaN"):
        l2_normalise(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="2-D"):
        l2_normalise(np.ones(3))


def _circle(degrees):
    rad = np.deg2rad(np.asarray(degrees, dtype=float))
    return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)


@pytest.mark.parametrize("exact", [True, False])  # chunked matmul, and the faiss index
def test_knn_search_finds_the_nearest_angles(exact):
    points = _circle([0, 10, 30, 90, 180])
    idx, sim = knn_search(points, points, 2, exclude=np.arange(5), exact=exact)
    # 0 deg: 10 deg (cos 10) then 30 deg (cos 30); 90 deg: 30 deg (cos 60) then 10 deg (cos 80)
    np.testing.assert_array_equal(idx[0], [1, 2])
    np.testing.assert_allclose(sim[0], np.cos(np.deg2rad([10, 30])), atol=1e-6)
    np.testing.assert_array_equal(idx[3], [2, 1])
    np.testing.assert_allclose(sim[3], np.cos(np.deg2rad([60, 80])), atol=1e-6)
    np.testing.assert_array_equal(idx[4], [3, 2])  # 180 deg: 90 deg, then 30 deg
    assert (idx != np.arange(5)[:, None]).all()  # never itself


def test_neighbours_is_cosine_excludes_the_query_and_pads():
    features = np.array([[1.0, 0.0], [10.0, 1.0], [0.0, 5.0]])  # lengths differ: cosine ignores them
    idx, sim = neighbours(features, np.array([0, 2]), k=3)
    np.testing.assert_array_equal(idx, [[1, 2, -1], [1, 0, -1]])
    np.testing.assert_allclose(sim[:, :2], [[10 / np.sqrt(101), 0.0], [1 / np.sqrt(101), 0.0]], atol=1e-6)
    assert np.isneginf(sim[:, 2]).all()
    with pytest.raises(ValueError, match="query rows"):
        neighbours(features, np.array([3]), k=1)


def test_content_hashes_match_identical_images_only(tmp_path):
    arrays = np.zeros((3, 4, 4), dtype=np.uint8)
    arrays[2, 0, 0] = 1  # one pixel differs
    images = ImageSet(ids=["a", "b", "c"], labels=[0, 1, 0], class_names=["x", "y"], arrays=arrays)
    h = content_hashes(images)
    assert h[0] == h[1] != h[2]
    paths = []
    for name, value in (("p.png", 0), ("q.png", 0), ("r.png", 9)):
        Image.fromarray(np.full((4, 4), value, dtype=np.uint8)).save(tmp_path / name)
        paths.append(str(tmp_path / name))
    files = ImageSet(ids=["p", "q", "r"], labels=[0, 0, 1], class_names=["x", "y"], paths=paths)
    hf = content_hashes(files)
    assert hf[0] == hf[1] != hf[2]


def test_exact_duplicate_of_points_inside_groups_and_prefers_another_label():
    hashes = np.array(["a", "b", "a", "c", "a", "b"])
    labels = np.array([0, 0, 1, 0, 0, 0])
    out = exact_duplicate_of(hashes, labels)
    # group a = {0, 2, 4}: 0 (label 0) and 4 (label 0) point to 2, the member with another
    # label; 2 points to the first member of another label, 0. Group b = {1, 5}, same labels.
    np.testing.assert_array_equal(out, [2, 5, 0, -1, 2, 1])
    np.testing.assert_array_equal(exact_duplicate_of(hashes), [2, 5, 0, -1, 0, 1])


def test_outlier_scores_and_robust_threshold_by_hand():
    sims = np.array([[0.9, 0.7], [1.0, -np.inf], [0.2, 0.0]])  # -inf: padding, ignored
    np.testing.assert_allclose(outlier_scores(sims), [0.2, 0.0, 0.9])
    # median 3, absolute deviations 2, 1, 0, 1, 97 -> MAD 1; 3 + 4 * 1.4826 = 8.93
    assert robust_threshold(np.array([1.0, 2.0, 3.0, 4.0, 100.0]), a=4) == pytest.approx(3 + 4 * 1.4826)
    # MAD 0 (most scores equal): the mean deviation takes over, so not everything above is flagged
    cut = robust_threshold(np.array([1.0, 1.0, 1.0, 1.0, 2.0]), a=4)
    assert cut == pytest.approx(1 + 4 * 1.2533 * 0.2)


def test_audit_tables_duplicates_conflicts_and_leaks_by_hand():
    e = np.eye(4)
    train = np.stack([e[0], 2 * e[0], e[1], e[1], e[2], 0.6 * e[2] + 0.8 * e[3]])
    labels = np.array([0, 1, 2, 2, 0, 0])
    hashes = np.array(["h0", "h1", "h2", "h2", "h4", "h5"])  # 2 and 3: byte-identical
    test = np.stack([e[2], e[3]])
    test_hashes = np.array(["x0", "h5"])  # test 1 is a byte copy of train 5 (features differ: cos 0.8)
    ids = [f"t{i}" for i in range(6)]
    table, pairs, meta = audit_tables(ids, labels, hashes, train, ["s0", "s1"], np.array([0, 0]), test_hashes, test,
                                      AuditSettings(k=2, k_test=1))
    assert table["duplicate_of"].tolist() == ["t1", "t0", "t3", "t2", "", ""]  # t4-t5: cos 0.6, below the threshold
    np.testing.assert_allclose(table["duplicate_similarity"].to_numpy()[:4], 1.0, atol=1e-6)
    assert np.isnan(table["duplicate_similarity"].to_numpy()[4:]).all()
    assert table["duplicate_label_conflict"].tolist() == [True, True, False, False, False, False]
    assert table["test_duplicate"].tolist() == ["", "", "", "", "s0", "s1"]
    np.testing.assert_allclose(table["test_similarity"].to_numpy()[4:], [1.0, 1.0], atol=1e-6)
    got = {(r.a_id, r.b_id): (r.kind, r.label_conflict, r.a_split, r.b_split) for r in pairs.itertuples()}
    assert got == {
        ("t0", "t1"): ("near", True, "train", "train"),
        ("t2", "t3"): ("exact", False, "train", "train"),
        ("t4", "s0"): ("near", False, "train", "test"),
        ("t5", "s1"): ("exact", False, "train", "test"),
    }
    assert meta["n_duplicates"] == 4 and meta["n_label_conflicts"] == 2 and meta["n_test_duplicates"] == 2
    assert meta["n_exact_duplicates"] == 2
    # a looser threshold in the app: the pairs above the floor hold what it needs
    assert AuditSettings(threshold=0.5, floor=0.5).threshold == 0.5
    with pytest.raises(ValueError, match="floor"):
        AuditSettings(threshold=0.9, floor=0.95)


def test_audit_tables_flags_the_point_far_from_every_cluster():
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:2]
    cluster = np.concatenate([c + 0.05 * rng.normal(size=(15, 8)) for c in centres])
    features = np.concatenate([cluster, [-centres[0] - centres[1]]])  # opposite both clusters
    n = len(features)
    table, _, meta = audit_tables([str(i) for i in range(n)], np.repeat([0, 1, 0], [15, 15, 1]),
                                  np.array([str(i) for i in range(n)]), features, settings=AuditSettings(k=3))
    assert np.flatnonzero(table["outlier"]).tolist() == [n - 1]
    assert table["outlier_score"].idxmax() == n - 1
    assert meta["n_outliers"] == 1


def _planted_dataset(root):
    """Fashion-MNIST demo images in a class-folder tree, with planted cases.

    Returns {case: file path}: the same image under two labels (byte copy), a nearly
    identical image under another label (slightly darker), a train image copied into
    the test split, and three photographs of another kind (scikit-image's samples)."""
    from skimage import data as skdata

    from turn_backend.data.loaders import load_dataset

    bundle = load_dataset({"kind": "demo", "n_train": 260, "n_test": 40})
    names = [n.replace("/", "-") for n in bundle.class_names]
    planted = {}

    def save(split, label, name, array):
        folder = root / split / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(folder / name)
        return str(folder / name)

    for split, images in (("train", bundle.train), ("test", bundle.test)):
        for i in range(len(images)):
            save(split, images.labels[i], f"{split}{i:04d}.png", images.arrays[i])
    tr = bundle.train
    other = (tr.labels[0] + 1) % 10
    planted["copy_a"] = str(root / "train" / names[tr.labels[0]] / "train0000.png")
    planted["copy_b"] = save("train", other, "copy-of-0.png", tr.arrays[0])
    near = tr.arrays[1].copy()  # the same photo, its garment 3 levels darker: not byte-identical
    near[near > 30] -= 3
    planted["near_a"] = str(root / "train" / names[tr.labels[1]] / "train0001.png")
    planted["near_b"] = save("train", (tr.labels[1] + 3) % 10, "near-copy-of-1.png", near)
    planted["leak_train"] = str(root / "train" / names[tr.labels[2]] / "train0002.png")
    planted["leak_test"] = save("test", tr.labels[2], "leak-of-2.png", tr.arrays[2])
    for j, photo in enumerate((skdata.camera(), skdata.coins(), skdata.astronaut())):
        grey = np.asarray(Image.fromarray(photo).convert("L").resize((28, 28), Image.Resampling.BILINEAR))
        planted[f"outlier{j}"] = save("train", j, f"photo{j}.png", grey)
    return planted


def test_planted_duplicates_leaks_and_outliers_are_all_found(tmp_path, monkeypatch, turn_cache_dir):
    from conftest import make_tiny_config

    from turn_backend.export import build_export
    from turn_backend.runfolder import RunFolder
    from turn_backend.runner import run_turn

    monkeypatch.setenv("TURN_CACHE_DIR", str(turn_cache_dir))
    planted = _planted_dataset(tmp_path / "data")
    config = make_tiny_config(dataset={"kind": "folder", "path": str(tmp_path / "data")}, noise={"kind": "none"},
                              method="lp-gce", lp_epochs=1, projection_methods=[])
    run_turn(config, tmp_path / "run")
    folder = RunFolder(tmp_path / "run")
    samples = folder.samples()
    train = samples[samples["split"] == "train"].reset_index(drop=True)
    test = samples[samples["split"] == "test"]
    row = {src: i for i, src in enumerate(train["source"])}
    test_id = dict(zip(test["source"], test["sample_id"]))
    audit = folder.audit()
    t = audit["train"]
    assert len(t) == len(train)

    def check_pair(a, b, kind):
        ia, ib = row[planted[a]], row[planted[b]]
        assert t.loc[ia, "duplicate_of"] == train.loc[ib, "sample_id"]
        assert t.loc[ib, "duplicate_of"] == train.loc[ia, "sample_id"]
        assert t.loc[ia, "duplicate_label_conflict"] and t.loc[ib, "duplicate_label_conflict"]
        pair = audit["pairs"][(audit["pairs"]["a_id"] == train.loc[min(ia, ib), "sample_id"])
                              & (audit["pairs"]["b_id"] == train.loc[max(ia, ib), "sample_id"])]
        assert pair["kind"].tolist() == [kind] and pair["label_conflict"].all()

    check_pair("copy_a", "copy_b", "exact")  # the same image under two labels
    check_pair("near_a", "near_b", "near")  # slightly darker, two labels
    # the run keeps one neighbour graph, which detection and "More like this" read
    graph, similarity = folder.neighbour_graph()
    a, b = row[planted["copy_a"]], row[planted["copy_b"]]
    assert graph.shape == similarity.shape == (len(train), min(20, len(train) - 1))
    assert graph[a, 0] == b and similarity[a, 0] > 0.999 and (np.diff(similarity, axis=1) <= 1e-6).all()
    assert (graph != np.arange(len(train))[:, None]).all()  # never a sample's own row
    leak = row[planted["leak_train"]]
    assert t.loc[leak, "test_duplicate"] == test_id[planted["leak_test"]]
    outliers = [row[planted[f"outlier{j}"]] for j in range(3)]
    assert t.loc[outliers, "outlier"].all(), t.loc[outliers, "outlier_score"]
    assert audit["meta"]["n_outliers"] <= 8  # the photographs, not a large part of the set
    assert "audit" in folder.completed()
    assert any(e["stage"] == "audit" for e in folder.events())

    exported = build_export(folder.path)  # the label file carries the same findings
    assert exported.loc[outliers, "outlier"].all()
    assert exported.loc[leak, "test_duplicate"] == test_id[planted["leak_test"]]
    assert exported.loc[row[planted["copy_a"]], "duplicate_of"] == train.loc[row[planted["copy_b"]], "sample_id"]


def test_indexed_search_agrees_with_the_exact_one_on_clustered_features():
    """The large-set path (faiss over PCA-reduced features, exact re-ranking) on data with
    structure, as image features have: the same nearest neighbour almost always, and every
    reported similarity is the exact cosine."""
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(20, 256))
    x = (centres[rng.integers(0, 20, 2000)] + 0.3 * rng.normal(size=(2000, 256))).astype(np.float32)
    x[1500] = x[10] * 1.5  # a planted near duplicate (cosine 1)
    exact_idx, exact_sim = knn_search(x, x, 5, exclude=np.arange(2000), exact=True)
    idx, sim = knn_search(x, x, 5, exclude=np.arange(2000), exact=False)
    assert (idx[:, 0] == exact_idx[:, 0]).mean() > 0.95
    assert idx[10, 0] == 1500 and idx[1500, 0] == 10
    normed = l2_normalise(x)
    np.testing.assert_allclose(sim, np.einsum("qd,qkd->qk", normed, normed[idx]), atol=1e-5)
    assert (idx != np.arange(2000)[:, None]).all()
    # separate queries (a test set against the training set) come back in their own order
    queries = x[::-1][:300] + 0.01 * rng.normal(size=(300, 256)).astype(np.float32)
    q_exact, _ = knn_search(x, queries, 5, exact=True)
    q_idx, q_sim = knn_search(x, queries, 5, exact=False)
    assert (q_idx[:, 0] == q_exact[:, 0]).mean() > 0.95
    np.testing.assert_allclose(q_sim, np.einsum("qd,qkd->qk", l2_normalise(queries), normed[q_idx]), atol=1e-5)


def test_a_failing_audit_does_not_cost_the_training_run(tmp_path, monkeypatch, turn_cache_dir):
    from conftest import make_tiny_config

    from turn_backend import runner
    from turn_backend.runfolder import RunFolder
    from turn_backend.stages import audit as audit_stage

    monkeypatch.setenv("TURN_CACHE_DIR", str(turn_cache_dir))

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(audit_stage, "run_audit", broken)
    runner.run_turn(make_tiny_config(method="lp-gce", lp_epochs=1, projection_methods=[]), tmp_path / "run")
    folder = RunFolder(tmp_path / "run")
    assert folder.status()["state"] == "done" and folder.audit() is None
    assert any(e["message"].startswith("audit skipped: OSError") for e in folder.events())
    assert "audit" not in folder.completed()
