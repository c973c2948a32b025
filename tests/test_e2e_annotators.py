"""The Annotators page in a real browser: listed in the navigation for a run with several
annotators per image, its ranking and confusion matrix drawn, and its button opening Review on
one annotator's disagreements. Screenshots: test-artifacts/e2e/annotators-*.png."""

from __future__ import annotations

import pytest

from helpers.browser import STEP_TIMEOUT_MS, app_session, go_to, no_exception, screenshot
from helpers.server import wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.timeout(10 * 60)]


def test_annotators_page_ranks_and_opens_review_on_disagreements(browser, annotated_run, runs_root, turn_cache_dir):
    with app_session(browser, runs_root, turn_cache_dir, "annotators", height=1100) as (page, page_errors):
        main = page.locator('[data-testid="stMain"]')
        go_to(page, "Annotators", main.locator('[data-testid="stPlotlyChart"] .main-svg').first)
        text = main.inner_text()
        assert "Ranked by estimated quality" in text and "Review their 18 disagreements" in text  # confuser
        screenshot(page, "annotators-01-page")

        main.get_by_role("button", name="Review their").click()
        main.get_by_text("label differs from the consensus").wait_for(timeout=STEP_TIMEOUT_MS)
        cards = main.locator("[class*='st-key-card_']")
        cards.first.wait_for(timeout=STEP_TIMEOUT_MS)
        wait_idle(page)
        no_exception(page)
        assert "careful" in cards.first.inner_text()  # each card lists the annotators' labels
        screenshot(page, "annotators-02-review")
        assert not page_errors
