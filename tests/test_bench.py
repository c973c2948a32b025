"""`turn bench`: the metric code on hand-made labels, the aggregation, the method / setting
specs, the extra baselines' selection rules, and the whole grid end to end on tiny data."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from turn_backend import bench
from turn_backend.cleansing import detection_metrics

# ----------------------------------------------------------------------------- detection metrics


def test_detection_metrics_by_hand():
    true = np.array([0, 0, 1, 1, 2, 2, 0, 1, 2, 0])
    given = np.array([0, 1, 1, 0, 2, 0, 0, 1, 1, 0])  # noisy: 1, 3, 5, 8
    flagged = np.zeros(10, dtype=bool)
    flagged[[1, 3, 6]] = True  # two right (1, 3), one wrong (6); misses 5 and 8
    d = detection_metrics(flagged, given, true)
    assert d["precision"] == pytest.approx(2 / 3)
    assert d["recall"] == pytest.approx(2 / 4)
    assert d["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    # kept: 0, 2, 4, 5, 7, 8, 9 -> noisy among them: 5, 8
    assert d["purity"] == pytest.approx(5 / 7)
    assert (d["n_flagged"], d["n_kept"], d["n_noisy"]) == (3, 7, 4)


def test_detection_metrics_edges():
    labels = np.array([0, 1, 2])
    clean = detection_metrics(np.zeros(3, bool), labels, labels)  # nothing noisy, nothing flagged
    assert clean["precision"] == 0.0 and clean["recall"] == 0.0 and clean["f1"] == 0.0 and clean["purity"] == 1.0
    everything = detection_metrics(np.ones(3, bool), labels, np.array([1, 1, 1]))
    assert everything["purity"] == 0.0  # nothing kept
    assert everything["precision"] == pytest.approx(2 / 3) and everything["recall"] == 1.0


# ----------------------------------------------------------------------------- aggregation


def test_mean_std_and_format():
    m, s, n = bench.mean_std([0.8, 0.9, None, float("nan")])
    assert (m, n) == (pytest.approx(0.85), 2)
    assert s == pytest.approx(np.std([0.8, 0.9], ddof=1))
    assert bench.mean_std([0.5]) == (0.5, 0.0, 1)
    assert math.isnan(bench.mean_std([])[0])
    assert bench.fmt_ms([0.8, 0.9]) == "85.0 ± 7.1"
    assert bench.fmt_ms([0.812]) == "81.2"
    assert bench.fmt_ms([None]) == "–"


def test_aggregate_over_seeds():
    df = pd.DataFrame({
        "method": ["turn", "turn", "fft-ce", "fft-ce", "turn"],
        "setting": ["sym60", "sym60", "sym60", "sym60", "asym40"],
        "seed": [0, 1, 0, 1, 0],
        "test_acc_best": [0.7, 0.8, 0.6, 0.6, 0.5],
    })
    a = bench.aggregate(df, "test_acc_best")
    row = a[(a["method"] == "turn") & (a["setting"] == "sym60")].iloc[0]
    assert row["mean"] == pytest.approx(0.75) and row["n"] == 2
    assert row["std"] == pytest.approx(np.std([0.7, 0.8], ddof=1))
    assert a[(a["method"] == "fft-ce")].iloc[0]["std"] == 0.0
    assert a[(a["method"] == "turn") & (a["setting"] == "asym40")].iloc[0]["n"] == 1
    text = bench.pivot_text(df, "test_acc_best", ["turn", "fft-ce"], ["sym60", "asym40"])
    assert "| turn | 75.0 ± 7.1 | 50.0 |" in text and "| fft-ce | 60.0 ± 0.0 | – |" in text


def test_time_with_features_charges_the_one_off_extraction_to_every_run():
    df = pd.DataFrame({"base_method": ["turn", "fft-ce", "dividemix-lp"], "seconds_total": [10.0, 50.0, 3.0],
                       "seconds_features": [0.5, 0.5, 0.0]})
    t = bench.time_with_features(df, 20.0)
    assert list(t) == [pytest.approx(29.5), pytest.approx(69.5), pytest.approx(23.0)]


def test_verdict_row_compares_turn_plus_with_the_best_baseline_but_not_the_clean_reference():
    from turn_backend.bench.report import verdict_row

    df = pd.DataFrame({"method": ["turn+", "turn+", "lp-gce", "lp-gce", "fft-true", "turn+", "unicon-lp"],
                       "setting": ["sym20", "sym20", "sym20", "sym20", "sym20", "sym60", "sym60"],
                       "seed": [0, 1, 0, 1, 0, 0, 0],
                       "test_acc_last": [0.78, 0.80, 0.77, 0.77, 0.95, 0.60, 0.70]})
    assert verdict_row(df, ["sym20", "sym60"]) == (
        "| **turn+ >= every baseline?** | ✓ +2.0 vs lp-gce | ✗ -10.0 vs unicon-lp |")


def test_paired_time_ratio_pairs_by_setting_and_seed():
    from turn_backend.bench.report import paired_time_ratio

    df = pd.DataFrame({"method": ["turn+", "fft-ce", "turn+", "fft-ce", "turn+"],
                       "setting": ["sym20", "sym20", "sym60", "sym60", "asym40"], "seed": [0, 0, 0, 0, 0],
                       "t_feat": [12.0, 10.0, 9.0, 10.0, 50.0]})
    assert sorted(paired_time_ratio(df, "turn+", "fft-ce")) == [pytest.approx(0.9), pytest.approx(1.2)]


# ----------------------------------------------------------------------------- specs


def test_parse_setting_and_method():
    assert bench.parse_setting("sym60") == ("symmetric", 0.6)
    assert bench.parse_setting("asym40") == ("asymmetric", 0.4)
    assert bench.parse_setting("inst40") == ("instance", 0.4)
    with pytest.raises(ValueError):
        bench.parse_setting("sym")
    assert bench.parse_method("turn") == ("turn", {})
    assert bench.parse_method("turn:tau=0.3,cleansing=once") == ("turn", {"tau": 0.3, "cleansing": "once"})
    assert bench.parse_method("dividemix-lp") == ("dividemix-lp", {})
    for bad in ("nope", "turn:colour=red", "cleanlab-fft:tau=0.5"):
        with pytest.raises(ValueError):
            bench.parse_method(bad)


def test_run_config_variant_options():
    from turn_backend.config import RunConfig

    turn, plus = RunConfig(method="turn"), RunConfig(method="turn+")
    assert turn.turn_option("balance") == "min" and plus.turn_option("balance") == "mean"
    assert turn.turn_option("cleansing") == "every" and turn.turn_option("relabel_confidence") is None
    assert RunConfig(method="turn", balance="mean").turn_option("balance") == "mean"
    assert plus.turn_option("lr_decay") == "none" and RunConfig(method="lp-gce").turn_option("lr_decay") is None
    for bad in ({"balance": "max"}, {"cleansing": "twice"}, {"relabel_confidence": 0.0},
                {"warmup_backbone_lr": -1.0}, {"lr_decay": "linear"}):
        with pytest.raises(ValueError):
            RunConfig(method="turn", **bad)


def test_unicon_selection_is_class_uniform():
    from turn_backend.methods.unicon_lp import uniform_select

    labels = np.repeat(np.arange(3), [10, 20, 30])
    jsd = np.random.default_rng(0).random(len(labels))
    mask = uniform_select(jsd, labels, 3)
    counts = np.bincount(labels[mask], minlength=3)
    assert counts.min() == counts.max() > 0  # the same number from every class
    for c in range(3):  # and the lowest-JSD ones of each class
        members = np.flatnonzero(labels == c)
        chosen = members[mask[members]]
        assert jsd[chosen].max() <= jsd[members[~mask[members]]].min()


def test_out_of_fold_probabilities_shape():
    from turn_backend.methods.cleanlab_fft import out_of_fold_probabilities

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    x = rng.normal(size=(60, 5)) + 3 * np.eye(3)[y].repeat(2, axis=1)[:, :5]
    p = out_of_fold_probabilities(x, y, seed=0)
    assert p.shape == (60, 3) and np.allclose(p.sum(1), 1)
    assert (p.argmax(1) == y).mean() > 0.8


# ----------------------------------------------------------------------------- end to end


def _args(tmp_path, methods=("turn", "lp-gce", "dividemix-lp", "cleanlab-fft"), settings=("sym60", "asym40"),
          small=False):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    argv = ["--out", str(tmp_path / "bench"), "--n-train", "200", "--n-test", "100", "--image-size", "32",
            "--settings", *settings, "--methods", *methods,
            "--lp-epochs", "3", "--fft-epochs", "1", "--seeds", "1", "--no-ablation", "--no-dev",
            "--device", "cpu", "--quiet", "--docs", str(tmp_path / "docs" / "benchmarks.md")]
    return parser.parse_args(argv + ([] if small else ["--no-small"]))


def test_bench_grid_end_to_end(tmp_path, monkeypatch, turn_cache_dir):
    monkeypatch.setenv("TURN_CACHE_DIR", str(turn_cache_dir))
    args = _args(tmp_path)
    assert bench.main(args) == 0
    out = tmp_path / "bench"
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 2 * 4  # settings x methods x seeds
    assert set(df["method"]) == {"turn", "lp-gce", "dividemix-lp", "cleanlab-fft"}
    assert set(df["setting"]) == {"sym60", "asym40"}
    for col in ("method", "noise_kind", "noise_rate", "seed", "test_acc_best", "test_acc_last",
                "precision_per_round", "recall_per_round", "f1_per_round", "purity_per_round",
                "final_precision", "final_recall", "final_f1", "final_purity",
                "seconds_lp", "seconds_gmm", "seconds_fft", "seconds_total"):
        assert col in df.columns, col
    assert df["test_acc_best"].between(0, 1).all()
    assert df["final_f1"].notna().all() and df["seconds_total"].gt(0).all()
    turn = df[df["method"] == "turn"].iloc[0]
    assert len(json.loads(turn["purity_per_round"])) == 1 and turn["n_clean"] > 0
    assert 0 <= json.loads(turn["f1_per_round"])[0] <= 1
    assert set(df[df["method"] == "cleanlab-fft"]["seconds_fft"]) != {0.0}
    # a finished cell keeps its results but not its resume checkpoint (disk over a full grid)
    turn_dir = Path(turn["run_dir"])
    assert (turn_dir / "metrics.json").exists() and (turn_dir / "rounds").is_dir()
    assert not (turn_dir / "checkpoints" / "last.pt").exists()
    md = (out / "results.md").read_text()
    assert "## Last-round test accuracy" in md and "## Best-round test accuracy" in md
    assert "| turn |" in md and "x FFT-CE" in md
    assert "## Small set" not in md  # --no-small
    assert "## Where TURN does not win" in md
    assert (out / "plots" / "accuracy_vs_time.png").exists()
    docs = tmp_path / "docs" / "benchmarks.md"
    assert docs.exists() and "bench/accuracy_vs_time.png" in docs.read_text()
    assert (tmp_path / "docs" / "bench" / "accuracy_vs_time.png").exists()
    # a second call reuses every finished cell and rebuilds the same table
    args = _args(tmp_path)
    assert bench.main(args) == 0
    again = pd.read_csv(out / "results.csv")
    assert list(again["test_acc_best"]) == list(df["test_acc_best"])
    assert "8 of the 8 cells had been finished by an earlier call" in (out / "results.md").read_text()


@pytest.mark.slow  # 8-11 s on 2 busy cores: in the full suite, not the fast tier
def test_bench_runs_the_small_two_class_set_beside_the_grid(tmp_path, monkeypatch, turn_cache_dir):
    monkeypatch.setenv("TURN_CACHE_DIR", str(turn_cache_dir))
    args = _args(tmp_path, methods=["lp-gce", "turn+"], settings=["sym20"], small=True)
    args.small_seeds = 2  # its own number of seeds; the grid keeps --seeds 1
    assert bench.main(args) == 0
    df = pd.read_csv(tmp_path / "bench" / "results.csv")
    small = df[df["group"] == "small"]
    assert sorted(small["setting"].unique()) == ["sym20", "sym40"] and set(small["method"]) == {"lp-gce", "turn+"}
    assert sorted(small["seed"].unique()) == [0, 1] and df[df["group"] == "grid"]["seed"].unique().tolist() == [0]
    assert (small["n_train"] == 400).all() and (df[df["group"] == "grid"]["n_train"] == 200).all()
    assert small["noise_rate_actual"].between(0.1, 0.5).all()  # sym noise on two classes flips to the other one
    md = (tmp_path / "bench" / "results.md").read_text()
    assert "## Small set: 400 images, two look-alike classes (T-shirt/top vs Shirt)" in md
    assert "tested on 200 per class; 2 seeds (`--small-seeds`" in md
    assert "**turn+ >= every baseline?**" in md and "## TURN+: relabelling, and the final classifier" in md


@pytest.mark.slow  # over 10 s on 2 busy cores: in the full suite, not the fast tier
def test_parallel_jobs_give_the_same_cells_as_one_process(tmp_path, monkeypatch, turn_cache_dir):
    monkeypatch.setenv("TURN_CACHE_DIR", str(turn_cache_dir))
    tables = []
    for jobs in ("1", "2"):
        args = _args(tmp_path / f"jobs{jobs}", methods=["lp-gce", "dividemix-lp"])
        args.jobs = int(jobs)
        assert bench.main(args) == 0
        df = pd.read_csv(tmp_path / f"jobs{jobs}" / "bench" / "results.csv")
        tables.append(df[["method", "setting", "seed", "test_acc_last", "final_f1"]])
    assert len(tables[0]) == 4
    pd.testing.assert_frame_equal(tables[0], tables[1])  # same rows, in the plan's order
    assert "2 cells ran at once" in (tmp_path / "jobs2" / "bench" / "results.md").read_text()


def test_time_limit_stops_new_cells_and_the_report_says_which_did_not_run(tmp_path, monkeypatch, turn_cache_dir):
    monkeypatch.setenv("TURN_CACHE_DIR", str(turn_cache_dir))
    for jobs in (1, 2):
        args = _args(tmp_path / f"jobs{jobs}", methods=["lp-gce", "lp-ce"])
        args.jobs, args.time_limit, args.no_throughput = jobs, 0.0, True  # past the limit at once
        assert bench.main(args) == 0
        out = tmp_path / f"jobs{jobs}" / "bench"
        df = pd.read_csv(out / "results.csv")
        assert df[["method", "setting"]].values.tolist() == [["lp-gce", "sym60"]]  # the first cell only
        md = (out / "results.md").read_text()
        assert "**Stopped at the time limit** (`--time-limit 0` min): 3 of the plan's 4 cells did not start" in md
        assert "lp-ce sym60 seed 0, lp-gce asym40 seed 0, lp-ce asym40 seed 0." in md
        assert json.loads((out / "bench.json").read_text())["not_started"][0] == ["lp-ce", "sym60", 0, "grid"]


def test_a_report_written_as_one_section_keeps_the_rest_of_the_docs(tmp_path, monkeypatch, turn_cache_dir):
    monkeypatch.setenv("TURN_CACHE_DIR", str(turn_cache_dir))
    docs = tmp_path / "docs" / "benchmarks.md"
    docs.parent.mkdir(parents=True)
    docs.write_text("# TURN Studio benchmark\n\nthe main grid\n\n## Last-round test accuracy\n\nCPU table\n")
    args = _args(tmp_path, methods=["lp-gce"], settings=["sym60"])
    args.docs_section, args.no_throughput = "Full scale on a GPU", True
    for _ in range(2):  # the second call replaces the section in place
        assert bench.main(args) == 0
        text = docs.read_text()
        assert text.startswith("# TURN Studio benchmark\n\nthe main grid\n\n## Last-round test accuracy\n\nCPU table")
        assert text.count("## Full scale on a GPU\n") == 1
        section = text.split("## Full scale on a GPU\n", 1)[1]
        assert "### Last-round test accuracy (%)" in section and "\n## " not in section
        assert "](bench/full-scale-on-a-gpu/accuracy_vs_time.png)" in section
    assert (tmp_path / "docs" / "bench" / "full-scale-on-a-gpu" / "accuracy_vs_time.png").exists()


def test_a_grid_report_keeps_the_sections_other_benchmark_commands_wrote():
    from turn_backend.bench.command import carry_other_sections

    old = ("# Benchmarks\n\nold intro\n\n## Best test accuracy\n\nold table\n\n"
           "## Detection: which labels are wrong\n\nF1 rows\n")
    new = "# Benchmarks\n\nnew intro\n\n## Best test accuracy\n\nnew table\n"
    out = carry_other_sections(old, new)
    assert "new table" in out and "old table" not in out  # the grid's own section is replaced
    assert out.count("## Detection: which labels are wrong") == 1 and "F1 rows" in out  # another's is kept
    assert carry_other_sections("", new) == new


def test_detection_grid_end_to_end_writes_its_table_as_a_docs_section(tmp_path, monkeypatch, turn_cache_dir):
    from turn_backend.bench import detection

    monkeypatch.setenv("TURN_CACHE_DIR", str(turn_cache_dir))
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\n## Detection: which labels are wrong\n\nthe CPU grid's table\n")
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path / "det"), "--n-train", "300", "--seeds", "1",
                              "--settings", "asym40", "--no-small", "--device", "cpu", "--quiet",
                              "--docs", str(docs), "--docs-section", "Detection at full scale"])
    assert detection.main(args) == 0
    df = pd.read_csv(tmp_path / "det" / "detection.csv")
    assert sorted(df["signal"]) == sorted(detection.SIGNALS) and (df["setting"] == "asym40").all()
    assert df["auroc"].between(0, 1).all() and df["noise_rate"].between(0.2, 0.5).all()
    text = docs.read_text()
    assert "the CPU grid's table" in text  # the main Detection section stays
    section = text.split("## Detection at full scale\n", 1)[1]
    assert "`turn bench --detection --n-train 300 --seeds 1 --device cpu`" in section
    assert "| **combined clean probability (tau 0.6)** |" in section
    cal = pd.read_csv(tmp_path / "det" / "calibration.csv")
    assert len(cal) == 1 and cal["est_noise"].between(0, 1).all() and cal["ece"].between(0, 1).all()
    assert cal["true_noise"].iloc[0] == pytest.approx(df["noise_rate"].iloc[0])
    calibration = text.split("## Calibration: the numbers a user sees without ground truth (Detection at full scale)\n",
                             1)[1]
    # the reliability check passed; 300 images of 10 classes are too few for more than rough estimates
    assert "| asym40 |" in calibration and "| 1/1, rough 1/1 |" in calibration
    # and again after a simulated review of the 75 least probably clean and a spot check of 75 (a quarter each)
    reviewed = calibration.split("### After a review", 1)[1]
    assert "| asym40 |" in reviewed
    decided = int(cal["rev_decisions"].iloc[0])
    assert 75 < decided <= 150 and f"| {decided} |" in reviewed
    assert cal["rev_low"].iloc[0] <= cal["rev_noise"].iloc[0] <= cal["rev_high"].iloc[0]
    # and the reference that knows the true labels
    reference = calibration.split("### What the features allow", 1)[1]
    assert "| asym40 |" in reference and cal["oracle_noise"].between(0, 1).all()
    assert (cal["ece_chance"] > 0).all()  # 300 images: a calibrated probability still shows some ECE
    # the reliability diagrams: a PNG beside the docs, linked from the section
    assert "![Reliability diagrams](images/calibration-reliability-detection-at-full-scale.png)" in calibration
    assert (tmp_path / "images" / "calibration-reliability-detection-at-full-scale.png").read_bytes()[:4] == b"\x89PNG"


def test_expected_calibration_error_by_hand():
    from turn_backend.bench.detection import expected_calibration_error

    # bins: {0.05: clean 0}, {0.15, 0.12: half clean}, {0.95: clean}:
    # (1 * 0.05 + 2 * |0.135 - 0.5| + 1 * 0.05) / 4 = 0.2075
    p = np.array([0.05, 0.15, 0.12, 0.95])
    assert expected_calibration_error(p, np.array([False, True, False, True])) == pytest.approx(0.2075)
    assert expected_calibration_error(np.full(4, 0.75), np.array([True, True, True, False])) == pytest.approx(0.0)


def test_chance_calibration_error_by_hand():
    from turn_backend.bench.detection import chance_calibration_error

    # four samples at p = 0.5, outcomes drawn from it: the bin's clean share is k/4 with k ~ Binomial(4, 1/2),
    # so E|0.5 - k/4| = 2 * (1/16) * 0.5 + 2 * (4/16) * 0.25 = 3/16
    assert chance_calibration_error(np.full(4, 0.5), draws=20_000) == pytest.approx(3 / 16, abs=0.005)
    assert chance_calibration_error(np.ones(50)) == 0.0  # sure and right: nothing left to chance
    assert chance_calibration_error(np.full(100_000, 0.5), draws=20) < 0.005  # vanishes with many samples


def test_oracle_clean_probability_by_hand():
    from turn_backend.bench.detection import oracle_clean_probability

    # true 0 0 1 1, given 0 1 1 1: the realised T[given, true] has columns true 0: (1/2, 1/2), true 1: (0, 1).
    # Sample 1 (given 1, P(true) = (0.8, 0.2)): T[1] * q = (0.4, 0.2), so P(label right) = 0.2 / 0.6 = 1/3;
    # sample 0 (given 0): T[0] * q = (0.4, 0), right for sure.
    q = np.array([[0.8, 0.2], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]])
    p = oracle_clean_probability(q, np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]))
    assert p == pytest.approx([1.0, 1 / 3, 0.7 / (0.15 + 0.7), 0.9 / (0.05 + 0.9)])


def test_the_oracle_reference_finds_every_flip_of_a_separable_set():
    from turn_backend.bench.detection import (
        oracle_calibration_row,
        oracle_clean_probability,
        oracle_true_class_probabilities,
    )

    rng = np.random.default_rng(0)
    true = np.repeat(np.arange(3), 100)
    features = (rng.normal(size=(3, 16)) * 8)[true] + rng.normal(size=(300, 16))
    labels = true.copy()
    flipped = rng.choice(300, 30, replace=False)
    labels[flipped] = (true[flipped] + 1) % 3
    noisy = labels != true
    p = oracle_clean_probability(oracle_true_class_probabilities(features, true, 3), true, labels)
    assert p[noisy].max() < 0.05 and p[~noisy].min() > 0.95
    row = oracle_calibration_row(p, noisy)
    assert row["oracle_noise"] == pytest.approx(0.1, abs=0.01) and row["oracle_ece"] < 0.02
    assert row["oracle_true_precision"] == 1.0 and row["oracle_true_recall"] == 1.0


def test_a_simulated_review_decides_the_lowest_and_the_spot_check():
    from turn_backend.bench.detection import simulated_review
    from turn_backend.review import spot_check_rows

    p = np.linspace(0, 1, 1000)
    rows, at_random = simulated_review(p, budget=100)
    spot = set(spot_check_rows(1000, 100))
    assert set(range(100)) <= set(rows)  # Review's order: the lowest clean probabilities
    assert spot <= set(rows) and len(rows) == len(set(range(100)) | spot)
    assert set(rows[at_random]) == spot
    assert len(simulated_review(p[:40], budget=100)[0]) <= 20  # at most a quarter of the set each


def _bench_args(tmp_path, *extra):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    parser.add_argument("--photos", action="store_true")
    parser.add_argument("--throughput", action="store_true")
    return parser.parse_args(["--out", str(tmp_path / "bench"), "--device", "cpu", "--quiet",
                              "--docs", str(tmp_path / "benchmarks.md"), *extra])


@pytest.mark.slow  # three tiny runs on 80 JPEGs
def test_photos_bench_scores_the_flags_of_each_run_against_the_true_labels(tmp_path, monkeypatch, turn_cache_dir):
    from turn_backend.bench.photos import SECTION_TITLE
    from turn_backend.bench.photos import main as photos_main

    monkeypatch.setenv("TURN_CACHE_DIR", str(turn_cache_dir))
    args = _bench_args(tmp_path, "--photos", "--n-train", "80", "--n-test", "20", "--image-size", "48",
                       "--lp-epochs", "2", "--fft-epochs", "1", "--batch-size", "32", "--settings", "sym40")
    assert photos_main(args) == 0
    truth = pd.read_csv(tmp_path / "bench" / "photos" / "manifest.csv")
    train = truth[truth["split"] == "train"]
    assert len(train) == 80 and (train["label"] != train["true_label"]).mean() == pytest.approx(0.4, abs=0.1)
    # the given label is the folder the file is in
    assert all(p.split("/")[1] == label for p, label in zip(train["path"], train["label"]))
    df = pd.read_csv(tmp_path / "bench" / "photos.csv")
    assert list(df["run"]) == ["scan (lp-gce)", "turn+", "turn+ at 48 px"]
    assert df["f1"].between(0, 1).all() and df["estimated_noise_rate"].between(0, 1).all()
    assert (df["true_noise_rate"] == (train["label"] != train["true_label"]).mean()).all()
    # each run trains on the manifest's own labels, with no synthetic noise on top
    samples = pd.read_parquet(tmp_path / "bench" / "runs" / "scan-lp-gce" / "samples.parquet")
    samples = samples[samples["split"] == "train"]
    classes = json.loads((tmp_path / "bench" / "runs" / "scan-lp-gce" / "classes.json").read_text())
    given = dict(zip(train["path"], train["label"]))
    assert [classes[y] for y in samples["given_label"]] == [given[p] for p in samples["sample_id"]]
    assert df["seconds_features"].gt(0).all() and df.loc[1:, "seconds_fft"].gt(0).all()
    docs = (tmp_path / "benchmarks.md").read_text()
    assert docs.startswith(SECTION_TITLE) and "| turn+ | 48 |" in docs


def test_throughput_bench_measures_jpeg_files_with_each_worker_count(tmp_path, monkeypatch, turn_cache_dir):
    from turn_backend.bench.throughput import FILE_SECTION
    from turn_backend.bench.throughput import main as throughput_main

    monkeypatch.setenv("TURN_CACHE_DIR", str(turn_cache_dir))
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    args = _bench_args(tmp_path, "--throughput", "--n-train", "16", "--image-size", "32", "--batch-size", "8")
    assert throughput_main(args) == 0
    result = json.loads((tmp_path / "bench" / "throughput.json").read_text())
    assert result["images"] == 16 and set(result["workers"]) == {"0", "1", "2"}
    assert all(0 < w["share_of_bare"] and 0 < w["forward_busy"] <= 1 for w in result["workers"].values())
    assert 0 < result["zero_worker_bound"] < 1 and result["load_ms_per_image"] > 0
    docs = (tmp_path / "benchmarks.md").read_text()
    assert docs.startswith(FILE_SECTION) and "| 2 |" in docs


def test_digits_set_is_the_unseen_data_of_the_calibration_bench():
    from turn_backend.bench.detection import digits_set

    every = digits_set()
    assert len(every) == 1797 and every.class_names == [str(d) for d in range(10)]
    assert every.arrays.shape == (1797, 8, 8) and every.arrays.max() == 255  # 16 grey levels spread over 0-255
    assert (every.labels == every.true_labels).all() and np.bincount(every.labels).min() > 170
    pair = digits_set((4, 9))
    assert pair.class_names == ["4", "9"] and set(pair.labels) == {0, 1}
    # the nines keep their pixels: the pair's second class is the full set's digit 9
    nines = every.arrays[every.labels == 9]
    assert np.array_equal(pair.arrays[pair.labels == 1], nines)
