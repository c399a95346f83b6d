"""Which segments join into one take, and where each sits on the wall clock.

    load(paths, progress?) -> [Segment]            # every file read, CRC-checked
    takes(segments) -> [Take]                      # in device, then sequence order

**A take** is one device, one boot (``boot_id``), one unbroken run of sequence numbers (each
segment's ``previous_sequence`` is the one before it), and no pause, discard or annotation
event inside it: the segment holding such an event is the last of its take. A segment that is
not intact (damaged chunks, cut short) still joins; its losses are gaps in the take.

**Wall clock.** Each segment's host times (CLOCK_MONOTONIC of its boot) go onto the wall clock
through an anchor, a (monotonic, realtime) pair read together as the segment opened:
``wall = realtime_ns + (t - monotonic_ns)``. A segment uses its own anchor when the wall clock
was NTP-synchronised; a segment sealed before NTP synchronised uses the first later
synchronised anchor of the same boot (``Placement.how`` says which); with none, its own
unsynchronised anchor, and the placement says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import InputError

from .reader import Segment, read_segment
from .streams import Event, events


@dataclass(frozen=True, slots=True)
class Placement:
    """How one segment's host times map to the wall clock."""

    anchor_segment: str
    monotonic_ns: int
    realtime_ns: int
    uncertainty_ns: int
    ntp_synchronized: bool | None
    how: str

    def wall(self, t_ns: int) -> int:
        return self.realtime_ns + (t_ns - self.monotonic_ns)

    def to_dict(self) -> dict[str, object]:
        return {"anchor_segment": self.anchor_segment, "monotonic_ns": self.monotonic_ns,
                "realtime_ns": self.realtime_ns, "uncertainty_ns": self.uncertainty_ns,
                "ntp_synchronized": self.ntp_synchronized, "how": self.how}


@dataclass
class Take:
    device_id: str
    boot_id: str
    segments: list[Segment]
    placements: list[Placement]
    ends: str
    """Why the take ends here (the next one starts after it)."""
    events: list[list[Event]] = field(default_factory=list)
    """Per segment, its wearer events."""

    @property
    def first_seq(self) -> int:
        return self.segments[0].sequence or 0

    @property
    def last_seq(self) -> int:
        return self.segments[-1].sequence or 0

    @property
    def name(self) -> str:
        """``<device>-<first seq>`` (+ ``-<last seq>`` when it spans several)."""
        a, b = self.first_seq, self.last_seq
        return f"{self.device_id}-{a:08d}" + (f"-{b:08d}" if b != a else "")


def load(paths: Iterable[Path], progress: Callable[[Path], None] | None = None
         ) -> list[Segment]:
    out = []
    for p in paths:
        out.append(read_segment(p))
        if progress is not None:
            progress(p)
    seen: dict[tuple[str, str, int | None], Path] = {}
    for s in out:
        key = (s.header.get("device_id", ""), s.header.get("boot_id", ""), s.sequence)
        if s.sequence is not None and key in seen:
            raise InputError(f"segment {s.id} is also in {seen[key]}: give each segment once",
                             path=str(s.path))
        seen[key] = s.path
    return out


def _anchor(seg: Segment) -> tuple[int, int, int, bool | None] | None:
    h = seg.header
    try:
        mono, real = int(h["anchor_monotonic_ns"]), int(h["anchor_realtime_ns"])
    except (KeyError, ValueError):
        return None
    ntp = {"true": True, "false": False}.get(h.get("ntp_synchronized", ""))
    return mono, real, int(h.get("anchor_uncertainty_ns", "0") or 0), ntp


def placements(segments: list[Segment]) -> list[Placement]:
    """One placement per segment (of one device, in sequence order)."""
    out = []
    for i, seg in enumerate(segments):
        own = _anchor(seg)
        boot = seg.header.get("boot_id")
        if own is not None and own[3] is True:
            out.append(Placement(seg.id, *own, "own anchor (NTP-synchronised)"))
            continue
        later = next(((s, a) for s in segments[i + 1:]
                      if s.header.get("boot_id") == boot and (a := _anchor(s)) is not None
                      and a[3] is True), None)
        if later is not None and boot:
            s, a = later
            out.append(Placement(s.id, *a, f"anchor of the later segment {s.id} of the same "
                                 "boot (this one was sealed before NTP synchronised)"))
        elif own is not None:
            state = "not NTP-synchronised" if own[3] is False else "NTP state unknown"
            out.append(Placement(seg.id, *own, f"own anchor, wall clock {state} and no later "
                                 "synchronised anchor of this boot: the date may be wrong"))
        else:
            out.append(Placement(seg.id, 0, 0, 0, None, "no anchor in the segment: times are "
                                 "CLOCK_MONOTONIC since boot, not the wall clock"))
    return out


def _tombstones(a: Segment, b: Segment) -> list[str]:
    """Ids of the segments between ``a`` and ``b`` that the spool holds as tombstones (a
    discard carried out on the device: ``<spool>/tombstones/<id>.json``)."""
    if a.sequence is None or b.sequence is None or a.path.parent.name != "sealed":
        return []
    dev = a.header.get("device_id", "")
    d = a.path.parent.parent / "tombstones"
    from agent.record.segment import segment_id

    ids = [segment_id(dev, q) for q in range(a.sequence + 1, min(b.sequence, a.sequence + 10001))]
    return [i for i in ids if (d / f"{i}.json").exists()]


def takes(segments: list[Segment]) -> list[Take]:
    by_dev: dict[str, list[Segment]] = {}
    for s in segments:
        by_dev.setdefault(s.header.get("device_id", s.id), []).append(s)
    out: list[Take] = []
    for dev, segs in sorted(by_dev.items()):
        segs.sort(key=lambda s: (s.sequence is None, s.sequence or 0, str(s.path)))
        place = placements(segs)
        runs: list[tuple[list[int], str]] = []
        cur: list[int] = []
        for i, s in enumerate(segs):
            if cur:
                prev = segs[cur[-1]]
                link = s.header.get("previous_sequence")
                why = ""
                if prev.header.get("boot_id") != s.header.get("boot_id"):
                    why = f"the device rebooted before segment {s.id}"
                elif prev.sequence is None or s.sequence != prev.sequence + 1 or (
                        link is not None and link != str(prev.sequence)):
                    gone = _tombstones(prev, s)
                    why = (f"discarded by the wearer: {', '.join(gone)}" if gone else
                           f"sequence break: {prev.id} then {s.id}")
                if why:
                    runs.append((cur, why))
                    cur = []
            cur.append(i)
            ev = [e for e in events(s) if e.splits]
            if ev:
                runs.append((cur, f"{ev[0].kind} in {s.id}"))
                cur = []
        if cur:
            runs.append((cur, "end of the input"))
        for idx, why in runs:
            ss = [segs[i] for i in idx]
            out.append(Take(dev, ss[0].header.get("boot_id", "unknown"), ss,
                            [place[i] for i in idx], why, [events(s) for s in ss]))
    return out
