"""Per-device completeness from segment sequence numbers: what is missing, not just what came.

A device numbers its segments ``first_seq, first_seq+1, ...`` and never repeats one. Every
number between ``first_seq`` (set at enrollment, 0 by default) and the highest number the
collector has seen that is not verified is reported missing, as inclusive ranges. Numbers
above the highest seen cannot be known yet; ``highest_seq`` says where knowledge ends.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from agent.collector.store import Database


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


def summarize(device: str, first_seq: int, rows: Iterable[tuple[int, str, int]]) -> dict[str, Any]:
    """``rows`` are (seq, state, length) of a device's uploads."""
    received = verified = verified_bytes = 0
    highest: int | None = None
    have: list[int] = []
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
    }


def device_report(db: Database, device: str) -> dict[str, Any] | None:
    row = db.one("SELECT first_seq FROM devices WHERE id = ?", (device,))
    if row is None:
        return None
    rows = db.all("SELECT seq, state, length FROM uploads WHERE device = ?", (device,))
    return summarize(device, int(row["first_seq"]),
                     ((r["seq"], r["state"], r["length"]) for r in rows))


def fleet_report(db: Database) -> list[dict[str, Any]]:
    ids = [r["id"] for r in db.all("SELECT id FROM devices ORDER BY id")]
    return [r for d in ids if (r := device_report(db, d)) is not None]


def format_ranges(ranges: list[list[int]], limit: int = 8) -> str:
    parts = [str(a) if a == b else f"{a}-{b}" for a, b in ranges[:limit]]
    if len(ranges) > limit:
        parts.append(f"... (+{len(ranges) - limit} more)")
    return ", ".join(parts) or "-"
