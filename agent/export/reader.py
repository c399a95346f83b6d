"""One segment file read back as it is on disk, every chunk checked against its CRC.

    read_segment(path) -> Segment      # raises InputError naming the file if it is not MCAP

A file is read front to back record by record (``agent.record.recover.scan``), so a sealed
file, an unfinished ``.mcap.part`` and a damaged copy are read by the same code: a chunk whose
CRC fails is skipped and kept as a ``Damage`` (with the chunk's log-time range when its header
is readable), never silently. ``Segment.intact`` is true only for a file that reached its
closing records with every chunk good.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import InputError
from agent.record.recover import MAGIC, scan
from agent.record.schemas import ChannelDef
from agent.record.segment import CHANNELS_META, SEGMENT_META, channels_from_metadata


@dataclass(frozen=True, slots=True)
class Record:
    """One message: its topic, log time (host timeline ns) and encoded payload."""

    topic: str
    log_time: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Damage:
    """A chunk that failed its CRC (or whose framing was broken) and was skipped."""

    start_ns: int | None
    """First log time the chunk held (None: its header was unreadable too)."""
    end_ns: int | None


@dataclass
class Segment:
    path: Path
    metadata: dict[str, dict[str, str]]
    channels: dict[str, ChannelDef]
    """By topic."""
    records: list[Record]
    """In file order."""
    complete: bool
    """The file reached its closing records (a sealed file, not cut short)."""
    damage: list[Damage] = field(default_factory=list)
    tail_bytes: int = 0
    """Bytes at the end that did not form a whole record (an unfinished file)."""

    @property
    def intact(self) -> bool:
        return self.complete and not self.damage

    @property
    def header(self) -> dict[str, str]:
        return self.metadata.get(SEGMENT_META, {})

    @property
    def id(self) -> str:
        return self.header.get("segment_id", self.path.name)

    @property
    def sequence(self) -> int | None:
        s = self.header.get("sequence", "")
        return int(s) if s.isdigit() else None

    def topic_records(self, topic: str) -> list[Record]:
        return [r for r in self.records if r.topic == topic]


def read_segment(path: Path) -> Segment:
    try:
        with path.open("rb") as fh:
            size = path.stat().st_size
            if size == 0:
                raise InputError("empty file, not an MCAP segment", path=str(path))
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                if buf[: len(MAGIC)] != MAGIC:
                    raise InputError("not an MCAP file (no MCAP magic at the start)",
                                     path=str(path))
                s = scan(buf)
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", path=str(path)) from exc
    if not s.messages and not s.metadata:
        raise InputError("not a readable MCAP segment: no record in it passes its CRC",
                         path=str(path))
    md = {m.name: dict(m.metadata) for m in s.metadata}
    by_id = dict(s.channels)
    for cid, d in channels_from_metadata(md.get(CHANNELS_META, {})).items():
        by_id.setdefault(cid, d)
    channels = {d.topic: d for d in by_id.values()}
    records = [Record(by_id[m.channel_id].topic if m.channel_id in by_id
                      else f"#{m.channel_id}", m.log_time, bytes(m.data))
               for m in s.messages]
    damage = [Damage(a or None, b or None) for a, b in s.bad]
    return Segment(path, md, channels, records, s.complete, damage, s.tail_bytes)
