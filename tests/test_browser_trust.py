"""What a user sees without ground truth, in a real headless Chromium: the Threshold page's
estimated noise rate, estimated precision / recall curves and suggested tau (one click moves the
slider there), and the warning on a run whose model cannot judge its labels. Screenshots go to
`test-artifacts/e2e/trust-*.png`. Skipped without Playwright or Chromium."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from app.ui import UNTRUSTED_FLAGS as WARNING
from helpers.browser import (
    LOOPBACK,
    STEP_TIMEOUT_MS,
    TAU_SLIDER,
    VIEWPORT,
    metric_value,
    no_exception,
    screenshot,
    wait_metric,
)
from helpers.server import AppServer, wait_idle
from turn_backend.detect import estimates as est
from turn_backend.review import ReviewStore, spot_check_rows
from turn_backend.runfolder import RunFolder

pytestmark = [pytest.mark.browser, pytest.mark.timeout(10 * 60)]


def open_page(page, url: str) -> None:
    page.goto(url)
    page.get_by_text("Estimated noise rate").first.wait_for(timeout=STEP_TIMEOUT_MS)
    wait_idle(page)
    no_exception(page)


def slider_value(page) -> str:
    return page.get_by_role("slider", name=TAU_SLIDER).get_attribute("aria-valuetext")


def test_threshold_estimates_suggested_tau_and_the_unreliable_warning(browser, tiny_run, shuffled_run_template):
    shutil.copytree(shuffled_run_template[0], tiny_run.parent / shuffled_run_template[0].name)
    folder = RunFolder(tiny_run)
    metrics = folder.metrics()
    suggested = metrics["suggested_tau"]
    # two decisions made in Review: the page checks the estimates against them
    store = ReviewStore(folder.review_db)
    ids = folder.samples().query("split == 'train'")["sample_id"].tolist()
    store.record(ids[0], "keep")
    store.record(ids[1], "keep")
    log = tiny_run.parent.parent / "streamlit-trust.log"
    with AppServer(tiny_run.parent, log, extra_args=LOOPBACK).start() as server:
        page = browser.new_page(viewport=VIEWPORT)
        open_page(page, f"{server.url}/threshold?run={tiny_run.name}")
        assert page.get_by_text(WARNING).count() == 0
        noise = metric_value(page, "Estimated noise rate")
        assert noise == f"{metrics['estimated_noise_rate']['rate']:.1%}"
        page.get_by_text(f"Suggested τ: {suggested:.2f}").wait_for(timeout=STEP_TIMEOUT_MS)
        page.get_by_text("of the 2 samples you kept or relabelled").wait_for(timeout=STEP_TIMEOUT_MS)
        chart = page.locator('.st-key-sweep_box [data-testid="stPlotlyChart"]')
        chart.get_by_text("Precision (estimated)").wait_for(timeout=STEP_TIMEOUT_MS)
        assert chart.get_by_text("Precision (true)").count()
        screenshot(page, "trust-threshold")

        page.get_by_role("button", name="Use suggested τ").click()
        page.wait_for_function("v => document.querySelector('input[type=range][aria-label=\"" + TAU_SLIDER +
                               "\"]').getAttribute('aria-valuetext') === v", arg=f"{suggested:.2f}",
                               timeout=STEP_TIMEOUT_MS)
        wait_idle(page)
        no_exception(page)
        assert float(slider_value(page)) == pytest.approx(suggested)
        assert metric_value(page, "Estimated noise rate") == noise  # tau moved, the estimate did not
        screenshot(page, "trust-threshold-suggested")

        for name in ("threshold", "review"):
            page.goto(f"{server.url}/{name}?run={shuffled_run_template[0].name}")
            page.get_by_text(WARNING).wait_for(timeout=STEP_TIMEOUT_MS)
            wait_idle(page)
            no_exception(page)
            screenshot(page, f"trust-unreliable-{name}")


def test_a_spot_check_and_decisions_recalibrate_the_threshold_estimates(browser, tiny_run):
    folder = RunFolder(tiny_run)
    own = folder.metrics()["estimated_noise_rate"]["rate"]
    train = folder.samples().query("split == 'train'").reset_index(drop=True)
    log = tiny_run.parent.parent / "streamlit-calibrate.log"
    with AppServer(tiny_run.parent, log, extra_args=LOOPBACK).start() as server:
        page = browser.new_page(viewport=VIEWPORT)
        open_page(page, f"{server.url}/threshold?run={tiny_run.name}")
        page.get_by_role("button", name="Add 100 random samples").click()
        page.get_by_text("0 of 100 random samples kept or relabelled").wait_for(timeout=STEP_TIMEOUT_MS)
        page.get_by_role("button", name="Review them").click()
        page.get_by_text("spot check").first.wait_for(timeout=STEP_TIMEOUT_MS)  # a card's badge
        wait_idle(page)
        no_exception(page)
        screenshot(page, "trust-spot-check-review")

        # the person decides the spot check as the truth has it (what Review's buttons store)
        store = ReviewStore(folder.review_db)
        rows = spot_check_rows(len(train), 100)
        for r in rows:
            given, true = int(train["given_label"][r]), int(train["true_label"][r])
            store.record(train["sample_id"][r], "keep" if given == true else "relabel", None if given == true else true)
        combined = folder.load_detection(folder.final_dir).clean_prob
        fit = est.calibrate_on_decisions(combined, rows, train["given_label"].to_numpy()[rows] !=
                                         train["true_label"].to_numpy()[rows], np.ones(len(rows), dtype=bool))
        open_page(page, f"{server.url}/threshold?run={tiny_run.name}")
        page.get_by_text("100 of 100 random samples kept or relabelled").wait_for(timeout=STEP_TIMEOUT_MS)
        assert metric_value(page, "Estimated noise rate") == f"{fit['noise_rate']['rate']:.1%}"
        toggle = page.get_by_text("Calibrate the estimates on your 100 Review decisions")
        toggle.scroll_into_view_if_needed()
        screenshot(page, "trust-calibrated")
        # the reliability diagram: the truth and the decisions, binned by clean probability
        page.get_by_text("Is the clean probability calibrated?").click()
        chart = page.locator('.st-key-reliability_box [data-testid="stPlotlyChart"]')
        chart.get_by_text("your decisions, the model's own").wait_for(timeout=STEP_TIMEOUT_MS)
        assert chart.get_by_text("truth, recalibrated (undecided samples)").count()
        chart.scroll_into_view_if_needed()
        wait_idle(page)
        screenshot(page, "trust-reliability")
        toggle.click()  # off: the model's own estimate
        wait_metric(page, "Estimated noise rate", f"{own:.1%}")
        no_exception(page)

        # the Classes and Noise matrix pages count with the same recalibration
        page.goto(f"{server.url}/classes?run={tiny_run.name}")
        page.get_by_text("Calibrate on your 100 Review decisions").wait_for(timeout=STEP_TIMEOUT_MS)
        page.get_by_text("recalibrated on your Review decisions").first.wait_for(timeout=STEP_TIMEOUT_MS)
        wait_idle(page)
        no_exception(page)
        screenshot(page, "trust-classes-calibrated")
        open_page(page, f"{server.url}/noise?run={tiny_run.name}")
        assert metric_value(page, "Estimated noise rate") == f"{fit['noise_rate']['rate']:.1%}"
        screenshot(page, "trust-noise-calibrated")
        # Review, whose order stays the model's own, says where the recalibration counts
        open_page(page, f"{server.url}/review?run={tiny_run.name}")
        page.get_by_text("Recalibrated on your 100 Review decisions.").wait_for(timeout=STEP_TIMEOUT_MS)
        assert page.get_by_text("the order here stays the model's own").count()
        screenshot(page, "trust-review-calibrated")
