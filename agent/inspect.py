"""What is in a segment: identity, chain, streams, rates, gaps and frame timing.

For ``/camera/frames`` (timing batches) the stream's count, rate and intervals are those of
the frames the batches describe; ``messages`` is how many batches carried them.

Gaps come from two places: the gap channel (losses the agent knew about) and intervals longer
than 1.5x a stream's typical period (losses nobody reported, which would be a bug).
"""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from agent.errors import InputError
from agent.record.schemas import FRAMES_TOPIC, VIDEO_TOPIC, frame_rows
from agent.sources import GAP_TOPIC

GAP_FACTOR = 1.5


def expand(paths: list[str]) -> list[Path]:
    """Files to inspect: each file as given, every ``*.mcap`` of a directory (sorted)."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(p.glob("*.mcap"))
            if not found:
                raise InputError("no .mcap files in this directory", path=raw)
            out += found
        elif p.is_file():
            out.append(p)
        elif p.exists():
            raise InputError("not a file or directory", path=raw)
        else:
            raise InputError("no such file or directory", path=raw)
    return out


def _pct(sorted_vals: list[int], q: float) -> int:
    i = min(len(sorted_vals) - 1, max(0, round(q * (len(sorted_vals) - 1))))
    return sorted_vals[i]


def _read(path: Path) -> tuple[dict[str, dict[str, str]], list[tuple[str, int, bytes]], bool]:
    """(metadata by name, [(topic, log_time, data)], complete) of a sealed file or a part."""
    from mcap.exceptions import McapError
    from mcap.reader import make_reader

    data = path.read_bytes()
    if not data.startswith(b"\x89MCAP0\r\n"):
        raise InputError("not an MCAP file", path=str(path))
    try:
        r = make_reader(io.BytesIO(data))
        md = {m.name: dict(m.metadata) for m in r.iter_metadata()}
        msgs = [(ch.topic, m.log_time, m.data)
                for _, ch, m in r.iter_messages(log_time_order=False)]
        return md, msgs, True
    except (McapError, ValueError, EOFError, KeyError, IndexError, OSError):
        pass
    from agent.record.recover import scan  # an unfinished file: read what is complete

    s = scan(data)
    if not s.messages and not s.metadata:
        raise InputError("not a readable MCAP file", path=str(path))
    topics = {cid: d.topic for cid, d in s.channels.items()}
    from agent.record.segment import CHANNELS_META, channels_from_metadata

    md = {m.name: dict(m.metadata) for m in s.metadata}
    for cid, d in channels_from_metadata(md.get(CHANNELS_META, {})).items():
        topics.setdefault(cid, d.topic)
    return md, [(topics.get(m.channel_id, f"#{m.channel_id}"), m.log_time, m.data)
                for m in s.messages], False


@dataclass
class Streams:
    """What one file holds, message by message: the raw material of a report and a plot."""

    path: Path
    metadata: dict[str, dict[str, str]]
    complete: bool
    times: dict[str, list[int]]
    """Sorted log times per topic (for the frame-timing channel: its frames' host times)."""
    counts: dict[str, int]
    """Messages per topic."""
    gaps: list[dict[str, Any]]
    indexes: list[int]
    """Frame indexes in host-time order."""


def read_streams(path: Path) -> Streams:
    md, msgs, complete = _read(path)
    times: dict[str, list[int]] = {}
    counts: dict[str, int] = {}
    gaps: list[dict[str, Any]] = []
    frames: list[tuple[int, int]] = []  # (host_ts_ns, index) of every frame-timing row
    for topic, t, data in msgs:
        counts[topic] = counts.get(topic, 0) + 1
        if topic == GAP_TOPIC:
            gaps.append(msgpack.unpackb(data))
        elif topic == FRAMES_TOPIC:
            # Batches: the stream's times are its frames' times, not the batches'.
            for row in frame_rows(msgpack.unpackb(data)):
                frames.append((int(row.get("host_ts_ns", t)), int(row["index"])))
            continue
        times.setdefault(topic, []).append(t)
    frames.sort()
    indexes = [i for _, i in frames]
    if frames:
        times[FRAMES_TOPIC] = [t for t, _ in frames]
    for ts in times.values():
        ts.sort()
    return Streams(path, md, complete, times, counts, gaps, indexes)


def inspect_file(path: Path) -> dict[str, Any]:
    return report(read_streams(path))


def report(s: Streams) -> dict[str, Any]:
    path, md, complete, times, counts = s.path, s.metadata, s.complete, s.times, s.counts
    gaps, indexes = s.gaps, s.indexes
    seg = md.get("wearcap.segment", {})
    streams: dict[str, Any] = {}
    for topic, ts in sorted(times.items()):
        n = len(ts)
        span = (ts[-1] - ts[0]) / 1e9 if n > 1 else 0.0
        d = [b - a for a, b in itertools.pairwise(ts)]
        st: dict[str, Any] = {"count": n, "messages": counts.get(topic, n),
                              "rate_hz": round((n - 1) / span, 3) if span else 0.0,
                              "first_ns": ts[0], "last_ns": ts[-1],
                              "reported_gaps": sum(1 for g in gaps if g["stream"] == topic)}
        if topic != GAP_TOPIC and len(d) >= 2:
            sd = sorted(d)
            typical = _pct(sd, 0.5)
            long_ = [(a, b) for a, b in itertools.pairwise(ts)
                     if typical and b - a > GAP_FACTOR * typical]
            st["interval_gaps"] = [{"start_ns": a, "end_ns": b, "seconds": (b - a) / 1e9}
                                   for a, b in long_[:20]]
            st["interval_gap_count"] = len(long_)
            st["interval_ms"] = {"p50": _pct(sd, 0.5) / 1e6, "p99": _pct(sd, 0.99) / 1e6,
                                 "max": sd[-1] / 1e6}
        streams[topic] = st
    jumps = [{"after": a, "next": b} for a, b in itertools.pairwise(indexes)
             if b != a + 1]
    all_t = [t for ts in times.values() for t in (ts[0], ts[-1])]
    return {
        "path": str(path),
        "id": seg.get("segment_id", path.name),
        "sequence": int(seg["sequence"]) if seg.get("sequence", "").isdigit() else None,
        "previous_sequence": seg.get("previous_sequence"),
        "previous_sha256": seg.get("previous_sha256", ""),
        "recovered": seg.get("recovered") == "true",
        "complete": complete,
        "software_version": seg.get("software_version"),
        "boot_id": seg.get("boot_id"),
        "duration_s": (max(all_t) - min(all_t)) / 1e9 if all_t else 0.0,
        "frames": streams.get(VIDEO_TOPIC, {}).get("count", 0),
        "frame_index_first": indexes[0] if indexes else None,
        "frame_index_last": indexes[-1] if indexes else None,
        "frame_index_jumps": jumps,
        "streams": streams,
        "gaps": gaps,
    }
