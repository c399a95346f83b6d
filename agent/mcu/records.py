"""What the head MCU writes into a segment: channels, schemas and message builders.

    /head/imu        the 1 kHz head IMU, in the wrist bands' compact batch format
                     (agent.wrist.imu_batch: d12-zz-i16le-planar counts, per-chunk times)
                     plus each sample's raw tick offset from the chunk's even grid
    /head/strobe     camera strobe edges: raw ticks and the mapped mid-exposure instant
    /head/strobe_match  each frame's strobe, matched at capture time (agent.mcu.strobes)
    /head/button     the button's debounced edges (raw ticks, mapped host time)
    /head/battery    gauge readings
    /head/clock      every ping/pong exchange (host send, MCU tick, host receive)
    /wearcap/events  the wearer's explicit events (pause, resume, annotation, discard...)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.sources import ChannelSpec, Message
from agent.wrist import imu_batch

IMU_TOPIC = "/head/imu"
STROBE_TOPIC = "/head/strobe"
STROBE_MATCH_TOPIC = "/head/strobe_match"
BUTTON_TOPIC = "/head/button"
BATTERY_TOPIC = "/head/battery"
CLOCK_TOPIC = "/head/clock"
EVENTS_TOPIC = "/wearcap/events"

_INTS = {"type": "array", "items": {"type": "integer"}}
_BOOLS = {"type": "array", "items": {"type": "boolean"}}

IMU_SCHEMA: dict[str, Any] = {
    **imu_batch.SCHEMA,
    "description": imu_batch.SCHEMA["description"] + (
        " Head IMU (band 'head', profile 'mcu'): a chunk is one MCU imu frame; device times "
        "are the MCU's microsecond ticks, unwrapped, in ns; sample i was really taken at "
        "device_t0_ns + round(i*device_period_ns) + tick_resid_us[i]*1000 (tick_resid_us: "
        "int8 per sample, msgpack bin). clock.method is 'two-way'."),
    "properties": {**imu_batch.SCHEMA["properties"],
                   "tick_resid_us": {"type": "string", "contentEncoding": "binary",
                                     "description": "per-sample int8 tick residual, us"}},
}


def _schema(title: str, description: str, props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "title": title, "description": description,
            "properties": props, "required": list(props)}


STROBE_SCHEMA = _schema(
    "wearcap.McuStrobes",
    "Camera strobe edges seen by the head MCU. rise/fall: raw uint32 us ticks (exposure "
    "start/end); host_mid_ns: the mid-exposure instant mapped through the two-way clock fit "
    "(CLOCK_MONOTONIC ns), within bound_ns of the truth.",
    {"index": _INTS, "rise_tick": _INTS, "fall_tick": _INTS, "device_mid_ns": _INTS,
     "host_mid_ns": _INTS, "bound_ns": _INTS})
STROBE_MATCH_SCHEMA = _schema(
    "wearcap.StrobeMatch",
    "Each camera frame's strobe, matched at capture time: one row per written frame and one "
    "per strobe no frame took. host_ns: the frame's stamp (a strobe without frame: its mapped "
    "mid-exposure). frame_index / strobe_index: -1 when that side is missing (a frame the MCU "
    "saw no strobe for; an exposure no recorded frame matches). residual_ns = frame stamp - "
    "strobe mid-exposure (0 when a side is missing), bound_ns: the strobe's mapping bound (-1 "
    "without strobe). A row is written when its match is final, in the segment open then: a "
    "frame's row can be in the next segment (its strobe came after the roll).",
    {"host_ns": _INTS, "frame_index": _INTS, "strobe_index": _INTS, "strobe_mid_ns": _INTS,
     "residual_ns": _INTS, "bound_ns": _INTS})
BUTTON_SCHEMA = _schema(
    "wearcap.McuButton", "Debounced button edges: down (true) or up, raw tick, mapped host ns.",
    {"down": _BOOLS, "tick": _INTS, "host_ns": _INTS})
BATTERY_SCHEMA = _schema(
    "wearcap.McuBattery", "Battery gauge readings.",
    {"host_ns": _INTS, "millivolts": _INTS, "percent": _INTS, "charging": _BOOLS})
CLOCK_SCHEMA = _schema(
    "wearcap.TwoWayExchanges",
    "Ping/pong exchanges with the head MCU: the MCU read tick (uint32 us; device_ns is it "
    "unwrapped, in ns) between host_send_ns and host_recv_ns, so t0 <= f(device) <= t1. The "
    "fit built from them is in the segment metadata (mcu.clock_fit).",
    {"host_send_ns": _INTS, "tick": _INTS, "device_ns": _INTS, "host_recv_ns": _INTS})
EVENTS_SCHEMA = _schema(
    "wearcap.Event",
    "An explicit event: kind (pause, resume, annotation, discard-armed, discard-cancelled, "
    "discard-requested, low-battery, ...), at host_ns, from source, with details.",
    {"kind": {"type": "string"}, "host_ns": {"type": "integer"},
     "source": {"type": "string"}, "detail": {"type": "object"}})


def channels() -> list[ChannelSpec]:
    meta = {"band": "head", "profile": "mcu", "encoding": imu_batch.ENCODING}
    return [
        ChannelSpec(IMU_TOPIC, imu_batch.SCHEMA_NAME, IMU_SCHEMA, meta),
        ChannelSpec(STROBE_TOPIC, "wearcap.McuStrobes", STROBE_SCHEMA),
        ChannelSpec(STROBE_MATCH_TOPIC, "wearcap.StrobeMatch", STROBE_MATCH_SCHEMA),
        ChannelSpec(BUTTON_TOPIC, "wearcap.McuButton", BUTTON_SCHEMA),
        ChannelSpec(BATTERY_TOPIC, "wearcap.McuBattery", BATTERY_SCHEMA),
        ChannelSpec(CLOCK_TOPIC, "wearcap.TwoWayExchanges", CLOCK_SCHEMA),
    ]


def events_channel() -> ChannelSpec:
    """Registered by the capture service when the wearer's controls are on."""
    return ChannelSpec(EVENTS_TOPIC, "wearcap.Event", EVENTS_SCHEMA)


@dataclass(slots=True)
class HeadChunk:
    """One MCU imu frame, timed."""

    index: int
    seq: int
    lost_before: int
    tick0: int
    device_ns: list[int]
    """Each sample's unwrapped device time (ns)."""
    counts: np.ndarray[Any, Any]
    """(n, 6) int16."""
    arrival_ns: int
    host_t0_ns: int = 0
    host_period_ns: float = 0.0
    bound_ns: int = 0


def imu_message(chunks: Sequence[HeadChunk], acc_scale: float, gyro_scale: float,
                clock: dict[str, Any]) -> Message:
    counts = np.concatenate([c.counts for c in chunks])
    acc_b, acc_o = imu_batch.encode_counts(counts[:, :3])
    gyr_b, gyr_o = imu_batch.encode_counts(counts[:, 3:])
    periods: list[float] = []
    sizes: list[int] = []
    firsts: list[int] = []
    dev_all: list[int] = []
    for c in chunks:
        d = c.device_ns
        n = len(d)
        periods.append(round((d[-1] - d[0]) / (n - 1) if n > 1 else 1e6, 3))
        sizes.append(n)
        firsts.append(d[0])
        dev_all.extend(d)
    # each sample's tick residual from its chunk's grid, in us, clipped to int8 (the whole
    # batch at once; np.rint rounds half to even, as round() does)
    cn = np.asarray(sizes, dtype=np.int64)
    i = np.arange(len(dev_all), dtype=np.int64) - np.repeat(np.cumsum(cn) - cn, cn)
    grid = np.rint(i * np.repeat(np.asarray(periods, dtype=np.float64), cn)).astype(np.int64)
    r = (np.asarray(dev_all, dtype=np.int64) - np.repeat(np.asarray(firsts, dtype=np.int64), cn)
         - grid) // 1000
    resid = np.clip(r, -128, 127).astype(np.int8).tobytes()
    payload: dict[str, Any] = {
        "band": "head", "profile": "mcu", "encoding": imu_batch.ENCODING,
        "n": int(counts.shape[0]),
        "acc": acc_b, "acc_order": acc_o, "gyro": gyr_b, "gyro_order": gyr_o,
        "chunk_n": [len(c.device_ns) for c in chunks],
        "acc_scale": acc_scale, "gyro_scale": gyro_scale,
        "index": imu_batch.delta_column([c.index for c in chunks]),
        "seq": imu_batch.delta_column([c.seq for c in chunks]),
        "lost_before": [c.lost_before for c in chunks],
        "raw_time": imu_batch.delta_column([c.tick0 for c in chunks]),
        "device_t0_ns": imu_batch.delta_column([c.device_ns[0] for c in chunks]),
        "device_period_ns": imu_batch.fold(periods),
        "arrival_ns": imu_batch.delta_column([c.arrival_ns for c in chunks]),
        "host_t0_ns": imu_batch.delta_column([c.host_t0_ns for c in chunks]),
        "host_period_ns": imu_batch.fold([round(c.host_period_ns, 3) for c in chunks]),
        "tick_resid_us": resid,
        "clock": {**clock, "error_bound_ns": max(c.bound_ns for c in chunks)},
    }
    return Message(IMU_TOPIC, chunks[0].host_t0_ns, payload)


def columns(topic: str, rows: Sequence[dict[str, Any]]) -> Message:
    """A columnar batch from rows (dicts with the same keys); log time is the first row's."""
    keys = list(rows[0])
    payload = {k: [r[k] for r in rows] for k in keys}
    t = next((rows[0][k] for k in ("host_mid_ns", "host_ns", "host_send_ns")
              if rows[0].get(k)), 0)
    return Message(topic, int(t), payload)


def event(kind: str, host_ns: int, source: str = "button", **detail: Any) -> Message:
    return Message(EVENTS_TOPIC, host_ns, {"kind": kind, "host_ns": host_ns, "source": source,
                                           "detail": detail})
