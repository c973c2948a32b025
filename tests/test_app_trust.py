"""Numbers a user can act on without ground truth, in the app and the CLI: the estimated noise
rate, estimated precision / recall curves, the suggested tau, and the warning when the run's
model cannot judge its labels (a real run on labels with no information in them)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from app import ui
from app.ui import UNTRUSTED_FLAGS
from helpers.apptest import app, figure_array, metric
from helpers.cli import turn
from turn_backend.cli import flag_summary_lines
from turn_backend.detect import estimates as est
from turn_backend.runfolder import RunFolder


def metric_delta(at: AppTest, label: str) -> str:
    return next(m.delta for m in at.metric if m.label == label)


def errors(at: AppTest) -> str:
    return "\n".join(e.value for e in at.error)


@pytest.fixture
def shuffled_run(runs_root, shuffled_run_template) -> Path:
    dest = runs_root / shuffled_run_template[0].name
    shutil.copytree(shuffled_run_template[0], dest)
    return dest


def test_metrics_json_holds_the_estimates_and_they_match_the_final_probabilities(tiny_run):
    folder = RunFolder(tiny_run)
    m = folder.metrics()
    p = folder.final()["clean_prob"]

    combined = folder.load_detection(folder.final_dir).clean_prob
    assert m["estimated_noise_rate"]["rate"] == pytest.approx(1 - combined.mean(), abs=1e-6)
    assert m["estimated_noise_rate"]["low"] < m["estimated_noise_rate"]["rate"] < m["estimated_noise_rate"]["high"]
    assert m["suggested_tau"] == pytest.approx(est.suggest_tau(p, calibrated=combined))
    flagged = p <= m["tau"]
    assert m["estimated_precision"] == pytest.approx((1 - combined[flagged]).sum() / flagged.sum(), abs=1e-6)
    assert m["flags_reliable"] is True and m["flags_reliability"]["reasons"] == []


def test_threshold_estimates_stay_put_while_flagged_moves_and_the_suggestion_applies(tiny_run):
    m = RunFolder(tiny_run).metrics()
    at = app("threshold", tiny_run)
    at.run()
    assert not at.exception
    assert UNTRUSTED_FLAGS not in errors(at)
    # a tiny run: usable flags, but the page says its estimates are rough
    assert m["flags_reliability"]["images_per_class"] < est.MIN_IMAGES_PER_CLASS
    assert any("Rough estimates" in w.value and "images per class" in w.value for w in at.warning)
    noise = metric(at, "Estimated noise rate")
    assert noise == f"{m['estimated_noise_rate']['rate']:.1%}"
    flagged_before = metric(at, "Flagged")
    slider = at.slider(key="tau_slider_" + tiny_run.name)
    slider.set_value(0.2).run()
    assert metric(at, "Estimated noise rate") == noise  # an estimate, not the share flagged
    assert metric(at, "Flagged") != flagged_before
    # estimated and (this run has ground truth) true curves in one chart
    figures = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    sweep = next(f for f in figures if any(t.get("name") == "F1 (estimated)" for t in f["data"]))
    names = [t["name"] for t in sweep["data"]]
    assert "Precision (estimated)" in names and "Precision (true)" in names and "Recall (estimated)" in names
    # and the reliability diagram against the ground truth: the counting probability's bins, by hand
    reliability = next(f for f in figures if any(t.get("name") == "truth, the model's own" for t in f["data"]))
    truth = next(t for t in reliability["data"] if t["name"] == "truth, the model's own")
    folder = RunFolder(tiny_run)
    train = folder.samples().query("split == 'train'")
    bins = est.reliability_bins(folder.load_detection(folder.final_dir).clean_prob,
                                (train["given_label"] == train["true_label"]).to_numpy())
    np.testing.assert_allclose(figure_array(truth["y"]), bins[bins[:, 2] > 0, 1])
    assert metric_delta(at, "Precision (estimated)").startswith("true ")
    # the suggestion: the best estimated F1, one click away
    suggested = m["suggested_tau"]
    assert any(f"Suggested τ: **{suggested:.2f}**" in md.value for md in at.markdown)
    at.button(key="use_suggested_tau").click().run()
    assert not at.exception
    assert at.slider(key="tau_slider_" + tiny_run.name).value == pytest.approx(suggested)
    # a precision target moves the suggestion to the most flags that still reach it
    at.selectbox(key="suggest_by").set_value("precision ≥ 95%").run()
    assert not at.exception
    assert any(("Suggested τ" in md.value) for md in at.markdown) or any(
        "no τ reaches that estimated precision" in c.value for c in at.caption)


def test_classes_page_shows_expected_wrong_labels_per_class(tiny_run):
    at = app("classes", tiny_run)
    at.run()
    assert not at.exception
    table = next(d.value for d in at.dataframe if "expected_wrong" in d.value.columns)
    m = RunFolder(tiny_run).metrics()
    assert table["expected_wrong"].sum() == pytest.approx(m["estimated_noise_rate"]["rate"] * m["n_train"], rel=1e-3)


def test_the_cli_notes_rough_estimates_on_a_run_with_few_images_per_class(tiny_run):
    lines = flag_summary_lines(RunFolder(tiny_run).metrics())
    assert not any(line.startswith("WARNING") for line in lines)
    assert any(line.startswith("NOTE: with about") and "rough" in line for line in lines)


def test_a_run_whose_labels_carry_no_information_says_so_in_the_cli(shuffled_run_template):
    folder, result = shuffled_run_template
    assert "WARNING: these flags cannot be trusted" in result.stdout
    m = RunFolder(folder).metrics()
    assert m["flags_reliable"] is False and m["flags_reliability"]["reasons"] and m["suggested_tau"] is None
    status = turn("status", folder, timeout=120)
    assert json.loads(status.stdout)["metrics"]["flags_reliable"] is False  # stdout stays one JSON document
    assert json.loads(status.stdout)["review_check"] is None  # nothing reviewed
    assert "these flags cannot be trusted" in status.stderr


@pytest.mark.parametrize("name", ["threshold", "review", "runs", "classes", "noise"])
def test_a_run_whose_labels_carry_no_information_says_so_on_the_pages(shuffled_run, name):
    at = app(name, shuffled_run)
    at.run()
    assert not at.exception
    text = errors(at)
    assert UNTRUSTED_FLAGS in text and "Likely fixes:" in text
    if name == "threshold":
        assert any("No suggestion: these flags cannot be trusted" in c.value for c in at.caption)
        assert at.button(key="use_suggested_tau").disabled


def test_threshold_page_checks_the_estimates_against_the_review_decisions(tiny_run):
    from turn_backend.review import ReviewStore

    folder = RunFolder(tiny_run)
    at = app("threshold", tiny_run)
    at.run()
    assert not at.exception
    assert any("Decisions you make in Review" in c.value for c in at.caption)  # nothing decided yet

    samples = folder.samples()
    train = samples[samples["split"] == "train"].reset_index(drop=True)
    combined = folder.load_detection(folder.final_dir).clean_prob
    rows = np.argsort(combined)[:4]  # the four most suspect samples, as Review lists them first
    store = ReviewStore(folder.review_db)
    store.record(train["sample_id"][rows[0]], "keep")
    store.record(train["sample_id"][rows[1]], "keep")
    classes = int(samples["given_label"].max()) + 1
    store.record(train["sample_id"][rows[2]], "relabel", int((train["given_label"][rows[2]] + 1) % classes))
    store.record(train["sample_id"][rows[3]], "remove")  # fits no class as labelled: not counted
    at.run()
    assert not at.exception
    expected = float((1 - combined[rows[:3]]).sum())
    notes = [m.value for m in (*at.success, *at.warning) if "Your review" in m.value]
    assert len(notes) == 1
    assert "of the 3 samples you kept or relabelled" in notes[0] and f"expected {expected:.1f} wrong" in notes[0]
    assert "you relabelled 1 (33.3%" in notes[0]
    # the CLI says the same: `turn status` (its JSON on stdout, the words on stderr)
    status = turn("status", tiny_run, timeout=120)
    check = json.loads(status.stdout)["review_check"]
    assert check["n"] == 3 and check["found_wrong"] == 1 and check["expected_wrong"] == pytest.approx(expected)
    assert "review: of the 3 samples kept or relabelled" in status.stderr
    assert "1 were relabelled (33.3%" in status.stderr


class ReviewAsTheTruth:
    """A run's Review, decided as the ground truth has it: keep where the given label is true,
    else relabel to the true class."""

    def __init__(self, run: Path):
        from turn_backend.review import ReviewStore

        folder = RunFolder(run)
        samples = folder.samples()
        self.train = samples[samples["split"] == "train"].reset_index(drop=True)
        self.combined = folder.load_detection(folder.final_dir).clean_prob
        self.given, self.true = self.train["given_label"].to_numpy(), self.train["true_label"].to_numpy()
        self.store = ReviewStore(folder.review_db)

    def decide(self, rows) -> None:
        for r in rows:
            if self.given[r] == self.true[r]:
                self.store.record(self.train["sample_id"][r], "keep")
            else:
                self.store.record(self.train["sample_id"][r], "relabel", int(self.true[r]))

    def lowest_and_spot_check(self, lowest: int, spot: int) -> dict:
        """Decide the `lowest` least probably clean samples and a spot check of `spot`; the
        recalibration the pages should show (`est.calibrate_on_decisions`)."""
        from turn_backend.review import spot_check_rows

        low = np.argsort(self.combined)[:lowest]
        self.decide(low)
        self.store.extend_spot_check(len(self.train), spot)
        drawn = spot_check_rows(len(self.train), spot)
        self.decide(drawn)
        rows = np.union1d(low, drawn)
        return est.calibrate_on_decisions(self.combined, rows, self.given[rows] != self.true[rows],
                                          np.isin(rows, drawn))


def test_threshold_page_recalibrates_the_estimates_once_a_spot_check_is_decided(tiny_run):
    from turn_backend.review import spot_check_rows

    review = ReviewAsTheTruth(tiny_run)
    train, combined, given, true, store = review.train, review.combined, review.given, review.true, review.store

    # the 25 most suspect samples, as Review lists them first: not enough to recalibrate on
    lowest = np.argsort(combined)[:25]
    review.decide(lowest)
    at = app("threshold", tiny_run)
    at.run()
    assert not at.exception
    assert not [t for t in at.toggle if t.key == "calibrate_on_review"]
    notes = [m.value for m in (*at.success, *at.warning) if "Your review" in m.value]
    assert notes and ("more of a spot check" in notes[0] or "agree with your decisions" in notes[0])

    # a spot check of 30, decided: now the estimates are recalibrated on all 25 + 30 decisions
    store.extend_spot_check(len(train), 30)
    spot = spot_check_rows(len(train), 30)
    review.decide(spot)
    rows = np.union1d(lowest, spot)
    fit = est.calibrate_on_decisions(combined, rows, given[rows] != true[rows], np.isin(rows, spot))
    own = RunFolder(tiny_run).metrics()["estimated_noise_rate"]["rate"]
    assert abs(fit["noise_rate"]["rate"] - own) > 0.001  # the two estimates differ, so the page shows which it uses
    at.run()
    assert not at.exception
    toggle = at.toggle(key="calibrate_on_review")
    assert toggle.value and f"your {len(rows)} Review decisions" in toggle.label
    assert metric(at, "Estimated noise rate") == f"{100 * fit['noise_rate']['rate']:.1f}%"
    assert any(c.value.startswith("Estimated from the clean probabilities recalibrated") for c in at.caption)
    # tiny_run's estimates are rough (about 20 images per class): the caution says these are recalibrated
    assert recalibrated_caution(at, len(rows)) and not any("**Rough estimates.**" in w.value for w in at.warning)
    assert any("30 of 30 random samples kept or relabelled" in c.value for c in at.caption)
    toggle.set_value(False).run()
    assert not at.exception
    assert metric(at, "Estimated noise rate") == f"{100 * own:.1f}%"  # the model's own, as metrics.json has it
    assert any(w.value.startswith("**Rough estimates.**") for w in at.warning)

    # `turn status` recounts the same way, at the applied tau
    status = turn("status", tiny_run, timeout=120)
    calibrated = json.loads(status.stdout)["review_calibrated"]
    assert calibrated["decisions"] == len(rows) and calibrated["spot_check_decisions"] == 30
    assert calibrated["estimated_noise_rate"]["rate"] == pytest.approx(fit["noise_rate"]["rate"])
    assert f"calibrated on {len(rows)} review decisions: estimated noise rate" in status.stderr


def recalibrated_caution(at: AppTest, decisions: int) -> bool:
    """Whether the page says its rough estimates are recalibrated on the Review decisions, without
    the advice to decide a spot check (done)."""
    notes = [i.value for i in at.info if i.value.startswith(f"**Recalibrated on your {decisions} Review decisions.**")]
    return bool(notes) and all(est.ROUGH_ESTIMATES_ADVICE not in n for n in notes)


def test_classes_noise_and_runs_pages_count_with_the_estimates_recalibrated_on_review(tiny_run):
    fit = ReviewAsTheTruth(tiny_run).lowest_and_spot_check(25, 30)
    m = RunFolder(tiny_run).metrics()
    n, own = m["n_train"], m["estimated_noise_rate"]["rate"]
    assert abs(fit["noise_rate"]["rate"] - own) * n > 1  # the two counts differ by more than a label

    def classes_table(at: AppTest):
        return next(d.value for d in at.dataframe if "expected_wrong" in d.value.columns)

    at = app("classes", tiny_run)
    at.run()
    assert not at.exception
    toggle = at.toggle(key="classes_calibrate_on_review")
    assert toggle.value and f"your {fit['n']} Review decisions" in toggle.label
    calibrated = classes_table(at)
    assert calibrated["expected_wrong"].sum() == pytest.approx(fit["noise_rate"]["rate"] * n, rel=1e-6)
    assert any("recalibrated on your Review decisions" in c.value for c in at.caption)
    assert recalibrated_caution(at, fit["n"])
    toggle.set_value(False).run()
    assert not at.exception
    own_table = classes_table(at)
    assert own_table["expected_wrong"].sum() == pytest.approx(own * n, rel=1e-3)
    assert own_table["flagged"].tolist() == calibrated["flagged"].tolist()  # tau flags the run's own ranking

    at = app("noise", tiny_run)
    at.run()
    assert not at.exception
    assert at.toggle(key="noise_calibrate_on_review").value
    assert metric(at, "Estimated noise rate") == ui.fmt_pct(fit["noise_rate"]["rate"])
    assert metric(at, "Off-diagonal samples") == ui.fmt_int(round(fit["noise_rate"]["rate"] * n))
    assert recalibrated_caution(at, fit["n"])
    at.toggle(key="noise_calibrate_on_review").set_value(False).run()
    assert metric(at, "Estimated noise rate") == ui.fmt_pct(own)

    at = app("runs", tiny_run)
    at.run()
    assert not at.exception
    assert metric(at, "Est. noise") == ui.fmt_pct(fit["noise_rate"]["rate"])
    assert any(c.value == f"Est. noise recalibrated on your {fit['n']} Review decisions; the model's own: "
               f"{ui.fmt_pct(own)}." for c in at.caption)
    assert recalibrated_caution(at, fit["n"])

    # Review ranks by the model's own clean probability, and says where the recalibration counts
    at = app("review", tiny_run)
    at.run()
    assert not at.exception
    assert recalibrated_caution(at, fit["n"]) and not any("**Rough estimates.**" in w.value for w in at.warning)
    assert any("the order here stays the model's own" in i.value for i in at.info)


def test_pages_that_only_read_a_run_do_not_create_its_review_database(tiny_run):
    folder = RunFolder(tiny_run)
    assert not folder.review_db.exists()
    for name in ("runs", "classes", "noise", "export"):
        at = app(name, tiny_run)
        at.run()
        assert not at.exception, name
        assert not folder.review_db.exists(), f"the {name} page created {folder.review_db.name}"


def test_a_spot_check_puts_random_samples_in_review(tiny_run):
    from turn_backend.review import SPOT_CHECK_SIZE, ReviewStore, spot_check_rows

    folder = RunFolder(tiny_run)
    n_train = int((folder.samples()["split"] == "train").sum())
    at = app("threshold", tiny_run)
    at.run()
    assert at.button(key="open_spot_check").disabled  # nothing to review yet
    at.button(key="extend_spot_check").click().run()
    assert not at.exception
    size = min(SPOT_CHECK_SIZE, n_train)
    assert ReviewStore(folder.review_db).spot_check_size() == size
    assert any(f"0 of {size} random samples kept or relabelled" in c.value for c in at.caption)

    review = app("review", tiny_run)
    review.run()
    assert not review.exception
    pills = review.get("button_group")
    spot = next(p for p in pills if "Spot check" in str(p.proto))
    assert f"Spot check ({size})" in str(spot.proto)
    # a bigger spot check keeps the samples of the smaller one
    assert set(spot_check_rows(n_train, 10)) <= set(spot_check_rows(n_train, 20))
    # it never holds more than every training sample; then there is nothing to add
    assert ReviewStore(folder.review_db).extend_spot_check(n_train, by=10 * n_train) == n_train
    at.run()
    assert at.button(key="extend_spot_check").disabled
