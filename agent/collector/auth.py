"""Device enrollment and bearer tokens.

A token is 32 random bytes (``wc_`` + URL-safe base64), shown once at enrollment. The
database keeps only its SHA-256: with that much entropy a slow hash adds nothing, and a
lookup by hash followed by :func:`hmac.compare_digest` checks it in constant time.

Roles: ``device`` (may touch only its own namespace), ``admin`` (enrolls devices over
HTTP, reads every completeness report, reads data) and ``reader`` (read-only data access for
data engineers: list, download, export; ``agent/collector/data.py``). Enrolling a device
again replaces its token; issuing a role token again replaces that role's token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from agent.collector.store import Store
from agent.collector.tus import TusError
from agent.contract import DEVICE_ID_PATTERN, SEQ_MAX, is_device_id, is_seq
from agent.errors import InputError

TOKEN_PREFIX = "wc_"
DATA_ROLES = ("admin", "reader")
"""Roles without a device: their token is issued by ``wearcap collector token --role``."""


@dataclass(frozen=True, slots=True)
class Principal:
    role: str
    device: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def can_read_data(self) -> bool:
        """Admin or reader: may list, download and export every device's data."""
        return self.role in ("admin", "reader")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def check_device_id(device_id: str) -> str:
    if not is_device_id(device_id):
        raise InputError(f"device id {device_id!r} must match {DEVICE_ID_PATTERN}")
    return device_id


def enroll(store: Store, device_id: str, *, first_seq: int = 0) -> str:
    """Enroll (or re-enroll) ``device_id``; returns its new token. Old tokens stop working."""
    check_device_id(device_id)
    if not is_seq(first_seq):
        raise InputError(f"first sequence number must be from 0 to {SEQ_MAX}")
    token = new_token()
    store.enroll(device_id, first_seq, hash_token(token), time.time())
    return token


def revoke(store: Store, device_id: str) -> bool:
    return store.revoke(device_id)


def role_token(store: Store, role: str) -> str:
    """Issue a new token of a device-less role (admin, reader), replacing any earlier one."""
    if role not in DATA_ROLES:
        raise InputError(f"role must be one of {', '.join(DATA_ROLES)}, not {role!r}")
    token = new_token()
    store.replace_token(role, hash_token(token), time.time())
    return token


def revoke_role(store: Store, role: str) -> bool:
    """Revoke the token of a device-less role; False if there was none."""
    return store.revoke_role(role)


def admin_token(store: Store) -> str:
    return role_token(store, "admin")


def devices(store: Store) -> list[tuple[str, int]]:
    return [(d.id, d.first_seq) for d in store.devices()]


def authenticate(store: Store, authorization: str | None) -> Principal:
    """``Authorization: Bearer <token>`` -> who is asking, or a 401."""
    challenge = {"WWW-Authenticate": 'Bearer realm="wearcap"'}
    if not authorization:
        raise TusError(401, "missing Authorization: Bearer token", challenge)
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 256:
        raise TusError(401, "Authorization must be 'Bearer <token>'", challenge)
    digest = hash_token(token)
    row = store.token(digest)
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        raise TusError(401, "unknown or revoked token", challenge)
    return Principal(row.role, row.device)
