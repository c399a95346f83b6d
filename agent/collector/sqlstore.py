"""The :class:`~agent.collector.store.Store` in SQL, once for both engines, and its SQLite engine.

:class:`SqlStore` writes every query in the dialect both SQLite and PostgreSQL accept (``?``
placeholders, turned into ``%s`` for psycopg; ``"offset"`` quoted, since PostgreSQL reserves
it; ``INSERT ... ON CONFLICT``). An engine only provides :meth:`SqlStore._tx`, a transaction
that runs statements and returns rows as mappings. A query one engine cannot share is an
override in that engine's class.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from agent.collector.migrations import MIGRATIONS
from agent.collector.store import Device, Document, Export, Token, Tombstone, Upload
from agent.errors import CollectorError

Rows = list[dict[str, Any]]
Query = Callable[[str, Sequence[Any]], tuple[Rows, int]]
"""Runs one statement in the open transaction: (rows as dicts, rowcount)."""

_UPLOAD_COLUMNS = ('id, device, segment_id, seq, sha256, length, "offset", state, created, '
                   'expires, backend, object_key, verified_at, staging')


class SqlStore:
    engine = "sql"

    def _tx(self) -> AbstractContextManager[Query]:
        raise NotImplementedError

    def _q(self, sql: str, params: Sequence[Any] = ()) -> tuple[Rows, int]:
        with self._tx() as q:
            return q(sql, params)

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        return self._q(sql, params)[0]

    def _one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    def describe(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # --- migrations ------------------------------------------------------------------------
    def _migrate(self, q: Query) -> None:
        """Apply pending migrations inside the caller's transaction."""
        q("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
          "name TEXT NOT NULL, applied DOUBLE PRECISION NOT NULL)", ())
        rows, _ = q("SELECT MAX(version) AS v FROM schema_migrations", ())
        have = int(rows[0]["v"] or 0) if rows else 0
        for m in MIGRATIONS:
            if m.version <= have:
                continue
            for stmt in m.statements(self.engine):
                q(stmt, ())
            q("INSERT INTO schema_migrations (version, name, applied) VALUES (?, ?, ?)",
              (m.version, m.name, time.time()))

    def schema_version(self) -> int:
        row = self._one("SELECT MAX(version) AS v FROM schema_migrations")
        return int(row["v"] or 0) if row else 0

    # --- devices and tokens ----------------------------------------------------------------
    def enroll(self, device_id: str, first_seq: int, token_hash: str, now: float) -> None:
        with self._tx() as q:
            q("INSERT INTO devices (id, created, first_seq) VALUES (?, ?, ?) "
              "ON CONFLICT (id) DO UPDATE SET first_seq = excluded.first_seq",
              (device_id, now, first_seq))
            q("DELETE FROM tokens WHERE role = 'device' AND device = ?", (device_id,))
            q("INSERT INTO tokens (token_hash, role, device, created) "
              "VALUES (?, 'device', ?, ?)", (token_hash, device_id, now))

    def revoke(self, device_id: str) -> bool:
        return self._q("DELETE FROM tokens WHERE role = 'device' AND device = ?",
                       (device_id,))[1] > 0

    def replace_token(self, role: str, token_hash: str, now: float) -> None:
        with self._tx() as q:
            q("DELETE FROM tokens WHERE role = ?", (role,))
            q("INSERT INTO tokens (token_hash, role, device, created) VALUES (?, ?, NULL, ?)",
              (token_hash, role, now))

    def revoke_role(self, role: str) -> bool:
        return self._q("DELETE FROM tokens WHERE role = ? AND device IS NULL", (role,))[1] > 0

    def token(self, token_hash: str) -> Token | None:
        row = self._one("SELECT token_hash, role, device FROM tokens WHERE token_hash = ?",
                        (token_hash,))
        return Token(row["token_hash"], row["role"], row["device"]) if row else None

    def device(self, device_id: str) -> Device | None:
        row = self._one("SELECT id, created, first_seq FROM devices WHERE id = ?", (device_id,))
        return Device(row["id"], row["created"], int(row["first_seq"])) if row else None

    def devices(self) -> list[Device]:
        return [Device(r["id"], r["created"], int(r["first_seq"]))
                for r in self._rows("SELECT id, created, first_seq FROM devices ORDER BY id")]

    # --- uploads ---------------------------------------------------------------------------
    def upload(self, upload_id: str) -> Upload | None:
        row = self._one(f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE id = ?", (upload_id,))
        return Upload.from_row(row) if row else None

    def find_segment(self, device: str, segment_id: str) -> Upload | None:
        row = self._one(f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE device = ? AND "
                        f"segment_id = ? AND state != 'expired'", (device, segment_id))
        return Upload.from_row(row) if row else None

    def insert_upload(self, upload: Upload, meta: Mapping[str, Any]) -> bool:
        u = upload
        _, n = self._q(
            'INSERT INTO uploads (id, device, segment_id, seq, sha256, length, "offset", state, '
            "created, expires, backend, object_key, meta) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT DO NOTHING",
            (u.id, u.device, u.segment_id, u.seq, u.sha256, u.length, u.offset, u.state,
             u.created, u.expires, u.backend, u.object_key, json.dumps(dict(meta))))
        return n == 1

    def set_offset(self, upload_id: str, offset: int, state: str, expires: float | None,
                   *, expect: int | None = None, staging: str | None = None) -> bool:
        sets, params = 'UPDATE uploads SET "offset" = ?, state = ?, expires = ?', \
            [offset, state, expires]
        if staging is not None:
            sets += ", staging = ?"
            params.append(staging)
        where, params = " WHERE id = ?", [*params, upload_id]
        if expect is not None:
            where += ' AND "offset" = ?'
            params.append(expect)
        return self._q(sets + where, params)[1] == 1

    def take_lease(self, upload_id: str, owner: str, until: float, now: float) -> bool:
        _, n = self._q("UPDATE uploads SET lease = ?, lease_until = ? WHERE id = ? AND "
                       "(lease = '' OR lease = ? OR lease_until < ?)",
                       (owner, until, upload_id, owner, now))
        return n == 1

    def release_lease(self, upload_id: str, owner: str) -> None:
        self._q("UPDATE uploads SET lease = '', lease_until = 0 WHERE id = ? AND lease = ?",
                (upload_id, owner))

    def set_verified(self, upload_id: str, backend: str, key: str, now: float) -> None:
        self._q("UPDATE uploads SET state = 'verified', expires = NULL, verified_at = ?, "
                "backend = ?, object_key = ? WHERE id = ?", (now, backend, key, upload_id))

    def set_state(self, upload_id: str, state: str) -> None:
        self._q("UPDATE uploads SET state = ? WHERE id = ?", (state, upload_id))

    def delete_upload(self, upload_id: str) -> None:
        self._q("DELETE FROM uploads WHERE id = ?", (upload_id,))

    def unfinished(self) -> list[Upload]:
        return [Upload.from_row(r) for r in self._rows(
            f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE state IN ('open', 'complete')")]

    def segment_rows(self, device: str) -> list[tuple[int, str, int]]:
        return [(int(r["seq"]), r["state"], int(r["length"])) for r in self._rows(
            "SELECT seq, state, length FROM uploads WHERE device = ?", (device,))]

    def device_uploads(self, device: str) -> list[Upload]:
        return [Upload.from_row(r) for r in self._rows(
            f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE device = ? AND state != 'expired' "
            "ORDER BY seq", (device,))]

    def verified_before(self, cutoff: float, limit: int = 1000) -> list[Upload]:
        return [Upload.from_row(r) for r in self._rows(
            f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE state = 'verified' AND "
            "verified_at < ? ORDER BY verified_at LIMIT ?", (cutoff, limit))]

    # --- tombstones ------------------------------------------------------------------------
    @staticmethod
    def _tomb(r: Mapping[str, Any]) -> Tombstone:
        return Tombstone(r["device"], int(r["seq"]), r["segment_id"], r["sha256"],
                         None if r["length"] is None else int(r["length"]), r["reason"],
                         r["request"], r["created"], r["purged"])

    def add_tombstone(self, t: Tombstone) -> Tombstone:
        with self._tx() as q:
            q("INSERT INTO tombstones (device, seq, segment_id, sha256, length, reason, "
              "request, created) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
              (t.device, t.seq, t.segment_id, t.sha256, t.length, t.reason, t.request,
               t.created))
            rows, _ = q("SELECT * FROM tombstones WHERE device = ? AND seq = ?",
                        (t.device, t.seq))
            return self._tomb(rows[0])

    def tombstone(self, device: str, seq: int) -> Tombstone | None:
        row = self._one("SELECT * FROM tombstones WHERE device = ? AND seq = ?", (device, seq))
        return self._tomb(row) if row else None

    def tombstones(self, device: str) -> list[Tombstone]:
        return [self._tomb(r) for r in self._rows(
            "SELECT * FROM tombstones WHERE device = ? ORDER BY seq", (device,))]

    def set_purged(self, device: str, seq: int, now: float) -> None:
        self._q("UPDATE tombstones SET purged = ? WHERE device = ? AND seq = ?",
                (now, device, seq))

    # --- cached exports --------------------------------------------------------------------
    @staticmethod
    def _export(r: Mapping[str, Any]) -> Export:
        return Export(r["device"], r["take"], r["format"], int(r["first_seq"]),
                      int(r["last_seq"]), r["backend"], r["object_key"], int(r["length"]),
                      r["created"])

    def put_export(self, e: Export) -> None:
        self._q("INSERT INTO exports (device, take, format, first_seq, last_seq, backend, "
                "object_key, length, created) VALUES (?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT (device, take, format) DO UPDATE SET first_seq = "
                "excluded.first_seq, last_seq = excluded.last_seq, backend = excluded.backend, "
                "object_key = excluded.object_key, length = excluded.length, "
                "created = excluded.created",
                (e.device, e.take, e.format, e.first_seq, e.last_seq, e.backend, e.object_key,
                 e.length, e.created))

    def export(self, device: str, take: str, fmt: str) -> Export | None:
        row = self._one("SELECT * FROM exports WHERE device = ? AND take = ? AND format = ?",
                        (device, take, fmt))
        return self._export(row) if row else None

    def exports_covering(self, device: str, seq: int) -> list[Export]:
        return [self._export(r) for r in self._rows(
            "SELECT * FROM exports WHERE device = ? AND first_seq <= ? AND last_seq >= ? "
            "ORDER BY take, format", (device, seq, seq))]

    def exports_before(self, created: float) -> list[Export]:
        return [self._export(r) for r in self._rows(
            "SELECT * FROM exports WHERE created < ? ORDER BY created", (created,))]

    def delete_export(self, device: str, take: str, fmt: str) -> None:
        self._q("DELETE FROM exports WHERE device = ? AND take = ? AND format = ?",
                (device, take, fmt))

    # --- enrollment codes ------------------------------------------------------------------
    def add_code(self, code_hash: str, expires: float, now: float) -> None:
        self._q("INSERT INTO enrollment_codes (code_hash, created, expires) VALUES (?, ?, ?)",
                (code_hash, now, expires))

    def redeem_code(self, code_hash: str, device_id: str, token_hash: str, now: float) -> str:
        with self._tx() as q:
            rows, _ = q("SELECT expires, used_at, revoked FROM enrollment_codes "
                        "WHERE code_hash = ?", (code_hash,))
            if not rows:
                return "unknown"
            row = rows[0]
            if row["revoked"]:
                return "revoked"
            if row["used_at"] is not None:
                return "used"
            if row["expires"] <= now:
                return "expired"
            live, _ = q("SELECT 1 AS x FROM tokens WHERE role = 'device' AND device = ?",
                        (device_id,))
            if live:
                return "taken"
            _, n = q("UPDATE enrollment_codes SET used_at = ?, used_by = ? "
                     "WHERE code_hash = ? AND used_at IS NULL", (now, device_id, code_hash))
            if n != 1:
                return "used"
            known, _ = q("SELECT first_seq FROM devices WHERE id = ?", (device_id,))
            first = int(known[0]["first_seq"]) if known else 0
            q("INSERT INTO devices (id, created, first_seq) VALUES (?, ?, ?) "
              "ON CONFLICT (id) DO NOTHING", (device_id, now, first))
            q("INSERT INTO tokens (token_hash, role, device, created) "
              "VALUES (?, 'device', ?, ?)", (token_hash, device_id, now))
            return "ok"

    def revoke_code(self, code_hash: str) -> bool:
        return self._q("UPDATE enrollment_codes SET revoked = 1 WHERE code_hash = ? AND "
                       "used_at IS NULL AND revoked = 0", (code_hash,))[1] == 1

    def device_has_token(self, device_id: str) -> bool:
        return bool(self._rows("SELECT 1 AS x FROM tokens WHERE role = 'device' AND "
                               "device = ?", (device_id,)))

    # --- documents -------------------------------------------------------------------------
    def put_document(self, kind: str, device: str, key: str, body: Mapping[str, Any],
                     now: float) -> None:
        self._q("INSERT INTO documents (kind, device, key, created, body) VALUES (?,?,?,?,?) "
                "ON CONFLICT (kind, device, key) DO UPDATE SET created = excluded.created, "
                "body = excluded.body", (kind, device, key, now, json.dumps(dict(body))))

    def documents(self, kind: str, device: str | None = None) -> list[Document]:
        if device is None:
            rows = self._rows("SELECT * FROM documents WHERE kind = ? ORDER BY device, key",
                              (kind,))
        else:
            rows = self._rows("SELECT * FROM documents WHERE kind = ? AND device = ? "
                              "ORDER BY key", (kind, device))
        return [Document(r["kind"], r["device"], r["key"], r["created"], json.loads(r["body"]))
                for r in rows]


class SQLiteStore(SqlStore):
    """One SQLite connection shared by the server's threads behind a lock.

    WAL with ``synchronous=FULL``: a verified ack may let the device delete its copy, so the
    row must survive power loss. Other processes (``wearcap collector enroll``) may write the
    same file while the server runs; ``BEGIN IMMEDIATE`` plus a busy timeout orders them.
    """

    engine = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.RLock()
        try:
            self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute("PRAGMA busy_timeout=5000")
            with self._tx() as q:
                self._migrate(q)
        except sqlite3.Error as exc:
            raise CollectorError(f"{path}: cannot open the collector database: {exc}") from exc

    @contextmanager
    def _tx(self) -> Iterator[Query]:
        def q(sql: str, params: Sequence[Any]) -> tuple[Rows, int]:
            cur = self.conn.execute(sql, tuple(params))
            rows = [dict(r) for r in cur.fetchall()] if cur.description else []
            return rows, cur.rowcount

        with self.lock:
            if self.conn.in_transaction:  # nested: join the outer transaction
                yield q
                return
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield q
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def describe(self) -> str:
        return f"SQLite {self.path}"

    def close(self) -> None:
        with self.lock:
            self.conn.close()
