"""The review writer for the two-tabs-in-two-processes test: a module of its own so that
multiprocessing can import it in the child processes."""

from __future__ import annotations


def write_decisions(db: str, session: str, samples: list[str], n: int, undo_every: int, start, out) -> None:
    """One "browser tab" in its own process: `n` relabel decisions with labels unique to this
    writer (base + k), spread over `samples`, undoing its own last decision every
    `undo_every` decisions. Waits on `start` so that the writers really interleave; puts
    the labels it undid on `out`."""
    from turn_backend.review import ReviewStore

    store = ReviewStore(db)
    base = int(session.rsplit("-", 1)[1]) * 10_000
    start.wait()
    undone = []
    for k in range(n):
        store.record(samples[k % len(samples)], "relabel", base + k, session=session)
        if undo_every and k % undo_every == undo_every - 1:
            store.undo_last(session)
            undone.append(base + k)
    out.put((session, undone))
