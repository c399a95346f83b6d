"""tus 1.0 rules on the server side, sans-IO: headers in, validated values or a TusError out.

Nothing here touches a socket, a file or a database. The HTTP layer (``app.py``) turns a
:class:`TusError` into a response with its ``status`` and ``message``; storage and auth stay
elsewhere. Status codes follow tus 1.0 and the wearcap client/server contract:

    400 malformed header or metadata (also path tricks)    412 Tus-Resumable is not 1.0.0
    401 missing or unknown token                           413 over Tus-Max-Size / Upload-Length
    403 metadata names another device's namespace          415 PATCH without offset+octet-stream
    404 unknown upload (or another device's)               460 checksum or whole-file hash mismatch
    409 offset mismatch, or same segment with other bytes  410 upload expired

Upload states and their transitions live in :data:`TRANSITIONS`, the one home of the lifecycle.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any, Final

from agent.contract import CHECKSUM_ALGORITHMS as CHECKSUM_ALGORITHMS
from agent.contract import CHECKSUM_MISMATCH as CHECKSUM_MISMATCH
from agent.contract import (
    DEVICE_ID_RE,
    SEQ_MAX,
    MetadataError,
    decode_metadata,
    parse_segment_id,
    parse_uint,
)
from agent.contract import OFFSET_CONTENT_TYPE as OFFSET_CONTENT_TYPE
from agent.contract import REQUIRED_METADATA as REQUIRED_METADATA
from agent.contract import TUS_VERSION as TUS_VERSION
from agent.contract import VERIFIED_HEADER as VERIFIED_HEADER

EXTENSIONS: Final = "creation,creation-with-upload,checksum,termination,expiration"
ID_RE: Final = DEVICE_ID_RE
"""Device ids (the contract's grammar, shared with the agent's ``device.id``)."""
FILENAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
SHA256_RE: Final = re.compile(r"[0-9a-fA-F]{64}")

# The upload lifecycle: (state, event) -> next state. "gone" means the row is removed.
TRANSITIONS: Final[dict[tuple[str, str], str]] = {
    ("open", "patch"): "open",
    ("open", "last_patch"): "complete",
    ("open", "expire"): "expired",
    ("open", "terminate"): "gone",
    ("complete", "hash_match"): "verified",
    ("complete", "hash_mismatch"): "gone",
    ("complete", "terminate"): "gone",
    ("verified", "terminate"): "gone",
    ("open", "discard"): "gone",  # the wearer threw it away (agent/collector/discard.py)
    ("complete", "discard"): "gone",
    ("verified", "discard"): "gone",
    ("verified", "retention"): "gone",  # kept as long as the collector's retention says
}


def next_state(state: str, event: str) -> str:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise TusError(409, f"upload is {state}; cannot {event.replace('_', ' ')}") from None


class TusError(Exception):
    """A request the protocol refuses: ``status`` and a one-line ``message`` for the body."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass(frozen=True, slots=True)
class SegmentMeta:
    """Validated Upload-Metadata of one wearcap segment."""

    device_id: str
    segment_id: str
    seq: int
    sha256: str
    filename: str

    def to_json(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "segment_id": self.segment_id, "seq": self.seq,
                "sha256": self.sha256, "filename": self.filename}


@dataclass(frozen=True, slots=True)
class Checksum:
    algorithm: str
    digest: bytes

    def hasher(self) -> Any:
        return hashlib.new(self.algorithm)


def check_version(value: str | None) -> None:
    if value != TUS_VERSION:
        raise TusError(412, f"Tus-Resumable must be {TUS_VERSION}",
                       {"Tus-Version": TUS_VERSION})


def parse_int(name: str, value: str | None) -> int:
    """A non-negative decimal header value up to 2^63-1 (no sign, no spaces)."""
    if value is None:
        raise TusError(400, f"missing {name}")
    parsed = parse_uint(value)
    if parsed is None:
        raise TusError(400, f"{name} must be an integer from 0 to {SEQ_MAX}")
    return parsed


def parse_length(value: str | None, defer: str | None, max_size: int) -> int:
    if value is None and defer is not None:
        raise TusError(400, "Upload-Defer-Length is not supported; send Upload-Length")
    length = parse_int("Upload-Length", value)
    if length > max_size:
        raise TusError(413, f"Upload-Length {length} exceeds Tus-Max-Size {max_size}")
    return length


def parse_metadata(value: str | None) -> dict[str, str]:
    """Parse ``key b64,key b64`` into text values; every malformed piece is a 400."""
    try:
        return decode_metadata(value)
    except MetadataError as exc:
        raise TusError(400, str(exc)) from None


def _safe(name: str, value: str, pattern: re.Pattern[str]) -> str:
    if "\x00" in value or "/" in value or "\\" in value or ".." in value:
        raise TusError(400, f"metadata {name} contains a path trick")
    if not pattern.fullmatch(value):
        raise TusError(400, f"metadata {name} must match {pattern.pattern}")
    return value


def validate_segment(meta: dict[str, str], device: str) -> SegmentMeta:
    """Check syntax first (400), then the namespace (403): ``device`` is the token's device."""
    for key in REQUIRED_METADATA:
        if key not in meta:
            raise TusError(400, f"Upload-Metadata lacks {key}")
    device_id = _safe("device_id", meta["device_id"], ID_RE)
    segment_id = meta["segment_id"]
    _safe("segment_id", segment_id, FILENAME_RE)
    parsed = parse_segment_id(segment_id)
    if parsed is None:
        raise TusError(400, f"metadata segment_id must be <device_id>-<seq:08d> with seq "
                            f"at most {SEQ_MAX}")
    prefix, id_seq = parsed
    seq = parse_int("metadata seq", meta["seq"])
    if seq != id_seq:
        raise TusError(400, f"metadata seq {seq} does not match segment_id {segment_id}")
    sha = meta["sha256"]
    if not SHA256_RE.fullmatch(sha):
        raise TusError(400, "metadata sha256 must be 64 hex digits")
    filename = _safe("filename", meta.get("filename") or f"{segment_id}.mcap", FILENAME_RE)
    if device_id != device or prefix != device:
        raise TusError(403, "metadata names another device's namespace")
    return SegmentMeta(device_id, segment_id, seq, sha.lower(), filename)


def parse_checksum(value: str | None) -> Checksum | None:
    if value is None:
        return None
    algo, _, b64 = value.strip().partition(" ")
    if algo not in CHECKSUM_ALGORITHMS:
        raise TusError(400, f"Upload-Checksum algorithm {algo!r} is not one of "
                            f"{','.join(CHECKSUM_ALGORITHMS)}")
    try:
        digest = base64.b64decode(b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise TusError(400, "Upload-Checksum value is not base64") from None
    if len(digest) != hashlib.new(algo).digest_size:
        raise TusError(400, f"Upload-Checksum {algo} digest has the wrong length")
    return Checksum(algo, digest)


def check_patch(content_type: str | None, offset_header: str | None, offset: int) -> int:
    """Validate a PATCH's headers against the stored ``offset``; returns the client's offset."""
    if (content_type or "").split(";")[0].strip().lower() != OFFSET_CONTENT_TYPE:
        raise TusError(415, f"Content-Type must be {OFFSET_CONTENT_TYPE}")
    client = parse_int("Upload-Offset", offset_header)
    if client != offset:
        raise TusError(409, f"Upload-Offset {client} does not match the upload's offset {offset}",
                       {"Upload-Offset": str(offset)})
    return client


def check_body_size(content_length: str | None, offset: int, length: int) -> None:
    """Refuse up front a PATCH whose declared body would run past Upload-Length."""
    if content_length is None:
        return
    size = parse_int("Content-Length", content_length)
    if offset + size > length:
        raise TusError(413, f"body of {size} bytes at offset {offset} exceeds "
                            f"Upload-Length {length}")


def http_date(ts: float) -> str:
    return formatdate(ts, usegmt=True)


def options_headers(max_size: int) -> dict[str, str]:
    return {"Tus-Resumable": TUS_VERSION, "Tus-Version": TUS_VERSION,
            "Tus-Extension": EXTENSIONS, "Tus-Max-Size": str(max_size),
            "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS)}


def upload_headers(offset: int, length: int, state: str, sha256: str,
                   expires: float | None) -> dict[str, str]:
    """Headers describing an upload's progress (HEAD, PATCH and POST answers)."""
    h = {"Upload-Offset": str(offset), "Upload-Length": str(length),
         "Cache-Control": "no-store"}
    if state == "verified":
        h[VERIFIED_HEADER] = f"sha256={sha256}"
    elif expires is not None:
        h["Upload-Expires"] = http_date(expires)
    return h
