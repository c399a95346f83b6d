"""``wearcap export PATH... --to foxglove OUT``: one MCAP per take that Foxglove shows whole.

Every channel is protobuf (or json), the encodings Foxglove decodes; each schema is the
FileDescriptorSet of its message with its imports (``agent.export.protos``):

    /camera/h264            foxglove.CompressedVideo   the recorded messages, byte for byte
    /camera/frames          wearcap.export.FrameTiming one per frame
    <imu topic>             wearcap.export.ImuSample   one per sample (every wearcap.ImuBatch
                                                       channel: wrist bands, a head IMU)
    /wearcap/clock/<source> wearcap.export.ClockFit    each source's fit at each segment start
    /wearcap/gaps           wearcap.export.Gap         every loss, damaged chunks included
    /wearcap/events         foxglove.Log               pauses, annotations, discards, ...
    /wearcap/segments       wearcap.export.SegmentStart  each segment and the anchor it used
    any other msgpack channel  json, with its recorded JSON schema (bytes as base64)

``log_time`` (and ``publish_time``) is the wall clock: each segment's host times are placed
through its anchor (``agent.export.takes``); the host time stays in every payload. The file's
metadata ``wearcap.export`` names the take, its segments, why it ends, and for each segment the
anchor used (``wearcap.placement.<segment id>``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import msgpack
import numpy as np

from agent import __version__
from agent.record.schemas import FRAMES_TOPIC, VIDEO_TOPIC
from agent.sources import GAP_TOPIC
from agent.wrist.imu_batch import SCHEMA_NAME as IMU_SCHEMA

from . import protos
from .reader import Segment
from .rows import RowSchema, row_schema
from .streams import EVENT_TOPICS, clock_fits, frames, gaps, imu_streams
from .takes import Placement, Take

SEGMENTS_TOPIC = "/wearcap/segments"
CLOCK_TOPIC = "/wearcap/clock/"
LOG_NAME = "wearer"
_HANDLED = {VIDEO_TOPIC, FRAMES_TOPIC, GAP_TOPIC, *EVENT_TOPICS}

Out = tuple[int, str, bytes]
"""(log_time wall ns, topic, encoded message)"""


def _ts(msg: Any, wall_ns: int) -> None:
    sec, nsec = divmod(int(wall_ns), 1_000_000_000)
    msg.seconds, msg.nanos = sec, nsec


class _Channels:
    def __init__(self, writer: Any) -> None:
        self.w = writer
        self.schemas: dict[str, int] = {}
        self.ids: dict[str, int] = {}
        self.seq: dict[str, int] = {}
        self.json: set[str] = set()

    def channel(self, topic: str, schema_name: str, encoding: str, schema_encoding: str,
                schema_data: bytes, metadata: dict[str, str] | None = None) -> int:
        if topic in self.ids:
            return self.ids[topic]
        key = f"{schema_encoding}:{schema_name}:{hash(schema_data)}"
        if key not in self.schemas:
            self.schemas[key] = self.w.register_schema(schema_name, schema_encoding,
                                                       schema_data)
        cid: int = self.w.register_channel(topic, encoding, self.schemas[key], metadata or {})
        self.ids[topic] = cid
        self.seq[topic] = 0
        return cid


def _int(v: Any, default: int) -> int:
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else default


def _float(v: Any) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0.0


def _proto(name: str) -> tuple[str, str, str, bytes]:
    return (f"{protos.PACKAGE}.{name}", "protobuf", "protobuf", protos.descriptor_set(name))


def _log_schema() -> tuple[str, str, str, bytes]:
    from foxglove_schemas_protobuf.Log_pb2 import Log
    from mcap_protobuf.schema import build_file_descriptor_set

    return ("foxglove.Log", "protobuf", "protobuf",
            bytes(build_file_descriptor_set(Log).SerializeToString()))


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return base64.b64encode(v).decode()
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return v


def segment_messages(seg: Segment, place: Placement, ch: _Channels) -> Iterator[Out]:
    """Every message of one segment in the export's encodings (unordered)."""
    C = protos.classes()
    wall = place.wall
    starts = [r.log_time for r in seg.records]
    t0 = min(starts) if starts else 0
    ch.channel(SEGMENTS_TOPIC, *_proto("SegmentStart"))
    m = C["SegmentStart"](segment_id=seg.id, sequence=seg.sequence or 0, host_ns=t0,
                          intact=seg.intact, anchor_segment=place.anchor_segment,
                          anchor_monotonic_ns=place.monotonic_ns,
                          anchor_realtime_ns=place.realtime_ns,
                          anchor_uncertainty_ns=place.uncertainty_ns, placement=place.how)
    _ts(m.timestamp, wall(t0))
    yield wall(t0), SEGMENTS_TOPIC, m.SerializeToString()

    video = seg.channels.get(VIDEO_TOPIC)
    if video is not None:
        ch.channel(VIDEO_TOPIC, video.schema_name, video.message_encoding,
                   video.schema_encoding, video.schema_data, dict(video.metadata))
        for r in seg.records:
            if r.topic == VIDEO_TOPIC:
                yield wall(r.log_time), VIDEO_TOPIC, r.data

    fr = frames(seg)
    if fr is not None:
        ch.channel(FRAMES_TOPIC, *_proto("FrameTiming"))
        c = fr.columns
        for i in range(len(fr)):
            host = int(c["host_ts_ns"][i])
            m = C["FrameTiming"](index=int(c["index"][i]), sensor_ts_ns=int(c["sensor_ts_ns"][i]),
                                 host_ns=host, exposure_us=int(c["exposure_us"][i]),
                                 frame_duration_us=int(c["frame_duration_us"][i]),
                                 keyframe=bool(c["keyframe"][i]),
                                 dropped_before=int(c["dropped_before"][i]),
                                 size=int(c["size"][i]))
            _ts(m.timestamp, wall(host))
            yield wall(host), FRAMES_TOPIC, m.SerializeToString()

    bad: list[Any] = []
    imus = imu_streams(seg, bad)
    for topic, imu in imus.items():
        ch.channel(topic, *_proto("ImuSample"), {"band": imu.band, "profile": imu.profile,
                                                 "units": "acc m/s^2, gyro rad/s"})
        acc = imu.acc.astype(np.float64) * imu.acc_scale[:, None]
        acc[imu.acc == -32768] = np.nan
        gyro = None
        if imu.gyro is not None:
            gyro = imu.gyro.astype(np.float64) * imu.gyro_scale[:, None]
            gyro[imu.gyro == -32768] = np.nan
        host = imu.host_ns.tolist()
        dev = imu.device_ns.tolist()
        idx = imu.index.tolist()
        bound = imu.bound_ns.tolist()
        araw = imu.acc.tolist()
        accl = acc.tolist()
        graw = imu.gyro.tolist() if imu.gyro is not None else None
        gyrl = gyro.tolist() if gyro is not None else None
        cls = C["ImuSample"]
        for i in range(len(host)):
            m = cls(host_ns=host[i], index=idx[i], error_bound_ns=bound[i],
                    has_device_time=dev[i] >= 0, device_ns=max(dev[i], 0))
            w = wall(host[i])
            _ts(m.timestamp, w)
            a = accl[i]
            m.acc.x, m.acc.y, m.acc.z = a
            m.acc_raw.x, m.acc_raw.y, m.acc_raw.z = araw[i]
            if graw is not None and gyrl is not None:
                m.gyro.x, m.gyro.y, m.gyro.z = gyrl[i]
                m.gyro_raw.x, m.gyro_raw.y, m.gyro_raw.z = graw[i]
            yield w, topic, m.SerializeToString()

    for name, fit in clock_fits(seg).items():
        topic = CLOCK_TOPIC + name
        ch.channel(topic, *_proto("ClockFit"))
        bound = _int(fit.get("error_bound_ns"), -1)
        obs = fit.get("observations", fit.get("exchanges"))
        m = C["ClockFit"](source=name, segment_id=seg.id, method=str(fit.get("method", "")),
                          mapping=str(fit.get("mapping", "")),
                          converged=bool(fit.get("converged")), error_bound_ns=bound,
                          slope=_float(fit.get("slope")), drift_ppm=_float(fit.get("drift_ppm")),
                          latency_ns=_int(fit.get("latency_ns"), 0),
                          ref_device_ns=_int(fit.get("ref_device_ns"), 0),
                          ref_host_ns=_int(fit.get("ref_host_ns"), 0),
                          observations=len(obs) if isinstance(obs, list) else _int(obs, 0),
                          snapshot_json=json.dumps(fit, sort_keys=True))
        _ts(m.timestamp, wall(t0))
        yield wall(t0), topic, m.SerializeToString()

    all_gaps = gaps(seg) + bad
    if all_gaps or GAP_TOPIC in seg.channels:
        ch.channel(GAP_TOPIC, *_proto("Gap"))
    for g in all_gaps:
        m = C["Gap"](stream=g.stream, start_ns=g.start_ns, end_ns=g.end_ns, lost=g.lost,
                     cause=g.cause)
        _ts(m.timestamp, wall(g.start_ns))
        _ts(m.end, wall(g.end_ns))
        yield wall(g.start_ns), GAP_TOPIC, m.SerializeToString()

    from foxglove_schemas_protobuf.Log_pb2 import Log

    from .streams import events

    for e in events(seg):
        ch.channel(EVENT_TOPICS[0], *_log_schema())
        level = Log.WARNING if e.kind.startswith("discard") else Log.INFO
        text = f"{e.kind}: {e.text}" if e.text else e.kind
        lm = Log(level=level, message=text, name=LOG_NAME, file=seg.id)
        _ts(lm.timestamp, wall(e.t_ns))
        yield wall(e.t_ns), EVENT_TOPICS[0], lm.SerializeToString()

    for topic, d in sorted(seg.channels.items()):
        if topic in _HANDLED or d.schema_name == IMU_SCHEMA or topic in imus:
            continue
        if d.message_encoding == "msgpack":
            key = (topic, d.schema_data)
            if key not in _row_schemas:
                _row_schemas[key] = row_schema(d)
            rs = _row_schemas[key]
            if rs is not None:
                ch.channel(topic, rs.name, "protobuf", "protobuf", rs.data, dict(d.metadata))
                for r in seg.topic_records(topic):
                    try:
                        rows = rs.rows(msgpack.unpackb(r.data), r.log_time)
                    except (ValueError, TypeError, msgpack.UnpackException):
                        yield from _as_json(ch, topic, d, r, wall)
                        continue
                    for host, m in rows:
                        _ts(m.timestamp, wall(host))
                        yield wall(host), topic, m.SerializeToString()
                continue
            for r in seg.topic_records(topic):
                yield from _as_json(ch, topic, d, r, wall)
        elif d.message_encoding in ("protobuf", "json"):
            ch.channel(topic, d.schema_name, d.message_encoding, d.schema_encoding,
                       d.schema_data, dict(d.metadata))
            for r in seg.topic_records(topic):
                yield wall(r.log_time), topic, r.data


_row_schemas: dict[tuple[str, bytes], RowSchema | None] = {}
"""Built once per channel schema (a descriptor pool each)."""


def _as_json(ch: _Channels, topic: str, d: Any, r: Any,
             wall: Callable[[int], int]) -> Iterator[Out]:
    """A message that is not columnar, as JSON with its recorded JSON schema (on
    ``<topic>/json`` when ``topic`` already carries protobuf rows)."""
    t = topic if topic not in ch.ids or topic in ch.json else topic + "/json"
    ch.json.add(t)
    ch.channel(t, d.schema_name, "json", "jsonschema" if d.schema_data else "",
               d.schema_data, dict(d.metadata))
    try:
        obj = _jsonable(msgpack.unpackb(r.data))
    except (ValueError, msgpack.UnpackException):
        obj = {"undecodable_msgpack": base64.b64encode(r.data).decode()}
    yield wall(r.log_time), t, json.dumps(obj).encode()


def write_take(take: Take, fh: IO[bytes], tick: Callable[[int], None] | None = None) -> int:
    """Write one take as MCAP to ``fh``; returns the number of messages."""
    from mcap.writer import CompressionType, Writer

    w = Writer(fh, chunk_size=4 << 20, compression=CompressionType.ZSTD)
    w.start(profile="", library=f"wearcap-export {__version__}")
    ch = _Channels(w)
    w.add_metadata("wearcap.export", {
        "take": take.name, "device_id": take.device_id, "boot_id": take.boot_id,
        "segments": json.dumps([s.id for s in take.segments]), "ends": take.ends,
        "log_time": "wall clock (ns since 1970, UTC) through each segment's anchor; payload "
                    "host_ns/host_ts_ns fields are CLOCK_MONOTONIC of boot_id",
        "software_version": __version__})
    n = 0
    for seg, place in zip(take.segments, take.placements, strict=True):
        w.add_metadata(f"wearcap.placement.{seg.id}", {k: str(v) for k, v in
                                                         place.to_dict().items()})
        w.add_metadata(f"wearcap.segment.{seg.id}", dict(seg.header))
        msgs = sorted(segment_messages(seg, place, ch), key=lambda x: x[0])
        for t, topic, data in msgs:
            cid = ch.ids[topic]
            w.add_message(cid, log_time=t, data=data, publish_time=t, sequence=ch.seq[topic])
            ch.seq[topic] += 1
        n += len(msgs)
        if tick is not None:
            tick(1)
    w.finish()  # type: ignore[no-untyped-call]
    return n


def export(takes: list[Take], out: Path, tick: Callable[[int], None] | None = None
           ) -> list[Path]:
    """One ``<take>.mcap`` per take in directory ``out`` (or ``out`` itself, a ``.mcap``
    path, when there is exactly one take)."""
    paths = []
    single = out.suffix == ".mcap" and len(takes) == 1
    if not single:
        out.mkdir(parents=True, exist_ok=True)
    for t in takes:
        p = out if single else out / f"{t.name}.mcap"
        tmp = p.with_name(p.name + ".partial")
        with tmp.open("wb") as fh:
            write_take(t, fh, tick)
        tmp.replace(p)
        paths.append(p)
    return paths
