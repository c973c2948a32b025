"""Reading pages run under Streamlit's AppTest (each page file runs standalone)."""

from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

PAGES = Path(__file__).resolve().parents[2] / "pages"
TIMEOUT = 180  # one script run; the first import of torch and timm in a page is slow on a small CPU


def app(page: str, run: Path | None = None, timeout: float = TIMEOUT) -> AppTest:
    """pages/`page`.py under AppTest, looking at run folder `run` where given."""
    at = AppTest.from_file(str(PAGES / f"{page}.py"), default_timeout=timeout)
    if run is not None:
        at.session_state["run_dir"] = str(run)
    return at


def texts(at: AppTest) -> str:
    """All the page's text: markdown, captions, info, success, error and warning boxes."""
    parts = [e.value for kind in ("markdown", "caption", "info", "success", "error", "warning")
             for e in at.get(kind)]
    return "\n".join(str(p) for p in parts)


def metric(at: AppTest, label: str) -> str:
    """The value of the metric labelled `label`."""
    for m in at.metric:
        if m.label == label:
            return m.value
    raise AssertionError(f"no metric {label!r}; metrics: {[m.label for m in at.metric]}")


def charts(at: AppTest) -> list[dict]:
    """The Plotly figures on the page, as dicts."""
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def card_ids(at: AppTest) -> list[str]:
    """The sample id of each Review card, in slot order. Cards and their widgets are keyed by
    their slot on the page (card_0, keep_0, ...); a card's last caption is its sample id."""
    ids = []
    while True:
        try:
            card = at.main.get_by_key(f"card_{len(ids)}")
        except KeyError:
            return ids
        ids.append(card.caption[-1].value)
