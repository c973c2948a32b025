"""Review's Label Studio round trip in a real headless Chromium: the expander, uploading a Label
Studio JSON export through the file uploader, applying it, and the cards showing the decisions.
The screenshot is test-artifacts/e2e/review-label-studio.png."""

from __future__ import annotations

import json

import pytest

from helpers.browser import STEP_TIMEOUT_MS, app_session, go_to, screenshot
from helpers.server import wait_idle
from turn_backend.labelstudio import AMBIGUOUS, export_labelstudio
from turn_backend.review import ReviewStore
from turn_backend.runfolder import RunFolder

pytestmark = [pytest.mark.browser, pytest.mark.timeout(10 * 60)]


def test_import_a_label_studio_export_on_review(browser, tiny_run, runs_root, turn_cache_dir, tmp_path):
    export_labelstudio(tiny_run, tmp_path / "to-label", inline=True)
    first, second = (t["data"] for t in json.loads((tmp_path / "to-label" / "tasks.json").read_text())[:2])
    answers = tmp_path / "project-export.json"
    answers.write_text(json.dumps([
        {"id": k, "data": data, "annotations": [{"id": k, "result": [
            {"from_name": "label", "type": "choices", "value": {"choices": [choice]}}]}]}
        for k, (data, choice) in enumerate([(first, first["given_label"]), (second, AMBIGUOUS)])]))
    store = ReviewStore(RunFolder(tiny_run).review_db)
    with app_session(browser, runs_root, turn_cache_dir, "review-label-studio", height=1100) as (page, errors):
        main = page.locator('[data-testid="stMain"]')
        go_to(page, "Review", main.locator("[class*='st-key-card_']").first)
        main.get_by_text("Label Studio round trip").click()
        expander = main.locator('[data-testid="stExpander"]').filter(has_text="Label Studio round trip")
        expander.get_by_text("Download for Label Studio (zip)").wait_for(timeout=STEP_TIMEOUT_MS)
        expander.locator('input[type="file"]').set_input_files(str(answers))
        apply = expander.get_by_role("button", name="Apply 2 decision(s)")
        apply.wait_for(timeout=STEP_TIMEOUT_MS)
        apply.click()
        expander.get_by_text("Recorded 2 decision(s): 1 keep").wait_for(timeout=STEP_TIMEOUT_MS)
        wait_idle(page)
        assert store.current() == {first["sample_id"]: ("keep", None), second["sample_id"]: ("ambiguous", None)}
        assert not errors, errors
        expander.scroll_into_view_if_needed()
        screenshot(page, "review-label-studio")
