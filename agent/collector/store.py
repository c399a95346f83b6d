"""The collector's metadata store: one interface, two engines.

:class:`Store` is everything the collector keeps besides bytes: devices, tokens, uploads in
progress with their committed offsets, verified segments (the rows completeness is computed
from), and small JSON documents other features file per device. Two engines implement it with
the same SQL (``agent/collector/sqlstore.py``):

    SQLite      the embedded default, ``<data>/collector.sqlite3`` (WAL, synchronous=FULL)
    PostgreSQL  shared by stateless nodes, ``postgresql://...`` (``agent/collector/pgstore.py``)

Schema changes are migrations in ``agent/collector/migrations.py``, each written once per
engine; :func:`open_store` applies the pending ones. How to add a table or a message to both
engines: ``docs/design-notes.md`` ("Collector store").

The store holds the truth about offsets: a PATCH's bytes are durable before the new offset is
committed, and :meth:`Store.set_offset` is a compare-and-set on the old offset, so two nodes
can never both advance the same upload.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

DB_NAME = "collector.sqlite3"
ROLES = ("device", "admin", "reader")
"""``reader``: read-only data access (list, download, export), for data engineers."""


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
    verified_at: float | None = None
    staging: str = ""
    """Where the committed bytes of an unfinished upload are, when not in local staging:
    JSON of the object-store staging (multipart id, parts, tail object)."""

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Upload:
        return cls(row["id"], row["device"], row["segment_id"], int(row["seq"]), row["sha256"],
                   int(row["length"]), int(row["offset"]), row["state"], row["created"],
                   row["expires"], row["backend"], row["object_key"], row["verified_at"],
                   row.get("staging") or "")

    def object_name(self) -> str:
        """``<device>/<device>-<seq:08d>.mcap`` from enrolled device id and integer seq."""
        return f"{self.device}/{self.device}-{self.seq:08d}.mcap"


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    created: float
    first_seq: int


@dataclass(frozen=True, slots=True)
class Token:
    token_hash: str
    role: str
    device: str | None


@dataclass(frozen=True, slots=True)
class Document:
    """A small JSON document filed under (kind, device, key); the newest put wins."""

    kind: str
    device: str
    key: str
    created: float
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Tombstone:
    """A sequence number that holds no data on purpose; it is never accepted again."""

    device: str
    seq: int
    segment_id: str
    sha256: str
    """What the segment hashed to ('' if neither side knew it)."""
    length: int | None
    reason: str
    """``wearer-discard`` or ``retention`` (agent.contract.TOMBSTONE_REASONS)."""
    request: str
    created: float
    purged: float | None = None
    """When every byte and everything derived was gone (None: the purge has not finished)."""

    def to_dict(self) -> dict[str, Any]:
        return {"segment_id": self.segment_id, "seq": self.seq, "sha256": self.sha256,
                "length": self.length, "reason": self.reason, "request": self.request,
                "created": self.created, "purged": self.purged}


@dataclass(frozen=True, slots=True)
class Export:
    """A cached export of one take (``agent/collector/exports.py``)."""

    device: str
    take: str
    format: str
    first_seq: int
    last_seq: int
    backend: str
    object_key: str
    length: int
    created: float


class Store(Protocol):
    """What the collector keeps about devices and uploads. Every method is one transaction."""

    engine: str
    """``sqlite`` or ``postgresql``."""

    def describe(self) -> str: ...

    def close(self) -> None: ...

    def schema_version(self) -> int: ...

    # --- devices and tokens ----------------------------------------------------------------
    def enroll(self, device_id: str, first_seq: int, token_hash: str, now: float) -> None:
        """Create or update the device and make ``token_hash`` its only device token."""
        ...

    def revoke(self, device_id: str) -> bool:
        """Remove the device's tokens; False if it had none."""
        ...

    def replace_token(self, role: str, token_hash: str, now: float) -> None:
        """Make ``token_hash`` the only token of a device-less ``role`` (admin, reader)."""
        ...

    def revoke_role(self, role: str) -> bool:
        """Remove the token of a device-less role; False if it had none."""
        ...

    def token(self, token_hash: str) -> Token | None: ...

    def device(self, device_id: str) -> Device | None: ...

    def devices(self) -> list[Device]: ...

    # --- uploads ---------------------------------------------------------------------------
    def upload(self, upload_id: str) -> Upload | None: ...

    def find_segment(self, device: str, segment_id: str) -> Upload | None:
        """The live (not expired) upload of this segment, if any."""
        ...

    def insert_upload(self, upload: Upload, meta: Mapping[str, Any]) -> bool:
        """Insert; False (and nothing written) if the segment already has a live upload."""
        ...

    def set_offset(self, upload_id: str, offset: int, state: str, expires: float | None,
                   *, expect: int | None = None, staging: str | None = None) -> bool:
        """Record a committed offset (and where its bytes are staged); with ``expect``, only
        if the stored offset is that."""
        ...

    def take_lease(self, upload_id: str, owner: str, until: float, now: float) -> bool:
        """Become the one writer of an upload until ``until`` (False: another holds it)."""
        ...

    def release_lease(self, upload_id: str, owner: str) -> None: ...

    def set_verified(self, upload_id: str, backend: str, key: str, now: float) -> None: ...

    def set_state(self, upload_id: str, state: str) -> None: ...

    def delete_upload(self, upload_id: str) -> None: ...

    def unfinished(self) -> list[Upload]:
        """Uploads still open or complete-but-unhashed."""
        ...

    def segment_rows(self, device: str) -> list[tuple[int, str, int]]:
        """(seq, state, length) of every upload of ``device`` (for completeness)."""
        ...

    def device_uploads(self, device: str) -> list[Upload]:
        """The live (not expired) uploads of ``device``, lowest seq first."""
        ...

    def verified_before(self, cutoff: float, limit: int = 1000) -> list[Upload]:
        """Verified uploads whose ``verified_at`` is before ``cutoff``, oldest first."""
        ...

    # --- tombstones (agent/collector/discard.py) -------------------------------------------
    def add_tombstone(self, t: Tombstone) -> Tombstone:
        """Insert, unless (device, seq) has one already; returns the one stored."""
        ...

    def tombstone(self, device: str, seq: int) -> Tombstone | None: ...

    def tombstones(self, device: str) -> list[Tombstone]:
        """Every tombstone of ``device``, lowest seq first."""
        ...

    def set_purged(self, device: str, seq: int, now: float) -> None: ...

    # --- cached exports (agent/collector/exports.py) ----------------------------------------
    def put_export(self, e: Export) -> None:
        """Insert or replace the export of (device, take, format)."""
        ...

    def export(self, device: str, take: str, fmt: str) -> Export | None: ...

    def exports_covering(self, device: str, seq: int) -> list[Export]:
        """Cached exports of ``device`` whose take contains ``seq``."""
        ...

    def exports_before(self, created: float) -> list[Export]:
        """Cached exports made before ``created`` (for retention)."""
        ...

    def delete_export(self, device: str, take: str, fmt: str) -> None: ...

    # --- enrollment codes (agent/collector/enrollment.py) ----------------------------------
    def add_code(self, code_hash: str, expires: float, now: float) -> None: ...

    def redeem_code(self, code_hash: str, device_id: str, token_hash: str, now: float) -> str:
        """In one transaction: check the code (``unknown``, ``revoked``, ``used``,
        ``expired``) and the device id (``taken``: enrolled with a live token), else mark
        the code used by ``device_id``, enroll the device with ``token_hash`` and return
        ``ok``. Nothing changes unless the answer is ``ok``."""
        ...

    def revoke_code(self, code_hash: str) -> bool: ...

    def device_has_token(self, device_id: str) -> bool: ...

    # --- documents -------------------------------------------------------------------------
    def put_document(self, kind: str, device: str, key: str, body: Mapping[str, Any],
                     now: float) -> None: ...

    def documents(self, kind: str, device: str | None = None) -> list[Document]: ...


def is_url(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://"))


def open_store(location: str | Path) -> Store:
    """A store at a PostgreSQL URL, or the SQLite file in a data directory (or at a path)."""
    text = str(location)
    if is_url(text):
        from agent.collector.pgstore import PostgresStore

        return PostgresStore(text)
    from agent.collector.sqlstore import SQLiteStore

    path = Path(text)
    return SQLiteStore(path / DB_NAME if path.is_dir() else path)
