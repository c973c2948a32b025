"""End to end, as a new user: a real headless Chromium drives a real `streamlit run app/main.py`.

Dataset (the built-in demo at its smallest size) -> Train (TURN, 64 px, 5 LP epochs, one
round; the real worker process) -> Embeddings -> Threshold (move tau with the keyboard,
apply it) -> Review (relabel one sample) -> restart the server -> the decision is still
there -> Export (CSV download and a file written to a folder, both checked row by row).

Screenshots of every page go to `test-artifacts/e2e/` (git-ignored), with the server logs
and, on a failure, a screenshot of the page at that moment.

Needs Python Playwright and Debian's Chromium (`/usr/bin/chromium`, or $TURN_E2E_CHROMIUM);
skipped cleanly without them. About 2-4 minutes on 2 busy CPU cores, most of it training.
"""

from __future__ import annotations

import io
import json
import shutil
import time

import numpy as np
import pandas as pd
import pytest

from helpers.browser import (
    ARTIFACTS,
    LOOPBACK,
    STEP_TIMEOUT_MS,
    TAU_SLIDER,
    VIEWPORT,
    go_to,
    metric_value,
    no_exception,
    screenshot,
    set_number,
    wait_metric,
)
from helpers.server import AppServer, save_failure, wait_idle
from turn_backend import run_views

EXPORT_COLUMNS = ["sample_id", "path", "given_label", "predicted_label", "clean_prob", "flagged", "decision",
                  "final_label", "duplicate_of", "test_duplicate", "outlier", "outlier_score"]
TRAIN_TIMEOUT_S = 6 * 60

pytestmark = [pytest.mark.browser, pytest.mark.timeout(15 * 60)]


def choose_tau_steps(clean_prob: np.ndarray, start: float) -> tuple[int, float]:
    """The fewest arrow-key steps (0.01 each, right first) from `start` to a tau where the
    flagged count differs, with no clean probability right at that tau."""
    base = int((clean_prob <= start + 1e-9).sum())
    for k in range(1, 40):
        for sign in (1, -1):
            tau = round(start + sign * 0.01 * k, 2)
            if not 0.01 <= tau <= 0.99 or np.abs(clean_prob - tau).min() < 2e-3:
                continue
            if int((clean_prob <= tau).sum()) != base:
                return sign * k, tau
    raise AssertionError("no tau within reach changes the flagged count")


# ---------------------------------------------------------------------------------- test


def test_new_user_trains_reviews_restarts_and_exports(browser, runs_root, tmp_path):
    from turn_backend.review import ReviewStore
    from turn_backend.runfolder import RunFolder, list_runs

    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    cache = tmp_path / "cache"  # a new user: no cached features
    cache.mkdir()
    server = AppServer(runs_root, ARTIFACTS / "server-1.log", cache, extra_args=LOOPBACK).start()
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    started = time.time()
    timings: dict[str, float] = {}

    def lap(step: str) -> None:
        timings[step] = round(time.time() - started - sum(timings.values()), 1)

    main = page.locator('[data-testid="stMain"]')
    try:
        # ---------------------------------------------------------------- 1. Dataset
        page.goto(server.url)
        page.locator('[data-testid="stSidebarNav"]').wait_for(timeout=STEP_TIMEOUT_MS)
        wait_idle(page)
        no_exception(page)
        go_to(page, "Dataset", page.get_by_role("slider", name="Train images"))
        main.get_by_text("Fashion-MNIST (Zalando, MIT licence)").wait_for()  # the demo is the default source
        for name, smallest in (("Train images", "200"), ("Test images", "100")):
            slider = page.get_by_role("slider", name=name)
            slider.focus()
            slider.press("Home")  # the smallest demo size the page offers
            page.wait_for_function("([n, v]) => [...document.querySelectorAll('input[type=range]')].some("
                                   "e => e.getAttribute('aria-label') === n && e.getAttribute('aria-valuetext') === v)",
                                   arg=[name, smallest])
            wait_idle(page)
        main.get_by_text("Fashion-MNIST demo (200/100)").wait_for(timeout=STEP_TIMEOUT_MS)
        wait_idle(page)
        assert metric_value(page, "Train images") == "200"
        assert metric_value(page, "Test images") == "100"
        assert metric_value(page, "Classes") == "10"
        assert metric_value(page, "Mislabelled (known)") == "40.0%"
        screenshot(page, "01-dataset")
        lap("dataset")

        # ---------------------------------------------------------------- 2. Train
        start_button = page.get_by_role("button", name="Start", exact=True)
        go_to(page, "Train", start_button)
        main.get_by_text("Fashion-MNIST demo (200/100) · symmetric 40%").wait_for()
        method = page.get_by_role("combobox", name="Method")
        method.click()
        page.get_by_role("option", name="turn — TURN as published").click()
        wait_idle(page)
        assert method.input_value().startswith("turn — "), method.input_value()
        set_number(page, "Image size (px)", 64)
        set_number(page, "LP epochs", 5)
        set_number(page, "FFT rounds", 1)  # after the method: choosing a method resets the rounds
        assert page.get_by_role("combobox", name="Device").input_value() == "CPU"
        start_button.click()
        done = main.locator(".stMarkdownBadge", has_text="Done")
        broken = main.locator(".stMarkdownBadge").filter(has_text="Failed").or_(
            main.locator(".stMarkdownBadge").filter(has_text="Interrupted"))
        done.or_(broken).first.wait_for(timeout=TRAIN_TIMEOUT_S * 1000)
        if not done.count():
            worker_logs = [p.read_text(errors="replace")[-4000:] for p in runs_root.glob("*/worker.log")]
            pytest.fail("the run did not finish:\n" + main.inner_text() + "\n" + "\n".join(worker_logs))
        main.get_by_text("Test acc. (best)").wait_for()
        wait_idle(page)
        no_exception(page)
        runs = list_runs(runs_root)
        assert len(runs) == 1, [r.name for r in runs]
        run = runs[0]
        cfg = run.config()
        assert cfg["method"] == "turn" and cfg["image_size"] == 64 and cfg["lp_epochs"] == 5
        assert cfg["fft_epochs"] == 1 and cfg["device"] == "cpu"
        assert cfg["dataset"] == {"kind": "demo", "n_train": 200, "n_test": 100}
        assert cfg["noise"]["kind"] == "symmetric" and cfg["noise"]["rate"] == pytest.approx(0.4)
        main.get_by_text(run.name).first.wait_for()
        for stage in ("Linear probing (5 epochs)", "Round 1: cleanse + fine-tune", "Embedding projections"):
            assert main.get_by_text(stage).count() >= 1, stage
        screenshot(page, "02-train-done")
        lap("train")

        # ---------------------------------------------------------------- 3. Embeddings
        go_to(page, "Embeddings", main.get_by_text("Before tuning (pre-trained features)"))
        main.get_by_text("After TURN", exact=True).wait_for()
        charts = main.locator('[data-testid="stPlotlyChart"]')
        page.wait_for_function("() => [...document.querySelectorAll('[data-testid=\"stPlotlyChart\"]')]"
                               ".filter(c => c.querySelector('.main-svg')).length >= 2", timeout=STEP_TIMEOUT_MS)
        assert charts.count() == 2
        for i in range(2):  # points drawn in both panels (SVG scatter or a WebGL canvas)
            chart = charts.nth(i)
            assert chart.locator(".scatterlayer .point").count() + chart.locator("canvas").count() > 0
        screenshot(page, "03-embeddings")
        lap("embeddings")

        # ---------------------------------------------------------------- 4. Threshold
        final = run.final()
        clean_prob = np.asarray(final["clean_prob"], dtype=float)
        n_train = len(clean_prob)
        slider = page.get_by_role("slider", name=TAU_SLIDER)
        go_to(page, "Threshold", slider)
        start_tau = float(slider.get_attribute("aria-valuetext"))
        assert start_tau == pytest.approx(0.60)
        flagged_before = int((clean_prob <= start_tau + 1e-9).sum())
        assert metric_value(page, "Flagged") == f"{flagged_before:,}"
        assert metric_value(page, "Clean candidates") == f"{n_train - flagged_before:,}"
        steps, new_tau = choose_tau_steps(clean_prob, start_tau)
        flagged_after = int((clean_prob <= new_tau).sum())
        slider.focus()
        for _ in range(abs(steps)):
            slider.press("ArrowRight" if steps > 0 else "ArrowLeft")
        page.wait_for_function("v => document.querySelector('input[type=range][aria-label=\"" + TAU_SLIDER +
                               "\"]').getAttribute('aria-valuetext') === v", arg=f"{new_tau:.2f}")
        wait_metric(page, "Flagged", f"{flagged_after:,}")
        wait_metric(page, "Clean candidates", f"{n_train - flagged_after:,}")
        wait_idle(page)
        assert metric_value(page, "Flagged") != f"{flagged_before:,}"
        apply = page.get_by_role("button", name="Apply τ to Review and Export")
        assert apply.is_enabled()
        apply.click()
        main.get_by_text(f"Applied τ: {new_tau:.2f}").wait_for(timeout=STEP_TIMEOUT_MS)
        wait_idle(page)
        assert ReviewStore(run.review_db).get_setting("tau") == f"{new_tau:.2f}"
        screenshot(page, "04-threshold")
        lap("threshold")

        # ---------------------------------------------------------------- 5. Review
        names = json.loads((run.path / "classes.json").read_text())
        cards = main.locator("[class*='st-key-card_']")
        go_to(page, "Review", cards.first)
        # the queue: samples flagged at tau, and the audit's duplicates, leaks and outliers
        from turn_backend import analysis as an

        queued = len(an.ReviewIndex.for_run(run_views.review_inputs(run), new_tau))
        assert queued >= flagged_after
        header = f"{queued:,} of {queued:,} flagged samples left to review"
        main.get_by_text(header).wait_for()
        main.get_by_text(f"τ = {new_tau:.2f}").first.wait_for()
        relabel_cards = cards.filter(has=page.get_by_role("button", name="Relabel to "))
        assert relabel_cards.count() >= 1, "no flagged card suggests another label"
        card = relabel_cards.first
        sample_id = card.locator('[data-testid="stCaptionContainer"]').last.inner_text().strip()
        # cards are keyed by their slot on the page; a card's last caption is its sample id
        assert sample_id in run_views.review_inputs(run)["ids"], sample_id
        button = card.get_by_role("button", name="Relabel to ")
        new_label = button.inner_text().split("Relabel to ", 1)[1].strip().splitlines()[0].strip()
        assert new_label in names, new_label
        assert "Undecided" in card.inner_text()
        button.click()
        card = cards.filter(has=page.get_by_text(sample_id, exact=True))
        card.get_by_text(f"Relabelled to {new_label}").wait_for(timeout=STEP_TIMEOUT_MS)
        main.get_by_text(f"{queued - 1:,} of {queued:,} flagged samples left to review").wait_for()
        wait_idle(page)
        assert ReviewStore(run.review_db).current()[sample_id] == ("relabel", names.index(new_label))
        screenshot(page, "05-review")
        lap("review")

        # ---------------------------------------------------------------- 6. Restart
        server.stop()
        assert server.proc.poll() is not None, "the first server did not stop"
        old_url = server.url
        server = AppServer(runs_root, ARTIFACTS / "server-2.log", cache, port=server.port, extra_args=LOOPBACK)
        try:  # the same address, so the open tab can simply reload
            server.start()
        except (RuntimeError, TimeoutError):  # the port was taken meanwhile: a new one, same page
            server.stop()
            server = AppServer(runs_root, ARTIFACTS / "server-2b.log", cache, extra_args=LOOPBACK)
            server.start()
        if server.url == old_url:
            page.reload()
        else:
            page.goto(page.url.replace(old_url, server.url))
        card = cards.filter(has=page.get_by_text(sample_id, exact=True))
        card.wait_for(timeout=STEP_TIMEOUT_MS)
        wait_idle(page)
        no_exception(page)
        card.get_by_text(f"Relabelled to {new_label}").wait_for()
        main.get_by_text(f"{queued - 1:,} of {queued:,} flagged samples left to review").wait_for()
        main.get_by_text(f"τ = {new_tau:.2f}").first.wait_for()
        screenshot(page, "06-review-after-restart")
        lap("restart")

        # ---------------------------------------------------------------- 7. Export
        go_to(page, "Export", page.get_by_role("button", name="Download the label file"))
        page.locator('[data-testid="stRadio"]').filter(has_text="Format").get_by_text("CSV", exact=True).click()
        wait_idle(page)
        file_name = f"{run.name}-labels-all.csv"
        main.get_by_text(file_name).first.wait_for()
        assert metric_value(page, "Rows in the file") == f"{n_train:,}"
        assert metric_value(page, "Relabelled") == "1"
        assert metric_value(page, "Flagged, not reviewed") == f"{flagged_after - 1:,}"
        with page.expect_download(timeout=STEP_TIMEOUT_MS) as info:
            page.get_by_role("button", name="Download the label file").click()
        download = info.value
        assert download.suggested_filename == file_name
        downloaded = ARTIFACTS / file_name
        download.save_as(downloaded)

        out_dir = tmp_path / "exported"
        folder_box = page.get_by_role("textbox", name="Folder", exact=True)
        folder_box.fill(str(out_dir))
        folder_box.press("Enter")
        wait_idle(page)
        page.get_by_role("button", name="Write the file").click()
        main.get_by_text("Written:").wait_for(timeout=STEP_TIMEOUT_MS)
        wait_idle(page)
        no_exception(page)
        screenshot(page, "07-export")
        lap("export")

        samples = RunFolder(run.path).samples()
        train_ids = samples.loc[samples["split"] == "train", "sample_id"].astype(str).tolist()
        for path in (downloaded, out_dir / file_name):
            text = path.read_text(encoding="utf-8")
            assert text.splitlines()[0] == ",".join(EXPORT_COLUMNS), path
            table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
            assert list(table.columns) == EXPORT_COLUMNS
            assert len(table) == n_train == cfg["dataset"]["n_train"]
            assert table["sample_id"].tolist() == train_ids
            row = table.set_index("sample_id").loc[sample_id]
            assert row["decision"] == "relabel" and row["final_label"] == new_label, row.to_dict()
            assert row["given_label"] != new_label
            others = table[table["sample_id"] != sample_id]
            assert (others["decision"] == "").all()
            assert (others["final_label"] == others["given_label"]).all()
            assert (table["flagged"] == "True").sum() == flagged_after
        assert downloaded.read_bytes() == (out_dir / file_name).read_bytes()
        assert not page_errors, page_errors
    except BaseException:
        save_failure(page, main, ARTIFACTS / "failure")
        raise
    finally:
        context.close()
        server.stop()
        timings["total"] = round(time.time() - started, 1)
        (ARTIFACTS / "timings.json").write_text(json.dumps(timings, indent=1))
