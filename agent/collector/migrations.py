"""Schema migrations of the collector store, each written once per engine, side by side.

Append a :class:`Migration` with the next version; never edit one that has shipped. The
store applies pending migrations in order at open (PostgreSQL: in one transaction under an
advisory lock, so nodes starting together do not race). ``schema_migrations`` records what ran.

Version 1 is the schema the collector had before migrations existed (``IF NOT EXISTS``
everywhere), so an existing SQLite data directory upgrades in place.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sqlite: tuple[str, ...]
    postgresql: tuple[str, ...]

    def statements(self, engine: str) -> tuple[str, ...]:
        return self.sqlite if engine == "sqlite" else self.postgresql


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1, "devices, tokens, uploads",
        sqlite=(
            "CREATE TABLE IF NOT EXISTS devices (id TEXT PRIMARY KEY, created REAL NOT NULL, "
            "first_seq INTEGER NOT NULL DEFAULT 0)",
            "CREATE TABLE IF NOT EXISTS tokens (token_hash TEXT PRIMARY KEY, role TEXT NOT NULL, "
            "device TEXT, created REAL NOT NULL)",
            "CREATE TABLE IF NOT EXISTS uploads (id TEXT PRIMARY KEY, device TEXT NOT NULL, "
            "segment_id TEXT NOT NULL, seq INTEGER NOT NULL, sha256 TEXT NOT NULL, "
            "length INTEGER NOT NULL, offset INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL, "
            "created REAL NOT NULL, expires REAL, verified_at REAL, "
            "backend TEXT NOT NULL DEFAULT '', object_key TEXT NOT NULL DEFAULT '', "
            "meta TEXT NOT NULL DEFAULT '{}')",
            "CREATE UNIQUE INDEX IF NOT EXISTS uploads_segment ON uploads(device, segment_id) "
            "WHERE state != 'expired'",
            "CREATE INDEX IF NOT EXISTS uploads_device_seq ON uploads(device, seq)",
        ),
        postgresql=(
            "CREATE TABLE devices (id TEXT PRIMARY KEY, created DOUBLE PRECISION NOT NULL, "
            "first_seq BIGINT NOT NULL DEFAULT 0)",
            "CREATE TABLE tokens (token_hash TEXT PRIMARY KEY, role TEXT NOT NULL, "
            "device TEXT, created DOUBLE PRECISION NOT NULL)",
            'CREATE TABLE uploads (id TEXT PRIMARY KEY, device TEXT NOT NULL, '
            'segment_id TEXT NOT NULL, seq BIGINT NOT NULL, sha256 TEXT NOT NULL, '
            'length BIGINT NOT NULL, "offset" BIGINT NOT NULL DEFAULT 0, state TEXT NOT NULL, '
            'created DOUBLE PRECISION NOT NULL, expires DOUBLE PRECISION, '
            'verified_at DOUBLE PRECISION, backend TEXT NOT NULL DEFAULT \'\', '
            'object_key TEXT NOT NULL DEFAULT \'\', meta TEXT NOT NULL DEFAULT \'{}\')',
            "CREATE UNIQUE INDEX uploads_segment ON uploads(device, segment_id) "
            "WHERE state != 'expired'",
            "CREATE INDEX uploads_device_seq ON uploads(device, seq)",
        ),
    ),
    Migration(
        2, "documents, token index",
        sqlite=(
            "CREATE TABLE documents (kind TEXT NOT NULL, device TEXT NOT NULL, "
            "key TEXT NOT NULL, created REAL NOT NULL, body TEXT NOT NULL, "
            "PRIMARY KEY (kind, device, key))",
            "CREATE INDEX tokens_role_device ON tokens(role, device)",
            "CREATE INDEX uploads_state ON uploads(state, verified_at)",
        ),
        postgresql=(
            "CREATE TABLE documents (kind TEXT NOT NULL, device TEXT NOT NULL, "
            "key TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, body TEXT NOT NULL, "
            "PRIMARY KEY (kind, device, key))",
            "CREATE INDEX tokens_role_device ON tokens(role, device)",
            "CREATE INDEX uploads_state ON uploads(state, verified_at)",
        ),
    ),
    Migration(
        3, "enrollment codes",
        sqlite=(
            "CREATE TABLE enrollment_codes (code_hash TEXT PRIMARY KEY, created REAL NOT NULL, "
            "expires REAL NOT NULL, used_at REAL, used_by TEXT, "
            "revoked INTEGER NOT NULL DEFAULT 0)",
        ),
        postgresql=(
            "CREATE TABLE enrollment_codes (code_hash TEXT PRIMARY KEY, "
            "created DOUBLE PRECISION NOT NULL, expires DOUBLE PRECISION NOT NULL, "
            "used_at DOUBLE PRECISION, used_by TEXT, revoked INTEGER NOT NULL DEFAULT 0)",
        ),
    ),
    Migration(
        4, "uploads staged in the object store, and the lease of the node writing one",
        sqlite=(
            "ALTER TABLE uploads ADD COLUMN staging TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE uploads ADD COLUMN lease TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE uploads ADD COLUMN lease_until REAL NOT NULL DEFAULT 0",
        ),
        postgresql=(
            "ALTER TABLE uploads ADD COLUMN staging TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE uploads ADD COLUMN lease TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE uploads ADD COLUMN lease_until DOUBLE PRECISION NOT NULL DEFAULT 0",
        ),
    ),
    Migration(
        5, "tombstones: sequence numbers that hold no data on purpose (discard, retention)",
        sqlite=(
            "CREATE TABLE tombstones (device TEXT NOT NULL, seq INTEGER NOT NULL, "
            "segment_id TEXT NOT NULL, sha256 TEXT NOT NULL DEFAULT '', "
            "length INTEGER, reason TEXT NOT NULL, request TEXT NOT NULL DEFAULT '', "
            "created REAL NOT NULL, purged REAL, PRIMARY KEY (device, seq))",
        ),
        postgresql=(
            "CREATE TABLE tombstones (device TEXT NOT NULL, seq BIGINT NOT NULL, "
            "segment_id TEXT NOT NULL, sha256 TEXT NOT NULL DEFAULT '', "
            "length BIGINT, reason TEXT NOT NULL, request TEXT NOT NULL DEFAULT '', "
            "created DOUBLE PRECISION NOT NULL, purged DOUBLE PRECISION, "
            "PRIMARY KEY (device, seq))",
        ),
    ),
    Migration(
        6, "exports cached in the object backend, by the seq range of their take",
        sqlite=(
            "CREATE TABLE exports (device TEXT NOT NULL, take TEXT NOT NULL, "
            "format TEXT NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, "
            "backend TEXT NOT NULL, object_key TEXT NOT NULL, length INTEGER NOT NULL, "
            "created REAL NOT NULL, PRIMARY KEY (device, take, format))",
            "CREATE INDEX exports_range ON exports(device, first_seq, last_seq)",
        ),
        postgresql=(
            "CREATE TABLE exports (device TEXT NOT NULL, take TEXT NOT NULL, "
            "format TEXT NOT NULL, first_seq BIGINT NOT NULL, last_seq BIGINT NOT NULL, "
            "backend TEXT NOT NULL, object_key TEXT NOT NULL, length BIGINT NOT NULL, "
            "created DOUBLE PRECISION NOT NULL, PRIMARY KEY (device, take, format))",
            "CREATE INDEX exports_range ON exports(device, first_seq, last_seq)",
        ),
    ),
)


def check(migrations: tuple[Migration, ...] = MIGRATIONS) -> None:
    """Versions are 1, 2, 3, ... and every migration has both engines' statements."""
    for i, m in enumerate(migrations, start=1):
        if m.version != i or not m.sqlite or not m.postgresql:
            raise AssertionError(f"migration {m.version} ({m.name}) is out of order or "
                                 f"lacks an engine")


LATEST = MIGRATIONS[-1].version
