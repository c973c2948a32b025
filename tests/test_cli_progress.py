"""Progress where the output is not a terminal: a line with the stage, its rate and its time
left at least every TURN_PROGRESS_INTERVAL seconds (30 s at most by default), through every
stage, fine-tuning rounds and scoring passes included."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from helpers.cli import REPO, turn_env
from turn_backend.cli import DEFAULT_PROGRESS_INTERVAL, ProgressLines, fmt_duration


def test_progress_lines_give_the_stage_rate_and_time_left():
    lines = ProgressLines(interval=10)
    t0 = lines.last_line
    status = {"stage_label": "Round 1: fine-tuning on 900 samples", "stage_done": 100, "stage_total": 1000}
    assert lines.update(status, now=t0 + 1) is None  # not due yet
    status["stage_done"] = 400
    line = lines.update(status, now=t0 + 11)  # 300 done in the 10 s since the stage was first seen
    assert line == "[progress] Round 1: fine-tuning on 900 samples: 400/1,000 (40%), 30.0/s, about 20 s left"
    assert lines.update(status, now=t0 + 15) is None
    # a new stage: its rate is measured from when it was first seen
    scoring = {"stage_label": "Scoring the labels", "stage_done": 0, "stage_total": 1}
    assert lines.update(scoring, now=t0 + 16) is None
    assert lines.update(scoring, now=t0 + 86) == "[progress] Scoring the labels: running for 1 min 10 s"
    features = {"stage_label": "Extracting train features", "stage_done": 0, "stage_total": 5000}
    assert lines.update(features, now=t0 + 90) is None
    assert lines.update(features, now=t0 + 96).endswith("running for 6 s, rate not known yet")
    assert DEFAULT_PROGRESS_INTERVAL <= 30


def test_fmt_duration():
    assert [fmt_duration(s) for s in (0.4, 59, 61, 3599, 7500)] == ["0 s", "59 s", "1 min 01 s", "59 min 59 s",
                                                                    "2 h 05 min"]


@pytest.mark.timeout(600)
@pytest.mark.slow  # over 10 s on 2 busy cores: in the full suite, not the fast tier
def test_a_run_into_a_pipe_prints_progress_lines_on_time(tmp_path):
    interval = 0.5
    env = turn_env(tmp_path / "cache", TURN_PROGRESS_INTERVAL=str(interval))
    # 1,500 images: feature extraction lasts a few polls of the follower even on a fast, idle machine
    # (with 600 every stage ended before its second poll, so no rate was known: a CI flake)
    cmd = [sys.executable, "-m", "turn_backend.cli", "run", "--n-train", "1500", "--n-test", "100", "--image-size",
           "64", "--batch-size", "32", "--lp-epochs", "20", "--fft-epochs", "2", "--method", "turn", "--device",
           "cpu", "--projections", "--out", str(tmp_path / "run")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
    stamped = [(time.monotonic(), line.rstrip("\n")) for line in proc.stdout]
    assert proc.wait(timeout=60) == 0, "\n".join(line for _, line in stamped)
    text = "\n".join(line for _, line in stamped)
    progress = [(t, line) for t, line in stamped if line.startswith("[progress] ")]
    assert len(progress) >= 3, text
    assert "\x1b" not in text and "\r" not in text  # no progress bars in a pipe
    # every counted stage gets its lines; once the follower has seen a stage's count move, they
    # carry its rate and the time left (on a fast machine a 1-s round may end before that)
    assert any("fine-tuning" in line for _, line in progress), text
    assert any("/s, about" in line and line.endswith(" left") for _, line in progress), text
    # from the first progress line to the end of the run, no silence much longer than the interval
    # (the follower polls twice a second; a busy 2-core machine adds its own delays)
    times = [t for t, _ in progress] + [stamped[-1][0]]
    assert max(b - a for a, b in zip(times, times[1:])) < interval + 4, text
