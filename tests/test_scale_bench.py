"""`turn bench --scale` keeps working: the augmented set it builds, how its stage table judges
growth, its browser driver on the tiny run, and its report.

The real benchmark (60,000 images up to a million) is a command, not a test; here the same
code path runs against the 200-sample tiny run placed where the benchmark looks for its run,
so nothing is trained. The browser part is skipped without Playwright or Chromium.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers.cli import turn
from turn_backend.bench import scale, scale_data
from turn_backend.bench.detection import replace_section
from turn_backend.bench.scale import CHROMIUM, PAGES, SECTION_TITLE
from turn_backend.data.loaders import load_dataset

REPO = Path(__file__).resolve().parents[1]


def _tiny_source(monkeypatch):
    rng = np.random.default_rng(0)
    # smooth images (7 x 7 random blocks of 4 px), so that a 2-px shift stays close to its source
    smooth = np.kron(rng.integers(0, 256, (30, 7, 7)), np.ones((1, 4, 4))).astype(np.uint8)
    arrays = {
        "train-images-idx3-ubyte.gz": smooth,
        "train-labels-idx1-ubyte.gz": np.arange(30, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": np.arange(10, dtype=np.uint8),
    }
    monkeypatch.setattr(scale_data, "read_debian_idx", lambda name: arrays[name])
    return arrays


def test_the_scale_set_keeps_the_originals_then_adds_labelled_augmented_copies(monkeypatch, tmp_path):
    source = _tiny_source(monkeypatch)
    monkeypatch.setattr(scale_data, "CHUNK", 16)  # several chunks
    folder = scale_data.build_scale_set(100, tmp_path)
    bundle = load_dataset({"kind": "idx", "path": str(folder), "variant": "fashion-mnist"})
    train = bundle.train
    assert len(train) == 100 and len(bundle.test) == 10
    assert isinstance(train.arrays.base, np.memmap) or isinstance(train.arrays, np.memmap)  # never read whole
    images, labels = source["train-images-idx3-ubyte.gz"], source["train-labels-idx1-ubyte.gz"]
    np.testing.assert_array_equal(train.arrays[:30], images)
    np.testing.assert_array_equal(train.labels[:30], labels)
    # each copy is closest to a source image (or its mirror image) of its own label, and is not that image
    copies = train.arrays[30:].reshape(70, -1).astype(np.float32)
    sources = np.concatenate([images, images[:, :, ::-1]]).reshape(60, -1).astype(np.float32)
    distance = ((copies[:, None, :] - sources[None]) ** 2).sum(2)
    nearest = distance.argmin(1) % 30
    assert (labels[nearest] == train.labels[30:]).mean() > 0.9
    assert (distance.min(1) > 0).all()
    # built once: a second call reuses the folder
    stamp = (folder / "train-images-idx3-ubyte").stat().st_mtime_ns
    assert scale_data.build_scale_set(100, tmp_path) == folder
    assert (folder / "train-images-idx3-ubyte").stat().st_mtime_ns == stamp


def test_the_stage_table_marks_a_stage_that_grows_faster_than_n_log_n():
    sizes = [60_000, 1_000_000]
    bound = scale.n_log_n_ratio(*sizes)
    assert 20 < bound < 21.5  # 16.7x the samples, times log(1M) / log(60k)
    figures = {"stage_s.detect@60000": 10.0, "stage_s.detect": 10.0 * bound * 0.9, "peak_mb.detect": 3000.0,
               "anon_mb.detect": 2000.0,
               "stage_s.audit@60000": 10.0, "stage_s.audit": 10.0 * bound * 1.5, "peak_mb.audit": 2000.0}
    rows = {line.split(" | ")[0].strip("| "): line for line in scale.stage_table(figures, sizes).splitlines()}
    assert rows["detect"].rstrip(" |").endswith("yes") and "| 3,000 (2,000) |" in rows["detect"]
    assert rows["audit"].rstrip(" |").endswith("**no**")
    assert "projection" not in rows  # not measured: no row


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
    shutil.copytree(tiny_run, out / "runs-200" / "asym40-200")  # a finished run where the benchmark looks
    docs = tmp_path / "benchmarks.md"
    result = turn("bench", "--scale", "--n", "200", "--out", out, "--docs", docs, timeout=12 * 60)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "reusing the finished run" in result.stdout
    section = docs.read_text()
    assert section.startswith(SECTION_TITLE) and "200 training images" in section
    figures = json.loads((out / "scale.json").read_text())
    assert figures["n"] == 200 and figures["stage_s.detect"] > 0
    assert 0 < figures["anon_mb.audit"] <= figures["peak_mb.audit"]
    assert figures["stage_s.export"] > 0 and 50 < figures["app_rss_mb"] < 8000
    assert {f"first_render_s.{page}" for page in PAGES} <= set(figures)
    assert {"quality.sym20.f1", "quality.asym40.auroc", "quality.inst40.est_noise"} <= set(figures)
    assert figures["map_points"] == 200  # every sample of the tiny run is on the map
    app = section[section.index("### The app at"):]
    rows = [line.split(" | ") for line in app.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r[0].lstrip("| ") for r in rows] == ["Runs", "Embeddings", "Embeddings", "Embeddings", "Embeddings",
                                                 "Threshold", "Threshold", "Classes", "Noise matrix", "Review",
                                                 "Review", "Review", "Review", "Review", "Review", "Export", "app",
                                                 "app"]
    assert [r[1] for r in rows if r[0] == "| Embeddings"] == ["first render", "hover: first thumbnail",
                                                              "hover: next thumbnails", "lasso (selection listed)"]
    assert [r[1] for r in rows if r[0] == "| Review"][-2:] == ["More like this (first card)", "More like this: close"]
    assert {r[0].lstrip("| ") for r in rows} >= set(PAGES)
    assert rows[-2][1:3] == ["samples the Embeddings map draws", "200"]
    for r in rows[:-2]:
        seconds = float(re.match(r"[\d.]+", r[2]).group())
        assert 0 < seconds < 300
    assert "no rerun seen" not in section  # every interaction was seen to rerun the page
    rss = float(rows[-1][2].split()[0].replace(",", ""))
    assert 50 < rss < 8000
    for name in PAGES[1:]:  # Embeddings is shot after its lasso
        shot = "embeddings-lasso" if name == "Embeddings" else name.lower().replace(" ", "-")
        assert (out / f"scale-{shot}.png").stat().st_size > 10_000
