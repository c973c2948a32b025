"""The Runs, Dataset and Train pages under Streamlit's AppTest, on real run folders.

Each page file runs standalone (as `streamlit run pages/x.py` would); training runs in real
worker processes on tiny settings (demo 200/100 images, 64 px, EfficientNet-Lite0 on CPU).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from helpers.apptest import metric, texts
from turn_backend import worker
from turn_backend.runfolder import RunFolder, list_runs

ROOT = Path(__file__).resolve().parents[1]
PAGE_TIMEOUT = 120  # the first import of torch and timm in a page is slow on a small CPU
TINY_DATA = {"kind": "demo", "n_train": 200, "n_test": 100}


def page(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=PAGE_TIMEOUT)


def wait_for_state(run_dir: Path, states: tuple[str, ...], timeout: float = 300) -> dict:
    deadline = time.time() + timeout
    status = worker.live_state(run_dir)
    while time.time() < deadline:
        status = worker.live_state(run_dir)
        if status.get("state") in states:
            return status
        time.sleep(0.5)
    log = (run_dir / "worker.log").read_text() if (run_dir / "worker.log").exists() else ""
    raise AssertionError(f"run {run_dir.name} did not reach {states} in {timeout} s: {status}\n{log[-3000:]}")


def tiny_train_settings(at: AppTest, *, method: str = "turn", fft_epochs: int = 1, lp_epochs: int = 3) -> AppTest:
    """The smallest useful settings on the Train page (the widgets a user would touch)."""
    at.session_state["dataset_spec"] = dict(TINY_DATA)
    at.session_state["noise_spec"] = {"kind": "symmetric", "rate": 0.4, "seed": 0}
    at.run()
    at.selectbox(key="tr_method").select(method).run()
    at.selectbox(key="tr_device").select("cpu")
    at.number_input(key="tr_image_size").set_value(64)  # the features of the tiny run are cached
    at.select_slider(key="tr_batch").set_value(64)
    for key, value in (("tr_lp_epochs", lp_epochs), ("tr_fft_epochs", fft_epochs)):
        widget = at.number_input(key=key)
        if not widget.proto.disabled:  # LP epochs are off for FFT baselines, and the reverse
            widget.set_value(value)
    return at.run()


# -------------------------------------------------------------------------------- runs


def test_runs_page_empty_state(runs_root):
    at = page("runs").run()
    assert not at.exception
    assert "No runs yet" in texts(at)


def test_runs_page_lists_the_run(tiny_run):
    at = page("runs").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert tiny_run.name in list(table["name"])
    row = table[table["name"] == tiny_run.name].iloc[0]
    assert row["method"] == "turn" and row["state"] == "Done" and row["open"] == "open"
    assert row["n_clean"] == RunFolder(tiny_run).metrics()["n_clean"]
    # the last run reopened by itself
    assert at.session_state["run_dir"] == str(tiny_run)
    assert metric(at, "Clean set") == f"{RunFolder(tiny_run).metrics()['n_clean']:,}"


def test_runs_page_opens_and_deletes_with_confirmation(tiny_run, tiny_run_template, runs_root):
    import shutil

    other = runs_root / "second-run"
    shutil.copytree(tiny_run_template, other)
    at = page("runs").run()
    assert not at.exception
    at.selectbox(key="runs_choice").select(tiny_run.name).run()
    at.button(key="runs_open").click().run()
    assert not at.exception
    assert at.session_state["run_dir"] == str(tiny_run)

    at.button(key="runs_delete").click().run()
    assert "cannot be undone" in texts(at)
    assert tiny_run.exists()  # nothing deleted before the confirmation
    at.button(key="runs_cancel").click().run()
    assert tiny_run.exists()

    at.button(key="runs_delete").click().run()
    at.button(key="runs_confirm").click().run()
    assert not at.exception
    assert not tiny_run.exists()
    assert other.exists()
    assert [n for n in at.dataframe[0].value["name"]] == ["second-run"]


# ------------------------------------------------------------------------------ dataset


def test_dataset_page_loads_the_demo_with_noise_by_default(runs_root):
    at = page("dataset").run()
    assert not at.exception
    assert not at.error
    assert metric(at, "Train images") == "3,000"
    assert metric(at, "Classes") == "10"
    assert metric(at, "Actual noise rate") == "40.0%"
    assert at.session_state["dataset_spec"] == {"kind": "demo", "n_train": 3000, "n_test": 1000}
    assert at.session_state["noise_spec"] == {"kind": "symmetric", "rate": 0.4, "seed": 0}
    assert len(at.get("plotly_chart")) == 1  # class counts
    assert len(at.get("image")) == 10 * 6  # a grid of samples per class


def test_dataset_page_demo_sizes(runs_root):
    at = page("dataset").run()
    at.select_slider(key="ds_demo_train").set_value(500).run()
    assert not at.exception
    assert metric(at, "Train images") == "500"
    assert at.session_state["dataset_spec"]["n_train"] == 500


def test_dataset_page_invalid_folder_shows_an_error(runs_root, tmp_path):
    at = page("dataset").run()
    at.radio(key="ds_source").set_value("folder").run()
    at.text_input(key="ds_folder_path").input(str(tmp_path / "no-such-folder")).run()
    at.button(key="ds_load").click().run()
    assert not at.exception
    assert at.error, "an invalid folder must show st.error"
    # the demo stays the chosen dataset
    assert at.session_state["dataset_spec"]["kind"] == "demo"


def test_dataset_page_loads_a_folder_and_lists_skipped_items(runs_root, tmp_path):
    from PIL import Image

    data = tmp_path / "imgs"
    for c, color in (("cat", (200, 30, 30)), ("dog", (30, 30, 200))):
        (data / c).mkdir(parents=True)
        for k in range(4):
            Image.new("RGB", (16, 16), color).save(data / c / f"{k}.png")
    (data / "dog" / "broken.png").write_bytes(b"not an image")
    at = page("dataset").run()
    at.radio(key="ds_source").set_value("folder").run()
    at.text_input(key="ds_folder_path").input(str(data)).run()
    at.selectbox(key="ds_noise_kind").select("none").run()
    at.button(key="ds_load").click().run()
    assert not at.exception
    assert not at.error
    assert metric(at, "Classes") == "2"
    assert metric(at, "Skipped items") == "1"
    assert at.session_state["dataset_spec"] == {"kind": "folder", "path": str(data)}
    assert at.session_state["noise_spec"]["kind"] == "none"


def test_dataset_page_reads_relative_paths_from_where_the_app_was_started(runs_root, tmp_path, monkeypatch):
    """The server runs in the repository; a relative path is read from TURN_START_DIR (the
    folder ./studio.sh was started in), the page says so, and an error names what was tried."""
    from helpers.cli import write_image_folder

    start = tmp_path / "user"
    write_image_folder(start / "photos", per_class=4)
    monkeypatch.setenv("TURN_START_DIR", str(start))
    at = page("dataset").run()
    at.radio(key="ds_source").set_value("folder").run()
    at.selectbox(key="ds_noise_kind").select("none").run()
    at.text_input(key="ds_folder_path").input("no-such-folder").run()
    assert f"Relative paths are read from `{start}`" in texts(at)
    at.button(key="ds_load").click().run()
    assert at.error and str(start / "no-such-folder") in at.error[0].value
    at.text_input(key="ds_folder_path").input("photos").run()
    at.button(key="ds_load").click().run()
    assert not at.exception and not at.error
    assert at.session_state["dataset_spec"] == {"kind": "folder", "path": str(start / "photos")}
    assert metric(at, "Classes") == "2"


def test_dataset_page_loads_a_manifest_from_disk(runs_root, tmp_path):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    lines = ["path,label"]
    for k in range(6):
        name = f"img{k}.png"
        Image.new("L", (12, 12), 40 * k).save(images / name)
        lines.append(f"{name},{'light' if k >= 3 else 'dark'}")
    lines.append("missing.png,dark")
    manifest = tmp_path / "labels.csv"
    manifest.write_text("\n".join(lines) + "\n")
    at = page("dataset").run()
    at.radio(key="ds_source").set_value("manifest").run()
    at.text_input(key="ds_manifest_path").input(str(manifest))
    at.text_input(key="ds_manifest_root").input(str(images)).run()
    at.button(key="ds_load").click().run()
    assert not at.exception
    assert not at.error
    assert metric(at, "Train images") == "6"
    assert metric(at, "Skipped items") == "1"
    assert at.session_state["dataset_spec"] == {"kind": "manifest", "path": str(manifest), "root": str(images)}


def test_dataset_page_noise_settings_change_the_state(runs_root):
    at = page("dataset").run()
    at.selectbox(key="ds_noise_kind").select("asymmetric").run()
    at.slider(key="ds_noise_rate").set_value(0.2).run()
    at.number_input(key="ds_noise_seed").set_value(3).run()
    assert not at.exception
    assert at.session_state["noise_spec"] == {"kind": "asymmetric", "rate": 0.2, "seed": 3}
    assert 0.0 < float(metric(at, "Actual noise rate").rstrip("%")) <= 20.0
    at.selectbox(key="ds_noise_kind").select("none").run()
    assert not at.exception
    assert at.session_state["noise_spec"]["kind"] == "none"
    assert metric(at, "Mislabelled (known)") == "0.0%"


# -------------------------------------------------------------------------------- train


def test_train_page_prefills_the_paper_hyperparameters(runs_root):
    at = page("train").run()
    assert not at.exception
    assert "No run yet" in texts(at)
    # the embedded default: EfficientNet-Lite0 (AdamW 1e-3 / AdamW 1e-4)
    assert at.selectbox(key="tr_method").value == "turn+"
    assert at.selectbox(key="tr_device").value in ("cpu", "cuda:0")
    assert at.number_input(key="tr_image_size").value == 64
    assert at.selectbox(key="tr_lp_opt").value == "adamw"
    assert at.number_input(key="tr_lp_lr").value == pytest.approx(1e-3)
    assert at.number_input(key="tr_fft_lr").value == pytest.approx(1e-4)
    assert at.number_input(key="tr_fft_epochs").value == 5  # turn+

    # a ViT from the hub: the paper's ViT-B/16 row (SGD 1e-2 wd 1e-3 / SGD 1e-2 wd 1e-5)
    at.radio(key="tr_model_source").set_value("hf").run()
    assert not at.exception
    assert at.selectbox(key="tr_lp_opt").value == "sgd"
    assert at.number_input(key="tr_lp_lr").value == pytest.approx(1e-2)
    assert at.number_input(key="tr_lp_wd").value == pytest.approx(1e-3)
    assert at.selectbox(key="tr_fft_opt").value == "sgd"
    assert at.number_input(key="tr_fft_wd").value == pytest.approx(1e-5)

    # a ConvNeXt from timm: SGD 1e-1 / AdamW 1e-4
    at.radio(key="tr_model_source").set_value("timm").run()
    at.text_input(key="tr_timm_name").input("convnext_tiny").run()
    assert not at.exception
    assert not at.warning and not at.button(key="tr_start").disabled
    assert at.selectbox(key="tr_lp_opt").value == "sgd"
    assert at.number_input(key="tr_lp_lr").value == pytest.approx(1e-1)
    assert at.selectbox(key="tr_fft_opt").value == "adamw"

    # a name timm does not know: said before Start, and Start is off
    at.text_input(key="tr_timm_name").input("no_such_net").run()
    assert any("no_such_net" in w.value for w in at.warning)
    assert at.button(key="tr_start").disabled
    at.text_input(key="tr_timm_name").input("convnext_tiny").run()

    # the faithful TURN: 4 rounds
    at.selectbox(key="tr_method").select("turn").run()
    assert at.number_input(key="tr_fft_epochs").value == 4

    # back to the embedded model: its settings come back; 32 px gets a warning
    at.radio(key="tr_model_source").set_value("embedded").run()
    assert at.number_input(key="tr_lp_lr").value == pytest.approx(1e-3)
    assert not at.warning
    at.number_input(key="tr_image_size").set_value(32).run()
    assert any("64 px" in w.value for w in at.warning)


def test_train_page_starts_a_run_and_shows_its_metrics(runs_root):
    at = tiny_train_settings(page("train"))
    assert not at.exception
    at.button(key="tr_start").click().run()
    assert not at.exception
    runs = list_runs(runs_root)
    assert len(runs) == 1
    folder = runs[0]
    assert folder.name.startswith("turn-demo-")
    cfg = folder.config()
    assert cfg["method"] == "turn" and cfg["image_size"] == 64 and cfg["dataset"] == TINY_DATA
    assert cfg["lp_optimizer"] is None  # unchanged from the paper's settings
    assert at.session_state["run_dir"] == str(folder.path)
    assert worker.live_state(folder.path)["state"] in ("starting", "running", "done")

    status = wait_for_state(folder.path, ("done", "failed"), timeout=400)
    assert status["state"] == "done", status
    metrics = folder.metrics()
    assert "test_acc_best" in metrics and metrics["n_clean"] > 0

    at.run()  # the page reattaches from the run folder
    assert not at.exception
    assert metric(at, "Clean set") == f"{metrics['n_clean']:,}"
    assert metric(at, "Test acc. (best)") != "–"
    assert "Round 1: cleanse + fine-tune" in texts(at)

    # a fresh session (a refresh) finds the same run
    again = page("train").run()
    assert not again.exception
    assert metric(again, "Clean set") == f"{metrics['n_clean']:,}"


def test_train_page_stop_and_resume(runs_root):
    at = tiny_train_settings(page("train"), method="fft-ce", fft_epochs=30)
    at.button(key="tr_start").click().run()
    folder = list_runs(runs_root)[0]
    wait_for_state(folder.path, ("running",), timeout=120)
    at.run()
    assert not at.exception
    at.button(key="tr_stop").click().run()
    assert not at.exception
    assert wait_for_state(folder.path, ("stopped", "failed", "interrupted"), timeout=120)["state"] == "stopped"

    at.run()
    assert not at.exception
    assert "Resume continues" in texts(at)
    at.button(key="tr_resume").click().run()
    assert not at.exception
    assert worker.live_state(folder.path)["state"] in ("starting", "running")
    wait_for_state(folder.path, ("running",), timeout=120)
    worker.stop(folder.path)
    wait_for_state(folder.path, ("stopped", "failed", "interrupted"), timeout=120)


def test_train_page_baseline_button_starts_fft_ce(tiny_run, runs_root):
    at = page("train").run()
    assert not at.exception
    at.button(key="tr_baseline").click().run()
    assert not at.exception
    runs = [r for r in list_runs(runs_root) if r.name != tiny_run.name]
    assert len(runs) == 1
    cfg, base = runs[0].config(), RunFolder(tiny_run).config()
    assert cfg["method"] == "fft-ce"
    assert {k: v for k, v in cfg.items() if k != "method"} == {k: v for k, v in base.items() if k != "method"}
    assert at.session_state["run_dir"] == str(runs[0].path)


def test_train_page_says_which_final_model_turn_plus_chose(tiny_run):
    import json

    metrics_path = tiny_run / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["final_model"] = {"n_holdout": 72, "holdout_acc_fft": 0.75, "holdout_acc_probe": 0.8125,
                              "chosen": "probe"}
    metrics_path.write_text(json.dumps(metrics))
    at = page("train").run()
    assert not at.exception
    assert ("Final model: a linear probe on the cleaned labels, chosen on 72 held-out clean samples "
            "(accuracy there: fine-tuned 75.0%, probe 81.2%)") in texts(at)


def test_train_page_shows_turn_plus_final_classifier_and_its_point_on_the_curve(tiny_run):
    import json

    from app.training import accuracy_curve

    metrics_path = tiny_run / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["final_model"] = {"chosen": "ensemble", "n_probe_train": 181, "test_acc_fft": 0.71,
                              "test_acc_probe": 0.69, "test_acc_ensemble": 0.74}
    metrics_path.write_text(json.dumps(metrics))
    at = page("train").run()
    assert not at.exception
    assert ("Final classifier: the fine-tuned model averaged with a linear probe on the pre-trained features, "
            "trained on the 181 cleaned labels of the last round. Test accuracy of the fine-tuned model alone "
            "71.0%, of the probe alone 69.0%.") in texts(at)
    curve = accuracy_curve(RunFolder(tiny_run), metrics)
    assert curve.iloc[-1].to_dict() == {"step": "Final", "test accuracy": 0.74, "phase": "final classifier"}


def test_train_page_stage_list_has_the_final_classifier_for_turn_plus_only(tiny_run):
    import json
    from dataclasses import asdict

    from app.training import stage_details, stage_plan
    from turn_backend.config import RunConfig
    from turn_backend.plan import plan_stages

    titles = {m: dict(plan_stages(RunConfig(method=m))) for m in ("turn+", "turn", "fft-ce")}
    assert titles["turn+"]["choice"] == "Final classifier: fine-tuned + probe"
    assert list(titles["turn+"])[-3:] == ["choice", "final", "projections"]
    assert "choice" not in titles["turn"] and "choice" not in titles["fft-ce"]
    holdout = dict(plan_stages(RunConfig(method="turn+", holdout=0.1)))
    assert holdout["choice"] == "Final model chosen on held-out clean samples"
    for config in (RunConfig(method="turn+"), RunConfig(method="lp-gce", lp_epochs=3),
                   RunConfig(method="turn", fft_epochs=2)):
        assert stage_plan(asdict(config)) == plan_stages(config)  # the page shows the runner's plan
    (tiny_run / "choice").mkdir()
    (tiny_run / "choice" / "choice.json").write_text(json.dumps({"chosen": "ensemble", "test_acc_ensemble": 0.74}))
    assert stage_details(RunFolder(tiny_run))["choice"] == "test 74.0%"


def test_train_page_reads_the_stages_summary_fields_not_their_messages(tiny_run):
    import json

    from app.training import stage_details

    folder = RunFolder(tiny_run)
    details = stage_details(folder)
    features = folder.summaries()["features"]
    assert details["features"].startswith(f"{features['n_train']} train x {features['n_dims']} dims")
    events = (tiny_run / "events.jsonl").read_text().splitlines()
    reworded = [json.dumps({**json.loads(line), "message": "reworded"}) for line in events]
    (tiny_run / "events.jsonl").write_text("\n".join(reworded) + "\n")
    assert stage_details(folder) == details


# --------------------------------------------------------------------------------- main


def test_main_app_navigation_and_run_picker(tiny_run, tiny_run_template, runs_root):
    import shutil

    other = runs_root / "another-run"
    shutil.copytree(tiny_run_template, other)
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=PAGE_TIMEOUT).run()
    assert not at.exception
    assert at.title[0].value.endswith("Runs")  # the default page
    picker = at.sidebar.selectbox(key="sidebar_run_picker")
    assert set(picker.options) == {tiny_run.name, "another-run"}
    picker.select(tiny_run.name).run()
    assert not at.exception
    assert at.session_state["run_dir"] == str(tiny_run)
    for name in ("dataset", "train"):
        at.switch_page(str(ROOT / "pages" / f"{name}.py")).run()
        assert not at.exception, name
        assert at.title[0].value.endswith(name.capitalize())

    # settings survive a visit to another page
    at.radio(key="tr_model_source").set_value("hf").run()
    at.switch_page(str(ROOT / "pages" / "runs.py")).run()
    at.switch_page(str(ROOT / "pages" / "train.py")).run()
    assert not at.exception
    assert at.radio(key="tr_model_source").value == "hf"
    assert at.selectbox(key="tr_lp_opt").value == "sgd"
