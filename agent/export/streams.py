"""Decoded streams of one segment: frames, IMU samples, gaps and clock fits, as arrays.

    frames(seg) -> Frames | None         # the /camera/frames rows, host-time order
    imu_streams(seg) -> {topic: Imu}     # every wearcap.ImuBatch channel, sample by sample
    gaps(seg) -> [Gap]                   # the gap channel plus one per damaged chunk
    clock_fits(seg) -> {source: dict}    # each source's clock fit as written at the roll

IMU batches of every encoding ever written decode (``agent.wrist.imu_batch``, and the first
release's absolute per-chunk columns, see ``_columns_as_deltas``). Per sample an IMU
stream keeps its raw counts, its scale, the host and device times and the error bound of the
clock mapping when the batch was written. A batch that does not decode is not dropped
silently: it becomes a gap (cause ``undecodable-batch``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt

from agent.record.schemas import FRAME_FIELDS, FRAMES_TOPIC, VIDEO_TOPIC, frame_rows
from agent.record.segment import SOURCE_META_PREFIX
from agent.sources import GAP_TOPIC
from agent.wrist.imu_batch import (
    DELTA_COLUMNS,
    LEGACY_ENCODING,
    batch_clock,
    decode_payload,
    delta_column,
)
from agent.wrist.imu_batch import SCHEMA_NAME as IMU_SCHEMA

from .reader import Segment

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Gap:
    stream: str
    """The topic that lost data (``*``: every stream, e.g. a damaged chunk)."""
    start_ns: int
    end_ns: int
    lost: int
    """Records known lost; -1 when nobody could count them."""
    cause: str

    def names(self, topic: str) -> bool:
        """Is this a gap of ``topic`` (the frame timing shares the video's gaps)?"""
        return self.stream in (topic, "*") or (topic == FRAMES_TOPIC
                                               and self.stream == VIDEO_TOPIC)

    def covers(self, topic: str, a: int, b: int) -> bool:
        """Does this gap explain a silence from ``a`` to ``b`` on ``topic``?"""
        return self.names(topic) and self.start_ns <= b and self.end_ns >= a


@dataclass
class Frames:
    """One row per frame, sorted by host time (FRAME_FIELDS as int64 columns)."""

    columns: dict[str, I64]

    def __len__(self) -> int:
        return len(self.columns["index"])

    @property
    def host_ns(self) -> I64:
        return self.columns["host_ts_ns"]

    @property
    def index(self) -> I64:
        return self.columns["index"]


@dataclass
class Imu:
    """One band's samples in host-time order. acc/gyro are raw int16 counts (n, 3); physical
    value = count * scale; -32768 means the axis had no measurement."""

    topic: str
    band: str
    profile: str
    acc: npt.NDArray[np.int16]
    gyro: npt.NDArray[np.int16] | None
    acc_scale: F64
    gyro_scale: F64
    host_ns: I64
    device_ns: I64
    """Band clock ns; -1 where the band has no clock."""
    index: I64
    """Running sample number since the band's stream started."""
    bound_ns: I64
    """Error bound of the host mapping when the batch was written (-1: not converged)."""
    batches: int

    def __len__(self) -> int:
        return len(self.host_ns)


def frames(seg: Segment) -> Frames | None:
    rows: list[dict[str, Any]] = []
    for r in seg.records:
        if r.topic == FRAMES_TOPIC:
            for row in frame_rows(msgpack.unpackb(r.data)):
                row.setdefault("host_ts_ns", r.log_time)
                rows.append(row)
    if not rows:
        return None
    rows.sort(key=lambda x: int(x["host_ts_ns"]))
    cols = {k: np.asarray([int(x.get(k, 0) or 0) for x in rows], dtype=np.int64)
            for k in FRAME_FIELDS}
    return Frames(cols)


def video_records(seg: Segment) -> list[tuple[int, bytes]]:
    """(log_time, foxglove.CompressedVideo bytes) of every video message, in file order."""
    return [(r.log_time, r.data) for r in seg.records if r.topic == VIDEO_TOPIC]


def imu_topics(seg: Segment) -> list[str]:
    return sorted(t for t, d in seg.channels.items() if d.schema_name == IMU_SCHEMA)


def imu_streams(seg: Segment, bad: list[Gap] | None = None) -> dict[str, Imu]:
    """Every IMU stream; a batch that does not decode is appended to ``bad`` as a gap."""
    out: dict[str, Imu] = {}
    for topic in imu_topics(seg):
        parts: list[dict[str, Any]] = []
        band = profile = ""
        for r in seg.topic_records(topic):
            try:
                p = msgpack.unpackb(r.data)
                d = decode_payload(_columns_as_deltas(p))
            except (ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
                if bad is not None:
                    bad.append(Gap(topic, r.log_time, r.log_time, -1,
                                   f"undecodable-batch: {exc}"))
                continue
            band, profile = str(p.get("band", band)), str(p.get("profile", profile))
            cn = np.asarray(d["chunks"]["chunk_n"], dtype=np.int64)
            clock = batch_clock(p)
            bound = clock.get("error_bound_ns") if clock.get("converged") else None
            n = len(d["host_ns"])
            d["acc_scale"] = np.repeat(np.asarray(d["chunks"]["acc_scale"], float), cn)
            gs = [0.0 if v is None else v for v in d["chunks"]["gyro_scale"]]
            d["gyro_scale"] = np.repeat(np.asarray(gs, float), cn)
            d["bound_ns"] = np.full(n, -1 if bound is None else int(bound), dtype=np.int64)
            resid = p.get("tick_resid_us")
            if isinstance(resid, bytes) and len(resid) == n:  # head MCU: true sample ticks
                r_us = np.frombuffer(resid, dtype=np.int8).astype(np.int64)
                d["device_ns"] = np.where(d["device_ns"] >= 0, d["device_ns"] + r_us * 1000, -1)
            parts.append(d)
        if not parts:
            continue
        has_gyro = all(d["gyro"] is not None for d in parts)
        host = np.concatenate([d["host_ns"] for d in parts])
        order = np.argsort(host, kind="stable")

        def cat(key: str, parts: list[dict[str, Any]] = parts,
                order: I64 = order) -> Any:
            return np.concatenate([d[key] for d in parts])[order]

        out[topic] = Imu(topic, band, profile, cat("acc"), cat("gyro") if has_gyro else None,
                         cat("acc_scale"), cat("gyro_scale"), host[order], cat("device_ns"),
                         cat("index"), cat("bound_ns"), len(parts))
    return out


def _columns_as_deltas(p: dict[str, Any]) -> dict[str, Any]:
    """Batches written before the per-chunk columns were delta coded (the first release of
    the IMU channel, also ``delta-i16le-planar``) hold absolute values; they are told apart by
    ``host_t0_ns``: absolute values never fall below the first (host time only grows), while
    the differences of a delta-coded column are a batch's few milliseconds, far below a host
    time. Such a batch is delta-coded here so that ``decode_payload`` reads it."""
    if p.get("encoding") != LEGACY_ENCODING or "acc_order" in p:
        return p
    host = p.get("host_t0_ns") or []
    if len(host) < 2 or not all(v is not None and v >= host[0] > 0 for v in host[1:]):
        return p
    return {**p, **{k: delta_column(p[k]) for k in DELTA_COLUMNS if isinstance(p.get(k), list)}}


def gaps(seg: Segment) -> list[Gap]:
    """Every loss the file knows of: the gap channel, then one gap per damaged chunk."""
    out: list[Gap] = []
    for r in seg.topic_records(GAP_TOPIC):
        try:
            g = msgpack.unpackb(r.data)
            out.append(Gap(str(g["stream"]), int(g["start_ns"]), int(g["end_ns"]),
                           int(g["lost"]), str(g["cause"])))
        except (ValueError, KeyError, TypeError, msgpack.UnpackException):
            out.append(Gap("*", r.log_time, r.log_time, -1, "undecodable-gap-record"))
    times = [r.log_time for r in seg.records]
    for d in seg.damage:
        a = d.start_ns if d.start_ns is not None else (min(times) if times else 0)
        b = d.end_ns if d.end_ns is not None else (max(times) if times else 0)
        out.append(Gap("*", a, b, -1, "damaged-chunk: CRC failed, skipped on reading"))
    return out


def clock_fits(seg: Segment) -> dict[str, dict[str, Any]]:
    """Each source's clock fit snapshot (``clock_fit`` of its segment metadata)."""
    out: dict[str, dict[str, Any]] = {}
    for name, md in seg.metadata.items():
        if name.startswith(SOURCE_META_PREFIX) and "clock_fit" in md:
            try:
                fit = json.loads(md["clock_fit"])
            except ValueError:
                continue
            if isinstance(fit, dict):
                out[name[len(SOURCE_META_PREFIX):]] = fit
    return out


EVENT_TOPICS = ("/wearcap/events",)
"""Topics of wearer events, one message each: {kind (or type/event): pause | resume | discard
| annotation | ..., text (or label)?}."""
EVENT_CAUSES = ("pause", "discard", "annotation")
"""Gap causes that are wearer events too (a pause is a gap of every stream)."""
SPLITTING = ("pause", "discard", "annotation")
"""Event kinds at which a take (Foxglove, MP4) or an episode (LeRobot) ends."""
NOT_SPLITTING = ("discard-armed", "discard-cancelled")
"""A discard being armed or called off changes no data: no cut there."""


@dataclass(frozen=True, slots=True)
class Event:
    t_ns: int
    """Host timeline."""
    kind: str
    text: str
    source: str
    """The topic it came from."""

    @property
    def splits(self) -> bool:
        return self.kind.startswith(SPLITTING) and not self.kind.startswith(NOT_SPLITTING)


def events(seg: Segment) -> list[Event]:
    out: list[Event] = []
    for r in seg.records:
        if r.topic in EVENT_TOPICS:
            t = r.log_time
            try:
                e = msgpack.unpackb(r.data)
                kind = str(e.get("kind") or e.get("type") or e.get("event") or "event")
                detail = e.get("detail")
                text = str(e.get("text") or e.get("label") or "")
                if not text and detail:
                    text = json.dumps(detail, sort_keys=True, default=str)
                if isinstance(e.get("host_ns"), int):
                    t = e["host_ns"]
            except (ValueError, AttributeError, msgpack.UnpackException):
                kind, text = "event", "(undecodable)"
            out.append(Event(t, kind, text, r.topic))
    for g in gaps(seg):
        if g.cause.startswith(EVENT_CAUSES):
            kind, _, text = g.cause.partition(":")
            out.append(Event(g.start_ns, kind.strip(), text.strip(), GAP_TOPIC))
    out.sort(key=lambda e: e.t_ns)
    return out
