"""What the device and the collector must agree on, in one module both import.

- **Device ids**: ``[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`` and no ``..`` (they become path parts).
- **Sequence numbers**: integers ``0 <= seq <= SEQ_MAX`` (2^63-1: a signed 64-bit column in
  SQLite and PostgreSQL). Anything larger is malformed input, never a storage error.
- **Segment ids**: ``<device_id>-<seq>`` with ``seq`` zero-padded to at least 8 digits
  (``sim-0001-00000042``). The device id may itself contain ``-``: the sequence number is the
  last dash-separated group. Files are ``<segment_id>.mcap`` (sealed) and
  ``<segment_id>.mcap.part`` (being written).
- **tus**: version 1.0.0, the wearcap extras (``Wearcap-Verified: sha256=<hex>``, status 460
  for a checksum mismatch), and the ``Upload-Metadata`` codec with the keys a segment upload
  carries.
- **Discard requests**: ``POST /devices/<id>/discard`` with the device's token, its body codec,
  and the tombstone reasons (a sequence number that holds no data on purpose).

Pure functions and constants only: no I/O, no imports from the rest of ``agent``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Final

# ---------------------------------------------------------------- ids and sequence numbers

DEVICE_ID_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
DEVICE_ID_RE: Final = re.compile(DEVICE_ID_PATTERN)
SEQ_DIGITS: Final = 8
"""Minimum digits of the sequence number in a segment id (zero-padded)."""
SEQ_MAX: Final = 2**63 - 1
SEGMENT_ID_PATTERN: Final = rf"(?P<device>{DEVICE_ID_PATTERN})-(?P<seq>[0-9]{{{SEQ_DIGITS},19}})"
SEGMENT_ID_RE: Final = re.compile(SEGMENT_ID_PATTERN)
SEGMENT_ID_MAX: Final = 64 + 1 + 19
SEALED_SUFFIX: Final = ".mcap"
PART_SUFFIX: Final = ".mcap.part"
_FILE_RE: Final = re.compile(rf"(?P<id>{SEGMENT_ID_PATTERN})(?P<suffix>\.mcap(?:\.part)?)")


def is_device_id(text: str) -> bool:
    return bool(DEVICE_ID_RE.fullmatch(text)) and ".." not in text


def is_seq(value: int) -> bool:
    return 0 <= value <= SEQ_MAX


def segment_id(device_id: str, seq: int) -> str:
    """``<device_id>-<seq:08d>``; a ValueError for an id or number outside the grammar."""
    if not is_device_id(device_id):
        raise ValueError(f"device id {device_id!r} must match {DEVICE_ID_PATTERN}")
    if not is_seq(seq):
        raise ValueError(f"sequence number {seq} is outside 0..{SEQ_MAX}")
    return f"{device_id}-{seq:0{SEQ_DIGITS}d}"


def parse_segment_id(text: str) -> tuple[str, int] | None:
    """(device_id, seq) of a segment id, or None if it is not one (or seq > SEQ_MAX)."""
    m = SEGMENT_ID_RE.fullmatch(text)
    if m is None or ".." in m["device"]:
        return None
    seq = int(m["seq"])
    return (m["device"], seq) if seq <= SEQ_MAX else None


def parse_segment_file(name: str, *, sealed_only: bool = False) -> tuple[str, int] | None:
    """(device_id, seq) of ``<segment_id>.mcap`` (or ``.mcap.part``), else None."""
    m = _FILE_RE.fullmatch(name)
    if m is None or (sealed_only and m["suffix"] != SEALED_SUFFIX):
        return None
    return parse_segment_id(m["id"])


def parse_uint(text: str | None, maximum: int = SEQ_MAX) -> int | None:
    """A plain decimal ``0..maximum`` (no sign, spaces or ``_``), else None."""
    if text is None or not (text.isascii() and text.isdigit()) or len(text) > 20:
        return None
    value = int(text)
    return value if value <= maximum else None


# ---------------------------------------------------------------- tus

TUS_VERSION: Final = "1.0.0"
OFFSET_CONTENT_TYPE: Final = "application/offset+octet-stream"
VERIFIED_HEADER: Final = "Wearcap-Verified"
"""Answer header ``sha256=<hex>``: the server hashed what it stores and it matches."""
CHECKSUM_MISMATCH: Final = 460
CHECKSUM_ALGORITHMS: Final = ("sha1", "sha256")
REQUIRED_METADATA: Final = ("device_id", "segment_id", "seq", "sha256")
"""Upload-Metadata keys of a segment upload (``filename`` is optional)."""
METADATA_MAX: Final = 4096
"""Longest Upload-Metadata header either side sends or accepts."""
_META_KEY: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class MetadataError(ValueError):
    """Upload-Metadata that does not follow the codec."""


def encode_metadata(meta: Mapping[str, str]) -> str:
    """``Upload-Metadata``: comma-separated ``key base64(utf-8 value)`` pairs."""
    parts = []
    for key, value in meta.items():
        if not _META_KEY.fullmatch(key):
            raise MetadataError(f"metadata key not allowed: {key!r}")
        parts.append(f"{key} {base64.b64encode(value.encode('utf-8')).decode()}")
    out = ",".join(parts)
    if len(out) > METADATA_MAX:
        raise MetadataError(f"Upload-Metadata longer than {METADATA_MAX} characters")
    return out


def decode_metadata(header: str | None) -> dict[str, str]:
    """Strict inverse of :func:`encode_metadata`; every malformed piece is a MetadataError."""
    if not header:
        return {}
    if len(header) > METADATA_MAX:
        raise MetadataError(f"Upload-Metadata longer than {METADATA_MAX} characters")
    out: dict[str, str] = {}
    for pair in header.split(","):
        parts = pair.strip().split(" ")
        key = parts[0]
        if not key or len(parts) > 2 or not key.isascii() or not key.isprintable():
            raise MetadataError(f"malformed Upload-Metadata pair {pair.strip()[:40]!r}")
        if key in out:
            raise MetadataError(f"Upload-Metadata key {key!r} given twice")
        raw = b""
        if len(parts) == 2:
            try:
                raw = base64.b64decode(parts[1], validate=True)
            except (binascii.Error, ValueError):
                raise MetadataError(f"Upload-Metadata {key!r} is not base64") from None
        try:
            out[key] = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MetadataError(f"Upload-Metadata {key!r} is not UTF-8") from None
    return out


def segment_metadata(device_id: str, seq: int, sha256: str,
                     filename: str | None = None) -> dict[str, str]:
    """The Upload-Metadata a device sends for one segment."""
    sid = segment_id(device_id, seq)
    return {"device_id": device_id, "segment_id": sid, "seq": str(seq), "sha256": sha256,
            "filename": filename or sid + SEALED_SUFFIX}


# ---------------------------------------------------------------- discard requests

DISCARD_PATH: Final = "/devices/{device}/discard"
"""``POST`` with the device's own token: the collector deletes what it holds of these
segments, purges everything derived from them, and keeps a tombstone per sequence number
(that number is never accepted again). Answer 200 ``{"discarded": [...]}``; idempotent."""
DISCARD_MAX_SEGMENTS: Final = 1000
"""Most segments in one discard request (a 5-minute window holds a handful)."""
TOMBSTONE_REASONS: Final = ("wearer-discard", "retention")
"""Why a sequence number holds no data: the wearer threw it away, or the collector's
retention expired it. Either way it is not a loss."""
_SHA256_RE: Final = re.compile(r"[0-9a-f]{64}")


class DiscardError(ValueError):
    """A discard request body that does not follow the contract."""


def discard_path(device_id: str) -> str:
    return DISCARD_PATH.format(device=device_id)


def discard_body(request: str, segments: list[tuple[str, str | None, int | None]]
                 ) -> dict[str, object]:
    """The body a device sends: its request name and (segment id, sha256 or None, size or
    None) per segment (None: the device no longer knows, e.g. it evicted the file)."""
    return {"request": request,
            "segments": [{"segment_id": s, "sha256": h, "size": n} for s, h, n in segments]}


def parse_discard_body(doc: object, device_id: str
                       ) -> tuple[str, list[tuple[str, int, str | None, int | None]]]:
    """(request, [(segment id, seq, sha256 or None, size or None)]); every segment must be
    ``device_id``'s own. A DiscardError says what is wrong."""
    if not isinstance(doc, dict):
        raise DiscardError("body must be a JSON object")
    request, segs = doc.get("request", ""), doc.get("segments")
    if not isinstance(request, str) or len(request) > 128:
        raise DiscardError("request must be a string of at most 128 characters")
    if not isinstance(segs, list) or not segs or len(segs) > DISCARD_MAX_SEGMENTS:
        raise DiscardError(f"segments must be a list of 1..{DISCARD_MAX_SEGMENTS} entries")
    out: list[tuple[str, int, str | None, int | None]] = []
    for s in segs:
        if not isinstance(s, dict) or not isinstance(s.get("segment_id"), str):
            raise DiscardError("each segment needs a segment_id string")
        parsed = parse_segment_id(s["segment_id"])
        if parsed is None:
            raise DiscardError(f"not a segment id: {s['segment_id'][:90]!r}")
        if parsed[0] != device_id:
            raise DiscardError(f"{s['segment_id']} is not a segment of {device_id}")
        sha, size = s.get("sha256"), s.get("size")
        if sha is not None and not (isinstance(sha, str) and _SHA256_RE.fullmatch(sha)):
            raise DiscardError(f"{s['segment_id']}: sha256 must be 64 lowercase hex digits")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool)
                                 or not is_seq(size)):
            raise DiscardError(f"{s['segment_id']}: size must be an integer 0..{SEQ_MAX}")
        out.append((s["segment_id"], parsed[1], sha, size))
    return request, out
