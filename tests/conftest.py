"""Shared fixtures.

- `runs_root`: an empty runs root in tmp_path; TURN_RUNS_DIR points at it and TURN_CACHE_DIR
  at a session-wide feature cache.
- `tiny_run`: a finished, real run folder inside `runs_root` (a copy of one built once per
  session with `run_turn`: the Fashion-MNIST demo, 200 train / 100 test, symmetric 40%
  noise, EfficientNet-Lite0 at 64 px (at 32 px its features collapse), 3 LP epochs, 1 TURN round, t-SNE projections).
- `tiny_config`: a function giving that RunConfig (keyword overrides allowed).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Nothing in the tests may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_RUN_NAME = "turn-demo-tiny"


def make_tiny_config(**overrides):
    from turn_backend.config import RunConfig

    settings = dict(
        dataset={"kind": "demo", "n_train": 200, "n_test": 100},
        noise={"kind": "symmetric", "rate": 0.4, "seed": 0},
        model="efficientnet_lite0", image_size=64, batch_size=64, lp_epochs=3, fft_epochs=1,
        method="turn", projection_methods=["tsne"], device="cpu", num_workers=0,
    )
    settings.update(overrides)
    return RunConfig(**settings)


@pytest.fixture(autouse=True)
def _restore_main_module():
    """AppTest runs a page as `__main__` and leaves it installed in sys.modules; a later test's
    multiprocessing "spawn" child would then run that page again on start-up (and die). Every
    test ends with the real `__main__` back."""
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main


@pytest.fixture(scope="session")
def turn_cache_dir(tmp_path_factory) -> Path:
    """One feature cache for the whole session (features of the same data are reused)."""
    return tmp_path_factory.mktemp("turn-cache")


@pytest.fixture(scope="session")
def tiny_run_template(tmp_path_factory, turn_cache_dir) -> Path:
    """A finished run folder, built once per session (about 20 s on a CPU)."""
    from turn_backend.runner import run_turn

    path = tmp_path_factory.mktemp("tiny-run-template") / TINY_RUN_NAME
    old_cache = os.environ.get("TURN_CACHE_DIR")
    old_handler = signal.getsignal(signal.SIGTERM)
    os.environ["TURN_CACHE_DIR"] = str(turn_cache_dir)
    try:
        run_turn(make_tiny_config(), path)
    finally:
        signal.signal(signal.SIGTERM, old_handler)  # execute_run installs a stop handler
        if old_cache is None:
            os.environ.pop("TURN_CACHE_DIR", None)
        else:
            os.environ["TURN_CACHE_DIR"] = old_cache
    return path


@pytest.fixture
def tiny_config():
    """`tiny_config(**overrides)` -> the tiny RunConfig used by `tiny_run`."""
    return make_tiny_config


def stop_workers(root: Path, timeout: float = 60) -> None:
    """Stop every worker still running on a run under `root` (tests never leave one behind)."""
    from turn_backend import worker
    from turn_backend.runfolder import list_runs

    for folder in list_runs(root):
        if worker.live_state(folder.path).get("state") not in ("starting", "running"):
            continue
        worker.stop(folder.path)
        deadline = time.time() + timeout
        while time.time() < deadline and worker.live_state(folder.path).get("state") in ("starting", "running"):
            time.sleep(0.2)


@pytest.fixture
def runs_root(tmp_path, monkeypatch, turn_cache_dir):
    """An empty runs root; TURN_RUNS_DIR and TURN_CACHE_DIR point at temp folders.

    Workers a test started under it are stopped when the test ends."""
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("TURN_RUNS_DIR", str(root))
    monkeypatch.setenv("TURN_CACHE_DIR", str(turn_cache_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield root
    stop_workers(root)


@pytest.fixture
def tiny_run(runs_root, tiny_run_template) -> Path:
    """A finished run folder (a fresh copy per test) inside `runs_root`."""
    dest = runs_root / TINY_RUN_NAME
    shutil.copytree(tiny_run_template, dest)
    return dest


# the tiny run's settings, with labels drawn at random (10 classes, 90% symmetric noise)
SHUFFLED_RUN_ARGS = ["--data", "demo", "--n-train", "200", "--n-test", "100", "--image-size", "64", "--batch-size",
                     "64", "--lp-epochs", "3", "--fft-epochs", "1", "--noise", "symmetric", "--noise-rate", "0.9",
                     "--device", "cpu", "--method", "turn", "--quiet"]


@pytest.fixture(scope="session")
def shuffled_run_template(tmp_path_factory, turn_cache_dir):
    """A finished run whose labels carry no information, made by `turn run`: (its folder, the
    finished `turn run` process with its output)."""
    from helpers.cli import turn

    out = tmp_path_factory.mktemp("shuffled") / "shuffled-run"
    result = turn("run", *SHUFFLED_RUN_ARGS, "--out", out, cache=turn_cache_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    return out, result


# the tiny run's settings for the four-annotator set (helpers.annotators), from its own folder
ANNOTATED_RUN_ARGS = ["--data", "labels.csv", "--image-size", "64", "--batch-size", "64", "--lp-epochs", "3",
                      "--fft-epochs", "1", "--device", "cpu", "--method", "turn", "--quiet"]


@pytest.fixture(scope="session")
def annotated_run_template(tmp_path_factory, turn_cache_dir):
    """A finished run on 60 demo images labelled by four simulated annotators (a long-form
    manifest), made by `turn run` with relative paths: (its folder, the `turn run` process)."""
    from helpers.annotators import write_annotated_manifest
    from helpers.cli import turn

    data = tmp_path_factory.mktemp("annotated")
    write_annotated_manifest(data)
    result = turn("run", *ANNOTATED_RUN_ARGS, "--out", "runs/crowd", cwd=data, cache=turn_cache_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    return data / "runs" / "crowd", result


@pytest.fixture
def annotated_run(runs_root, annotated_run_template) -> Path:
    """That run (a fresh copy per test) inside `runs_root`."""
    dest = runs_root / "crowd"
    shutil.copytree(annotated_run_template[0], dest)
    return dest


@pytest.fixture
def audited_run(tiny_run) -> Path:
    """The tiny run with planted detection and audit evidence (helpers.runs.write_audit_evidence)."""
    from helpers.runs import write_audit_evidence

    return write_audit_evidence(tiny_run)


@pytest.fixture
def browser():
    """A headless Chromium (Playwright, Debian's /usr/bin/chromium); skipped without them."""
    from helpers.server import CHROMIUM, CHROMIUM_ARGS

    sync_api = pytest.importorskip("playwright.sync_api", reason="needs Python Playwright")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"needs Chromium at {CHROMIUM} (Debian package chromium)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
