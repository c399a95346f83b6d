"""Recovery of ``.part`` files left by a crash or power loss.

The file is read front to back, record by record (no summary, no index: a crashed file has
none). Every chunk whose CRC checks out is kept; a chunk that fails is skipped and reported as
a gap; when the record framing itself is damaged the reader resynchronises on the next chunk
that parses with a valid CRC. What was kept is rewritten into a new segment with the same id,
flagged ``recovered``, and sealed. A file with nothing recoverable goes to quarantine/ with a
log line; recovery never raises for a bad file, so a bad file cannot cause a crash loop.
"""

from __future__ import annotations

import io
import json
import logging
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
from mcap.data_stream import ReadDataStream
from mcap.opcode import Opcode
from mcap.records import Channel, Chunk, Message, Metadata, Schema
from mcap.stream_reader import breakup_chunk

from agent.sources import GAP_TOPIC

from .schemas import GAP_SPEC, VIDEO_TOPIC, ChannelDef, msgpack_channel
from .segment import (
    CHANNELS_META,
    END_META,
    SEGMENT_META,
    McapOut,
    channels_from_metadata,
    segment_id,
)
from .spool import SealedSegment, Spool, parse_name

log = logging.getLogger(__name__)

MAGIC = b"\x89MCAP0\r\n"
_VALID_OPS = {int(o) for o in Opcode}
_U64 = struct.Struct("<Q")


@dataclass
class Scan:
    """What a sequential read of a damaged MCAP file found."""

    metadata: list[Metadata] = field(default_factory=list)
    channels: dict[int, ChannelDef] = field(default_factory=dict)
    schemas: dict[int, Schema] = field(default_factory=dict)
    messages: list[Message] = field(default_factory=list)
    chunks_ok: int = 0
    bad: list[tuple[int, int]] = field(default_factory=list)
    """(start, end) log-time ranges of chunks that failed their CRC (0, 0 if unknown)."""
    bytes_skipped: int = 0
    tail_bytes: int = 0
    complete: bool = False
    """The file reached DataEnd/Footer (it was being closed when the process died)."""


def _body(buf: bytes | mmap.mmap, start: int, end: int) -> ReadDataStream:
    return ReadDataStream(io.BytesIO(buf[start:end]))


def _try_chunk(buf: bytes | mmap.mmap, pos: int, n: int) -> tuple[Chunk, list[object]] | None:
    """Parse a chunk record at ``pos`` and check its CRC; None if it is not a good chunk."""
    if pos + 9 + 40 > n or buf[pos] != Opcode.CHUNK:
        return None
    length = _U64.unpack_from(buf, pos + 1)[0]
    end = pos + 9 + length
    if end > n or length < 40:
        return None
    try:
        chunk = Chunk.read(_body(buf, pos + 9, end))
        if chunk.compression not in ("", "zstd", "lz4") or chunk.uncompressed_crc == 0:
            return None
        if len(chunk.data) != length - 40 - len(chunk.compression.encode()):
            return None
        return chunk, list(breakup_chunk(chunk, validate_crc=True))
    except Exception:
        return None


def _resync(buf: bytes | mmap.mmap, pos: int, n: int) -> int | None:
    """The offset of the next chunk with a valid CRC after ``pos``."""
    p = pos
    while True:
        p = buf.find(bytes([Opcode.CHUNK]), p + 1)
        if p < 0:
            return None
        if _try_chunk(buf, p, n) is not None:
            return p


def scan(buf: bytes | mmap.mmap) -> Scan:
    s = Scan()
    n = len(buf)
    if n < len(MAGIC) or buf[: len(MAGIC)] != MAGIC:
        s.tail_bytes = n
        return s
    pos = len(MAGIC)
    while pos < n:
        if pos + 9 > n:
            s.tail_bytes = n - pos
            break
        op = buf[pos]
        length = _U64.unpack_from(buf, pos + 1)[0]
        end = pos + 9 + length
        if op in _VALID_OPS and end <= n:
            if op == Opcode.CHUNK:
                got = _try_chunk(buf, pos, n)
                if got is None:
                    try:
                        c = Chunk.read(_body(buf, pos + 9, end))
                        s.bad.append((c.message_start_time, c.message_end_time))
                    except Exception:
                        s.bad.append((0, 0))
                    s.bytes_skipped += end - pos
                else:
                    s.chunks_ok += 1
                    for r in got[1]:
                        if isinstance(r, Message):
                            s.messages.append(r)
                        elif isinstance(r, Channel):
                            s.channels.setdefault(r.id, _channel_def(r, s.schemas))
                        elif isinstance(r, Schema):
                            s.schemas[r.id] = r
                pos = end
                continue
            if op == Opcode.METADATA:
                try:
                    s.metadata.append(Metadata.read(_body(buf, pos + 9, end)))
                except Exception:
                    s.bytes_skipped += end - pos
                pos = end
                continue
            if op in (Opcode.DATA_END, Opcode.FOOTER):
                s.complete = True
                break
            pos = end  # header, message indexes, ...: nothing to keep
            continue
        nxt = _resync(buf, pos, n)
        if nxt is None:
            # A record cut short by the crash (the usual case), or damage to the end.
            s.tail_bytes = n - pos
            break
        s.bytes_skipped += nxt - pos
        s.bad.append((0, 0))
        pos = nxt
    return s


def _channel_def(c: Channel, schemas: dict[int, Schema]) -> ChannelDef:
    sch = schemas.get(c.schema_id)
    return ChannelDef(c.topic, c.message_encoding, sch.name if sch else "",
                      sch.encoding if sch else "", sch.data if sch else b"", dict(c.metadata))


@dataclass(frozen=True, slots=True)
class Recovery:
    path: Path
    id: str
    outcome: str
    """"sealed" (recovered), "quarantined", or "duplicate" (already sealed; part set aside)."""
    messages: int = 0
    frames: int = 0
    chunks_ok: int = 0
    chunks_bad: int = 0
    tail_bytes: int = 0
    last_log_ns: int | None = None
    sealed: SealedSegment | None = None
    reason: str = ""


def _metadata(s: Scan, name: str) -> dict[str, str]:
    for m in s.metadata:
        if m.name == name:
            return dict(m.metadata)
    return {}


def recover_part(spool: Spool, part: Path) -> Recovery:
    """Recover one ``.part`` file into a sealed, ``recovered`` segment, or quarantine it."""
    parsed = parse_name(part.name)
    if parsed is None:
        dst = spool.quarantine(part, "not a segment file name")
        return Recovery(part, part.name, "quarantined", reason=f"bad name, moved to {dst}")
    dev, seq = parsed
    sid = segment_id(dev, seq)
    if spool.sealed_path(seq).exists():
        spool.quarantine(part, "a sealed segment with this id already exists")
        return Recovery(part, sid, "duplicate", reason="already sealed")
    try:
        with part.open("rb") as fh:
            size = part.stat().st_size
            if size == 0:
                s = Scan()
            else:
                with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                    s = scan(mm)
    except OSError as exc:
        why = f"unreadable: {exc.strerror}"
        spool.quarantine(part, why)
        return Recovery(part, sid, "quarantined", reason=why)
    except Exception as exc:  # a reader bug must not become a crash loop
        why = f"unreadable: {type(exc).__name__}: {exc}"
        spool.quarantine(part, why)
        return Recovery(part, sid, "quarantined", reason=why)
    if not s.messages:
        why = (f"nothing recoverable ({s.chunks_ok} good chunks, {len(s.bad)} bad, "
               f"{size} bytes)")
        spool.quarantine(part, why)
        return Recovery(part, sid, "quarantined", chunks_bad=len(s.bad),
                        tail_bytes=s.tail_bytes, reason=why)
    try:
        return _rewrite(spool, part, seq, sid, s)
    except Exception as exc:
        why = f"recovery failed: {type(exc).__name__}: {exc}"
        spool.quarantine(part, why)
        return Recovery(part, sid, "quarantined", reason=why)


def _rewrite(spool: Spool, part: Path, seq: int, sid: str, s: Scan) -> Recovery:
    table = channels_from_metadata(_metadata(s, CHANNELS_META))
    for cid, d in s.channels.items():
        if cid not in table or not table[cid].schema_data:
            table[cid] = d
    header = _metadata(s, SEGMENT_META) or {"segment_id": sid, "sequence": str(seq),
                                             "device_id": spool.device_id}
    header.update({"recovered": "true", "recovered_chunks": str(s.chunks_ok),
                   "recovered_bad_chunks": str(len(s.bad)),
                   "recovered_tail_bytes": str(s.tail_bytes),
                   "recovered_from_complete_file": "true" if s.complete else "false"})
    tmp = part.with_name(part.name[: -len(".part")] + ".recovering")
    fh = tmp.open("wb")
    out = McapOut(fh)
    ids = {}
    for cid in sorted(table):
        ids[cid] = out.register(table[cid])
    out.metadata(SEGMENT_META, header)
    out.metadata(CHANNELS_META, _metadata(s, CHANNELS_META))
    for m in s.metadata:
        if m.name not in (SEGMENT_META, CHANNELS_META, END_META):
            out.metadata(m.name, dict(m.metadata))
    frames = 0
    last = None
    topics = {cid: d.topic for cid, d in table.items()}
    for msg in s.messages:
        topic = topics.get(msg.channel_id)
        if topic is None:
            continue
        out.add(topic, msg.log_time, msg.data)
        frames += topic == VIDEO_TOPIC
        last = msg.log_time if last is None else max(last, msg.log_time)
    if GAP_TOPIC not in out.ids:
        out.register(msgpack_channel(GAP_SPEC))
    for start, end in s.bad:
        out.add(GAP_TOPIC, start or (last or 0), msgpack.packb({
            "stream": "*", "start_ns": start, "end_ns": end, "lost": -1,
            "cause": "corrupt-chunk"}))
    if not s.complete and last is not None:
        out.add(GAP_TOPIC, last, msgpack.packb({
            "stream": "*", "start_ns": last, "end_ns": last, "lost": -1,
            "cause": "crash: data after this instant was not on disk"}))
    out.mcap.flush()
    out.metadata(END_META, {"frames": str(frames), "messages": json.dumps(
        {t: c for t, c in out.counts.items()}, sort_keys=True), "recovered": "true"})
    sha, size = out.finish()
    sealed = spool.seal(seq, fh, sha, size, part=tmp)
    if s.bad:
        spool.quarantine(part, f"recovered into {sealed.path.name}; {len(s.bad)} damaged "
                               "chunk(s) skipped, original kept for analysis")
    else:
        part.unlink()
        spool.ops.fsync_dir(part.parent)
    log.warning("recovered %s: %d messages (%d frames) from %d chunks, %d bad, "
                "%d tail bytes lost", sid, len(s.messages), frames, s.chunks_ok, len(s.bad),
                s.tail_bytes)
    return Recovery(part, sid, "sealed", len(s.messages), frames, s.chunks_ok, len(s.bad),
                    s.tail_bytes, last, sealed)


def recover_all(spool: Spool) -> list[Recovery]:
    """Recover every leftover ``.part`` in sequence order (and stale ``.recovering`` copies
    are simply rewritten)."""
    for stale in spool.active.glob("*.recovering"):
        stale.unlink()
    return [recover_part(spool, p) for p in spool.parts()]
