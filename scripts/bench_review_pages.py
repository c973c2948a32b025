"""Interaction times of the Review, Noise matrix, Classes and Compare pages at scale, in headless Chromium.

    .venv/bin/python scripts/bench_review_pages.py [--n-train 60000] [--out /tmp/review-bench]

Builds a run folder with the real Fashion-MNIST images (the Debian IDX files, so the cards
load real thumbnails) and asymmetric 40% noise, and stands in for training with synthetic
results in the documented formats (final/ arrays, signals.parquet, noise_matrix.json, an
audit with some duplicates, leaks and outliers, features for "More like this"), then
starts `streamlit run app/main.py` and times, from the click to the moment the page has
redrawn (script idle and the expected change on screen): each page's first render, and on
Review the next page, Keep and Undo. A benchmark, not a test: the numbers
depend on the machine, which the report names.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from helpers.server import CHROMIUM, CHROMIUM_ARGS, AppServer  # noqa: E402

# Busy: the script is running or an element is stale (the same test as tests/helpers/server.py,
# without its 600 ms settling window, which would be counted in every interaction).
_BUSY_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  return !app || app.getAttribute('data-test-script-state') !== 'notRunning'
    || !!document.querySelector('[data-testid="stStatusWidget"]')
    || !!document.querySelector('[data-testid="stMain"] [data-stale="true"]');
}"""


def build_run(path: Path, n_train: int, seed: int = 0) -> None:
    """A finished-looking run folder with synthetic results over the real images."""
    from turn_backend.audit.stage import PAIR_COLUMNS
    from turn_backend.config import RunConfig
    from turn_backend.detect.result import DetectionResult
    from turn_backend.io import atomic_write_json
    from turn_backend.rundata import load_run_data
    from turn_backend.runner import create_run

    n_test = max(10, n_train // 6 // 10 * 10)
    config = RunConfig(dataset={"kind": "demo", "n_train": n_train, "n_test": n_test},
                       noise={"kind": "asymmetric", "rate": 0.4, "seed": seed}, method="turn+", fft_epochs=2)
    folder = create_run(config, path)
    bundle = load_run_data(config)
    train, test = bundle.train, bundle.test
    rows = [pd.DataFrame({"sample_id": s.ids, "source": [f"array:{i}" for i in range(len(s))], "split": split,
                          "given_label": s.labels, "true_label": s.true_labels})
            for split, s in (("train", train), ("test", test))]
    pd.concat(rows, ignore_index=True).to_parquet(folder.samples_path, index=False)
    atomic_write_json(folder.classes_path, train.class_names)
    rng = np.random.default_rng(seed)
    n, c = len(train), len(train.class_names)
    noisy = train.labels != train.true_labels
    clean = np.where(noisy, rng.beta(1, 4, n), rng.beta(5, 1, n)).astype(np.float32)
    logits = rng.normal(size=(n, c)).astype(np.float32)
    logits[np.arange(n), train.true_labels] += 4.0
    final = folder.final_dir
    final.mkdir()
    np.save(final / folder.LOGITS, logits)
    np.save(final / folder.LOSSES, rng.exponential(size=n).astype(np.float32))
    np.save(final / folder.CLEAN_PROB, clean)
    atomic_write_json(final / folder.GMM, {"fits": [], "notes": []})
    counts = np.zeros((c, c))
    np.add.at(counts, (train.labels, train.true_labels), 1)
    signals = {"gmm_lp": clean, "knn": np.clip(clean + rng.normal(0, .1, n), 0, 1),
               "oof_probe": np.clip(clean + rng.normal(0, .1, n), 0, 1)}
    folder.save_detection(final, DetectionResult(clean_prob=clean, signals=signals, suggested_label=logits.argmax(1),
                                                 suggested_confidence=np.full(n, 0.8), noise_counts=counts,
                                                 noise_rate=float(noisy.mean())))
    np.save(final / folder.FEATURES, rng.normal(size=(n, 64)).astype(np.float32))
    ids = np.asarray(train.ids)
    dup = rng.choice(n, 200, replace=False)
    audit = pd.DataFrame({"duplicate_of": [""] * n, "duplicate_similarity": np.nan,
                          "duplicate_label_conflict": False, "test_duplicate": [""] * n, "test_similarity": np.nan,
                          "outlier": rng.uniform(size=n) < 0.005, "outlier_score": rng.exponential(size=n)})
    audit.loc[dup[:100], "duplicate_of"] = ids[dup[100:]]
    audit.loc[dup[:100], "duplicate_similarity"] = 0.98
    audit.loc[dup[:100], "duplicate_label_conflict"] = train.labels[dup[:100]] != train.labels[dup[100:]]
    folder.audit_dir.mkdir()
    audit.to_parquet(folder.audit_dir / folder.AUDIT_TRAIN, index=False)
    pairs = pd.DataFrame({"a_id": ids[dup[:100]], "b_id": ids[dup[100:]], "a_split": "train", "b_split": "train",
                          "similarity": 0.98, "kind": "near",
                          "label_conflict": audit.loc[dup[:100], "duplicate_label_conflict"].to_numpy()})
    pairs[PAIR_COLUMNS].to_parquet(folder.audit_dir / folder.AUDIT_PAIRS, index=False)
    atomic_write_json(folder.audit_dir / folder.AUDIT_META, {"threshold": 0.97, "floor": 0.9})
    folder.set_status(state="done", stage="done")


def timed(page, action, ready: str, timeout: int = 120_000) -> float:
    """Seconds from `action()` until the script is idle and `ready` (a JS expression) holds."""
    t0 = time.perf_counter()
    action()
    page.wait_for_function(f"() => !({_BUSY_JS})() && ({ready})", timeout=timeout, polling=16)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-train", type=int, default=60000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/turn-review-bench"))
    parser.add_argument("--repeat", type=int, default=5, help="repetitions of each interaction (median reported)")
    parser.add_argument("--screenshots", type=Path, help="also save a screenshot of each page here")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    shutil.rmtree(args.out, ignore_errors=True)
    runs = args.out / "runs"
    t0 = time.time()
    build_run(runs / "scale", args.n_train)
    print(f"built a {args.n_train:,}-sample run in {time.time() - t0:.0f} s", flush=True)
    server = AppServer(runs, args.out / "server.log", args.out / "cache",
                       extra_args=("--server.address", "127.0.0.1")).start()
    results: dict[str, list[float]] = {}

    def add(name: str, seconds: float) -> None:
        results.setdefault(name, []).append(seconds)

    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            main_ = page.locator('[data-testid="stMain"]')
            cards = "document.querySelectorAll('[class*=\"st-key-card_\"]').length >= 12"
            for attempt in range(2):  # the first visit loads the dataset once (cached afterwards)
                key = "review: first render (cold: dataset load)" if attempt == 0 else "review: first render"
                add(key, timed(page, lambda: page.goto(f"{server.url}/review"), cards, timeout=300_000))
            for _ in range(args.repeat):
                caption = main_.locator('[data-testid="stCaptionContainer"]', has_text="Page ").first.inner_text()
                page_no = int(caption.split("Page ")[1].split(" ")[0])
                add("review: next page", timed(page, lambda: page.get_by_role("button", name="Next").click(),
                                               f"document.body.innerText.includes('Page {page_no + 1} of') && {cards}"))
                card = main_.locator("[class*='st-key-card_']").filter(has_text="Undecided").first
                # cards are keyed by their slot on the page (the sample id is the last caption)
                slot = next(c for c in card.get_attribute("class").split() if c.startswith("st-key-card_"))
                sel = f"document.querySelector('.{slot}')"
                keep = page.locator(f".{slot} [class*='st-key-keep_'] button").first
                add("review: keep", timed(page, keep.click, f"{sel} && {sel}.innerText.includes('Kept')"))
                add("review: undo", timed(page, lambda: page.get_by_role("button", name="Undo last").click(),
                                          f"{sel} && {sel}.innerText.includes('Undecided')"))
            if args.screenshots:
                args.screenshots.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.screenshots / "review.png"), full_page=True)
            for title, path, ready in (
                ("noise matrix", "noise", "document.querySelector('[data-testid=\"stMain\"] .main-svg')"),
                ("classes", "classes", "document.querySelector('[data-testid=\"stDataFrame\"]')"),
            ):
                for attempt in range(2):
                    add(f"{title}: first render" + (" (cold)" if attempt == 0 else ""),
                        timed(page, lambda: page.goto(f"{server.url}/{path}"), ready))
                if args.screenshots:
                    page.screenshot(path=str(args.screenshots / f"{path}.png"), full_page=True)
            browser.close()
    finally:
        server.stop()
    machine = (f"{platform.node()}: {os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
               f"load average {os.getloadavg()[0]:.1f} at the end")
    print(f"\n{args.n_train:,} training samples, {machine}\n")
    print("| interaction | median (s) | min (s) | max (s) | n |\n| --- | --- | --- | --- | --- |")
    for name, values in results.items():
        print(f"| {name} | {np.median(values):.2f} | {min(values):.2f} | {max(values):.2f} | {len(values)} |")
    (args.out / "results.json").write_text(json.dumps({"n_train": args.n_train, "machine": machine,
                                                       "seconds": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
