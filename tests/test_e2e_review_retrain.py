"""End to end in headless Chromium: review with evidence, retrain with the decisions, compare.

Starts from the tiny finished run of conftest.py (a real `turn` run: 200 train / 100 test,
3 LP epochs, one round) in a real `streamlit run app/main.py`:

Review (the cards say why: signals, suggestion and its source, audit badges) -> relabel one
sample, remove another -> Noise matrix (a confusion opens Review on that cell) -> Classes
(a row opens Review on that class) -> "Retrain with my decisions" -> the new run trains in
its worker (followed on the Train page until Done) -> its training set carries the new
label and lacks the removed sample -> Compare runs shows both runs.

Screenshots go to `test-artifacts/e2e/review-*.png` (git-ignored). Skipped without Playwright
or Chromium. A few minutes on 2 busy cores, most of it the retrain.
"""

from __future__ import annotations

import json

import pytest

from helpers.browser import STEP_TIMEOUT_MS, app_session, go_to, no_exception, screenshot
from helpers.server import wait_idle

TRAIN_TIMEOUT_S = 8 * 60

pytestmark = [pytest.mark.browser, pytest.mark.timeout(20 * 60)]


def test_review_evidence_retrain_and_compare(browser, tiny_run, runs_root, turn_cache_dir):
    from turn_backend.review import ReviewStore
    from turn_backend.runfolder import RunFolder, list_runs

    source = RunFolder(tiny_run)
    names = json.loads((tiny_run / "classes.json").read_text())
    with app_session(browser, runs_root, turn_cache_dir, "review") as (page, page_errors):
        main = page.locator('[data-testid="stMain"]')
        cards = main.locator("[class*='st-key-card_']")

        # ------------------------------------------------------------ Review: why flagged
        go_to(page, "Review", cards.first)
        first = cards.first
        assert "Suggested" in first.inner_text() and "Clean probability" in first.inner_text()
        detection = source.detection()
        if detection is not None:  # each signal's score on the card
            assert first.locator(".stMarkdownBadge", has_text="combined").count() == 1
        screenshot(page, "review-01-why-flagged")

        relabel_card = cards.filter(has=page.get_by_role("button", name="Relabel to ")).first
        relabel_id = relabel_card.locator('[data-testid="stCaptionContainer"]').last.inner_text().strip()
        button = relabel_card.get_by_role("button", name="Relabel to ")
        new_label = button.inner_text().split("Relabel to ", 1)[1].strip().splitlines()[0].strip()
        button.click()
        cards.filter(has=page.get_by_text(relabel_id, exact=True)).get_by_text(f"Relabelled to {new_label}").wait_for(
            timeout=STEP_TIMEOUT_MS)
        wait_idle(page)
        remove_card = cards.filter(has_text="Undecided").first
        remove_id = remove_card.locator('[data-testid="stCaptionContainer"]').last.inner_text().strip()
        remove_card.get_by_role("button", name="Remove").click()  # "Remove X" on the keyboard card
        removed = cards.filter(has=page.get_by_text(remove_id, exact=True)).get_by_text("Removed")
        removed.wait_for(timeout=STEP_TIMEOUT_MS)
        wait_idle(page)
        assert ReviewStore(source.review_db).current() == {relabel_id: ("relabel", names.index(new_label)),
                                                            remove_id: ("remove", None)}

        # ------------------------------------------------------------ Noise matrix, Classes
        if detection is not None:
            go_to(page, "Noise matrix", main.locator('[data-testid="stPlotlyChart"]').first)
            screenshot(page, "review-02-noise-matrix")
            top = main.get_by_role("button", name="→").first
            if top.count():
                cell = top.inner_text().strip().splitlines()[-1].split(":")[0].strip()  # after the icon's name
                top.click()
                main.get_by_text("of the noise matrix").wait_for(timeout=STEP_TIMEOUT_MS)
                wait_idle(page)
                no_exception(page)
                given = cell.split("→")[0].strip()
                assert all(f"Given {given}" in c for c in cards.all_inner_texts())
                main.get_by_role("button", name="Show all").click()
                wait_idle(page)
        go_to(page, "Classes", main.locator('[data-testid="stDataFrame"]').first)
        screenshot(page, "review-03-classes")

        # ------------------------------------------------------------ retrain with decisions
        go_to(page, "Review", cards.first)
        retrain = main.get_by_role("button", name="Retrain with my 2 decision(s)")
        retrain.scroll_into_view_if_needed()
        retrain.click()
        main.get_by_text("It keeps going if you close the tab").wait_for(timeout=STEP_TIMEOUT_MS)
        wait_idle(page)
        no_exception(page)
        new = next(r for r in list_runs(runs_root) if r.name != source.name)
        assert new.config()["retrained_from"]["decisions"] == 2
        main.get_by_role("button", name="Follow it on the Train page").click()
        done = main.locator(".stMarkdownBadge", has_text="Done")
        broken = main.locator(".stMarkdownBadge").filter(has_text="Failed").or_(
            main.locator(".stMarkdownBadge").filter(has_text="Interrupted"))
        done.or_(broken).first.wait_for(timeout=TRAIN_TIMEOUT_S * 1000)
        if not done.count():
            pytest.fail("the retrained run did not finish:\n" + (new.path / "worker.log").read_text()[-4000:])
        wait_idle(page)

        # the new run trained on the reviewed labels
        samples = new.samples()
        train = samples[samples["split"] == "train"].set_index("sample_id")
        assert remove_id not in train.index
        assert int(train.loc[relabel_id, "given_label"]) == names.index(new_label)
        old = source.samples().query("split == 'train'").set_index("sample_id")
        assert len(train) == len(old) - 1
        others = old.index.difference([relabel_id, remove_id])
        assert (train.loc[others, "given_label"] == old.loc[others, "given_label"]).all()

        # ------------------------------------------------------------ compare
        go_to(page, "Compare runs", main.locator('[data-testid="stPlotlyChart"]').first)
        text = main.inner_text()
        assert f"A: {source.name}" in text and f"B: {new.name}" in text
        assert f"retrained from {source.name} with 2 decision(s)" in text
        page.wait_for_function("() => document.querySelectorAll('[data-testid=\"stMain\"] .scatterlayer .trace')"
                               ".length >= 2", timeout=STEP_TIMEOUT_MS)
        screenshot(page, "review-04-compare")
        assert not page_errors, page_errors
