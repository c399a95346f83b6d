"""Per-device completeness from segment sequence numbers: what is missing, not just what came.

A device numbers its segments ``first_seq, first_seq+1, ...`` and never repeats one. Every
number between ``first_seq`` (set at enrollment, 0 by default) and the highest number the
collector has seen that is not verified is reported missing, as inclusive ranges. Numbers
above the highest seen cannot be known yet; ``highest_seq`` says where knowledge ends.

A tombstoned number (``agent/collector/discard.py``) is accounted for, not missing: it is
reported under ``discarded`` (the wearer threw it away) or ``expired`` (the collector's
retention removed it after it was verified), with counts and ranges.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from agent.collector.store import Store, Tombstone


def missing_ranges(have: Iterable[int], first: int, last: int) -> list[tuple[int, int]]:
    """Inclusive ranges of ``first..last`` not in ``have``."""
    out: list[tuple[int, int]] = []
    expect = first
    for seq in sorted(set(have)):
        if seq < first or seq > last:
            continue
        if seq > expect:
            out.append((expect, seq - 1))
        expect = seq + 1
    if expect <= last:
        out.append((expect, last))
    return out


def _ranges(seqs: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for q in sorted(set(seqs)):
        if out and out[-1][1] == q - 1:
            out[-1][1] = q
        else:
            out.append([q, q])
    return out


def summarize(device: str, first_seq: int, rows: Iterable[tuple[int, str, int]],
              tombstones: Iterable[Tombstone] = ()) -> dict[str, Any]:
    """``rows`` are (seq, state, length) of a device's uploads."""
    received = verified = verified_bytes = 0
    highest: int | None = None
    have: list[int] = []
    gone: dict[str, list[int]] = {"wearer-discard": [], "retention": []}
    for t in tombstones:
        gone.setdefault(t.reason, []).append(t.seq)
        have.append(t.seq)
        highest = t.seq if highest is None else max(highest, t.seq)
    for seq, state, length in rows:
        if state == "expired":
            continue
        received += 1
        highest = seq if highest is None else max(highest, seq)
        if state == "verified":
            verified += 1
            verified_bytes += length
            have.append(seq)
    gaps = missing_ranges(have, first_seq, highest) if highest is not None else []
    return {
        "device_id": device,
        "first_seq": first_seq,
        "received": received,
        "verified": verified,
        "verified_bytes": verified_bytes,
        "in_progress": received - verified,
        "highest_seq": highest,
        "missing_count": sum(b - a + 1 for a, b in gaps),
        "missing": [[a, b] for a, b in gaps],
        "complete": highest is not None and not gaps,
        "discarded_count": len(gone["wearer-discard"]),
        "discarded": _ranges(gone["wearer-discard"]),
        "expired_count": len(gone["retention"]),
        "expired": _ranges(gone["retention"]),
    }


def device_report(store: Store, device: str) -> dict[str, Any] | None:
    dev = store.device(device)
    if dev is None:
        return None
    return summarize(device, dev.first_seq, store.segment_rows(device),
                     store.tombstones(device))


def fleet_report(store: Store) -> list[dict[str, Any]]:
    return [summarize(d.id, d.first_seq, store.segment_rows(d.id), store.tombstones(d.id))
            for d in store.devices()]


def format_ranges(ranges: list[list[int]], limit: int = 8) -> str:
    parts = [str(a) if a == b else f"{a}-{b}" for a, b in ranges[:limit]]
    if len(ranges) > limit:
        parts.append(f"... (+{len(ranges) - limit} more)")
    return ", ".join(parts) or "-"
