"""Review's evidence, Noise matrix, Classes, Compare runs and Export's new parts under AppTest.

`audited_run` is the tiny finished run with a detection result and an audit written in the
documented formats (turn_backend.detect.result, audit/*.parquet) with planted cases: a
duplicate pair with two labels, a train/test leak, an outlier that the clean probability
alone would never flag, and features in which four samples sit next to each other. Each
page is also run on the plain tiny run (an older run without them).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from helpers.apptest import app, card_ids, metric, texts
from helpers.runs import DUP_A, DUP_B, LEAK, OUTLIER, SIMILAR, train_frame
from turn_backend import analysis as an
from turn_backend import run_views
from turn_backend.export import default_tau
from turn_backend.review import ReviewStore
from turn_backend.runfolder import RunFolder


def card_keys(at: AppTest) -> list[str]:
    """The sample ids of the cards on the page, in order."""
    return card_ids(at)


@pytest.fixture
def old_run(tiny_run) -> Path:
    """The tiny run as a run from before the detection layer and the audit."""
    final = tiny_run / "final"
    for name in ("signals.parquet", "noise_matrix.json", "features.npy"):
        (final / name).unlink(missing_ok=True)
    shutil.rmtree(tiny_run / "audit", ignore_errors=True)
    return tiny_run


# --------------------------------------------------------------------------------- review


def test_review_cards_say_why_and_audit_flags_join_the_queue(audited_run):
    ids = train_frame(audited_run)["sample_id"].astype(str).tolist()
    folder = RunFolder(audited_run)
    index = an.ReviewIndex.for_run(run_views.review_inputs(folder), default_tau(folder))
    at = app("review", audited_run)
    at.run()
    assert not at.exception
    assert f"{len(index)} of {len(index)} flagged samples left to review" in texts(at)
    page = texts(at)
    assert "Suggested **" in page and "(87%, ensemble)" in page
    # a TURN run flags by its GMM, and the card says so beside the combined score's chip
    assert "** (GMM)" in page and "combined" in page
    assert ":red-badge[kNN 0.05]" in page  # each signal's score, red at or below tau
    # the audit's finds, which the clean probability (0.99) would never flag, each with its kind
    at.pills(key="review_kind_filter").set_value(["duplicate"]).run()
    assert sorted(card_keys(at)) == sorted([ids[DUP_A], ids[DUP_B]])
    assert f"duplicate of {ids[DUP_B]}" in texts(at)
    at.pills(key="review_kind_filter").set_value(["leak"]).run()
    assert card_keys(at) == [ids[LEAK]] and "in test:" in texts(at)
    at.pills(key="review_kind_filter").set_value(["outlier"]).run()
    assert card_keys(at) == [ids[OUTLIER]] and "outlier 3.50" in texts(at)
    assert not at.exception


def test_review_reads_the_detection_signals_without_torch(audited_run):
    """review_inputs reads the run's detection result (RunFolder.detection) without importing
    torch: importing it would cost the Review page's first render about 1.4 s and 300 MB."""
    import subprocess
    import sys

    folder = RunFolder(audited_run)
    inputs = run_views.review_inputs(folder)
    assert inputs["source"] == "ensemble"
    np.testing.assert_allclose(inputs["signals"]["knn"], 0.05)
    (folder.final_dir / "noise_matrix.json").unlink()  # half a result: none, as RunFolder.load_detection says
    assert folder.detection() is None and run_views.review_inputs(folder)["signals"] is None
    # the audit pages' helpers load without scikit-learn or torch (each costs a first render about 1 s)
    # nor does the run's detection evidence (Noise matrix, Classes, Export read it)
    code = ("import sys; from turn_backend import analysis as an, run_views; "
            "folder = __import__('turn_backend.runfolder').runfolder.RunFolder(sys.argv[1]); "
            "run_views.review_inputs(folder); folder.detection(); "
            "print(sorted(m for m in ('torch', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(audited_run)], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


def test_review_noise_cell_filter_from_session_state(audited_run):
    train = train_frame(audited_run)
    folder = RunFolder(audited_run)
    inputs = run_views.review_inputs(folder)
    index = an.ReviewIndex.for_run(inputs, default_tau(folder))
    g = int(inputs["given"][index.order[0]])
    s = int(inputs["suggested"][index.order[0]])
    at = app("review", audited_run)
    at.session_state["review_pair"] = (g, s)
    at.run()
    assert not at.exception
    expected = set(index.ids[index.order[index.view(pair=(g, s))]][:12])
    assert set(card_keys(at)) == expected and expected
    names = json.loads((audited_run / "classes.json").read_text())
    assert f"given {names[g]} → likely {names[s]}" in texts(at)
    at.button(key="clear_pair").click().run()
    assert len(card_keys(at)) == min(12, len(index)) and len(train)


def test_more_like_this_bulk_remove_and_undo(audited_run):
    ids = train_frame(audited_run)["sample_id"].astype(str).tolist()
    folder = RunFolder(audited_run)
    store = ReviewStore(folder.review_db)
    at = app("review", audited_run)
    at.session_state["review_similar"] = SIMILAR[0]
    at.run()
    assert not at.exception
    assert f"More like {ids[SIMILAR[0]]}" in texts(at)
    picks = [c for c in at.checkbox if c.key and c.key.startswith(f"similar_pick_{SIMILAR[0]}_")]
    assert len(picks) == 12 and picks[0].label == ids[SIMILAR[0]]  # the sample and its 11 neighbours
    assert {c.label for c in picks} >= {ids[i] for i in SIMILAR}
    for c in picks:
        if c.label not in {ids[i] for i in SIMILAR}:
            c.uncheck()
    at.run()
    at.button(key="similar_remove").click().run()
    assert not at.exception
    current = store.current()
    assert {s for s, (a, _) in current.items() if a == "remove"} == {ids[i] for i in SIMILAR}
    at.selectbox(key=f"similar_target_{SIMILAR[0]}").select_index(4).run()
    at.button(key="similar_relabel").click().run()
    assert all(store.current()[ids[i]] == ("relabel", 4) for i in SIMILAR)
    at.button(key="undo").click().run()  # one undo reverts the whole relabel
    assert all(store.current()[ids[i]] == ("remove", None) for i in SIMILAR)
    at.button(key="close_similar").click().run()
    assert "More like" not in texts(at)


def test_review_retrain_with_decisions_creates_and_launches(audited_run, runs_root, monkeypatch):
    from turn_backend import worker

    launched = []
    monkeypatch.setattr(worker, "launch", lambda run_dir, processes=1, env=None: launched.append(Path(run_dir)) or 1)
    at = app("review", audited_run)
    at.run()
    assert at.button(key="review_retrain").disabled  # no decision yet
    assert card_keys(at)  # a card to remove
    at.button(key="remove_0").click().run()
    assert not at.button(key="review_retrain").disabled
    at.button(key="review_retrain").click().run()
    assert not at.exception
    new = runs_root / f"{audited_run.name}-reviewed"
    assert launched == [new]
    source = json.loads((new / "config.json").read_text())["retrained_from"]
    assert Path(source["run"]).name == audited_run.name and source["decisions"] == 1 and source["removed"] == 1
    assert "Started" in texts(at)


def test_review_without_detection_or_audit_uses_the_final_model(old_run):
    at = app("review", old_run)
    at.run()
    assert not at.exception
    assert "final model)" in texts(at) and "-badge[kNN" not in texts(at)
    n = len(an.ReviewIndex.for_run(run_views.review_inputs(RunFolder(old_run)), 0.6))
    assert at.pills(key="review_kind_filter").options == [f"Label error ({n})"]  # no audit: one kind


# --------------------------------------------------------------------------- noise matrix


def test_noise_matrix_heatmap_and_cell_opens_review(audited_run):
    names = json.loads((audited_run / "classes.json").read_text())
    at = app("noise", audited_run)
    at.run()
    assert not at.exception
    assert metric(at, "Estimated noise rate") == "37.0%"
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    heat = spec["data"][0]
    assert heat["type"] == "heatmap" and heat["x"] == names and heat["y"] == names
    assert heat["z"][3][6] == pytest.approx(9 / (9 + 16 + 8))  # row-normalised
    top = at.button(key="confusion_3_6")
    assert top.label.startswith(f"{names[3]} → {names[6]}: 9")
    top.click().run()
    assert not at.exception
    assert at.session_state["review_pair"] == (3, 6)
    # a click on the heatmap's cell marker does the same
    at = app("noise", audited_run)
    at.run()
    at.session_state["noise_heatmap_0"] = {"selection": {"points": [{"customdata": [5, 2, 1.0]}], "point_indices": [0],
                                           "box": [], "lasso": []}}
    at.run()
    assert at.session_state["review_pair"] == (5, 2)
    assert at.session_state["noise_chart_generation"] == 1  # a fresh chart next time: no stale cell


def test_noise_matrix_without_detection_says_so(old_run):
    at = app("noise", old_run)
    at.run()
    assert not at.exception
    assert "has no noise matrix" in texts(at)
    assert not at.get("plotly_chart")


# -------------------------------------------------------------------------------- classes


def test_classes_table_and_row_opens_review(audited_run):
    names = json.loads((audited_run / "classes.json").read_text())
    train = train_frame(audited_run)
    at = app("classes", audited_run)
    at.run()
    assert not at.exception
    table = at.dataframe[0].value.set_index("class")
    assert table["size"].tolist() == np.bincount(train["given_label"], minlength=10).tolist()
    assert table.loc[names[3], "confused_with"].startswith(names[6])
    assert table["outliers"].sum() == 1 and table.loc[names[train["given_label"][OUTLIER]], "outliers"] == 1
    assert table["test_leaks"].sum() == 1 and table["label_conflicts"].sum() == 2
    at.session_state["classes_table"] = {"selection": {"rows": [4], "columns": []}}
    at.run()
    assert at.session_state["review_given_filter"] == [names[4]]


def test_duplicates_tab_slider_and_leaks(audited_run):
    ids = train_frame(audited_run)["sample_id"].astype(str).tolist()
    at = app("classes", audited_run)
    at.run()
    assert "**1 pair(s)** at similarity ≥ 0.970" in texts(at)  # the audit's threshold
    assert ids[DUP_A] in texts(at) and "different labels" in texts(at)
    at.slider(key=f"dup_threshold_{audited_run.name}").set_value(0.9).run()
    assert "**2 pair(s)**" in texts(at)  # the 0.93 pair too
    at.button_group(key="dup_which").set_value("train / test").run()
    assert not at.exception
    assert "**1 pair(s)**" in texts(at) and "train/test leak" in texts(at)


def test_classes_without_detection_or_audit(old_run):
    at = app("classes", old_run)
    at.run()
    assert not at.exception
    assert "no detection layer" in texts(at) and "no audit" in texts(at)
    assert "duplicates" not in at.dataframe[0].value.columns
    assert "has no audit of duplicates" in texts(at)


# -------------------------------------------------------------------------------- compare


def test_compare_runs_retrained_pair(audited_run, runs_root):
    other = runs_root / f"{audited_run.name}-reviewed"
    shutil.copytree(audited_run, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["retrained_from"] = {"run": str(audited_run), "decisions": 3, "relabelled": 1, "removed": 1, "kept": 1}
    (other / "config.json").write_text(json.dumps(cfg))
    clean = np.load(other / "final" / "clean_prob.npy")
    flip = np.flatnonzero(clean <= default_tau(RunFolder(other)))[:2]
    clean[flip] = 0.99  # two flags fewer in the retrained run
    np.save(other / "final" / "clean_prob.npy", clean)
    at = app("compare", other)
    at.run()
    assert not at.exception
    assert at.selectbox(key="compare_a").value == audited_run.name
    assert at.selectbox(key="compare_b").value == other.name
    assert f"retrained from **{audited_run.name}** with 3 decision(s)" in texts(at)
    assert metric(at, "Flags changed") == "2" and metric(at, "Only A flags") == "2"
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert [t["name"] for t in charts[0]["data"]] == [f"A: {audited_run.name}", f"B: {other.name}"]
    assert len(charts) == 2  # accuracy per round, per-class accuracy


def test_compare_needs_two_runs(tiny_run):
    at = app("compare")
    at.run()
    assert not at.exception
    assert "Comparing needs two runs" in texts(at)


# --------------------------------------------------------------------------------- export


def test_export_imagefolder_and_retrain_button(audited_run, tmp_path, runs_root, monkeypatch):
    from turn_backend import worker

    monkeypatch.setattr(worker, "launch", lambda run_dir, processes=1, env=None: 1)
    ids = train_frame(audited_run)["sample_id"].astype(str).tolist()
    ReviewStore(RunFolder(audited_run).review_db).record(ids[5], "remove")
    at = app("export", audited_run)
    at.run()
    assert not at.exception
    assert at.get("download_button")[-1].proto.label.startswith("Download the decision log (1 rows")
    out = tmp_path / "tree"
    at.text_input(key=f"export_out_{audited_run.name}_imagefolder").input(str(out)).run()
    at.button(key="export_folder_write").click().run()
    assert not at.exception
    files = [p for p in out.rglob("*.png")]
    assert len(files) == len(ids) - 1 and not any(p.stem == ids[5] for p in files)
    assert "torchvision.datasets.ImageFolder" in texts(at)
    at.button(key="export_retrain").click().run()
    assert (runs_root / f"{audited_run.name}-reviewed" / "reviewed_labels.parquet").exists()


def test_a_retrained_runs_images_are_its_own_training_set(tiny_run, runs_root):
    """The pages index images by training position; a retrained run has fewer samples."""
    from app import ui
    from turn_backend.retrain import create_retrain_run

    ids = train_frame(tiny_run)["sample_id"].astype(str).tolist()
    store = ReviewStore(RunFolder(tiny_run).review_db)
    store.record(ids[3], "remove")
    store.record(ids[7], "relabel", 9)
    new = create_retrain_run(tiny_run, runs_root / "retrained")
    train = ui.run_bundle(new).train
    assert len(train) == len(ids) - 1 and ids[3] not in train.ids
    assert train.labels[list(train.ids).index(ids[7])] == 9


def test_more_like_this_on_a_run_without_fine_tuned_features(old_run):
    """Older runs have no final/features.npy: the search uses the run's cached pre-trained features."""
    at = app("review", old_run)
    at.session_state["review_similar"] = 5
    at.run()
    assert not at.exception and not at.error
    picks = [c for c in at.checkbox if c.key and c.key.startswith("similar_pick_5_")]
    assert len(picks) == 12 and picks[0].label == train_frame(old_run)["sample_id"].astype(str)[5]
