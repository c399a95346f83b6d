"""What is in a segment: identity, chain, integrity, streams, rates, gaps and frame timing.

    expand(paths) -> [Path]                  # files, directories, a spool root (its sealed/)
    read_streams(path) -> Streams            # raises InputError naming the file
    report(streams) -> SegmentReport         # .to_dict() is the --json form

**The per-stream report** is ``StreamReport``, one per stream of a segment, built by
``_stream_report`` from the stream's sample times; ``SegmentReport.streams`` maps topic ->
``StreamReport``. Counts are of what the stream carries, not of MCAP messages: frames for the
video and the frame timing, *samples* for an IMU stream, *rows* for any other columnar batch
channel (e.g. the head MCU's strobes; the batches are ``messages``).
To report something new about a stream (a band's claimed bound, its refused streams and
slews, an MCU's strobe residuals), add a field with a default to ``StreamReport``, fill it in
a function of ``_EXTENSIONS`` (called with the report, the ``Streams`` and the topic), and
give it a line in ``agent/commands/inspect.py``'s renderer. ``to_dict`` includes every field.

Integrity: a file is read chunk by chunk with every CRC checked (``agent.export.reader``). A
damaged chunk is skipped and becomes a gap (stream ``*``, cause ``damaged-chunk``), and the
segment's ``damaged_chunks`` counts it: such a file is not ``intact``.

Gaps come from two places: the gap records (losses the agent knew about) and intervals longer
than 1.5x a stream's median interval. A long interval that no gap record covers is an
*unreported hole*: a loss nobody reported, which is a bug somewhere upstream.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from agent.errors import InputError
from agent.export.reader import Segment, read_segment
from agent.export.rows import columns
from agent.export.streams import Gap, Imu, clock_fits, frames, gaps, imu_streams
from agent.record.schemas import FRAMES_TOPIC, VIDEO_TOPIC
from agent.sources import GAP_TOPIC
from agent.wrist.imu_batch import batch_clock

GAP_FACTOR = 1.5
SLEW_MIN_NS = 1_000
"""A batch whose output is further than this from its fit is slewing (below: rounding)."""
MAX_LISTED = 20
"""Holes and frame-index jumps listed per stream (all are counted)."""


def expand(paths: list[str]) -> list[Path]:
    """Files to inspect: each file as given; every ``*.mcap`` of a directory (sorted); for a
    spool root (a directory with ``sealed/``), its sealed segments then its unfinished parts."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            if (p / "sealed").is_dir():
                found = sorted((p / "sealed").glob("*.mcap"))
                found += sorted((p / "active").glob("*.mcap.part"))
            else:
                found = sorted(p.glob("*.mcap"))
            if not found:
                raise InputError("no .mcap files in this directory (nor in its sealed/)",
                                 path=raw)
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


@dataclass
class Streams:
    """What one file holds, decoded: the raw material of a report and of a plot."""

    path: Path
    segment: Segment
    times: dict[str, list[int]]
    """Sorted host times per stream: one per frame, one per IMU sample, one per message."""
    counts: dict[str, int]
    """MCAP messages per topic."""
    gaps: list[Gap]
    indexes: list[int]
    """Frame indexes in host-time order."""
    imu: dict[str, Imu] = field(default_factory=dict)
    columnar: set[str] = field(default_factory=set)
    """Other batch channels, counted by row."""

    @property
    def metadata(self) -> dict[str, dict[str, str]]:
        return self.segment.metadata

    @property
    def complete(self) -> bool:
        return self.segment.complete

    def segment_fits(self) -> dict[str, dict[str, Any]]:
        return clock_fits(self.segment)


def read_streams(path: Path) -> Streams:
    seg = read_segment(path)
    times: dict[str, list[int]] = {}
    counts: dict[str, int] = {}
    for r in seg.records:
        counts[r.topic] = counts.get(r.topic, 0) + 1
    found = gaps(seg)
    imu = imu_streams(seg, found)
    fr = frames(seg)
    indexes: list[int] = []
    if fr is not None:
        times[FRAMES_TOPIC] = fr.host_ns.tolist()
        indexes = fr.index.tolist()
    for topic, s in imu.items():
        times[topic] = s.host_ns.tolist()
    batched = {FRAMES_TOPIC, *imu}
    cols = {t: c for t, d in seg.channels.items()
            if t not in batched and t != GAP_TOPIC and (c := columns(d)) is not None}
    for r in seg.records:
        if r.topic in cols:  # a columnar batch: one time per row
            try:
                rows = cols[r.topic].row_times(msgpack.unpackb(r.data), r.log_time)
            except (ValueError, msgpack.UnpackException):
                rows = [r.log_time]
            times.setdefault(r.topic, []).extend(rows)
        elif r.topic not in batched:
            times.setdefault(r.topic, []).append(r.log_time)
    for ts in times.values():
        ts.sort()
    return Streams(path, seg, times, counts, found, indexes, imu, set(cols))


@dataclass
class Hole:
    """An interval between two consecutive samples longer than GAP_FACTOR x the median."""

    start_ns: int
    end_ns: int
    seconds: float
    reported: bool
    """A gap record of this stream (or of every stream) covers it."""


@dataclass
class StreamReport:
    """One stream of one segment (see the module docstring to add a field)."""

    topic: str
    unit: str
    """What ``count`` counts: frames, samples, gap records or messages."""
    count: int
    messages: int
    """MCAP messages that carried them (IMU and frame timing are batched)."""
    rate_hz: float
    """(count - 1) / span: the rate the stream actually delivered."""
    first_ns: int | None
    last_ns: int | None
    reported_gaps: int = 0
    """Gap records naming this stream."""
    reported_lost: int = 0
    """What those records count as lost (records whose count is unknown excluded)."""
    uncounted_gaps: int = 0
    """Gap records of this stream whose loss nobody could count."""
    long_intervals: int = 0
    """Intervals over GAP_FACTOR x the median (reported or not)."""
    unreported_holes: int = 0
    """Long intervals that no gap record covers."""
    holes: list[Hole] = field(default_factory=list)
    """The first MAX_LISTED long intervals."""
    interval_ms: dict[str, float] | None = None
    """Median, p99 and max interval between consecutive samples."""
    sample_index_jumps: int = 0
    """IMU: running sample numbers skipped between consecutive samples (known losses)."""
    missing_values: int = 0
    """IMU: axis values stored as -32768 (the band measured nothing)."""
    strobes: dict[str, Any] | None = None
    """MCU strobes (/head/strobe) against the frames: agent.mcu.strobes.StrobeReport."""
    events: list[dict[str, Any]] = field(default_factory=list)
    """/wearcap/events: the wearer's explicit events (kind, host_ns, detail)."""
    gap_causes: dict[str, int] = field(default_factory=dict)
    """Gap records of this stream by cause (the cause up to its first ':' detail)."""
    band: dict[str, Any] | None = None
    """A wrist band (``_band_fields``): the error bound its batches claimed (p50/max ns and
    what it includes), streams the band refused with its reasons, what its info
    characteristic said, its time exchange, and its slews (``_slews``)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class SegmentReport:
    path: str
    id: str
    device_id: str | None
    sequence: int | None
    previous_sequence: int | None
    """The sequence the chain links back to (None: the first segment of its chain)."""
    previous_sha256: str
    recovered: bool
    complete: bool
    """The file reached its closing records (False for an unfinished or cut file)."""
    damaged_chunks: int
    intact: bool
    """Complete and every chunk passed its CRC."""
    software_version: str | None
    boot_id: str | None
    duration_s: float
    frames: int
    frame_index_first: int | None
    frame_index_last: int | None
    frame_index_jumps: list[dict[str, int]]
    streams: dict[str, StreamReport]
    gaps: list[dict[str, Any]]
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["streams"] = {k: v.to_dict() for k, v in self.streams.items()}
        return d


def error_report(path: Path, message: str) -> dict[str, Any]:
    """The --json entry of a file that could not be read at all."""
    return {"path": str(path), "id": path.name, "intact": False, "complete": False,
            "error": message}


_UNITS = {VIDEO_TOPIC: "frames", FRAMES_TOPIC: "frames", GAP_TOPIC: "gap records"}


def _stream_report(s: Streams, topic: str, ts: list[int]) -> StreamReport:
    n = len(ts)
    span = (ts[-1] - ts[0]) / 1e9 if n > 1 else 0.0
    unit = "samples" if topic in s.imu else "rows" if topic in s.columnar else _UNITS.get(
        topic, "messages")
    mine = [g for g in s.gaps if g.names(topic)]
    st = StreamReport(
        topic=topic, unit=unit, count=n, messages=s.counts.get(topic, n),
        rate_hz=round((n - 1) / span, 3) if span else 0.0,
        first_ns=ts[0] if ts else None, last_ns=ts[-1] if ts else None,
        reported_gaps=len(mine), reported_lost=sum(g.lost for g in mine if g.lost > 0),
        uncounted_gaps=sum(1 for g in mine if g.lost < 0))
    d = [b - a for a, b in itertools.pairwise(ts)]
    if topic != GAP_TOPIC and len(d) >= 2:
        sd = sorted(d)
        typical = _pct(sd, 0.5)
        if typical <= 0:  # samples sharing arrival times: judge by the nonzero intervals
            nz = [x for x in sd if x > 0]
            typical = _pct(nz, 0.5) if nz else 0
        long_ = [(a, b) for a, b in itertools.pairwise(ts)
                 if typical and b - a > GAP_FACTOR * typical]
        holes = [Hole(a, b, (b - a) / 1e9, any(g.covers(topic, a, b) for g in s.gaps))
                 for a, b in long_]
        st.long_intervals = len(holes)
        st.unreported_holes = sum(1 for h in holes if not h.reported)
        st.holes = holes[:MAX_LISTED]
        st.interval_ms = {"p50": typical / 1e6, "p99": _pct(sd, 0.99) / 1e6,
                          "max": sd[-1] / 1e6}
    return st


def _imu_fields(st: StreamReport, s: Streams, topic: str) -> None:
    imu = s.imu.get(topic)
    if imu is None:
        return
    idx = imu.index
    if len(idx) > 1:
        step = idx[1:] - idx[:-1]
        st.sample_index_jumps = int((step[step > 1] - 1).sum())
    st.missing_values = int((imu.acc == -32768).sum())
    if imu.gyro is not None:
        st.missing_values += int((imu.gyro == -32768).sum())


def _mcu_fields(st: StreamReport, s: Streams, topic: str) -> None:
    """The head MCU's strobe check of the camera, and the wearer's events."""
    import msgpack

    if topic == "/wearcap/events":
        st.events = [msgpack.unpackb(r.data) for r in s.segment.topic_records(topic)]
        return
    strobe, stored = "/head/strobe", "/head/strobe_match"
    if topic != strobe and not (topic == stored and strobe not in s.counts):
        return
    from agent.export.streams import frames as frame_table
    from agent.mcu.strobes import segment_report, stored_report

    fr = frame_table(s.segment)
    if fr is None:
        return
    payloads = [msgpack.unpackb(r.data) for r in s.segment.topic_records(strobe)]
    explained = [(g.start_ns, g.end_ns) for g in s.gaps if g.names(VIDEO_TOPIC)]
    if stored in s.counts:  # matched at capture time (agent.mcu.strobes.StrobeMatcher)
        rows = [msgpack.unpackb(r.data) for r in s.segment.topic_records(stored)]
        rep = stored_report(rows, fr.host_ns, fr.index, explained, payloads)
    else:  # a recording from before the stored match: matched here, by time
        rep = segment_report(payloads, fr.host_ns, fr.index, explained)
    if rep is not None:
        st.strobes = rep.to_dict()


def _band_fields(st: StreamReport, s: Streams, topic: str) -> None:
    """Gap causes for every stream; for a wrist band, what it claimed and what it said."""
    import json

    import msgpack

    causes: dict[str, int] = {}
    for g in s.gaps:
        if g.names(topic) and g.stream != "*":
            key = g.cause.split(" (")[0]
            causes[key] = causes.get(key, 0) + 1
    st.gap_causes = causes
    if topic not in s.imu or not topic.startswith("/wrist/"):
        return
    bounds: list[int] = []
    latency: set[str] = set()
    absent: dict[str, str] = {}
    slewing: list[tuple[int, int, float]] = []  # (batch log time, slew ns, rate ppm)
    for r in s.segment.topic_records(topic):
        try:
            p = msgpack.unpackb(r.data)
        except (ValueError, msgpack.UnpackException):
            continue  # counted as an undecodable batch already
        clock = batch_clock(p)
        if isinstance(clock.get("error_bound_ns"), int):
            bounds.append(int(clock["error_bound_ns"]))
        if isinstance(clock.get("slew_ns"), int):
            ppm = clock.get("slew_max_ppm")
            slewing.append((r.log_time, int(clock["slew_ns"]),
                            float(ppm) if isinstance(ppm, (int, float)) else 0.0))
        if clock.get("latency"):
            latency.add(str(clock["latency"]))
        absent.update(p.get("absent") or {})
    name = topic.split("/")[2]
    meta = s.metadata.get(f"wearcap.source.{name}", {})
    for key in ("refused_streams",):
        if key in meta:
            absent.update(json.loads(meta[key]))
    bounds.sort()
    st.band = {
        "claimed_bound_ns": ({"p50": bounds[len(bounds) // 2], "max": bounds[-1]}
                             if bounds else None),
        "latency": sorted(latency),
        "refused": absent,
        "info": json.loads(meta["band_info"]) if "band_info" in meta else None,
        "time_exchange": (json.loads(meta["latency_exchange"])
                          if "latency_exchange" in meta else None),
        "slews": _slews(slewing),
        "notify_path": meta.get("notify_path"),
        "notify_fallback": meta.get("notify_fallback"),
    }


def _slews(batches: list[tuple[int, int, float]]) -> dict[str, Any] | None:
    """A band's slews from its batches' ``clock.slew_ns`` (the part of a fit change not yet
    slewed into the output) and ``clock.slew_max_ppm`` (the rate it is slewed in at): each
    run of consecutive batches that are slewing is one slew, from its first batch to its last,
    with the largest offset still to absorb and the rate. None: the batches record no slew
    (written before slews were recorded)."""
    if not batches:
        return None
    runs: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    for t, slew, ppm in sorted(batches, key=lambda b: b[0]):
        if slew < SLEW_MIN_NS:
            cur = None
            continue
        if cur is None:
            cur = {"start_ns": t, "end_ns": t, "max_ns": slew, "max_ppm": ppm, "batches": 0}
            runs.append(cur)
        cur["end_ns"] = t
        cur["max_ns"] = max(cur["max_ns"], slew)
        cur["max_ppm"] = max(cur["max_ppm"], ppm)
        cur["batches"] += 1
    return {"count": len(runs), "batches": sum(r["batches"] for r in runs),
            "of_batches": len(batches),
            "max_ns": max((r["max_ns"] for r in runs), default=0),
            "max_ppm": max((r["max_ppm"] for r in runs), default=0.0),
            "listed": runs[:MAX_LISTED]}


_EXTENSIONS: list[Callable[[StreamReport, Streams, str], None]] = [_imu_fields, _mcu_fields,
                                                                   _band_fields]
"""Per-stream additions, each called for every stream of every segment."""


def _int_or_none(v: str | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def report(s: Streams) -> SegmentReport:
    seg = s.segment
    md = seg.header
    streams: dict[str, StreamReport] = {}
    for topic, ts in sorted(s.times.items()):
        st = _stream_report(s, topic, ts)
        for ext in _EXTENSIONS:
            ext(st, s, topic)
        streams[topic] = st
    idx = s.indexes
    jumps = [{"after": a, "next": b} for a, b in itertools.pairwise(idx) if b != a + 1]
    all_t = [t for ts in s.times.values() if ts for t in (ts[0], ts[-1])]
    prev = _int_or_none(md.get("previous_sequence"))
    frames_n = streams[FRAMES_TOPIC].count if FRAMES_TOPIC in streams else (
        streams[VIDEO_TOPIC].count if VIDEO_TOPIC in streams else 0)
    return SegmentReport(
        path=str(s.path), id=seg.id, device_id=md.get("device_id"), sequence=seg.sequence,
        previous_sequence=prev if prev is not None and prev >= 0 else None,
        previous_sha256=md.get("previous_sha256", ""),
        recovered=md.get("recovered") == "true", complete=seg.complete,
        damaged_chunks=len(seg.damage), intact=seg.intact,
        software_version=md.get("software_version"), boot_id=md.get("boot_id"),
        duration_s=(max(all_t) - min(all_t)) / 1e9 if all_t else 0.0,
        frames=frames_n,
        frame_index_first=idx[0] if idx else None, frame_index_last=idx[-1] if idx else None,
        frame_index_jumps=jumps[:MAX_LISTED], streams=streams,
        gaps=[dataclasses.asdict(g) for g in s.gaps])


def inspect_file(path: Path) -> dict[str, Any]:
    return report(read_streams(path)).to_dict()


def shared_ids(reports: list[SegmentReport]) -> dict[str, list[str]]:
    """Segment ids that more than one file claims (two recordings, or a copy): id -> paths."""
    by: dict[str, list[str]] = {}
    for r in reports:
        by.setdefault(r.id, []).append(r.path)
    return {k: v for k, v in by.items() if len(v) > 1}
