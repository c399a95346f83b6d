"""The sync service's state: one SQLite table of segments, and the one table of transitions.

Durability: WAL with ``synchronous=FULL``. Every state transition (above all "the upload URL
is stored" before any byte is sent, and "verified" before retention may unlink the file) must
survive a power cut: with NORMAL a WAL commit can be rolled back by a power loss, and the
sync service would then create a second upload, or forget a verification and upload again.
FULL costs one fsync per commit; commits happen per chunk (MBs) and per transition, so the
SD-card write load stays small.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from agent.errors import SyncError

# The segment lifecycle, at a glance. ``uploaded`` = complete on a server that cannot confirm
# the SHA-256 (never evicted); ``rejected`` = refused for good (retried on the next start);
# ``missing`` = the sealed file vanished before verification (reported, never hidden);
# ``discarded`` = the wearer threw it away (a tombstone is kept; agent/sync/discards.py asks
# the collector to delete its copy): from any state, and for good.
TRANSITIONS: dict[str, frozenset[str]] = {
    "sealed":    frozenset({"uploading", "rejected", "missing", "discarded"}),
    "uploading": frozenset({"sealed", "uploaded", "verified", "rejected", "missing",
                            "discarded"}),
    "uploaded":  frozenset({"sealed", "verified", "rejected", "missing", "discarded"}),
    "rejected":  frozenset({"sealed", "missing", "discarded"}),
    "missing":   frozenset({"sealed", "discarded"}),
    "verified":  frozenset({"evicted", "discarded"}),
    "evicted":   frozenset({"discarded"}),
    "discarded": frozenset(),
}
STATES = tuple(TRANSITIONS)
PENDING = ("sealed", "uploading", "uploaded")
"""States the uploader still works on (oldest sequence number first)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS segments (
    id            TEXT PRIMARY KEY,
    seq           INTEGER NOT NULL,
    path          TEXT NOT NULL,
    size          INTEGER NOT NULL,
    sha256        TEXT,
    state         TEXT NOT NULL,
    upload_url    TEXT,
    upload_offset INTEGER NOT NULL DEFAULT 0,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    next_attempt  REAL NOT NULL DEFAULT 0,
    discovered_at REAL NOT NULL,
    verified_at   REAL,
    evicted_at    REAL
);
CREATE INDEX IF NOT EXISTS segments_state_seq ON segments (state, seq);
"""


class IllegalTransition(SyncError):
    def __init__(self, segment: str, src: str, dst: str) -> None:
        super().__init__(f"{segment}: illegal state transition {src} -> {dst}", segment=segment)
        self.src, self.dst = src, dst


@dataclass(frozen=True, slots=True)
class Segment:
    id: str
    seq: int
    path: str
    size: int
    sha256: str | None
    state: str
    upload_url: str | None
    upload_offset: int
    attempts: int
    last_error: str | None
    next_attempt: float
    discovered_at: float
    verified_at: float | None
    evicted_at: float | None


_COLS = ", ".join(Segment.__slots__)


class State:
    """Open (creating if needed) the state database at ``path``."""

    def __init__(self, path: str | Path, *, clock: object = time.time) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self.db = sqlite3.connect(str(self.path), isolation_level=None, timeout=30.0,
                                  check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def _now(self) -> float:
        return float(self._clock())  # type: ignore[operator]

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- reads

    def get(self, seg_id: str) -> Segment | None:
        row = self.db.execute(f"SELECT {_COLS} FROM segments WHERE id = ?", (seg_id,)).fetchone()
        return Segment(*row) if row else None

    def all(self) -> list[Segment]:
        rows = self.db.execute(f"SELECT {_COLS} FROM segments ORDER BY seq, id").fetchall()
        return [Segment(*r) for r in rows]

    def in_states(self, *states: str) -> list[Segment]:
        marks = ",".join("?" * len(states))
        rows = self.db.execute(f"SELECT {_COLS} FROM segments WHERE state IN ({marks}) "
                               "ORDER BY seq, id", states).fetchall()
        return [Segment(*r) for r in rows]

    def due(self, now: float) -> list[Segment]:
        """Pending segments whose next attempt is due, oldest first."""
        return [s for s in self.in_states(*PENDING) if s.next_attempt <= now]

    def counts(self) -> dict[str, tuple[int, int]]:
        """{state: (segments, bytes)} for every state."""
        out = {s: (0, 0) for s in STATES}
        for state, n, size in self.db.execute(
                "SELECT state, COUNT(*), COALESCE(SUM(size), 0) FROM segments GROUP BY state"):
            out[state] = (int(n), int(size))
        return out

    # -- writes

    def add(self, seg_id: str, seq: int, path: str, size: int) -> bool:
        """Record a newly discovered sealed segment; False if it was already known."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO segments (id, seq, path, size, state, discovered_at) "
            "VALUES (?, ?, ?, ?, 'sealed', ?)", (seg_id, seq, path, size, self._now()))
        return cur.rowcount == 1

    def transition(self, seg_id: str, dst: str, **fields: object) -> Segment:
        """Move a segment to ``dst`` (checked against TRANSITIONS), updating ``fields``."""
        if dst not in TRANSITIONS:
            raise ValueError(f"unknown state {dst!r}")
        with self._tx() as db:
            row = db.execute("SELECT state FROM segments WHERE id = ?", (seg_id,)).fetchone()
            if row is None:
                raise SyncError(f"{seg_id}: unknown segment", segment=seg_id)
            src = row[0]
            if dst not in TRANSITIONS[src]:
                raise IllegalTransition(seg_id, src, dst)
            if dst == "verified":
                fields.setdefault("verified_at", self._now())
            if dst == "evicted":
                fields.setdefault("evicted_at", self._now())
            self._update(db, seg_id, state=dst, **fields)
        seg = self.get(seg_id)
        assert seg is not None
        return seg

    def update(self, seg_id: str, **fields: object) -> None:
        """Bookkeeping that is not a transition (offset, hash, attempts, errors)."""
        if "state" in fields:
            raise ValueError("use transition() to change state")
        self._update(self.db, seg_id, **fields)

    @staticmethod
    def _update(db: sqlite3.Connection, seg_id: str, **fields: object) -> None:
        if not fields:
            return
        bad = set(fields) - set(Segment.__slots__)
        if bad:
            raise ValueError(f"unknown fields {sorted(bad)}")
        cols = ", ".join(f"{k} = ?" for k in fields)
        db.execute(f"UPDATE segments SET {cols} WHERE id = ?", (*fields.values(), seg_id))

    def retry_rejected(self) -> int:
        """On start: give segments refused in an earlier run another chance."""
        n = 0
        for seg in self.in_states("rejected"):
            self.transition(seg.id, "sealed", attempts=0, next_attempt=0.0, upload_url=None,
                            upload_offset=0)
            n += 1
        return n
