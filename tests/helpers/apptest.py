"""Reading pages run under Streamlit's AppTest (each page file runs standalone)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pandas as pd
from streamlit.testing.v1 import AppTest

from turn_backend import analysis as an
from turn_backend import run_views
from turn_backend.review import ReviewStore
from turn_backend.runfolder import RunFolder

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


def figure_array(value) -> np.ndarray:
    """A figure array as sent to the browser: a list, or plotly's base64 typed array."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
    return np.asarray(value if value is not None else [])


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


def first_page_rows(run: Path) -> pd.DataFrame:
    """The first review page as the page builds it (applied tau, no filters)."""
    from turn_backend.export import default_tau  # export imports torch-free but heavy modules

    folder = RunFolder(run)
    index = an.ReviewIndex.for_run(run_views.review_inputs(folder), default_tau(folder))
    codes, labels = index.decision_arrays(ReviewStore(folder.review_db).current())
    return index.rows(index.view()[:12], codes, labels)


def card_key(at: AppTest, action: str, sample_id: str) -> str:
    """The key of a card's widget (keep, remove, accept, relabel, similar) for this sample."""
    return f"{action}_{card_ids(at).index(str(sample_id))}"
