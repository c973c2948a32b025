"""Page helpers of the browser tests (Playwright on a real `streamlit run`); the `browser`
fixture itself is in tests/conftest.py. Screenshots go to test-artifacts/e2e/ (git-ignored)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from helpers.server import REPO, AppServer, save_failure, wait_idle

ARTIFACTS = REPO / "test-artifacts" / "e2e"
VIEWPORT = {"width": 1400, "height": 1000}
STEP_TIMEOUT_MS = 120_000  # one page load or rerun, generous for 2 shared cores
LOOPBACK = ("--server.address", "127.0.0.1")
TAU_SLIDER = "Clean-probability threshold τ"  # the Threshold page's slider, by its label

# Rendered: every Plotly chart has drawn its SVG and every image has loaded.
_RENDERED_JS = """() => {
  const charts = [...document.querySelectorAll('[data-testid="stMain"] [data-testid="stPlotlyChart"]')];
  const drawn = charts.every(c => c.querySelector('.main-svg'));
  const imgs = [...document.querySelectorAll('[data-testid="stMain"] img')];
  return drawn && imgs.every(i => i.complete && i.naturalWidth > 0);
}"""


def no_exception(page) -> None:
    errors = page.locator('[data-testid="stException"]')
    assert errors.count() == 0, "the page shows a Python exception:\n" + "\n".join(errors.all_inner_texts())


def screenshot(page, name: str) -> Path:
    """The whole page: the viewport is stretched to the main area's height for the shot."""
    wait_idle(page)
    page.wait_for_function(_RENDERED_JS, timeout=60_000)
    height = page.evaluate("() => (document.querySelector('[data-testid=\"stMain\"]') || document.body).scrollHeight")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": int(min(max(height, VIEWPORT["height"]), 6000))})
    try:
        page.mouse.move(0, 0)  # no hover tooltip in the picture
        wait_idle(page)
        page.wait_for_function(_RENDERED_JS, timeout=60_000)
        page.wait_for_timeout(300)  # let Plotly finish its resize to the new viewport
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path))
    finally:
        page.set_viewport_size(VIEWPORT)
    return path


def go_to(page, title: str, ready) -> None:
    """Open a page from the sidebar navigation, as a user would, and wait for `ready`."""
    page.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
    ready.wait_for(timeout=STEP_TIMEOUT_MS)
    wait_idle(page)
    no_exception(page)


def metric_value(page, label: str) -> str:
    metric = page.locator('[data-testid="stMain"] [data-testid="stMetric"]').filter(
        has=page.locator('[data-testid="stMetricLabel"]', has_text=label)).first
    return metric.locator('[data-testid="stMetricValue"]').inner_text().strip()


def wait_metric(page, label: str, expected: str, timeout: int = STEP_TIMEOUT_MS) -> None:
    metric = page.locator('[data-testid="stMain"] [data-testid="stMetric"]').filter(
        has=page.locator('[data-testid="stMetricLabel"]', has_text=label)).first
    metric.locator('[data-testid="stMetricValue"]', has_text=expected).wait_for(timeout=timeout)


def set_number(page, label: str, value: int) -> None:
    box = page.get_by_role("spinbutton", name=label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    wait_idle(page)
    assert box.input_value() == str(value), f"{label} did not take {value}"


@contextmanager
def app_session(browser, runs_root: Path, cache_dir: Path, name: str, height: int = VIEWPORT["height"]) -> Iterator:
    """A `streamlit run` server on `runs_root` and a browser page open on its home, for one test:
    yields (page, the page's JavaScript errors). A failure leaves ARTIFACTS/`name`-failure.png and
    the page's text; the server log is ARTIFACTS/`name`-server.log. Both close at the end."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    server = AppServer(runs_root, ARTIFACTS / f"{name}-server.log", cache_dir, extra_args=LOOPBACK).start()
    context = browser.new_context(viewport={"width": VIEWPORT["width"], "height": height})
    page = context.new_page()
    page.set_default_timeout(60_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(server.url)
        page.locator('[data-testid="stSidebarNav"]').wait_for(timeout=STEP_TIMEOUT_MS)
        wait_idle(page)
        yield page, errors
    except BaseException:
        save_failure(page, page.locator('[data-testid="stMain"]'), ARTIFACTS / f"{name}-failure")
        raise
    finally:
        context.close()
        server.stop()
