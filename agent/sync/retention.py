"""Retention: which verified segments to evict (pure), and evicting them.

Only segments in state ``verified`` are ever candidates: an unverified segment is never
deleted, whatever the disk says. When un-uploaded data fills the disk, the capture service
stops recording (it reads ``sync-status.json``); nothing here deletes to make room for it.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.durable import fsync_dir
from agent.sync.state import Segment, State


@dataclass(frozen=True, slots=True)
class Candidate:
    id: str
    size: int
    verified_at: float


def plan(verified: Sequence[Candidate], *, now: float, keep_hours: float, free_bytes: int,
         reserve_bytes: int) -> list[str]:
    """Ids to evict, oldest first: those verified more than ``keep_hours`` ago, then more of
    the oldest while free space is below the reserve."""
    ordered = sorted(verified, key=lambda c: c.verified_at)
    out: list[str] = []
    free = free_bytes
    for c in ordered:
        old = now - c.verified_at >= keep_hours * 3600.0
        if old or free < reserve_bytes:
            out.append(c.id)
            free += c.size
    return out


def evict(state: State, seg: Segment) -> None:
    """Unlink the sealed file, make the unlink durable, then record ``evicted``.

    A crash between the unlink and the commit leaves a verified row without its file; the
    next pass finds it and finishes the job. The state check comes first, so an unverified
    segment can never reach the unlink.
    """
    current = state.get(seg.id)
    if current is None or current.state != "verified":
        raise ValueError(f"{seg.id}: only verified segments are evicted")
    path = Path(current.path)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fsync_dir(path.parent)
    state.transition(seg.id, "evicted")


def run(state: State, *, spool: Path, keep_hours: float, reserve_bytes: int, now: float,
        disk_free: Callable[[Path], int] | None = None) -> list[str]:
    """One retention pass; returns the ids evicted."""
    free = (disk_free or _disk_free)(spool)
    verified = {s.id: s for s in state.in_states("verified")}
    ids = plan([Candidate(s.id, s.size, s.verified_at or 0.0) for s in verified.values()],
               now=now, keep_hours=keep_hours, free_bytes=free, reserve_bytes=reserve_bytes)
    for seg_id in ids:
        evict(state, verified[seg_id])
    return ids


def _disk_free(path: Path) -> int:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return 0
