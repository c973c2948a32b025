"""`turn bench --scale` keeps working: its browser driver on the tiny run, and its report.

The real benchmark (60,000 images) is a command, not a test; here the same code path runs
against the 200-sample tiny run placed where the benchmark looks for its run, so nothing
is trained. Skipped without Playwright or Chromium.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from helpers.cli import turn
from turn_backend.bench.detection import replace_section
from turn_backend.bench.scale import CHROMIUM, PAGES, SECTION_TITLE

REPO = Path(__file__).resolve().parents[1]


def test_the_scale_section_replaces_only_itself(tmp_path):
    docs = tmp_path / "benchmarks.md"
    docs.write_text(f"# Benchmarks\n\n## Grid\n\ngrid table\n\n{SECTION_TITLE}\n\nold table\n\n## Throughput\n\nfps\n")
    replace_section(docs, SECTION_TITLE, f"{SECTION_TITLE}\n\nnew table\n")
    text = docs.read_text()
    assert "new table" in text and "old table" not in text
    assert text.index("## Grid") < text.index(SECTION_TITLE) < text.index("## Throughput")
    assert "grid table" in text and "fps" in text
    fresh = tmp_path / "new.md"
    replace_section(fresh, SECTION_TITLE, f"{SECTION_TITLE}\n\nfirst\n")
    assert fresh.read_text() == f"{SECTION_TITLE}\n\nfirst\n"


@pytest.mark.browser
@pytest.mark.timeout(15 * 60)
def test_scale_bench_drives_every_page_and_reports(tiny_run, tmp_path):
    pytest.importorskip("playwright.sync_api", reason="needs Python Playwright")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"needs Chromium at {CHROMIUM}")
    out = tmp_path / "bench"
    shutil.copytree(tiny_run, out / "runs" / "lp-gce-200")  # a finished run where the benchmark looks
    docs = tmp_path / "benchmarks.md"
    result = turn("bench", "--scale", "--n-train", "200", "--out", out, "--docs", docs, timeout=12 * 60)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "reusing the finished run" in result.stdout
    section = docs.read_text()
    assert section.startswith(SECTION_TITLE) and "200 training images" in section
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r[0].lstrip("| ") for r in rows] == ["Runs", "Embeddings", "Embeddings", "Embeddings", "Embeddings",
                                                 "Threshold", "Threshold", "Classes", "Noise matrix", "Review",
                                                 "Review", "Review", "Review", "Review", "Review", "Export", "app"]
    assert [r[1] for r in rows if r[0] == "| Embeddings"] == ["first render", "hover: first thumbnail",
                                                              "hover: next thumbnails", "lasso (selection listed)"]
    assert [r[1] for r in rows if r[0] == "| Review"][-2:] == ["More like this (first card)", "More like this: close"]
    assert {r[0].lstrip("| ") for r in rows} >= set(PAGES)
    for r in rows[:-1]:
        seconds = float(re.match(r"[\d.]+", r[2]).group())
        assert 0 < seconds < 300
    assert "no rerun seen" not in section  # every interaction was seen to rerun the page
    rss = float(rows[-1][2].split()[0].replace(",", ""))
    assert 50 < rss < 8000
    for name in PAGES[1:]:
        assert (out / f"scale-{name.lower().replace(' ', '-')}.png").stat().st_size > 10_000
