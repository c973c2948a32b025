"""The Embeddings page in a real headless Chromium: hover thumbnails and linked selection.

Hovering a point must show that sample's image in the floating panel; a lasso selection on
the "before" map must highlight exactly the same samples on the "after" map and list them
below. Screenshots go to `test-artifacts/e2e/embeddings-*.png`. Skipped without Playwright
or Chromium (see test_e2e_browser.py).
"""

from __future__ import annotations

import re

import pandas as pd
import pytest

from helpers.browser import ARTIFACTS, LOOPBACK, STEP_TIMEOUT_MS, VIEWPORT, no_exception, screenshot
from helpers.server import AppServer, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.timeout(10 * 60)]

# Pixel position (page coordinates) and sample of point i of trace t on map m.
POINT_JS = """([m, t, i]) => {
  const gd = document.querySelectorAll('[data-testid="stPlotlyChart"] .js-plotly-plot')[m];
  const fl = gd._fullLayout, tr = gd._fullData[t], box = gd.getBoundingClientRect();
  return {x: box.left + fl._size.l + fl.xaxis.d2p(tr.x[i]), y: box.top + fl._size.t + fl.yaxis.d2p(tr.y[i]),
          row: Number(tr.customdata[i])};
}"""
# The samples (customdata) of map m whose points lie inside a page-pixel rectangle.
ROWS_IN_BOX_JS = """([m, x0, y0, x1, y1]) => {
  const gd = document.querySelectorAll('[data-testid="stPlotlyChart"] .js-plotly-plot')[m];
  const fl = gd._fullLayout, box = gd.getBoundingClientRect(), rows = new Set();
  for (const tr of gd._fullData) {
    if (!tr.customdata) continue;
    for (let i = 0; i < tr.x.length; i++) {
      const px = box.left + fl._size.l + fl.xaxis.d2p(tr.x[i]), py = box.top + fl._size.t + fl.yaxis.d2p(tr.y[i]);
      if (px > x0 && px < x1 && py > y0 && py < y1) rows.add(Number(tr.customdata[i]));
    }
  }
  return [...rows].sort((a, b) => a - b);
}"""
# The samples drawn as selected on map m (Plotly's selectedpoints, per trace, as decoded).
SELECTED_JS = """(m) => {
  const gd = document.querySelectorAll('[data-testid="stPlotlyChart"] .js-plotly-plot')[m];
  const rows = new Set();
  for (const tr of gd._fullData) {
    if (!tr.selectedpoints || !tr.customdata) continue;
    for (const i of tr.selectedpoints) rows.add(Number(tr.customdata[i]));
  }
  return [...rows].sort((a, b) => a - b);
}"""
THUMB_SHOWN_JS = """(row) => {
  const tip = document.getElementById('turn-hover-thumb');
  const img = tip && tip.querySelector('img');
  return tip && tip.style.display === 'block' && tip.dataset.row === String(row) && img && img.complete
    && img.naturalWidth > 0;
}"""


def test_hover_shows_the_image_and_selection_is_linked_across_maps(browser, tiny_run):
    samples = pd.read_parquet(tiny_run / "samples.parquet")
    train_ids = samples[samples["split"] == "train"]["sample_id"].astype(str).tolist()
    log = tiny_run.parent.parent / "streamlit-embeddings.log"
    with AppServer(tiny_run.parent, log, extra_args=LOOPBACK).start() as server:
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(f"{server.url}/embeddings")
        page.wait_for_function("() => document.querySelectorAll("
                               "'[data-testid=\"stPlotlyChart\"] .js-plotly-plot .main-svg').length >= 2",
                               timeout=STEP_TIMEOUT_MS)
        wait_idle(page)
        no_exception(page)

        # hover: the sample under the cursor appears with its id and labels
        for trace in (0, 1):
            point = page.evaluate(POINT_JS, [1, trace, 0])
            page.mouse.move(point["x"] - 40, point["y"] - 40)
            page.mouse.move(point["x"], point["y"], steps=4)
            page.wait_for_function(THUMB_SHOWN_JS, arg=point["row"], timeout=STEP_TIMEOUT_MS)
            caption = page.locator("#turn-hover-thumb").inner_text()
            assert caption.startswith(train_ids[point["row"]]) and "given" in caption
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "embeddings-hover.png"))  # the viewport, with the panel

        # a lasso on the "before" map selects samples there and highlights them on "after"
        chart = page.locator('[data-testid="stPlotlyChart"]').nth(0)
        box = chart.locator(".nsewdrag").first.bounding_box()
        x0, y0 = box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.25
        x1, y1 = box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.6
        expected = page.evaluate(ROWS_IN_BOX_JS, [0, x0, y0, x1, y1])
        assert len(expected) >= 3
        page.mouse.move(x0, y0)  # the lasso (the default tool) around the rectangle
        page.mouse.down()
        for x, y in ((x1, y0), (x1, y1), (x0, y1), (x0, y0 + 1)):
            page.mouse.move(x, y, steps=6)
        page.mouse.up()
        page.get_by_text(f"{len(expected)} selected").wait_for(timeout=STEP_TIMEOUT_MS)
        wait_idle(page)
        no_exception(page)
        assert page.evaluate(SELECTED_JS, 1) == expected  # the "after" map highlights the same samples
        assert page.evaluate(SELECTED_JS, 0) == expected
        gallery = page.locator('[data-testid="stMain"] [data-testid="stMarkdownContainer"] img')  # inlined images
        assert gallery.count() == min(len(expected), 48)
        screenshot(page, "embeddings-linked-selection")


# What the selection layer drew on map m: the map's own picture's opacity, and the picture
# of the selected samples laid over it (its source, its size beside the map's).
LAYER_JS = """(m) => {
  const gd = document.querySelectorAll('[data-testid="stPlotlyChart"] .js-plotly-plot')[m];
  const base = gd.querySelector('image:not(.turn-selection)'), top = gd.querySelector('image.turn-selection');
  return {base: base ? base.style.opacity : null, source: base ? base.getAttribute('href').length : 0,
          top: top ? top.getAttribute('href').slice(0, 22) : null,
          same_place: !!top && ['x', 'y', 'width', 'height'].every(a => top.getAttribute(a) === base.getAttribute(a))};
}"""


def test_a_lasso_on_a_large_map_is_drawn_over_every_map_without_redrawing_them(browser, tiny_run, monkeypatch):
    """Maps drawn as pictures (TURN_MAP_PICTURE_ABOVE below the run's size): a lasso fades
    each map's picture and lays the selected samples' picture over it, in the browser; the
    maps themselves are not sent again, and the layer stays in place when the window resizes."""
    monkeypatch.setenv("TURN_MAP_PICTURE_ABOVE", "20")
    log = tiny_run.parent.parent / "streamlit-embeddings-large.log"
    with AppServer(tiny_run.parent, log, extra_args=LOOPBACK).start() as server:
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(f"{server.url}/embeddings")
        page.get_by_text("too many to draw one by one").wait_for(timeout=STEP_TIMEOUT_MS)
        page.wait_for_function("() => document.querySelectorAll("
                               "'[data-testid=\"stPlotlyChart\"] .js-plotly-plot image').length >= 2",
                               timeout=STEP_TIMEOUT_MS)
        wait_idle(page)
        no_exception(page)
        assert [page.evaluate(LAYER_JS, m)["top"] for m in (0, 1)] == [None, None]
        page.evaluate("() => { document.querySelectorAll('.js-plotly-plot').forEach(gd => { gd.__e2eRedrawn = 0; "
                      "gd.on('plotly_react', () => gd.__e2eRedrawn++); }); }")

        chart = page.locator('[data-testid="stPlotlyChart"]').nth(0)
        box = chart.locator(".nsewdrag").first.bounding_box()
        x0, y0, x1, y1 = box["x"] + 2, box["y"] + 2, box["x"] + box["width"] * 0.5, box["y"] + box["height"] - 2
        page.mouse.move(x0, y0)  # a lasso around the left half of the "before" map
        page.mouse.down()
        for x, y in ((x1, y0), (x1, y1), (x0, y1), (x0, y0 + 1)):
            page.mouse.move(x, y, steps=6)
        page.mouse.up()
        selected = page.get_by_text(re.compile(r"^[\d,]+ selected"))
        selected.wait_for(timeout=STEP_TIMEOUT_MS)
        wait_idle(page)
        no_exception(page)
        for m in (0, 1):
            layer = page.evaluate(LAYER_JS, m)
            assert layer["base"] == "0.12" and layer["top"] == "data:image/png;base64," and layer["same_place"]
        assert page.evaluate("() => [...document.querySelectorAll('.js-plotly-plot')].map(gd => gd.__e2eRedrawn)") \
            == [0, 0]  # the figures were not sent again
        caption = selected.inner_text()
        shown = page.locator('[data-testid="stMain"] [data-testid="stMarkdownContainer"] img').count()
        assert shown == min(int(caption.split()[0].replace(",", "")), 48) > 0
        screenshot(page, "embeddings-large-selection")

        page.set_viewport_size({"width": VIEWPORT["width"] - 300, "height": VIEWPORT["height"]})
        page.wait_for_timeout(1500)  # plotly redraws at the new width; the layer follows it
        layer = page.evaluate(LAYER_JS, 1)
        assert layer["top"] == "data:image/png;base64," and layer["same_place"]
