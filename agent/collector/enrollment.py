"""One-time enrollment codes: how a technician provisions a rig without handling a token.

An admin issues a code (``wearcap collector code --expires 24h``); the rig redeems it once,
with the device id it wants (``wearcap provision --code ...``), and gets its long-lived token
back over that one request. A code is single-use, expires, and can be revoked before use.
The store keeps only the code's SHA-256 (60 random bits, typed by hand: 12 characters of
Crockford base32 in three groups).

A device id already enrolled with a live token is a collision and is refused: to re-provision
a rig after an SD-card swap, revoke its old identity first (``wearcap collector revoke ID``),
then redeem a new code with the same id; its history and sequence numbers carry on.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass

from agent.collector import auth
from agent.collector.store import Store
from agent.errors import InputError

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U
CODE_GROUPS = 3
GROUP_LEN = 4
MAX_EXPIRES = 30 * 86400.0

REFUSALS = {
    "unknown": "this enrollment code is not known to the collector (check it was typed "
               "right, or ask for a new one: wearcap collector code --expires 24h)",
    "used": "this enrollment code was already used; codes are single-use: ask for a new "
            "one (wearcap collector code --expires 24h)",
    "expired": "this enrollment code has expired: ask for a new one (wearcap collector "
               "code --expires 24h)",
    "revoked": "this enrollment code was revoked: ask for a new one (wearcap collector code "
               "--expires 24h)",
    "taken": "device id {device} is already enrolled and in use: pick another id, or, when "
             "re-provisioning this rig (new SD card), revoke its old identity first: "
             "wearcap collector revoke {device}",
}


def new_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_GROUPS * GROUP_LEN))
    return "-".join(raw[i:i + GROUP_LEN] for i in range(0, len(raw), GROUP_LEN))


def normalize(code: str) -> str:
    """What a technician typed, as issued: case, spaces and dashes do not matter; O/I/L are
    read as 0/1/1 (Crockford)."""
    text = re.sub(r"[\s-]", "", code.upper()).translate(str.maketrans("OIL", "011"))
    return "-".join(text[i:i + GROUP_LEN] for i in range(0, len(text), GROUP_LEN))


def code_hash(code: str) -> str:
    return hashlib.sha256(normalize(code).encode()).hexdigest()


def parse_duration(text: str) -> float:
    """``24h``, ``90m``, ``2d``, ``3600s`` or plain seconds -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not m:
        raise InputError(f"--expires must be a duration like 24h, 90m or 2d, got {text!r}")
    seconds = float(m[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]]
    if not 0 < seconds <= MAX_EXPIRES:
        raise InputError(f"--expires must be more than 0 and at most 30d, got {text!r}")
    return seconds


def issue(store: Store, expires_seconds: float, now: float | None = None) -> tuple[str, float]:
    """A new code and when it expires (unix time)."""
    now = time.time() if now is None else now
    code = new_code()
    store.add_code(code_hash(code), now + expires_seconds, now)
    return code, now + expires_seconds


def revoke(store: Store, code: str) -> bool:
    return store.revoke_code(code_hash(code))


@dataclass(frozen=True, slots=True)
class Enrolled:
    device_id: str
    token: str
    next_seq: int
    """The rig's sequence floor: no segment it records may have a smaller seq."""


class Refused(Exception):
    def __init__(self, why: str, device: str) -> None:
        self.why = why
        super().__init__(REFUSALS[why].format(device=device))


def sequence_floor(store: Store, device_id: str) -> int:
    """One past the highest seq the collector knows for the device (or its first seq)."""
    seqs = [seq for seq, state, _ in store.segment_rows(device_id) if state != "expired"]
    dev = store.device(device_id)
    first = dev.first_seq if dev else 0
    return max(first, max(seqs, default=-1) + 1)


def redeem(store: Store, code: str, device_id: str, now: float | None = None) -> Enrolled:
    """Enroll ``device_id`` with ``code``; Refused (with what to do) if it cannot."""
    auth.check_device_id(device_id)
    now = time.time() if now is None else now
    token = auth.new_token()
    answer = store.redeem_code(code_hash(code), device_id, auth.hash_token(token), now)
    if answer != "ok":
        raise Refused(answer, device_id)
    return Enrolled(device_id, token, sequence_floor(store, device_id))
