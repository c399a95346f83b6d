"""Device enrollment and bearer tokens.

A token is 32 random bytes (``wc_`` + URL-safe base64), shown once at enrollment. The
database keeps only its SHA-256: with that much entropy a slow hash adds nothing, and a
lookup by hash followed by :func:`hmac.compare_digest` checks it in constant time.

Roles: ``device`` (may touch only its own namespace) and ``admin`` (enrolls devices over
HTTP, reads every completeness report). Enrolling a device again replaces its token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from agent.collector.store import Database
from agent.collector.tus import ID_RE, TusError
from agent.errors import InputError

TOKEN_PREFIX = "wc_"


@dataclass(frozen=True, slots=True)
class Principal:
    role: str
    device: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def check_device_id(device_id: str) -> str:
    if not ID_RE.fullmatch(device_id) or ".." in device_id:
        raise InputError(f"device id {device_id!r} must match {ID_RE.pattern}")
    return device_id


def enroll(db: Database, device_id: str, *, first_seq: int = 0) -> str:
    """Enroll (or re-enroll) ``device_id``; returns its new token. Old tokens stop working."""
    check_device_id(device_id)
    if first_seq < 0:
        raise InputError("first sequence number must be >= 0")
    token = new_token()
    now = time.time()
    with db.lock:
        db.conn.execute("BEGIN IMMEDIATE")
        try:
            db.conn.execute(
                "INSERT INTO devices (id, created, first_seq) VALUES (?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET first_seq = excluded.first_seq",
                (device_id, now, first_seq))
            db.conn.execute("DELETE FROM tokens WHERE role = 'device' AND device = ?",
                            (device_id,))
            db.conn.execute("INSERT INTO tokens (token_hash, role, device, created) "
                            "VALUES (?, 'device', ?, ?)", (hash_token(token), device_id, now))
            db.conn.execute("COMMIT")
        except BaseException:
            db.conn.execute("ROLLBACK")
            raise
    return token


def revoke(db: Database, device_id: str) -> bool:
    cur = db.execute("DELETE FROM tokens WHERE role = 'device' AND device = ?", (device_id,))
    return cur.rowcount > 0


def admin_token(db: Database) -> str:
    """Issue a new admin token, replacing any earlier one."""
    token = new_token()
    with db.lock:
        db.conn.execute("BEGIN IMMEDIATE")
        db.conn.execute("DELETE FROM tokens WHERE role = 'admin'")
        db.conn.execute("INSERT INTO tokens (token_hash, role, device, created) "
                        "VALUES (?, 'admin', NULL, ?)", (hash_token(token), time.time()))
        db.conn.execute("COMMIT")
    return token


def devices(db: Database) -> list[tuple[str, int]]:
    return [(r["id"], r["first_seq"]) for r in db.all("SELECT id, first_seq FROM devices "
                                                       "ORDER BY id")]


def authenticate(db: Database, authorization: str | None) -> Principal:
    """``Authorization: Bearer <token>`` -> who is asking, or a 401."""
    challenge = {"WWW-Authenticate": 'Bearer realm="wearcap"'}
    if not authorization:
        raise TusError(401, "missing Authorization: Bearer token", challenge)
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 256:
        raise TusError(401, "Authorization must be 'Bearer <token>'", challenge)
    digest = hash_token(token)
    row = db.one("SELECT token_hash, role, device FROM tokens WHERE token_hash = ?", (digest,))
    if row is None or not hmac.compare_digest(row["token_hash"], digest):
        raise TusError(401, "unknown or revoked token", challenge)
    return Principal(row["role"], row["device"])
