"""Several annotators per image (turn_backend.annotators): consensus, agreement, annotator
quality and confusion on hand-made cases, bad input, and the simulated annotators of the bench."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from turn_backend.annotators import AGGREGATORS, AnnotationError, aggregate, wide_to_long
from turn_backend.bench.annotators import PROFILES, simulate_annotators

# three items, three annotators; "c" disagrees once, "b" labelled only two items
LONG = pd.DataFrame({"item": [0, 0, 0, 1, 1, 1, 2, 2], "annotator": ["a", "b", "c", "a", "b", "c", "a", "c"],
                     "label": [0, 0, 1, 1, 1, 1, 2, 2]})


def test_majority_consensus_agreement_quality_and_confusion_by_hand():
    c = aggregate(LONG, 3, 3, "majority")
    assert c.label.tolist() == [0, 1, 2]
    np.testing.assert_allclose(c.agreement, [2 / 3, 1.0, 1.0])
    np.testing.assert_allclose(c.probs[0], [2 / 3, 1 / 3, 0.0])
    stats = c.annotators.set_index("annotator")
    assert stats.loc["b", "n_labels"] == 2 and stats.loc["c", "agreement"] == pytest.approx(2 / 3)
    # quality: mean posterior of their labels; c's label 1 on item 0 has 1/3
    assert stats.loc["c", "quality"] == pytest.approx((1 / 3 + 1 + 1) / 3)
    assert c.annotators["annotator"].iloc[-1] == "c"  # the weakest last
    np.testing.assert_array_equal(c.confusion["c"], [[0, 1, 0], [0, 1, 0], [0, 0, 1]])  # (consensus, theirs)


def test_wide_form_becomes_long_and_missing_labels_are_skipped():
    wide = pd.DataFrame({"path": ["x", "y"], "ann1": [0, 1], "ann2": [0, None]})
    long = wide_to_long(wide, ["ann1", "ann2"])
    assert long.to_dict("records") == [{"item": 0, "annotator": "ann1", "label": 0},
                                       {"item": 1, "annotator": "ann1", "label": 1},
                                       {"item": 0, "annotator": "ann2", "label": 0}]


@pytest.mark.parametrize("method", AGGREGATORS)
def test_every_aggregator_recovers_labels_and_ranks_simulated_annotators(method):
    rng = np.random.default_rng(0)
    true = rng.integers(0, 10, 1500)
    long = simulate_annotators(true, 10, {0: 6, 6: 0, 2: 4, 4: 2, 7: 9, 9: 7}, seed=0)
    pred_probs = np.full((len(true), 10), 0.05)
    pred_probs[np.arange(len(true)), true] = 0.55  # a fair classifier for CROWDLAB
    c = aggregate(long, len(true), 10, method, pred_probs=pred_probs)
    majority = aggregate(long, len(true), 10, "majority")
    assert (c.label == true).mean() >= (majority.label == true).mean() - 0.01
    assert (c.label == true).mean() > 0.9
    assert c.annotators["annotator"].iloc[0] == "careful" and c.annotators["annotator"].iloc[-1] == "careless"
    assert set(c.annotators["annotator"]) == set(PROFILES)


def test_bad_annotations_get_clear_errors():
    with pytest.raises(AnnotationError, match="outside 0..2"):
        aggregate(LONG.assign(label=[0, 0, 1, 1, 1, 1, 2, 5]), 3, 3)
    with pytest.raises(AnnotationError, match="no label from any annotator, e.g. item 3"):
        aggregate(LONG, 4, 3)
    with pytest.raises(AnnotationError, match="missing \\['annotator'\\]"):
        aggregate(LONG.drop(columns="annotator"), 3, 3)
    with pytest.raises(AnnotationError, match="unknown aggregator"):
        aggregate(LONG, 3, 3, "vote")
    with pytest.raises(AnnotationError, match="crowdlab needs pred_probs"):
        aggregate(LONG, 3, 3, "crowdlab")


def test_simulated_profiles_have_their_error_rates():
    true = np.random.default_rng(1).integers(0, 10, 20_000)
    long = simulate_annotators(true, 10, {0: 6, 6: 0}, seed=1)
    right = long["label"].to_numpy() == true[long["item"].to_numpy()]
    acc = pd.Series(right).groupby(long["annotator"].to_numpy()).mean()
    counts = long["annotator"].value_counts()
    assert acc["careful"] == pytest.approx(0.95, abs=0.01) and acc["careless"] == pytest.approx(0.70, abs=0.01)
    assert counts["half"] == pytest.approx(10_000, rel=0.03) and counts["careful"] == 20_000
    # the confuser swaps 40% of the two paired classes (a fifth of the images): 8% of its labels, plus 3% at random
    assert acc["confuser"] == pytest.approx(1 - 0.2 * 0.4 - 0.03 * (1 - 0.2 * 0.4), abs=0.01)
