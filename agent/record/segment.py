"""One segment = one MCAP file, written sequentially to a binary stream the caller passes in.

The writer hashes every byte it writes (so sealing needs no re-read) and closes a zstd chunk
at least every ``chunk_seconds``; ``checkpoint()`` then flushes and fsyncs, which bounds what a
crash can lose. Records in the file, in order:

    Header, Metadata "wearcap.segment", Metadata "wearcap.channels",
    Metadata "wearcap.source.<name>" per source, chunks (schemas, channels, messages),
    Metadata "wearcap.segment.end" (counts), summary with chunk indexes and statistics.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, cast

import msgpack
from mcap.writer import CompressionType, Writer

from agent import __version__
from agent.camera.base import FRAME_TIME_DOC, EncodedFrame
from agent.contract import segment_id as segment_id
from agent.errors import DiskFullError, SpoolError
from agent.sources import GAP_TOPIC, ChannelSpec, Message
from agent.timeline import TIMELINE_DOC, ClockAnchor

from .schemas import (
    FRAME_FIELDS,
    FRAMES_SPEC,
    FRAMES_TOPIC,
    GAP_SPEC,
    VIDEO_TOPIC,
    ChannelDef,
    encode_video,
    msgpack_channel,
    video_channel,
)

SEGMENT_META = "wearcap.segment"
CHANNELS_META = "wearcap.channels"
END_META = "wearcap.segment.end"
SOURCE_META_PREFIX = "wearcap.source."
MAX_FRAME_BATCH = 300
"""Frames per timing batch at most (a batch is normally one chunk: ``chunk_seconds``)."""




@dataclass(frozen=True, slots=True)
class SegmentHeader:
    device_id: str
    seq: int
    prev_seq: int
    """Sequence of the segment ``prev_sha256`` belongs to (-1: none before)."""
    prev_sha256: str
    config_digest: str
    anchor: ClockAnchor | None
    recovered: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return segment_id(self.device_id, self.seq)

    def to_metadata(self) -> dict[str, str]:
        a = self.anchor
        md = {
            "segment_id": self.id,
            "device_id": self.device_id,
            "sequence": str(self.seq),
            "previous_sequence": str(self.prev_seq),
            "previous_sha256": self.prev_sha256,
            "software_version": __version__,
            "config_digest": self.config_digest,
            "recovered": "true" if self.recovered else "false",
            "timeline_doc": TIMELINE_DOC,
            "frame_time_doc": FRAME_TIME_DOC,
        }
        if a is not None:
            md.update({
                "boot_id": a.boot_id,
                "anchor_monotonic_ns": str(a.monotonic_ns),
                "anchor_realtime_ns": str(a.realtime_ns),
                "anchor_uncertainty_ns": str(a.uncertainty_ns),
                "ntp_synchronized": {True: "true", False: "false", None: "unknown"}[
                    a.ntp_synchronized],
            })
        md.update(self.extra)
        return md


class _HashingStream:
    """Forwards writes to ``out`` and keeps the SHA-256 and size of everything written."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        try:
            self.out.write(data)
        except OSError as exc:
            raise _io_error(exc) from exc
        self.sha.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        try:
            self.out.flush()
        except OSError as exc:
            raise _io_error(exc) from exc


def _io_error(exc: OSError) -> SpoolError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"disk full while writing a segment ({exc.strerror}); "
                             "recording stopped, nothing was deleted")
    return SpoolError(f"cannot write a segment: {exc.strerror}")


def _default_sync(stream: IO[bytes]) -> Callable[[], None]:
    def sync() -> None:
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):
            return
        try:
            os.fsync(fd)
        except OSError as exc:
            raise _io_error(exc) from exc
    return sync


def channels_metadata(defs: Mapping[int, ChannelDef]) -> dict[str, str]:
    """The channel table (by channel id), so recovery can rebuild channels even when the
    chunk that registered them is lost."""
    return {str(cid): json.dumps({
        "topic": d.topic, "message_encoding": d.message_encoding,
        "schema_name": d.schema_name, "schema_encoding": d.schema_encoding,
        "schema_data": base64.b64encode(d.schema_data).decode(), "metadata": d.metadata,
    }, sort_keys=True) for cid, d in defs.items()}


def channels_from_metadata(md: Mapping[str, str]) -> dict[int, ChannelDef]:
    out = {}
    for cid, js in md.items():
        d = json.loads(js)
        out[int(cid)] = ChannelDef(d["topic"], d["message_encoding"], d["schema_name"],
                                   d["schema_encoding"], base64.b64decode(d["schema_data"]),
                                   dict(d.get("metadata", {})))
    return out


_MESSAGE_OVERHEAD = 31  # opcode, length, channel id, sequence, log and publish time


class McapOut:
    """A thin MCAP writer over a hashing stream: channel registration, messages, checkpoints.

    Chunks are closed here, not by the MCAP library: when the open chunk holds
    ``chunk_bytes`` or more, and at every ``checkpoint``/``close_chunk``. Just before a chunk
    closes ``before_chunk_close`` runs, so a caller that batches (the frame timing) can put
    its batch into the chunk that holds the data it describes.
    """

    def __init__(self, stream: IO[bytes], *, chunk_bytes: int = 4 << 20,
                 sync: Callable[[], None] | None = None,
                 before_chunk_close: Callable[[], None] | None = None) -> None:
        self._hs = _HashingStream(stream)
        self._sync = sync or _default_sync(stream)
        self.mcap: Any = Writer(cast(IO[bytes], self._hs), chunk_size=1 << 62,
                                compression=CompressionType.ZSTD)
        self.mcap.start(profile="", library=f"wearcap {__version__}")
        self.ids: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self.closed = False
        self.chunk_bytes = chunk_bytes
        self._open_bytes = 0
        self._before_close = before_chunk_close
        self._closing = False

    def register(self, d: ChannelDef) -> int:
        if d.topic in self.ids:
            return self.ids[d.topic]
        sid = self.mcap.register_schema(d.schema_name, d.schema_encoding, d.schema_data)
        cid: int = self.mcap.register_channel(d.topic, d.message_encoding, sid, d.metadata)
        self.ids[d.topic] = cid
        self.counts[d.topic] = 0
        return cid

    def add(self, topic: str, log_time_ns: int, data: bytes) -> None:
        self.mcap.add_message(self.ids[topic], log_time_ns, data, log_time_ns,
                              self.counts[topic])
        self.counts[topic] += 1
        self._open_bytes += len(data) + _MESSAGE_OVERHEAD
        if self._open_bytes >= self.chunk_bytes and not self._closing:
            self.close_chunk()

    def metadata(self, name: str, data: dict[str, str]) -> None:
        self.mcap.add_metadata(name, data)

    def close_chunk(self) -> None:
        """Let the batcher add its batch, then close the open chunk and flush the stream."""
        self._closing = True
        try:
            if self._before_close is not None:
                self._before_close()
        finally:
            self._closing = False
        self.mcap.flush()
        self._open_bytes = 0

    def checkpoint(self) -> None:
        """Close the open chunk, then flush and fsync: everything so far survives a crash."""
        self.close_chunk()
        self._sync()

    def finish(self) -> tuple[str, int]:
        """Write the summary; flush and fsync; return (sha256 hex, size)."""
        self.mcap.finish()
        self._hs.flush()
        self._sync()
        self.closed = True
        return self._hs.sha.hexdigest(), self._hs.size

    @property
    def size(self) -> int:
        return self._hs.size


class SegmentWriter:
    """Writes one segment: camera frames, gaps and source messages, with its metadata."""

    def __init__(self, stream: IO[bytes], header: SegmentHeader, *,
                 sources_metadata: Mapping[str, Mapping[str, str]] | None = None,
                 channels: list[ChannelSpec] | None = None, video: bool = True,
                 chunk_bytes: int = 4 << 20, sync: Callable[[], None] | None = None) -> None:
        self.header = header
        self._batch: tuple[list[Any], ...] = tuple([] for _ in FRAME_FIELDS)
        self._batch_t0 = 0
        try:
            self.out = McapOut(stream, chunk_bytes=chunk_bytes, sync=sync,
                               before_chunk_close=self.flush_frames)
            defs = ([video_channel(), msgpack_channel(FRAMES_SPEC)] if video else [])
            defs.append(msgpack_channel(GAP_SPEC))
            defs += [msgpack_channel(c) for c in channels or []]
            table = {self.out.register(d): d for d in defs}  # buffered in the first chunk
            self.out.metadata(SEGMENT_META, header.to_metadata())
            self.out.metadata(CHANNELS_META, channels_metadata(table))
            for name, md in (sources_metadata or {}).items():
                self.out.metadata(SOURCE_META_PREFIX + name, dict(md))
        except OSError as exc:
            raise SpoolError(f"cannot write segment {header.id}: {exc}") from exc
        self.frames = 0
        self.gaps = 0
        self.lost = 0
        self.first_ns: int | None = None
        self.last_ns: int | None = None
        self._last_index: int | None = None
        self._last_frame_ns: int | None = None
        self._pack = msgpack.Packer().pack

    @property
    def id(self) -> str:
        return self.header.id

    def _span(self, t: int) -> None:
        if self.first_ns is None or t < self.first_ns:
            self.first_ns = t
        if self.last_ns is None or t > self.last_ns:
            self.last_ns = t

    def continue_from(self, last_index: int | None, last_frame_ns: int | None) -> None:
        """Carry frame continuity over a roll, so a loss at the boundary is still reported."""
        self._last_index, self._last_frame_ns = last_index, last_frame_ns

    def write_frame(self, f: EncodedFrame) -> None:
        jump = 0 if self._last_index is None else f.index - self._last_index - 1
        lost = max(f.dropped_before, jump)
        if lost > 0:
            start = self._last_frame_ns if self._last_frame_ns is not None else f.host_ts_ns
            self.write_gap(VIDEO_TOPIC, start, f.host_ts_ns, lost,
                           "camera-drop" if f.dropped_before else "frame-index-jump")
        t = f.host_ts_ns
        b = self._batch
        if not b[0]:
            self._batch_t0 = t
        # The timing row joins the batch before the video message, so that if this message
        # fills the chunk, the row is flushed into the same chunk as its frame.
        for col, v in zip(b, (f.index, f.sensor_ts_ns, t, f.exposure_us, f.frame_duration_us,
                              f.keyframe, f.dropped_before, len(f.data)), strict=True):
            col.append(v)
        self.frames += 1
        self._last_index, self._last_frame_ns = f.index, t
        self._span(t)
        self.out.add(VIDEO_TOPIC, t, encode_video(t, f.data))
        if len(b[0]) >= MAX_FRAME_BATCH:
            self.flush_frames()

    def flush_frames(self) -> None:
        """Write the pending frame timing as one columnar message (runs before every chunk
        closes, so a batch always sits in the chunk of the frames it describes)."""
        b = self._batch
        if not b[0]:
            return
        self.out.add(FRAMES_TOPIC, self._batch_t0, self._pack(dict(zip(FRAME_FIELDS, b,
                                                                       strict=True))))
        for col in b:
            col.clear()

    def write_gap(self, stream: str, start_ns: int, end_ns: int, lost: int, cause: str) -> None:
        self.out.add(GAP_TOPIC, start_ns, self._pack({
            "stream": stream, "start_ns": start_ns, "end_ns": end_ns, "lost": lost,
            "cause": cause}))
        self.gaps += 1
        if lost > 0:
            self.lost += lost
        self._span(start_ns)

    def write_message(self, m: Message) -> None:
        if m.topic == GAP_TOPIC:
            p = m.payload
            self.write_gap(str(p["stream"]), int(p["start_ns"]), int(p["end_ns"]),
                           int(p["lost"]), str(p["cause"]))
            return
        if m.topic not in self.out.ids:
            raise SpoolError(f"message on unregistered topic {m.topic!r}")
        self.out.add(m.topic, m.log_time_ns, self._pack(m.payload))
        self._span(m.log_time_ns)

    def checkpoint(self) -> None:
        try:
            self.out.checkpoint()
        except OSError as exc:
            raise SpoolError(f"cannot write segment {self.id}: {exc}") from exc

    def summary(self) -> dict[str, Any]:
        return {"frames": self.frames, "gaps": self.gaps, "lost": self.lost,
                "first_ns": self.first_ns, "last_ns": self.last_ns,
                "messages": dict(self.out.counts)}

    def close(self) -> tuple[str, int]:
        """Write the closing counts and the summary; return (sha256, size)."""
        s = self.summary()
        try:
            self.out.close_chunk()  # the last chunk goes before the closing record
            self.out.metadata(END_META, {
                "frames": str(self.frames), "gaps": str(self.gaps), "lost": str(self.lost),
                "first_ns": str(self.first_ns if self.first_ns is not None else ""),
                "last_ns": str(self.last_ns if self.last_ns is not None else ""),
                "messages": json.dumps(s["messages"], sort_keys=True)})
            return self.out.finish()
        except OSError as exc:
            raise SpoolError(f"cannot write segment {self.id}: {exc}") from exc
