"""Several annotators per image, end to end: the long and wide manifests, their errors, the run
(`turn run`, a subprocess), agreement as a detection signal, the exports, the Annotators page
and Review on one annotator's disagreements."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers.annotators import annotated_images, wide_form, write_annotated_manifest
from helpers.apptest import app, card_ids, charts, texts
from helpers.cli import turn
from turn_backend.annotators import disagreements
from turn_backend.data.core import DatasetError
from turn_backend.data.loaders import load_dataset
from turn_backend.runfolder import RunFolder


def load(path, **spec):
    return load_dataset({"kind": "manifest", "path": str(path), **spec})


@pytest.fixture(scope="module")
def long_frame(tmp_path_factory):
    """(folder holding images/, the long-form manifest frame) of 40 train + 10 test demo images."""
    root = tmp_path_factory.mktemp("ann")
    return root, annotated_images(root, n_train=40, n_test=10)


def test_long_and_wide_manifests_give_the_same_label_matrix_and_consensus(long_frame):
    root, long = long_frame
    long.to_csv(root / "long.csv", index=False)
    wide_form(long).to_csv(root / "wide.csv", index=False)
    a, b = load(root / "long.csv"), load(root / "wide.csv")
    la, lb = a.info["annotators"], b.info["annotators"]
    assert la.names == lb.names == ["careful", "careless", "confuser", "half"]
    assert a.train.ids == b.train.ids and len(a.train) == 40 and len(a.test) == 10
    np.testing.assert_array_equal(la.matrix, lb.matrix)
    # the matrix holds exactly the manifest's labels, -1 where an annotator gave none
    names = a.class_names
    careful = long[(long.annotator == "careful") & (long.split == "train")].set_index("path")["label"]
    k = la.names.index("careful")
    assert [names[c] for c in la.matrix[:, k]] == [careful[p] for p in a.train.ids]
    half = la.matrix[:, la.names.index("half")]
    assert (half == -1).sum() == 40 - (long[long.split == "train"].annotator == "half").sum() > 0
    # the given labels are the (Dawid-Skene) consensus; the true labels stay the ground truth
    np.testing.assert_array_equal(a.train.labels, la.consensus.label)
    np.testing.assert_array_equal(a.train.labels, b.train.labels)
    assert [names[t] for t in a.train.true_labels] == list(long.drop_duplicates("path").set_index("path")
                                                           .loc[a.train.ids, "true_label"])
    assert (a.train.labels == a.train.true_labels).mean() > 0.9
    # a wide manifest with other column names, listed by the option
    renamed = wide_form(long).rename(columns=lambda c: c.removeprefix("annotator_"))
    renamed.to_csv(root / "listed.csv", index=False)
    c = load(root / "listed.csv", annotator_columns=["careful", "careless", "confuser", "half"])
    np.testing.assert_array_equal(c.info["annotators"].matrix, la.matrix)
    assert load(root / "long.csv", aggregator="majority").info["annotators"].consensus.method == "majority"
    # a label column beside annotator columns is not read, and the loader says so
    wide_form(long).assign(label="Bag").to_csv(root / "both.csv", index=False)
    both = load(root / "both.csv")
    np.testing.assert_array_equal(both.train.labels, a.train.labels)
    assert any("'label' is not read" in w for w in both.info["warnings"])


def test_annotator_options_apply_to_manifests_only(tmp_path):
    result = turn("run", "--data", "demo", "--aggregator", "majority", "--quiet", cwd=tmp_path)
    assert result.returncode == 1 and "--annotator-columns and --aggregator apply to a manifest" in result.stderr


@pytest.mark.parametrize("case, message", [
    ("long row without a label", r"line 3: annotator 'careful' has no label for 'images/train-1.png'; fill in"),
    ("wide image without labels", r"line \d+: 'images/train-1.png' has no label from any annotator"),
    ("unknown true label", r"true label\(s\) of bad.csv are not among the classes"),
    ("unknown annotator label", r"annotator 'careful' gave 'images/train-0.png' the label 'Cat', which is not one"),
    ("label given twice", r"annotator 'careful' labelled 'images/train-0.png' more than once \(lines 2, 3\)"),
])
def test_bad_annotator_manifests_get_clear_errors(long_frame, case, message):
    root, long = long_frame
    bad = long.copy()
    if case == "long row without a label":
        bad.loc[1, "label"] = ""
    elif case == "wide image without labels":
        bad = wide_form(long)
        bad.loc[bad.path == "images/train-1.png", [c for c in bad.columns if c.startswith("annotator_")]] = ""
    elif case == "unknown true label":
        bad.loc[bad.path == "images/train-5.png", "true_label"] = "Cat"
    elif case == "unknown annotator label":
        bad.loc[0, "label"] = "Cat"
    else:
        bad = pd.concat([bad.iloc[:1], bad], ignore_index=True)
    bad.to_csv(root / "bad.csv", index=False)
    with pytest.raises(DatasetError, match=message):
        load(root / "bad.csv", classes=sorted(set(long.true_label)))


def test_dataset_page_loads_an_annotator_manifest_and_says_whose_consensus_it_is(runs_root, tmp_path):
    manifest = write_annotated_manifest(tmp_path, n_train=20, n_test=10, layout="wide")
    at = app("dataset")
    at.run()
    at.radio(key="ds_source").set_value("manifest").run()
    at.text_input(key="ds_manifest_path").input(str(manifest)).run()
    at.button(key="ds_load").click().run()
    assert not at.exception and not at.error
    note = next(i.value for i in at.info if "annotators" in i.value)
    assert note.startswith("**4 annotators** (careful, careless, confuser, half)")
    assert "Dawid-Skene consensus" in note


def test_agreement_lowers_the_clean_probability_of_disputed_labels():
    from turn_backend.detect import detect_label_issues
    from turn_backend.detect.signals import DetectionInputError

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    looks = labels.copy()
    looks[:10] = 1  # ten images labelled 0 that look like class 1
    features = rng.normal(size=(120, 8)) + 3 * np.eye(8)[looks]
    sure = np.full((120, 3), 0.01)
    sure[np.arange(120), labels] = 0.98
    disputed = sure.copy()
    disputed[:10] = [0.45, 0.45, 0.10]  # on those, the annotators split between class 0 and 1
    unanimous = detect_label_issues(features, labels, 3, annotator_probs=sure)
    split = detect_label_issues(features, labels, 3, annotator_probs=disputed)
    assert (split.clean_prob[:10] <= 0.6).all() and (split.clean_prob[:10] < unanimous.clean_prob[:10]).all()
    assert (split.suggested_label[:10] == 1).mean() >= 0.8  # the class they look like
    assert (split.clean_prob[10:] > 0.6).all()  # where the annotators agree and the image fits, nothing is flagged
    np.testing.assert_allclose(split.signals["annotators"][:10], 0.45)
    with pytest.raises(DetectionInputError, match=r"annotator_probs must have shape \(120, 3\)"):
        detect_label_issues(features, labels, 3, annotator_probs=sure[:5])


def test_turn_run_stores_annotators_and_exports_them(annotated_run_template, tmp_path):
    run, result = annotated_run_template
    folder = RunFolder(run)
    ann = folder.annotators()
    assert ann["names"] == ["careful", "careless", "confuser", "half"] and ann["method"] == "dawid-skene"
    samples = folder.samples()
    train = samples[samples.split == "train"]
    assert ann["labels"].shape == (len(train), 4) and (ann["labels"] >= -1).all()
    np.testing.assert_array_equal(train["given_label"], ann["consensus"]["consensus_label"])
    assert (train["true_label"] >= 0).all()  # ground truth kept for the metrics
    assert list(ann["quality"]["annotator"])[0] == "careful"
    assert set(ann["quality"].columns) >= {"annotator", "quality", "n_labels", "agreement_with_consensus"}
    assert "annotators" in folder.detection()["signals"]
    # exports: two columns in the label file, the annotator table beside it and on its own
    out = turn("export", run, "--out", tmp_path / "cleaned.csv", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    cleaned = pd.read_csv(tmp_path / "cleaned.csv")
    names = folder.class_names()
    assert list(cleaned["consensus_label"]) == [names[c] for c in ann["consensus"]["consensus_label"]]
    np.testing.assert_allclose(cleaned["annotator_agreement"], ann["consensus"]["agreement"], atol=1e-6)
    beside = pd.read_csv(tmp_path / "cleaned_annotators.csv")
    assert list(beside.columns) == ["annotator", "quality", "n_labels", "agreement_with_consensus"]
    assert out.stdout.count("wrote") == 2
    for suffix in ("csv", "json"):
        only = turn("export", run, "--format", "annotators", "--out", f"table.{suffix}", cwd=tmp_path)
        assert only.returncode == 0, only.stderr
    table = pd.read_csv(tmp_path / "table.csv")
    pd.testing.assert_frame_equal(table, beside)
    assert list(pd.read_json(tmp_path / "table.json")["annotator"]) == list(table["annotator"])


def test_annotators_format_of_a_run_without_annotators_says_why(tiny_run, tmp_path):
    out = turn("export", tiny_run, "--format", "annotators", "--out", "table.csv", cwd=tmp_path)
    assert out.returncode == 1 and "has one label per image, no annotators" in out.stderr
    assert not (tmp_path / "table.csv").exists()


def test_annotators_page_ranks_and_opens_review_on_a_disagreement_subset(annotated_run):
    at = app("annotators", annotated_run)
    at.run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["annotator"]) == ["careful", "half", "careless", "confuser"]  # best estimated quality first
    assert list(table["rank"]) == [1, 2, 3, 4] and table["quality"].is_monotonic_decreasing
    assert charts(at)[0]["data"][0]["type"] == "heatmap"
    at.selectbox(key="annotator_choice").set_value("careless").run()
    ann = RunFolder(annotated_run).annotators()
    expected = disagreements(ann["labels"], ann["names"], ann["consensus"]["consensus_label"].to_numpy(), "careless")
    assert f"Review their {expected.sum()} disagreements" in at.button(key="annotator_open_review").label
    at.button(key="annotator_open_review").click().run()
    assert not at.exception and at.session_state["review_annotator"] == "careless"

    review = app("review", annotated_run)
    review.session_state["review_annotator"] = "careless"
    review.run()
    assert not review.exception
    page = texts(review)
    assert "annotator **careless**'s label differs from the consensus" in page
    ids = RunFolder(annotated_run).samples().query("split == 'train'")["sample_id"].to_numpy()
    shown = card_ids(review)
    assert shown and set(shown) <= set(ids[expected])
    assert len(shown) == min(12, int(expected.sum()))
    # each card lists every annotator's label, the careless one's marked where it is not the consensus
    assert page.count(":material/groups: careful **") == len(shown)
    assert "careless :orange[**" in page


def test_export_page_offers_and_writes_the_annotators_table(annotated_run, tmp_path):
    at = app("export", annotated_run)
    at.run()
    assert "Download the annotators table" in [b.label for b in at.get("download_button")]
    at.text_input(key=f"export_folder_{annotated_run.name}").input(str(tmp_path)).run()
    at.button(key="export_write").click().run()
    assert not at.exception and not at.error
    labels = pd.read_csv(tmp_path / f"{annotated_run.name}-labels-all.csv")
    assert {"consensus_label", "annotator_agreement"} <= set(labels.columns)
    table = pd.read_csv(tmp_path / f"{annotated_run.name}-labels-all_annotators.csv")
    assert list(table["annotator"]) == list(RunFolder(annotated_run).annotators()["quality"]["annotator"])


def test_bench_scores_detection_with_and_without_agreement():
    from turn_backend.annotators import aggregate
    from turn_backend.bench.annotators import detection_with_and_without_agreement, simulate_annotators

    rng = np.random.default_rng(1)
    true = rng.integers(0, 4, 400)
    features = rng.normal(size=(400, 16)) + 1.5 * np.eye(16)[true]
    consensus = aggregate(simulate_annotators(true, 4, {0: 1, 1: 0}, seed=1), 400, 4)
    rows = pd.DataFrame(detection_with_and_without_agreement(features, consensus, true, 4, seed=0)).set_index(
        "detection")
    assert list(rows.index) == ["features only", "with agreement", "agreement only"]
    assert (rows["true_rate"] == (consensus.label != true).mean()).all()
    assert rows.loc["with agreement", "ap"] > rows.loc["features only", "ap"]
