"""Your own embeddings in a real headless Chromium: the Dataset page's panel takes a features
file for the demo, and the Train page then offers the lp-* methods only. Screenshots go to
test-artifacts/e2e/given-inputs-*.png."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.browser import STEP_TIMEOUT_MS, app_session, go_to, no_exception, screenshot
from helpers.server import wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.timeout(10 * 60)]


def test_the_dataset_page_takes_a_features_file(browser, runs_root, turn_cache_dir):
    features = runs_root.parent / "my-features.npy"
    np.save(features, np.random.default_rng(0).normal(size=(3000, 32)).astype(np.float32))  # the default demo
    with app_session(browser, runs_root, turn_cache_dir, "given-inputs") as (page, errors):
        main = page.locator('[data-testid="stMain"]')
        go_to(page, "Dataset", main.get_by_text("Your own embeddings or predictions"))
        main.get_by_text("Your own embeddings or predictions").click()
        field = main.get_by_role("textbox", name="Training features")
        field.fill(str(features))
        field.press("Enter")
        wait_idle(page)
        main.get_by_role("button", name="Use these files").click()
        main.get_by_text("Runs started on the Train page use training features").wait_for(timeout=STEP_TIMEOUT_MS)
        no_exception(page)
        screenshot(page, "given-inputs-dataset")

        go_to(page, "Train", main.get_by_text("Your own features"))
        # the method it takes (the selected option's description)
        main.get_by_text("Linear probing, generalized cross-entropy").wait_for(timeout=STEP_TIMEOUT_MS)
        screenshot(page, "given-inputs-train")
        assert not errors
