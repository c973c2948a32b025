"""Exports people load elsewhere: audit columns in the label file, ImageFolder, Hugging Face
`datasets`, the decision log; atomic writes and clear errors."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers.cli import turn as run_turn
from helpers.exports import CLASSES, file_run, imagefolder_labels
from turn_backend import export
from turn_backend.export import (
    ExportError,
    build_decision_log,
    build_export,
    export_hf,
    export_imagefolder,
    write_export,
)
from turn_backend.review import ReviewStore
from turn_backend.runfolder import RunFolder

ROOT = Path(__file__).resolve().parents[1]
def test_label_file_carries_the_audit_columns_in_every_format(tiny_run, tmp_path):
    folder = RunFolder(tiny_run)
    audit = folder.audit()["train"]
    df = build_export(tiny_run)
    assert list(df.columns[-4:]) == ["duplicate_of", "test_duplicate", "outlier", "outlier_score"]
    assert df["duplicate_of"].tolist() == audit["duplicate_of"].tolist()
    np.testing.assert_allclose(df["outlier_score"], audit["outlier_score"], atol=1e-6)
    for fmt in ("csv", "parquet", "json"):
        path = write_export(df, tmp_path / f"labels.{fmt}")
        back = {"csv": lambda p: pd.read_csv(p, keep_default_na=False), "parquet": pd.read_parquet,
                "json": pd.read_json}[fmt](path)
        assert back["outlier"].astype(bool).tolist() == df["outlier"].tolist()
        assert back["test_duplicate"].astype(str).tolist() == df["test_duplicate"].tolist()
    # a run without an audit (older runs): empty ids, false, no score
    import shutil

    shutil.rmtree(folder.audit_dir)
    bare = build_export(tiny_run)
    assert (bare["duplicate_of"] == "").all() and (bare["test_duplicate"] == "").all()
    assert not bare["outlier"].any() and bare["outlier_score"].isna().all()


def test_imagefolder_export_of_array_data_loads_back_with_the_final_labels(tiny_run, tmp_path):
    train = build_export(tiny_run)
    relabel, remove = train["sample_id"][0], train["sample_id"][1]
    new = "Bag" if train["given_label"][0] != "Bag" else "Coat"
    store = ReviewStore(RunFolder(tiny_run).review_db)
    store.record(relabel, "relabel", RunFolder(tiny_run).class_names().index(new))
    store.record(remove, "remove")
    out = tmp_path / "folder-export"
    info = export_imagefolder(tiny_run, out)
    assert info["rows"] == len(train) - 1
    got = imagefolder_labels(out)
    final = dict(zip(build_export(tiny_run)["sample_id"], build_export(tiny_run)["final_label"]))
    assert len(got) == len(train) - 1 and remove not in got
    assert got[relabel] == new
    assert all(got[sid] == final[sid] for sid in got)
    assert "T-shirt_top" in os.listdir(out)  # "T-shirt/top", made safe
    with Image.open(next((out / "T-shirt_top").iterdir())) as img:
        assert img.format == "PNG" and img.size == (28, 28)  # the stored pixels, not the model's input size


@pytest.mark.parametrize("link", ["hardlink", "symlink", "copy"])
def test_imagefolder_export_of_files_links_or_copies(tmp_path, link):
    run = file_run(tmp_path)
    out = tmp_path / "tree"
    export_imagefolder(run, out, link=link)
    assert imagefolder_labels(out) == {"s0": "cat", "s1": "dog/wolf", "s2": "cat", "s3": "dog/wolf",
                                        "s5": "dog/wolf"}
    placed = out / "dog_wolf" / "s1.png"
    source = tmp_path / "images" / "img1.png"
    assert placed.read_bytes() == source.read_bytes()
    assert placed.is_symlink() == (link == "symlink")
    assert (os.stat(placed).st_ino == os.stat(source).st_ino) == (link in ("hardlink", "symlink"))


def test_hf_export_loads_back_with_the_final_labels(tmp_path):
    import datasets

    run = file_run(tmp_path)
    out = tmp_path / "hf"
    assert export_hf(run, out)["rows"] == 5
    ds = datasets.load_from_disk(str(out))["train"]
    names = ds.features["label"].names
    assert names == CLASSES
    got = {r["sample_id"]: names[r["label"]] for r in ds}
    assert got == {"s0": "cat", "s1": "dog/wolf", "s2": "cat", "s3": "dog/wolf", "s5": "dog/wolf"}
    row = ds[1]
    assert row["decision"] == "relabel" and names[row["given_label"]] == "cat"
    assert np.asarray(row["image"]).mean() == pytest.approx(40)  # the image itself travels
    # TURN reads the export back as a dataset of kind "hf"
    from turn_backend.data.loaders import load_dataset

    bundle = load_dataset({"kind": "hf", "path": str(out)})
    assert bundle.class_names == CLASSES and len(bundle.train) == 5


def test_decision_log_lists_each_decision_with_when_tau_and_signals(tmp_path, monkeypatch):
    run = file_run(tmp_path)
    signals = pd.DataFrame({"combined": np.linspace(0, 1, 6), "knn": np.full(6, 0.5),
                            "suggested_label": [1, 1, 0, 0, 1, 0], "suggested_confidence": np.full(6, 0.75),
                            "suggested_source": "ensemble"})
    monkeypatch.setattr(RunFolder, "detection", lambda self: {"signals": signals, "noise_counts": None,
                                                             "noise_rate": 0.1})
    log = build_decision_log(run, tau=0.4)
    assert log["sample_id"].tolist() == ["s1", "s4", "s5"]  # oldest decision first
    assert log["decision"].tolist() == ["relabel", "remove", "keep"]
    assert log["given_label"].tolist() == ["cat", "dog/wolf", "dog/wolf"]
    assert log["final_label"].tolist()[0] == "dog/wolf" and pd.isna(log["final_label"][1])
    assert (log["tau"] == 0.4).all() and log["flagged"].tolist() == [True, True, False]
    assert log["decided_at"].str.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00").all()
    np.testing.assert_allclose(log["signal_combined"], [0.2, 0.8, 1.0])
    assert log["suggested_label"].tolist() == ["dog/wolf", "dog/wolf", "cat"]
    assert set(log.columns) >= {"signal_knn", "suggested_confidence", "clean_prob", "duplicate_of", "outlier"}
    back = pd.read_json(io.BytesIO(export.to_bytes(log, "json")))
    assert back["sample_id"].tolist() == ["s1", "s4", "s5"]


def test_folder_exports_are_atomic_and_never_overwrite_a_users_folder(tmp_path, monkeypatch):
    run = file_run(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not an earlier TURN export"):
        export_imagefolder(run, mine)
    assert os.listdir(mine) == ["notes.txt"]

    out = tmp_path / "tree"
    export_imagefolder(run, out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    calls = []

    def fail_on_third(self, i, dest_stem, link):
        calls.append(i)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return original(self, i, dest_stem, link)

    original = export.ExportImages.write
    monkeypatch.setattr(export.ExportImages, "write", fail_on_third)
    with pytest.raises(ExportError, match="No space left"):
        export_imagefolder(run, out, link="copy")
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # the earlier export, intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "mine", "run", "tree"]  # no temp left
    monkeypatch.undo()
    with pytest.raises(ExportError, match="link mode"):
        export_imagefolder(run, out, link="teleport")
    os.remove(tmp_path / "images" / "img3.png")  # a file dataset whose image is gone
    with pytest.raises(ExportError, match="can no longer be read"):
        export_hf(run, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_turn_export_folder_formats_and_decision_log(tmp_path):
    run = file_run(tmp_path)

    def turn(*args):
        return run_turn("export", run, *args, timeout=300)

    proc = turn("--out", str(tmp_path / "tree"), "--format", "imagefolder", "--link", "copy")
    assert proc.returncode == 0, proc.stderr
    assert "5 images" in proc.stdout and len(imagefolder_labels(tmp_path / "tree")) == 5
    proc = turn("--out", str(tmp_path / "log.csv"), "--format", "decisions")
    assert proc.returncode == 0, proc.stderr
    log = pd.read_csv(tmp_path / "log.csv")
    assert log["decision"].tolist() == ["relabel", "remove", "keep"]
    proc = turn("--out", str(tmp_path / "images"), "--format", "hf")  # the user's image folder
    assert proc.returncode == 1 and "not an earlier TURN export" in proc.stderr
