"""The audit pages (Embeddings, Threshold, Review, Export) under Streamlit's AppTest.

Each page runs standalone against a copy of the tiny finished run (`tiny_run` from
conftest.py). Decisions, the applied tau and exports are checked in the run folder itself
(the review database, the written file), not in the page's state.
"""

from __future__ import annotations

import base64
import errno
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.apptest import app, card_ids, card_key, charts, figure_array, first_page_rows, metric, texts
from turn_backend import analysis as an
from turn_backend import run_views
from turn_backend.export import build_export, default_tau, to_bytes
from turn_backend.review import ReviewStore
from turn_backend.runfolder import RunFolder

ROOT = Path(__file__).resolve().parents[1]
PAGES = ROOT / "pages"
TIMEOUT = 180


def flagged_total(run: Path) -> int:
    from turn_backend.export import default_tau

    folder = RunFolder(run)
    return len(an.ReviewIndex.for_run(run_views.review_inputs(folder), default_tau(folder)))


# ------------------------------------------------------------------------- empty states


@pytest.mark.parametrize("page", ["embeddings", "threshold", "classes", "noise", "review", "export"])
def test_empty_runs_root_shows_what_to_do(runs_root, page):
    at = app(page)
    at.run()
    assert not at.exception
    assert "No run yet" in texts(at)
    assert not at.get("plotly_chart")


@pytest.mark.parametrize("page", ["embeddings", "threshold", "classes", "noise", "review", "export"])
def test_unfinished_run_shows_empty_state(runs_root, tiny_config, page):
    from turn_backend.runner import create_run

    create_run(tiny_config(), runs_root / "queued-run")
    at = app(page)
    at.run()
    assert not at.exception
    assert "has no results yet" in texts(at)


# ----------------------------------------------------------------------------- embeddings


def drawn_points(chart: dict) -> dict[str, list[int]]:
    """Sample positions (customdata) per trace name of a map."""
    return {t.get("name"): figure_array(t["customdata"]).astype(int).tolist()
            for t in chart["data"] if "customdata" in t}


def test_embeddings_maps_every_training_sample_with_flags(tiny_run):
    """The default (train) map: every training sample once, the flagged ones overlaid, WebGL."""
    at = app("embeddings", tiny_run)
    at.run()
    assert not at.exception
    assert len(charts(at)) == 2  # before and after TURN
    titles = [m.value for m in at.markdown if m.value.startswith("**")]
    assert titles[0].startswith("**Before tuning") and titles[1].startswith("**After TURN")
    assert at.selectbox(key="emb_colour").options == ["Given label", "Predicted label", "Clean probability",
                                                      "Flagged (p ≤ τ)", "True label"]
    folder = RunFolder(tiny_run)
    n_train = int((folder.samples()["split"] == "train").sum())
    flagged = set(np.flatnonzero(folder.final()["clean_prob"] <= default_tau(folder)).tolist())
    for chart in charts(at):
        assert {t["type"] for t in chart["data"]} == {"scattergl"}
        points = drawn_points(chart)
        overlay = points.pop("flagged (p ≤ τ)")
        drawn = sorted(i for rows in points.values() for i in rows)
        assert drawn == list(range(n_train))  # every sample exactly once, by class
        assert set(overlay) == flagged
    at.selectbox(key="emb_colour").set_value("clean_prob").run()
    trace = charts(at)[0]["data"][0]
    assert trace["marker"]["colorscale"] and trace["marker"]["cmax"] == 1
    at.selectbox(key="emb_colour").set_value("flagged").run()
    assert not at.exception
    points = drawn_points(charts(at)[0])
    assert set(points["flagged (p ≤ τ)"]) == flagged and len(points["clean (p > τ)"]) == n_train - len(flagged)


@pytest.fixture
def test_split_run(tiny_run) -> Path:
    """The tiny run with a test-split map (synthetic coordinates for 40 test samples)."""
    cfg = json.loads((tiny_run / "config.json").read_text())
    cfg["projection_split"] = "test"
    (tiny_run / "config.json").write_text(json.dumps(cfg))
    rng = np.random.default_rng(0)
    proj = tiny_run / "projections"
    np.save(proj / "test_subset.npy", np.sort(rng.choice(100, 40, replace=False)))
    np.save(proj / "test_before_tsne.npy", rng.normal(size=(40, 2)).astype(np.float32))
    np.save(proj / "test_after_tsne.npy", rng.normal(size=(40, 2)).astype(np.float32))
    return tiny_run


def test_embeddings_test_split_offers_label_colourings_only(test_split_run):
    at = app("embeddings", test_split_run)
    at.run()
    assert not at.exception
    assert at.selectbox(key="emb_colour").options == ["Given label", "True label"]
    assert "training samples only" in texts(at)
    assert sum(len(rows) for rows in drawn_points(charts(at)[0]).values()) == 40


def test_embeddings_selection_on_one_map_highlights_it_on_the_others(tiny_run):
    at = app("embeddings", tiny_run)
    at.run()
    at.session_state["emb_chart_before"] = {
        "selection": {"points": [{"customdata": 3, "curve_number": 0, "point_index": 0},
                                 {"customdata": 17, "curve_number": 1, "point_index": 0}],
                      "point_indices": [0], "box": [], "lasso": []}}
    at.run()
    assert not at.exception
    assert "2 selected" in texts(at)
    assert sum(m.value.count("<img") for m in at.markdown) == 2  # their images, inlined (one gallery element)
    for chart in charts(at):  # both maps: exactly samples 3 and 17 are selected
        picked = {int(figure_array(t["customdata"])[i]) for t in chart["data"]
                  for i in figure_array(t.get("selectedpoints"))}
        assert picked == {3, 17}


def test_embeddings_third_panel_with_plain_fft_run(tiny_run, runs_root):
    ref = runs_root / "fft-ce-same-data"
    shutil.copytree(tiny_run, ref)
    cfg = json.loads((ref / "config.json").read_text())
    cfg["method"] = "fft-ce"
    (ref / "config.json").write_text(json.dumps(cfg))
    at = app("embeddings", tiny_run)
    at.run()
    assert not at.exception
    assert len(charts(at)) == 3
    assert "**After plain FFT (fft-ce-same-data)**" in [m.value for m in at.markdown]


def test_embeddings_umap_on_demand(tiny_run):
    pytest.importorskip("umap")
    at = app("embeddings", tiny_run)
    at.run()
    at.button_group(key="emb_method").set_value("umap").run()
    assert not at.exception
    assert (tiny_run / "projections" / "train_before_umap.npy").exists()
    assert (tiny_run / "projections" / "train_after_umap.npy").exists()
    assert len(charts(at)) == 2


def decode_picture(uri: str) -> np.ndarray:
    """The RGBA pixels of a PNG data URI."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def map_picture(chart: dict) -> np.ndarray:
    """The RGBA picture under a large map's axes."""
    (image,) = chart["layout"]["images"]
    return decode_picture(image["source"])


def selection_layer(at) -> dict:
    """The data the Embeddings page sends its selection layer (the large maps' selection)."""
    (layer,) = [e for e in at.get("bidi_component") if e.proto.component_name.endswith("map_selection")]
    return json.loads(layer.proto.json)


def test_embeddings_too_many_points_draw_a_picture_of_all_with_some_on_top(tiny_run, monkeypatch):
    monkeypatch.setattr(an, "MAX_MAP_POINTS", 50)
    monkeypatch.setattr(an, "OVERLAY_POINTS", 30)
    at = app("embeddings", tiny_run)
    at.run()
    assert not at.exception
    assert "too many to draw one by one" in texts(at)
    folder = RunFolder(tiny_run)
    n_train = int((folder.samples()["split"] == "train").sum())
    flagged = set(np.flatnonzero(folder.final()["clean_prob"] <= default_tau(folder)).tolist())
    before_selection = charts(at)
    chart = before_selection[0]
    picture = map_picture(chart)
    strong = [(map_picture(c)[..., 3] >= 80).sum() for c in before_selection]  # a drawn pixel's opacity is >= 89
    assert picture.shape[2] == 4 and (picture[..., 3] > 0).sum() > 30  # more pixels than overlay points
    points = drawn_points(chart)
    crosses = points.pop("flagged (p ≤ τ), a sample")
    overlay = [i for rows in points.values() for i in rows]
    assert len(overlay) == len(set(overlay)) == 30 and set(crosses) == flagged & set(overlay)

    # a box over the left half selects every sample there, not only the 30 drawn one by one
    xy = folder.projection("train", "before", "tsne")
    middle = float(np.median(xy[:, 0]))
    low, high = float(xy[:, 1].min()) - 1, float(xy[:, 1].max()) + 1
    left = set(folder.projection_subset("train")[xy[:, 0] < middle].tolist())
    at.session_state["emb_chart_before"] = {"selection": {
        "points": [], "point_indices": [], "lasso": [],
        "box": [{"xref": "x", "yref": "y", "x": [float(xy[:, 0].min()) - 1, middle], "y": [low, high]}]}}
    at.run()
    assert not at.exception
    assert f"{len(left)} selected" in texts(at)
    # the maps stay as they were (a changed figure is redrawn whole in the browser); the
    # selection layer puts a picture of the selected samples over each of them
    assert [c["layout"]["images"] for c in charts(at)] == [c["layout"]["images"] for c in before_selection]
    layer = selection_layer(at)
    assert layer["source"] == 0 and layer["fade"] < 1
    for picture_uri, full in zip(layer["pictures"], strong):
        chosen = decode_picture(picture_uri)
        assert chosen.shape == picture.shape and 0 < (chosen[..., 3] >= 80).sum() < full
    # ... whose drawn pixels are those of the selected samples: the left half only
    columns = np.flatnonzero((decode_picture(layer["pictures"][0])[..., 3] > 0).any(axis=0))
    assert columns.max() < picture.shape[1] * 0.6
    at.session_state["emb_chart_before"] = {"selection": {"points": [], "point_indices": [], "box": [],
                                                          "lasso": []}}
    at.run()  # cleared (a double click): no picture over the maps
    assert selection_layer(at)["pictures"] == [None, None]
    assert n_train > 50
    for colour in ("clean_prob", "flagged", "pred"):  # every colouring draws a picture of all points
        at.selectbox(key="emb_colour").set_value(colour).run()
        assert not at.exception
        assert (map_picture(charts(at)[0])[..., 3] > 0).sum() > 30


# ------------------------------------------------------------------------------ threshold


def test_threshold_slider_updates_counts_and_apply_writes_tau(tiny_run):
    at = app("threshold", tiny_run)
    at.run()
    assert not at.exception
    folder = RunFolder(tiny_run)
    p = folder.final()["clean_prob"]
    assert metric(at, "Clean candidates") == f"{int((p > 0.6).sum()):,}"
    slider = at.slider(key="tau_slider_" + tiny_run.name)
    assert slider.value == pytest.approx(0.6)
    assert "TURN's: the posterior of the low-loss Gaussian" in slider.help  # a TURN run: what its number means
    assert any("falls to τ. Samples to its right are flagged." in c.value for c in at.caption)
    slider.set_value(0.3).run()
    assert not at.exception
    assert metric(at, "Clean candidates") == f"{int((p > 0.3).sum()):,}"
    assert metric(at, "Flagged") == f"{int((p <= 0.3).sum()):,}"
    table = next(d.value for d in at.dataframe if "flagged" in d.value.columns and "class" in d.value.columns)
    assert int(table["clean"].sum()) == int((p > 0.3).sum())
    # histograms, precision/recall sweep, reliability diagram (the tiny run has ground truth); per-class
    # counts are the table
    assert len(charts(at)) == 3
    at.button(key="apply_tau").click().run()
    assert not at.exception
    assert ReviewStore(folder.review_db).get_setting("tau") == "0.30"
    assert "Applied τ: **0.30**" in texts(at)


def test_threshold_retrain_creates_and_launches_a_new_run(tiny_run, runs_root, monkeypatch):
    from turn_backend import worker

    launched = []
    monkeypatch.setattr(worker, "launch", lambda run_dir, processes=1, env=None: launched.append(Path(run_dir)) or 1)
    at = app("threshold", tiny_run)
    at.run()
    at.slider(key="tau_slider_" + tiny_run.name).set_value(0.45).run()
    at.button(key="retrain_button").click().run()
    assert not at.exception
    new = runs_root / f"{tiny_run.name}-tau0.45"
    assert launched == [new]
    cfg = json.loads((new / "config.json").read_text())
    old = json.loads((tiny_run / "config.json").read_text())
    assert cfg["tau"] == 0.45 and {**cfg, "tau": old["tau"]} == old
    assert "Started run" in texts(at)


# --------------------------------------------------------------------------------- review


def test_review_actions_are_recorded_at_once(tiny_run):
    rows = first_page_rows(tiny_run)
    assert len(rows) >= 4
    store = ReviewStore(RunFolder(tiny_run).review_db)
    names = json.loads((tiny_run / "classes.json").read_text())
    at = app("review", tiny_run)
    at.run()
    assert not at.exception
    total = flagged_total(tiny_run)
    assert f"{total} of {total} flagged samples left to review" in texts(at)

    s0, s1, s2, s3 = (str(s) for s in rows["sample_id"].iloc[:4])
    assert card_ids(at)[:4] == [s0, s1, s2, s3]  # the queue's order
    at.button(key=card_key(at, "keep", s0)).click().run()
    assert store.current()[s0] == ("keep", None)
    at.button(key=card_key(at, "remove", s1)).click().run()
    assert store.current()[s1] == ("remove", None)
    r2 = rows.iloc[2]
    at.button(key=card_key(at, "accept", s2)).click().run()
    expected = ("relabel", int(r2["pred"])) if r2["pred"] != r2["given"] else ("keep", None)
    assert store.current()[s2] == expected
    other = next(n for i, n in enumerate(names) if i != int(rows.iloc[3]["given"]))
    at.selectbox(key=card_key(at, "relabel", s3)).select(other).run()
    assert not at.exception
    assert store.current()[s3] == ("relabel", names.index(other))
    assert f"{total - 4} of {total} flagged samples left to review" in texts(at)

    # undo reverts the last decision of this browser session only
    store.record(s0, "remove", session="another-tab")
    at.button(key="undo").click().run()
    assert not at.exception
    current = store.current()
    assert s3 not in current  # the relabel is undone
    assert current[s0] == ("remove", None)  # the other tab's decision stands
    assert current[s2] == expected


def test_review_bulk_accept_and_only_undecided(tiny_run):
    rows = first_page_rows(tiny_run)
    store = ReviewStore(RunFolder(tiny_run).review_db)
    at = app("review", tiny_run)
    at.run()
    at.button(key="bulk_accept").click().run()
    assert not at.exception
    current = store.current()
    assert len(current) == len(rows)
    for sid, action, label in an.bulk_accept(rows):
        assert current[sid] == (action, label)
    # only undecided: the page now starts with the next samples
    at.toggle(key="review_only_undecided").set_value(True).run()
    assert not at.exception
    shown = card_ids(at)
    assert shown and not set(shown) & set(rows["sample_id"].astype(str))


def test_review_bulk_accept_leaves_decided_cards_and_undo_reverts_the_batch(tiny_run):
    rows = first_page_rows(tiny_run)
    store = ReviewStore(RunFolder(tiny_run).review_db)
    s0 = str(rows.iloc[0]["sample_id"])
    at = app("review", tiny_run)
    at.run()
    at.button(key=card_key(at, "remove", s0)).click().run()
    at.button(key="bulk_accept").click().run()
    assert not at.exception
    current = store.current()
    assert current[s0] == ("remove", None)  # a decided card is not overwritten
    assert len(current) == len(rows)
    at.button(key="undo").click().run()  # reverts the whole bulk accept
    assert not at.exception
    assert store.current() == {s0: ("remove", None)}
    at.button(key="undo").click().run()
    assert store.current() == {}
    at.button(key="undo").click().run()  # nothing left: says so, no error
    assert not at.exception


def test_review_filters_and_pages(tiny_run):
    names = json.loads((tiny_run / "classes.json").read_text())
    rows = first_page_rows(tiny_run)
    at = app("review", tiny_run)
    at.run()
    cls = names[int(rows.iloc[0]["given"])]
    at.multiselect(key="review_given_filter").select(cls).run()
    assert not at.exception
    given_names = [m.value.split("Given **", 1)[1] for m in at.markdown if "Given **" in m.value]
    assert given_names and all(v.startswith(f"{cls}**") for v in given_names)
    at.multiselect(key="review_given_filter").unselect(cls).run()
    if not at.button(key="next_page").disabled:
        at.button(key="next_page").click().run()
        assert not at.exception
        assert "Page **2** of" in texts(at)


# --------------------------------------------------------------------------------- export


def test_export_preview_and_write_to_folder(tiny_run):
    at = app("export", tiny_run)
    at.run()
    assert not at.exception
    preview = at.dataframe[0].value
    expected = build_export(tiny_run, scope="all")
    assert list(preview.columns) == list(expected.columns)
    assert len(preview) == min(200, len(expected))
    assert metric(at, "Rows in the file") == f"{len(expected):,}"
    assert at.get("download_button") and "Download" in at.get("download_button")[0].proto.label
    at.button(key="export_write").click().run()
    assert not at.exception
    path = tiny_run / "exports" / f"{tiny_run.name}-labels-all.csv"
    assert path.read_bytes() == to_bytes(expected, "csv")
    assert str(path) in texts(at)


def test_export_scope_format_and_decisions(tiny_run, tmp_path):
    store = ReviewStore(RunFolder(tiny_run).review_db)
    rows = first_page_rows(tiny_run)
    store.record(str(rows.iloc[0]["sample_id"]), "remove")
    store.record(str(rows.iloc[1]["sample_id"]), "relabel", 0)
    at = app("export", tiny_run)
    at.run()
    assert metric(at, "Removed") == "1" and metric(at, "Relabelled") == "1"
    at.radio(key="export_scope").set_value("kept").run()
    at.radio(key="export_format").set_value("parquet").run()
    at.text_input(key=f"export_folder_{tiny_run.name}").input(str(tmp_path / "out")).run()
    at.button(key="export_write").click().run()
    assert not at.exception
    written = pd.read_parquet(tmp_path / "out" / f"{tiny_run.name}-labels-kept.parquet")
    expected = pd.read_parquet(io.BytesIO(to_bytes(build_export(tiny_run, scope="kept"), "parquet")))
    pd.testing.assert_frame_equal(written, expected)
    assert len(written) == len(build_export(tiny_run, scope="all")) - 1


def test_export_failure_keeps_the_previous_file(tiny_run, monkeypatch):
    at = app("export", tiny_run)
    at.run()
    at.button(key="export_write").click().run()
    path = tiny_run / "exports" / f"{tiny_run.name}-labels-all.csv"
    before = path.read_bytes()
    # a decision changes the file's contents; then the disk "fills up" during the write
    ReviewStore(RunFolder(tiny_run).review_db).record(str(first_page_rows(tiny_run).iloc[0]["sample_id"]), "remove")
    import turn_backend.io as tio  # the atomic writes

    def full_disk(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tio.os, "replace", full_disk)
    at.run()
    at.button(key="export_write").click().run()
    assert not at.exception
    assert at.error and "previous file" in at.error[0].value
    assert path.read_bytes() == before
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_export_to_an_unusable_folder_shows_an_error(tiny_run, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be")
    at = app("export", tiny_run)
    at.run()
    at.text_input(key=f"export_folder_{tiny_run.name}").input(str(blocker)).run()
    at.button(key="export_write").click().run()
    assert not at.exception
    assert at.error and "previous file" in at.error[0].value
    assert blocker.read_text() == "a file where the folder should be"
