"""Your own embeddings and predictions (turn_backend.given_inputs): `turn run --features /
--test-features / --pred-probs`, `turn export --format features`, the checks on the files,
and the Dataset and Train pages taking them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers.apptest import app, texts
from helpers.cli import turn
from helpers.runs import execute_here, run_here
from helpers.waiting import wait_for
from turn_backend import worker
from turn_backend.cli import main as turn_main
from turn_backend.config import RunConfig
from turn_backend.data.core import ImageSet
from turn_backend.given_inputs import GivenInputError, load_features, load_pred_probs
from turn_backend.retrain import create_retrain_run
from turn_backend.review import ReviewStore
from turn_backend.runfolder import RunFolder, list_runs


def _lp_config(tiny_config, **overrides) -> RunConfig:
    return tiny_config(**{"method": "lp-gce", "projection_methods": [], **overrides})


def _images(n: int = 6) -> ImageSet:
    return ImageSet(ids=[f"img/{i}.png" for i in range(n)], labels=np.arange(n) % 3,
                    class_names=["cat", "dog", "fox"], paths=[f"/data/img/{i}.png" for i in range(n)])


@pytest.fixture
def lp_run(runs_root, tiny_config):
    """A finished tiny LP-GCE run on the image model, and its exported features (train and test)."""
    path = runs_root / "image-model"
    run_here(_lp_config(tiny_config), path)
    files = {}
    for name, split in (("train.npy", "train"), ("train.parquet", "train"), ("test.npy", "test")):
        files[name] = runs_root / name
        assert turn_main(["export", str(path), "--format", "features", "--split", split,
                          "--out", str(files[name])]) == 0
    return path, files


def test_a_run_on_its_own_exported_features_flags_the_same_samples(lp_run, runs_root, tiny_config):
    source, files = lp_run
    exported = np.load(files["train.npy"])
    assert exported.shape == (200, 1280)
    # the keyed file, its rows shuffled: matched by path, not by position
    keyed = pd.read_parquet(files["train.parquet"]).sample(frac=1.0, random_state=0)
    keyed.to_parquet(files["train.parquet"])
    for name, test_features in (("from-npy", files["test.npy"]), ("from-parquet", None)):
        path = runs_root / name
        metrics = run_here(_lp_config(tiny_config, features=str(files["train.npy"] if test_features
                                                                      else files["train.parquet"]),
                                      test_features=test_features and str(test_features),
                                      projection_methods=["tsne"]), path)
        same, given = RunFolder(source), RunFolder(path)
        assert same.metrics()["flags_reliable"] is True  # unlike random features (below)
        # the same probe on the same features, seeded alike: the same clean probabilities and flags
        np.testing.assert_array_equal(np.load(given.final_dir / "clean_prob.npy"),
                                      np.load(same.final_dir / "clean_prob.npy"))
        np.testing.assert_array_equal(np.load(given.given_features_path("train")), exported)
        assert metrics["given_inputs"]["features"].endswith(".npy" if test_features else ".parquet")
        assert given.audit() is not None and (given.projections_dir / "train_before_tsne.npy").exists()
        if test_features:  # the test accuracy of the same probe
            assert metrics["test_acc_last"] == same.metrics()["test_acc_last"]
        else:  # without test features the test split is left out, and said so
            assert "test_acc_last" not in metrics and metrics["n_test"] == 0
            assert metrics["given_inputs"]["test_accuracy"].startswith("not measured")


def test_random_embeddings_are_flagged_as_unreliable(runs_root, tiny_config):
    noise = np.random.default_rng(0).normal(size=(200, 64)).astype(np.float32)
    np.save(runs_root / "random.npy", noise)
    metrics = run_here(_lp_config(tiny_config, features=str(runs_root / "random.npy")), runs_root / "random")
    assert metrics["flags_reliable"] is False and metrics["suggested_tau"] is None
    # the fixes name the user's own model, not image settings a run on given features has none of
    fixes = metrics["flags_reliability"]["fixes"]
    assert "features from another model, closer to this kind of image" in fixes
    assert "a larger image size" not in fixes


def _no_image_model(*args, **kwargs):
    raise AssertionError("a run on given features loaded the image model")


def test_review_and_export_of_a_run_on_given_features_never_load_the_image_model(lp_run, runs_root, tiny_config,
                                                                                 monkeypatch):
    _, files = lp_run
    monkeypatch.setattr("turn_backend.stages.data.load_model", _no_image_model)
    monkeypatch.setattr("turn_backend.models.load_model", _no_image_model)
    path = runs_root / "given"
    run_here(_lp_config(tiny_config, features=str(files["train.npy"])), path)
    at = app("review", path)
    at.session_state["review_similar"] = 5  # More like this: a search of the given features
    at.run()
    assert not at.exception and not at.error
    picks = [c for c in at.checkbox if c.key and c.key.startswith("similar_pick_5_")]
    assert len(picks) == 12 and picks[0].label == RunFolder(path).samples()["sample_id"][5]
    assert turn_main(["export", str(path), "--out", str(runs_root / "cleaned.csv")]) == 0
    assert len(pd.read_csv(runs_root / "cleaned.csv")) == 200


def test_given_probabilities_are_the_classifier_of_detection(lp_run, runs_root, tiny_config):
    source, files = lp_run
    samples = RunFolder(source).samples()
    train = samples[samples["split"] == "train"]
    given, true = train["given_label"].to_numpy(), train["true_label"].to_numpy()
    probs = np.full((len(train), 10), 0.02)  # a classifier that knows the true classes
    probs[np.arange(len(train)), true] = 0.82
    np.save(runs_root / "probs.npy", probs)
    metrics = run_here(_lp_config(tiny_config, features=str(files["train.npy"]),
                                  pred_probs=str(runs_root / "probs.npy")), runs_root / "probs")
    folder = RunFolder(runs_root / "probs")
    assert not folder.lp_dir.exists()  # no probe trained
    flagged = np.load(folder.final_dir / "clean_prob.npy") <= 0.6
    wrong = given != true
    # they take the out-of-fold probe's place; that probe on these features alone reaches F1 0.68 here
    assert metrics["final_detection"]["f1"] > 0.85 and flagged[wrong].mean() > 0.8
    assert metrics["given_inputs"]["test_accuracy"] == "not measured: the given probabilities are the classifier"


def test_retraining_a_run_on_given_features_keeps_the_rows_of_the_kept_images(lp_run, runs_root, tiny_config):
    _, files = lp_run
    source = runs_root / "given"
    run_here(_lp_config(tiny_config, features=str(files["train.npy"])), source)
    ids = RunFolder(source).samples()["sample_id"].tolist()
    ReviewStore(RunFolder(source).review_db).record(ids[3], "remove")
    out = create_retrain_run(source, runs_root / "retrained")
    execute_here(out.path)  # as its worker would
    kept = np.delete(np.load(files["train.npy"]), 3, axis=0)
    np.testing.assert_array_equal(np.load(out.given_features_path("train")), kept)
    assert out.metrics()["n_train"] == 199 and ids[3] not in out.samples()["sample_id"].tolist()


def test_fine_tuning_methods_refuse_given_features_and_the_cli_says_why(tmp_path):
    with pytest.raises(ValueError, match="lp-\\* methods .* fine-tuning needs the image model"):
        RunConfig(method="turn+", features="/data/f.npy")
    with pytest.raises(ValueError, match="--test-features"):
        RunConfig(method="lp-gce", test_features="/data/t.npy")
    result = turn("run", "--features", "nowhere.npy", "--quiet", cwd=tmp_path, cache=tmp_path / "cache")
    assert result.returncode == 1 and f"--features {tmp_path / 'nowhere.npy'}: no such file" in result.stderr
    assert not (tmp_path / "runs").exists()  # no run folder left behind


def test_a_file_with_too_few_rows_names_both_counts(tmp_path):
    np.save(tmp_path / "features.npy", np.zeros((5, 4)))
    with pytest.raises(GivenInputError, match="features.npy has 5 rows, the dataset's train split has 6 images: "
                                              "row i of the file must be image i"):
        load_features(tmp_path / "features.npy", _images(), "train")


def test_a_keyed_file_names_the_missing_and_extra_paths(tmp_path):
    table = pd.DataFrame({"path": ["img/0.png", "/data/img/1.png", "img/2.png", "img/3.png", "img/4.png",
                                   "img/elsewhere.png"], "f0": np.arange(6.0), "f1": np.arange(6.0)})
    table.to_csv(tmp_path / "features.csv", index=False)
    with pytest.raises(GivenInputError) as err:
        load_features(tmp_path / "features.csv", _images(), "train")
    assert "1 image(s) of the train split have no row: 'img/5.png'" in str(err.value)
    assert "1 row(s) name no image of the train split: 'img/elsewhere.png'" in str(err.value)
    table.loc[5, "path"] = "img/5.png"  # by id or absolute path, in any order
    table.iloc[::-1].to_csv(tmp_path / "features.csv", index=False)
    np.testing.assert_array_equal(load_features(tmp_path / "features.csv", _images(), "train")[:, 0], np.arange(6))
    table.loc[5, "path"] = "img/0.png"
    table.to_parquet(tmp_path / "twice.parquet")
    with pytest.raises(GivenInputError, match="names 1 image\\(s\\) twice: 'img/0.png'"):
        load_features(tmp_path / "twice.parquet", _images(), "train")


def test_bad_values_and_logits_are_refused_with_the_fix(tmp_path):
    bad = np.zeros((6, 3))
    bad[4, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(GivenInputError, match="1 row\\(s\\) hold NaN or infinite values \\(rows 4\\)"):
        load_features(tmp_path / "nan.npy", _images(), "train")
    logits = np.random.default_rng(0).normal(size=(6, 3))
    np.save(tmp_path / "logits.npy", logits)
    with pytest.raises(GivenInputError, match="not probabilities .* softmax"):
        load_pred_probs(tmp_path / "logits.npy", _images())
    np.save(tmp_path / "two.npy", np.full((6, 2), 0.5))
    with pytest.raises(GivenInputError, match="2 columns of probabilities, the dataset has 3 classes"):
        load_pred_probs(tmp_path / "two.npy", _images())
    # columns named after the classes are read by name, whatever their order
    probs = pd.DataFrame({"path": _images().ids, "fox": 0.1, "cat": 0.7, "dog": 0.2})
    probs.to_csv(tmp_path / "probs.csv", index=False)
    np.testing.assert_allclose(load_pred_probs(tmp_path / "probs.csv", _images())[0], [0.7, 0.2, 0.1])


def test_a_run_with_a_mismatched_file_fails_before_extracting_features(runs_root, tiny_config):
    np.save(runs_root / "short.npy", np.full((199, 10), 0.1))
    with pytest.raises(GivenInputError, match="short.npy has 199 rows, the dataset's train split has 200"):
        run_here(_lp_config(tiny_config, pred_probs=str(runs_root / "short.npy")), runs_root / "short")
    folder = RunFolder(runs_root / "short")
    assert folder.status()["state"] == "failed" and "features" not in folder.completed()


def test_export_features_needs_a_feature_file_name(tiny_run, tmp_path):
    result = turn("export", tiny_run, "--format", "features", "--out", "features.txt", cwd=tmp_path)
    assert result.returncode == 1 and "name a .npy, .parquet, .csv file" in result.stderr


def test_the_dataset_page_takes_features_and_the_train_page_runs_on_them(lp_run, runs_root):
    _, files = lp_run
    at = app("dataset")
    at.session_state["dataset_spec"] = {"kind": "demo", "n_train": 200, "n_test": 100}
    at.session_state["ds_demo_train"], at.session_state["ds_demo_test"] = 200, 100
    at.run()
    np.save(runs_root / "short.npy", np.zeros((10, 4)))
    at.text_input(key="ds_given_features").input(str(runs_root / "short.npy"))
    at.button(key="ds_given_use").click().run()
    assert "short.npy has 10 rows, the dataset's train split has 200 images" in texts(at)
    at.text_input(key="ds_given_features").input(str(files["train.parquet"]))
    at.text_input(key="ds_given_test_features").input(str(files["test.npy"]))
    at.button(key="ds_given_use").click().run()
    assert not at.exception
    assert "Runs started on the Train page use training features" in texts(at)

    train = app("train")
    for key in ("dataset_spec", "noise_spec", "given_inputs"):
        train.session_state[key] = at.session_state[key]
    train.run()
    assert train.selectbox(key="tr_method").value == "lp-gce"
    assert all(m.startswith("lp-") for m in train.selectbox(key="tr_method").options)
    train.selectbox(key="tr_device").select("cpu")
    train.select_slider(key="tr_batch").set_value(64)
    train.number_input(key="tr_lp_epochs").set_value(3)
    train.button(key="tr_start").click().run()
    assert not train.exception
    started = [f for f in list_runs(runs_root) if f.config().get("features")]
    assert len(started) == 1
    config = started[0].config()
    assert (config["features"], config["test_features"], config["method"]) == (
        str(files["train.parquet"]), str(files["test.npy"]), "lp-gce")
    assert config["pred_probs"] is None
    assert wait_for(lambda: worker.live_state(started[0].path).get("state") in ("done", "failed"), timeout=300)
    assert started[0].status()["state"] == "done" and started[0].metrics()["given_inputs"]["n_dims"] == 1280
