"""Purging a segment from the collector: the wearer's discard, and retention.

One path for both (:func:`purge`), so that a discard and an expiry leave the same thing
behind: a tombstone with the sequence number and the SHA-256, and no byte of the segment in
any backend, nor anything derived from it.

    1. the tombstone is written first (durable): from then on the sequence number is refused
       at creation and at verification, on every node sharing the store;
    2. the upload, whatever its state, is gone: its verified object in the backend it was
       stored in, the object under its name in every configured backend (a crash between
       storing and recording can leave one), its local staging file or its S3 multipart
       upload and tail objects; then its row;
    3. everything derived from it: cached exports of takes that contain it (``derived``
       hooks, registered by ``agent/collector/exports.py``); dashboard thumbnails are
       computed per request and never stored;
    4. the tombstone is marked purged, and the purge is logged.

A crash anywhere leaves the tombstone (or nothing); the device sends its request again until
it gets an answer, and every step is idempotent. An upload in flight on this node is
cancelled by the HTTP layer before the purge (``UploadLocks``); one in flight on another
node fails its next compare-and-set on the offset, since the row is gone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent.collector.store import Tombstone, Upload
from agent.collector.tus import next_state

if TYPE_CHECKING:
    from agent.collector.service import Collector

log = logging.getLogger("agent.collector")

Derived = Callable[[str, int], list[str]]
"""A hook that purges what was derived from (device, seq); returns what it removed."""


def purge(c: Collector, device: str, seq: int, segment_id: str, *, reason: str,
          request: str = "", sha256: str | None = None, length: int | None = None,
          now: float | None = None) -> dict[str, Any]:
    """Tombstone ``seq`` of ``device`` and remove every trace of its bytes. Idempotent."""
    now = c.clock() if now is None else now
    up = c.store.find_segment(device, segment_id)
    t = c.store.add_tombstone(Tombstone(
        device, seq, segment_id, sha256 or (up.sha256 if up else ""),
        length if length is not None else (up.length if up else None), reason, request, now))
    removed: list[str] = []
    held = None
    if up is not None:
        held = up.state
        next_state(up.state, "discard" if reason == "wearer-discard" else "retention")
        if up.state == "verified":
            c._backend_for(up).delete(up.object_key)
            removed.append(f"{up.backend}:{up.object_key}")
        else:
            c._drop_staged(up)
            removed.append("staging")
    c.delete_everywhere(_stub(device, seq, segment_id))
    if up is not None:
        c.store.delete_upload(up.id)
    for hook in c.derived:
        removed.extend(hook(device, seq))
    c.store.set_purged(device, seq, c.clock())
    if up is not None or t.purged is None:
        log.warning("purged %s (seq %d, %s%s): held %s; removed %s", segment_id, seq, reason,
                    f", request {request}" if request else "", held or "nothing",
                    ", ".join(dict.fromkeys(removed)) or "nothing")
    return {"segment_id": segment_id, "seq": seq, "held": held, "reason": t.reason,
            "sha256": t.sha256, "first_tombstoned": t.created}


def _stub(device: str, seq: int, segment_id: str) -> Upload:
    return Upload("", device, segment_id, seq, "", 0, 0, "gone", 0.0, None, "", "")
