"""Human review decisions, one SQLite database per run, written the moment they are made.

Every decision is a new row (a history per sample); the current decision of a sample is its
latest row that has not been undone. Actions: keep, relabel (with the new label), remove,
none (the image belongs to none of the classes) and ambiguous (it could be more than one).
WAL mode lets two browser tabs (two connections) write without losing each other's decisions.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path

import numpy as np

ACTIONS = ("keep", "relabel", "remove", "none", "ambiguous")


_DECISIONS_TABLE = """CREATE TABLE IF NOT EXISTS {name} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sample_id TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ({actions})),
    label INTEGER,
    time REAL NOT NULL,
    session TEXT,
    undone INTEGER NOT NULL DEFAULT 0
);"""
_COLUMNS = "id, sample_id, action, label, time, session, undone"
_SCHEMA = _DECISIONS_TABLE.format(name="decisions", actions=", ".join(f"'{a}'" for a in ACTIONS)) + """
CREATE INDEX IF NOT EXISTS decisions_sample ON decisions (sample_id, id);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _needs_migration(con: sqlite3.Connection) -> bool:
    """True where the decisions table's CHECK constraint does not allow every action (a
    database made before "none" and "ambiguous")."""
    row = con.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'decisions'").fetchone()
    return row is not None and any(f"'{a}'" not in row[0] for a in ACTIONS)


def _migrate(con: sqlite3.Connection) -> None:
    """Rebuild an older decisions table with the current CHECK constraint, keeping every row
    (ids, undone flags and the AUTOINCREMENT counter included), in one transaction: a
    failure leaves the old table as it was. Two connections may race here; the second
    finds the work done once it holds the write lock."""
    if not _needs_migration(con):
        return
    con.execute("BEGIN IMMEDIATE")
    try:
        if _needs_migration(con):
            seq = con.execute("SELECT seq FROM sqlite_sequence WHERE name = 'decisions'").fetchone()
            con.execute("DROP TABLE IF EXISTS decisions_migrating")
            con.execute(_DECISIONS_TABLE.format(name="decisions_migrating",
                                                actions=", ".join(f"'{a}'" for a in ACTIONS)))
            con.execute(f"INSERT INTO decisions_migrating ({_COLUMNS}) SELECT {_COLUMNS} FROM decisions")
            con.execute("DROP TABLE decisions")
            con.execute("ALTER TABLE decisions_migrating RENAME TO decisions")
            if seq is not None:  # the counter never goes back, so a new row never reuses an id
                now = con.execute("SELECT seq FROM sqlite_sequence WHERE name = 'decisions'").fetchone()
                con.execute("DELETE FROM sqlite_sequence WHERE name = 'decisions'")
                con.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('decisions', ?)",
                            (max(int(seq[0]), int(now[0]) if now else 0),))
            con.execute("CREATE INDEX IF NOT EXISTS decisions_sample ON decisions (sample_id, id)")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _enable_wal(con: sqlite3.Connection, timeout: float = 30.0) -> None:
    """Switch the database file to WAL (it stays so). SQLite answers "database is locked" at
    once, without waiting on the busy timeout, when two connections switch at the same
    moment (two tabs opening a run), so this waits and retries itself."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            con.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# the decisions that say whether a given label names the right class
VERDICT_ACTIONS = ("keep", "relabel")


def label_errors_found(decisions: dict[str, tuple[str, int | None]], sample_ids, given: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(rows, wrong): where the samples with a standing keep or relabel decision sit in
    `sample_ids` (a pandas Index of the training samples in row order), and whether each given
    label was found wrong (relabelled to another class). Remove, none and ambiguous say the image
    fits no class as labelled, not that its label names the wrong class: they are left out."""
    decided = {sid: d for sid, d in decisions.items() if d[0] in VERDICT_ACTIONS}
    rows = np.asarray(sample_ids.get_indexer(list(decided)), dtype=np.int64)
    known = rows >= 0
    rows = rows[known]
    actions = [d for d, ok in zip(decided.values(), known) if ok]
    wrong = np.array([a == "relabel" and label is not None and label != given[r]
                      for (a, label), r in zip(actions, rows)], dtype=bool)
    return rows, wrong


# A spot check: training samples drawn at random for a person to decide. Review lists the lowest
# clean probabilities first, and decisions on those alone say little about the unflagged samples;
# random ones let the estimates be checked and recalibrated across the whole range
# (`detect.estimates.calibrate_on_decisions`).
SPOT_CHECK_SIZE = 100  # samples one "spot check" adds
SPOT_CHECK_SEED = 17
SPOT_CHECK_SETTING = "spot_check_size"


def spot_check_rows(n_train: int, size: int, seed: int = SPOT_CHECK_SEED) -> np.ndarray:
    """The training positions of a spot check of `size` samples out of `n_train`: the first `size`
    of one fixed random order, so that a larger spot check keeps every sample of a smaller one."""
    size = max(0, min(int(size), int(n_train)))
    return np.random.default_rng(seed).permutation(int(n_train))[:size] if size else np.zeros(0, dtype=np.int64)


def spot_check_mask(n_train: int, size: int) -> np.ndarray:
    """(n_train,) bool: whether each training position is in the spot check of `size` (`spot_check_rows`)."""
    mask = np.zeros(int(n_train), dtype=bool)
    mask[spot_check_rows(n_train, size)] = True
    return mask


class ReviewStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with closing(self._connect()) as con:
            _enable_wal(con)
            _migrate(con)
            con.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        con.execute("PRAGMA synchronous=FULL")  # a decision survives a power cut once recorded
        return con

    def record(self, sample_id: str, action: str, label: int | None = None, session: str | None = None) -> int:
        """Store one decision; returns its row id."""
        if action not in ACTIONS:
            raise ValueError(f"unknown review action {action!r}; use one of {', '.join(ACTIONS)}")
        if action == "relabel" and label is None:
            raise ValueError("a relabel decision needs the new label")
        with closing(self._connect()) as con:
            cur = con.execute(
                "INSERT INTO decisions (sample_id, action, label, time, session) VALUES (?, ?, ?, ?, ?)",
                (str(sample_id), action, None if label is None else int(label), time.time(), session),
            )
            return int(cur.lastrowid)

    def record_many(self, decisions: list[tuple[str, str, int | None]], session: str | None = None) -> None:
        """Several decisions in one transaction (bulk accept): all are stored or none."""
        now = time.time()
        for _, action, label in decisions:
            if action not in ACTIONS or (action == "relabel" and label is None):
                raise ValueError(f"invalid decision {action!r} / {label!r}")
        with closing(self._connect()) as con:
            con.execute("BEGIN IMMEDIATE")
            con.executemany(
                "INSERT INTO decisions (sample_id, action, label, time, session) VALUES (?, ?, ?, ?, ?)",
                [(str(s), a, None if lab is None else int(lab), now, session) for s, a, lab in decisions],
            )
            con.execute("COMMIT")

    def undo_last(self, session: str | None = None) -> str | None:
        """Undo the most recent decision (of `session`, if given); returns its sample id."""
        with closing(self._connect()) as con:
            query = "SELECT id, sample_id FROM decisions WHERE undone = 0"
            params: tuple = ()
            if session is not None:
                query += " AND session = ?"
                params = (session,)
            row = con.execute(query + " ORDER BY id DESC LIMIT 1", params).fetchone()
            if row is None:
                return None
            con.execute("UPDATE decisions SET undone = 1 WHERE id = ?", (row[0],))
            return row[1]

    def current(self) -> dict[str, tuple[str, int | None]]:
        """sample id -> (action, label) of its latest decision that stands."""
        with closing(self._connect()) as con:
            rows = con.execute(
                """SELECT d.sample_id, d.action, d.label FROM decisions d
                   JOIN (SELECT sample_id, MAX(id) AS id FROM decisions WHERE undone = 0 GROUP BY sample_id) last
                   ON d.id = last.id"""
            ).fetchall()
        return {s: (a, lab) for s, a, lab in rows}

    def current_rows(self) -> list[dict]:
        """The standing decisions with their details, one dict per sample, oldest first:
        sample_id, action, label, time (Unix seconds), session. What the decision log and
        "retrain with my decisions" read."""
        with closing(self._connect()) as con:
            rows = con.execute(
                """SELECT d.sample_id, d.action, d.label, d.time, d.session FROM decisions d
                   JOIN (SELECT sample_id, MAX(id) AS id FROM decisions WHERE undone = 0 GROUP BY sample_id) last
                   ON d.id = last.id ORDER BY d.id"""
            ).fetchall()
        return [dict(zip(("sample_id", "action", "label", "time", "session"), r)) for r in rows]

    def history(self, sample_id: str) -> list[dict]:
        with closing(self._connect()) as con:
            rows = con.execute(
                "SELECT action, label, time, session, undone FROM decisions WHERE sample_id = ? ORDER BY id",
                (str(sample_id),),
            ).fetchall()
        return [dict(zip(("action", "label", "time", "session", "undone"), r)) for r in rows]

    def count(self) -> int:
        return len(self.current())

    def spot_check_size(self) -> int:
        """How many random samples the run's spot check holds (0: none asked for)."""
        return int(self.get_setting(SPOT_CHECK_SETTING, "0") or 0)

    def extend_spot_check(self, n_train: int, by: int = SPOT_CHECK_SIZE) -> int:
        """Add `by` random samples to the spot check (at most every training sample); returns its new size."""
        size = min(self.spot_check_size() + int(by), int(n_train))
        self.set_setting(SPOT_CHECK_SETTING, str(size))
        return size

    # Settings that belong to the run's review (the applied tau).
    def set_setting(self, key: str, value: str) -> None:
        with closing(self._connect()) as con:
            con.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, str(value)))

    def get_setting(self, key: str, default: str | None = None) -> str | None:
        with closing(self._connect()) as con:
            row = con.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return default if row is None else row[0]
