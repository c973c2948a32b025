"""TURN Studio: `streamlit run app/main.py`.

The entry point: page setup, the navigation (Project: Runs, Dataset, Train; Audit:
Embeddings, Threshold, Review, Export) and the run picker in the sidebar.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The one place the repo root goes on sys.path (for a checkout that is not `pip install -e .`):
# pages run inside this process, so they import `app` and `turn_backend` plainly.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402
import streamlit.delta_generator as _dg  # noqa: E402

# The first element a Streamlit process draws asks inspect.stack() whether it runs in a
# Python REPL, to print a hint; it reads the source of every caller (0.1-0.15 s of the
# first page's render). This file only runs under `streamlit run` (or AppTest): no REPL.
_dg._use_warning_has_been_displayed = True

st.set_page_config(page_title="TURN Studio", layout="wide", page_icon=":material/label:")

from app import ui  # noqa: E402


def _missing_page(title: str):
    def page() -> None:
        ui.page_header(title, ":material/construction:")
        ui.empty_state(f"The {title} page is not installed in this copy of TURN Studio.",
                       icon=":material/construction:", page="runs", label="Back to Runs")

    page.__name__ = title.lower()
    return page


def build_navigation():
    sections = {}
    for section, names in ui.SECTIONS.items():
        pages = []
        for name in names:
            if not ui.page_relevant(name):
                continue
            file, title, icon = ui.PAGES[name]
            target = str(file) if file.is_file() else _missing_page(title)
            pages.append(st.Page(target, title=title, icon=icon, url_path=name, default=name == "runs"))
        sections[section] = pages
    return st.navigation(sections)


ui.keep_widget_state()
nav = build_navigation()
st.logo(ui.LOGO_SVG, icon_image=ui.ICON_SVG, size="large")
ui.run_picker()
nav.run()
