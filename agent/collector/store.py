"""Collector storage: the SQLite metadata database, local staging, and the local object backend.

Layout of a data directory (every path is built from an upload id the server drew at random,
or from a device id checked at enrollment plus an integer sequence number; never from raw
metadata text)::

    <data>/collector.sqlite3        devices, tokens, uploads (WAL, synchronous=FULL)
    <data>/staging/<upload_id>.part bytes of an unfinished upload (offset = committed length)
    <data>/objects/<device>/<device>-<seq:08d>.mcap   verified segments (local backend)

The database holds the truth about offsets: a PATCH's bytes are fsynced before the new offset
is committed, and on start :meth:`Database.reconcile` cuts any staging file back to its offset.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.digest import sha256_file
from agent.durable import fsync_dir
from agent.errors import CollectorError

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY, created REAL NOT NULL, first_seq INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY, role TEXT NOT NULL, device TEXT, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY, device TEXT NOT NULL, segment_id TEXT NOT NULL, seq INTEGER NOT NULL,
    sha256 TEXT NOT NULL, length INTEGER NOT NULL, offset INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL, created REAL NOT NULL, expires REAL, verified_at REAL,
    backend TEXT NOT NULL DEFAULT '', object_key TEXT NOT NULL DEFAULT '',
    meta TEXT NOT NULL DEFAULT '{}');
CREATE UNIQUE INDEX IF NOT EXISTS uploads_segment ON uploads(device, segment_id)
    WHERE state != 'expired';
CREATE INDEX IF NOT EXISTS uploads_device_seq ON uploads(device, seq);
"""
CHUNK = 1024 * 1024
DB_NAME = "collector.sqlite3"


@dataclass(frozen=True, slots=True)
class Upload:
    id: str
    device: str
    segment_id: str
    seq: int
    sha256: str
    length: int
    offset: int
    state: str
    created: float
    expires: float | None
    backend: str
    object_key: str

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Upload:
        return cls(row["id"], row["device"], row["segment_id"], row["seq"], row["sha256"],
                   row["length"], row["offset"], row["state"], row["created"], row["expires"],
                   row["backend"], row["object_key"])

    def object_name(self) -> str:
        """``<device>/<device>-<seq:08d>.mcap`` from enrolled device id and integer seq."""
        return f"{self.device}/{self.device}-{self.seq:08d}.mcap"


class Database:
    """One SQLite connection shared by the server's threads behind a lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a verified ack may let the device delete its copy; it must survive power loss.
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute("PRAGMA busy_timeout=5000")
            self.conn.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise CollectorError(f"{path}: cannot open the collector database: {exc}") from exc
        self.lock = threading.RLock()

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        with self.lock:
            return self.conn.execute(sql, params)

    def one(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Row | None:
        with self.lock:
            row: sqlite3.Row | None = self.conn.execute(sql, params).fetchone()
            return row

    def all(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self.lock:
            return list(self.conn.execute(sql, params).fetchall())

    # --- uploads ---------------------------------------------------------------------------
    def get(self, upload_id: str) -> Upload | None:
        row = self.one("SELECT * FROM uploads WHERE id = ?", (upload_id,))
        return Upload.from_row(row) if row else None

    def find_segment(self, device: str, segment_id: str) -> Upload | None:
        row = self.one("SELECT * FROM uploads WHERE device = ? AND segment_id = ? "
                       "AND state != 'expired'", (device, segment_id))
        return Upload.from_row(row) if row else None

    def insert(self, upload: Upload, meta: dict[str, Any]) -> None:
        self.execute(
            "INSERT INTO uploads (id, device, segment_id, seq, sha256, length, offset, state, "
            "created, expires, backend, object_key, meta) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (upload.id, upload.device, upload.segment_id, upload.seq, upload.sha256,
             upload.length, upload.offset, upload.state, upload.created, upload.expires,
             upload.backend, upload.object_key, json.dumps(meta)))

    def set_offset(self, upload_id: str, offset: int, state: str, expires: float | None) -> None:
        self.execute("UPDATE uploads SET offset = ?, state = ?, expires = ? WHERE id = ?",
                     (offset, state, expires, upload_id))

    def set_verified(self, upload_id: str, backend: str, key: str, now: float) -> None:
        self.execute("UPDATE uploads SET state = 'verified', expires = NULL, verified_at = ?, "
                     "backend = ?, object_key = ? WHERE id = ?", (now, backend, key, upload_id))

    def set_state(self, upload_id: str, state: str) -> None:
        self.execute("UPDATE uploads SET state = ? WHERE id = ?", (state, upload_id))

    def delete(self, upload_id: str) -> None:
        self.execute("DELETE FROM uploads WHERE id = ?", (upload_id,))

    def unfinished(self) -> list[Upload]:
        rows = self.all("SELECT * FROM uploads WHERE state IN ('open', 'complete')")
        return [Upload.from_row(r) for r in rows]

    def reconcile(self, staging: Staging) -> int:
        """After a restart: make every staging file agree with its committed offset."""
        fixed = 0
        for up in self.unfinished():
            size = staging.size(up.id)
            if size == up.offset:
                continue
            fixed += 1
            if size > up.offset:  # bytes of a PATCH that was never acknowledged
                staging.truncate(up.id, up.offset)
            else:  # the disk lost acknowledged bytes: ask the client for them again
                state = "open" if size < up.length else up.state
                self.set_offset(up.id, size, state, up.expires)
        return fixed


class Staging:
    """Local files of unfinished uploads, named by upload id only."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, upload_id: str) -> Path:
        return self.root / f"{upload_id}.part"

    def create(self, upload_id: str) -> None:
        fd = os.open(self.path(upload_id), os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o640)
        os.close(fd)
        fsync_dir(self.root)

    def size(self, upload_id: str) -> int:
        try:
            return self.path(upload_id).stat().st_size
        except FileNotFoundError:
            return 0

    def truncate(self, upload_id: str, size: int) -> None:
        p = self.path(upload_id)
        if not p.exists():
            p.touch()
        with open(p, "r+b") as f:
            f.truncate(size)
            os.fsync(f.fileno())

    def remove(self, upload_id: str) -> None:
        self.path(upload_id).unlink(missing_ok=True)

    def sha256(self, upload_id: str) -> str:
        return sha256_file(self.path(upload_id))


class Backend(Protocol):
    """Where verified segments end up. Staging is always local; backends take it from there."""

    name: str

    def store(self, upload: Upload, staged: Path) -> str:
        """Move the verified staged file into the backend; returns its key."""
        ...

    def read(self, key: str) -> Iterator[bytes]: ...

    def delete(self, key: str) -> None: ...

    def describe(self) -> str: ...


class LocalBackend:
    """Verified segments as files under ``<data>/objects``."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        p = (self.root / key).resolve()
        if self.root.resolve() not in p.parents:
            raise CollectorError(f"object key {key!r} escapes the data directory")
        return p

    def store(self, upload: Upload, staged: Path) -> str:
        key = upload.object_name()
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, dest)  # staged was fsynced when its last byte was acknowledged
        fsync_dir(dest.parent)
        fsync_dir(staged.parent)
        return key

    def read(self, key: str) -> Iterator[bytes]:
        with open(self._path(key), "rb") as f:
            while block := f.read(CHUNK):
                yield block

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def describe(self) -> str:
        return f"local directory {self.root}"
