"""Headless Chromium: Review's "None of these" button, the M shortcut (ambiguous) on the card
marked next up, and the "Decided as" filter, in a real `streamlit run app/main.py` on the
tiny finished run of conftest.py.

Screenshots go to `test-artifacts/e2e/none-ambiguous-*.png` (git-ignored). Skipped without
Playwright or Chromium.
"""

from __future__ import annotations

import pytest

from helpers.browser import STEP_TIMEOUT_MS, app_session, go_to, no_exception, screenshot
from helpers.server import wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.timeout(10 * 60)]


def test_none_button_ambiguous_shortcut_and_filter(browser, tiny_run, runs_root, turn_cache_dir):
    from turn_backend.review import ReviewStore
    from turn_backend.runfolder import RunFolder

    store = ReviewStore(RunFolder(tiny_run).review_db)
    with app_session(browser, runs_root, turn_cache_dir, "none-ambiguous", height=1100) as (page, page_errors):
        main = page.locator('[data-testid="stMain"]')
        cards = main.locator("[class*='st-key-card_']")

        def card_id(card) -> str:
            return card.locator('[data-testid="stCaptionContainer"]').last.inner_text().strip()

        go_to(page, "Review", cards.first)
        assert "N none of these classes" in main.inner_text().replace("*", "")

        first = cards.first
        none_id = card_id(first)
        first.get_by_role("button", name="None of these").click()
        first.get_by_text("None of these classes").wait_for(timeout=STEP_TIMEOUT_MS)
        wait_idle(page)
        assert store.current() == {none_id: ("none", None)}

        # the keyboard: M marks the card now marked "next up" ambiguous
        nxt = cards.filter(has_text="next up").first
        amb_id = card_id(nxt)
        # its buttons read in full: the key hints, listed above the cards, do not squeeze the labels to "Rem…"
        cut = nxt.evaluate("""card => [...card.querySelectorAll("[class*='st-key-actions_'] button")]
            .filter(b => { const t = b.querySelector('[data-testid="stMarkdownContainer"]');
                           return t && t.scrollWidth > t.clientWidth; })
            .map(b => b.innerText)""")
        assert not cut, f"labels cut short on the card marked next up: {cut}"
        assert amb_id != none_id
        page.mouse.click(5, 300)  # focus the page, not a widget
        page.keyboard.press("m")
        cards.filter(has=page.get_by_text(amb_id, exact=True)).get_by_text("Ambiguous", exact=True).first.wait_for(
            timeout=STEP_TIMEOUT_MS)
        wait_idle(page)
        no_exception(page)
        assert store.current() == {none_id: ("none", None), amb_id: ("ambiguous", None)}
        screenshot(page, "none-ambiguous-01-cards")

        # Decided as: Ambiguous shows that one card
        main.locator('[data-testid="stButtonGroup"]').filter(has_text="None of these").get_by_role(
            "button", name="Ambiguous").click()
        wait_idle(page)
        page.wait_for_function("() => document.querySelectorAll(\"[data-testid='stMain'] [class*='st-key-card_']\")"
                               ".length === 1", timeout=STEP_TIMEOUT_MS)
        assert card_id(cards.first) == amb_id
        screenshot(page, "none-ambiguous-02-filter")
        assert not page_errors, page_errors
