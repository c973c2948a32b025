"""Review's "None of these" and "Ambiguous" under Streamlit's AppTest (issue 18, item 3): the
card buttons and their shortcuts, the decision on the card, the "Decided as" filter, More
like this, the ambiguous choice beside "Retrain with my decisions", and Export's counts."""

from __future__ import annotations

import json
from pathlib import Path

from helpers.apptest import app, card_ids, card_key, first_page_rows, metric, texts
from helpers.runs import SIMILAR, train_frame
from turn_backend.review import ReviewStore
from turn_backend.runfolder import RunFolder


def card_text(at, sample_id: str) -> str:
    card = at.main.get_by_key(f"card_{card_ids(at).index(sample_id)}")
    return "\n".join(m.value for m in card.markdown)


def test_none_and_ambiguous_buttons_record_show_filter_and_undo(tiny_run):
    rows = first_page_rows(tiny_run)
    s0, s1, s2 = (str(s) for s in rows["sample_id"].iloc[:3])
    store = ReviewStore(RunFolder(tiny_run).review_db)
    at = app("review", tiny_run)
    at.run()
    assert not at.exception
    assert "**N** none of these classes" in texts(at) and "**M** ambiguous" in texts(at)
    # the card the keyboard acts on carries the shortcuts; the others none
    assert at.button(key="none_0").proto.shortcut.upper() == "N"
    assert at.button(key="ambiguous_0").proto.shortcut.upper() == "M"
    assert not at.button(key="none_1").proto.shortcut
    at.button(key=card_key(at, "none", s0)).click().run()
    assert store.current()[s0] == ("none", None)
    at.button(key=card_key(at, "ambiguous", s1)).click().run()
    assert not at.exception
    assert store.current()[s1] == ("ambiguous", None)
    assert "None of these classes" in card_text(at, s0) and "Ambiguous" in card_text(at, s1)
    assert at.button(key=card_key(at, "none", s0)).proto.type == "primary"  # the decision shows on its button
    # now the next undecided card is next up
    assert at.button(key=card_key(at, "none", s2)).proto.shortcut.upper() == "N"

    at.pills(key="review_decided_filter").set_value(["none"]).run()
    assert not at.exception and card_ids(at) == [s0]
    at.pills(key="review_decided_filter").set_value(["ambiguous"]).run()
    assert card_ids(at) == [s1]
    at.pills(key="review_decided_filter").set_value(["none", "ambiguous"]).run()
    assert set(card_ids(at)) == {s0, s1}
    at.toggle(key="review_only_undecided").set_value(True).run()
    assert not at.exception and not card_ids(at) and "Only undecided" in texts(at)
    at.toggle(key="review_only_undecided").set_value(False).run()

    at.button(key="undo").click().run()  # reverts the ambiguous decision
    assert not at.exception
    assert store.current() == {s0: ("none", None)}
    assert card_ids(at) == [s0]
    at.pills(key="review_decided_filter").set_value([]).run()
    assert card_ids(at)[:3] == [s0, s1, s2]


def test_more_like_this_marks_none_and_ambiguous_in_bulk(audited_run):  # noqa: F811
    ids = train_frame(audited_run)["sample_id"].astype(str).tolist()
    store = ReviewStore(RunFolder(audited_run).review_db)
    at = app("review", audited_run)
    at.session_state["review_similar"] = SIMILAR[0]
    at.run()
    picks = [c for c in at.checkbox if c.key and c.key.startswith(f"similar_pick_{SIMILAR[0]}_")]
    for c in picks:
        if c.label not in {ids[i] for i in SIMILAR}:
            c.uncheck()
    at.run()
    at.button(key="similar_none").click().run()
    assert not at.exception
    assert {s for s, (a, _) in store.current().items() if a == "none"} == {ids[i] for i in SIMILAR}
    at.button(key="similar_ambiguous").click().run()
    assert all(store.current()[ids[i]] == ("ambiguous", None) for i in SIMILAR)
    assert "Ambiguous" in texts(at)  # the neighbours' captions say so
    at.button(key="undo").click().run()  # one undo reverts the whole batch
    assert all(store.current()[ids[i]] == ("none", None) for i in SIMILAR)


def test_retrain_button_takes_the_ambiguous_choice(tiny_run, runs_root, monkeypatch):
    from turn_backend import worker

    launched = []
    monkeypatch.setattr(worker, "launch", lambda run_dir, processes=1, env=None: launched.append(Path(run_dir)) or 1)
    rows = first_page_rows(tiny_run)
    at = app("review", tiny_run)
    at.run()
    assert at.button_group(key="review_retrain_ambiguous").value == "drop"  # the default
    at.button(key=card_key(at, "none", str(rows["sample_id"].iloc[0]))).click().run()
    at.button(key=card_key(at, "ambiguous", str(rows["sample_id"].iloc[1]))).click().run()
    at.button_group(key="review_retrain_ambiguous").set_value("keep").run()
    at.button(key="review_retrain").click().run()
    assert not at.exception
    new = runs_root / f"{tiny_run.name}-reviewed"
    assert launched == [new]
    source = json.loads((new / "config.json").read_text())["retrained_from"]
    assert (source["none"], source["ambiguous"], source["ambiguous_choice"]) == (1, 1, "keep")


def test_export_page_counts_none_and_ambiguous(tiny_run):
    rows = first_page_rows(tiny_run)
    store = ReviewStore(RunFolder(tiny_run).review_db)
    store.record(str(rows["sample_id"].iloc[0]), "none")
    store.record(str(rows["sample_id"].iloc[1]), "ambiguous")
    at = app("export", tiny_run)
    at.run()
    assert not at.exception
    assert metric(at, "None / ambiguous") == "1 / 1"
    assert "Download the decision log (2 rows" in "\n".join(b.label for b in at.get("download_button"))
