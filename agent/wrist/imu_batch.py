"""The wrist IMU channel: columnar msgpack batches of raw int16 counts plus every timestamp.

    imu_channel(band_name, profile) -> ChannelSpec     # topic /wrist/<name>/imu
    imu_message(band_name, chunks, clock) -> Message   # one batch (e.g. one drain()); places
                                                       # each chunk on the band's clock
    decode_payload(payload) -> dict of numpy arrays    # the reader's side (tests, export)

The band's clock (the mapper: agent.wrist.timing.make_clock, observe, place, peek) lives in
agent/wrist/timing.py; ``make_fit``, ``observe`` and ``host_times`` here are its old names.

Samples are stored as ``d12-zz-i16le-planar`` (ENCODING): per axis, the 1st or 2nd
difference of the counts (mod 2**16; whichever has the smaller sum of magnitudes in this batch,
``acc_order``/``gyro_order``), zigzag-mapped to unsigned (0, -1, 1, -2 -> 0, 1, 2, 3) so small
values of either sign have a zero high byte, laid out sample by sample (x y z, x y z, ...) as
little-endian uint16 and split into a low-byte plane then a high-byte plane. The high plane is
then almost all zeros and the low plane holds only the noise, so the segment's zstd chunk
compression stores a 6-axis sample in ~4 bytes (bench/bench_imu_storage.py). Batches written
as ``delta-i16le-planar`` (1st difference, axis by axis, no zigzag) still decode.
Per-chunk scale and period columns hold one number when it is the same for every chunk of the
batch. Times are stored per chunk (one BLE notification), not per sample: sample ``i`` of chunk
``c`` is at ``host_t0_ns[c] + i * host_period_ns[c]`` on the host timeline.

Per-chunk integer columns are stored as residuals from the chunk before (PREDICTED_COLUMNS,
``steps``): a regular stream stores zeros, and a chunk's first-sample time costs nothing
where it follows from the last. Arrival times are stored on the batch's connection-event
grid (``encode_arrival``: a fitted interval, the events between notifications, and each
notification's residual from its event as zigzag byte planes; exact, in the unit the stamps
have: 1 us for the BLE link's, else 1 ns); the clock record is a list in a named key order
(``clock_keys``). ``columns(p)`` and ``batch_clock(p)`` read every format ever written
(FORMAT: 3 is this one; a batch without ``format`` is 2 if it has ``steps``, else 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, cast

import numpy as np
import numpy.typing as npt

from agent.clock.band import BandClock, ChunkTime, Latency
from agent.sources import ChannelSpec, Message
from agent.wrist import timing
from agent.wrist.decode import ImuChunk

SCHEMA_NAME = "wearcap.ImuBatch"
FORMAT = 3
"""The batch format this code writes (``format``). 1: per-chunk columns delta coded, arrival
in ns, the clock a map; 2 (``steps``): columns predicted, ``arrival_after_ns``, the clock a
list; 3: arrival on the connection-event grid (``arrival_*``). Readers take every one."""
ENCODING = "d12-zz-i16le-planar"
LEGACY_ENCODING = "delta-i16le-planar"

_INTS = {"type": "array", "items": {"type": "integer"}}
_OPT_INTS = {"type": "array", "items": {"type": ["integer", "null"]}}
_NUMS = {"type": "array", "items": {"type": "number"}}
_OPT_NUMS = {"type": "array", "items": {"type": ["number", "null"]}}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": SCHEMA_NAME,
    "description": (
        "A batch of wrist-band IMU samples. Sample i of chunk c (a chunk is one BLE "
        "notification) is at host_t0_ns[c] + i*host_period_ns[c] on the host timeline "
        "(CLOCK_MONOTONIC ns, see the segment's timeline metadata), and at device_t0_ns[c] + "
        "i*device_period_ns[c] on the band's own clock. acc/gyro: the decoded raw counts, "
        "encoding 'd12-zz-i16le-planar': per axis a (x, y, z) the counts are differenced "
        "order[a] times (1 or 2; acc_order/gyro_order) along the batch, each time keeping the "
        "first value (c0, c1-c0, c2-c1, ... then once more), mod 2**16; each int16 v is "
        "zigzag-mapped to the uint16 (v << 1) ^ (v >> 15); the n*3 values are ordered sample "
        "by sample (x0 y0 z0 x1 y1 z1 ...), written little-endian, and split into all low "
        "bytes followed by all high bytes. (Encoding 'delta-i16le-planar': one difference, "
        "axis by axis, no zigzag.) Physical value = count * scale of the sample's chunk. "
        "-32768 means no measurement for that axis. acc_scale, gyro_scale, device_period_ns "
        "and host_period_ns are per chunk, or one number for every chunk of the batch. "
        "The columns index, seq, raw_time, device_t0_ns and host_t0_ns are predicted: the "
        "first value, then each value minus x[c-1] + round(chunk_n[c-1] * step), step "
        "being that column's entry in steps (in the order index, seq, raw_time, "
        "device_t0_ns, host_t0_ns); a column whose step is null (it has nulls) is delta "
        "coded: the first value, then each value minus the previous non-null one. "
        "Arrival of chunk c's notification, in ns: (arrival_t0 + round(k[c] * arrival_interval) "
        "+ r[c]) * arrival_unit_ns, k being the running sum of arrival_events (k[0] = "
        "arrival_events[0] = 0) and r[c] the zigzag-decoded ((z >> 1) ^ -(z & 1)) "
        "little-endian unsigned integer whose byte j is arrival_resid[j*C + c] (C chunks, "
        "len(arrival_resid) // C bytes each, 0 if every r is 0). (format 2: "
        "arrival_after_ns[c], the arrival minus the host time of the chunk's last sample, "
        "host_t0_ns[c] + round((chunk_n[c]-1)*host_period_ns[c]), ns.) "
        "clock: a list of values in the key order clock_keys names (agent.wrist.imu_batch."
        "CLOCK_KEYSETS; 'bound.fit_ns' is clock.bound.fit_ns), or a map. (Batches written "
        "before these carry no steps: every such column delta coded, arrival_ns delta coded "
        "in ns, clock a map.) format: 3 (absent: 2 with steps, else 1)."
    ),
    "properties": {
        "band": {"type": "string", "description": "band name from the device config"},
        "profile": {"type": "string", "description": "sensor profile (device_configs/sensors)"},
        "encoding": {"type": "string", "description": "sample encoding, see above"},
        "n": {"type": "integer", "description": "samples in this batch"},
        "acc": {"type": "string", "contentEncoding": "binary",
                "description": "accelerometer counts (msgpack bin)"},
        "gyro": {"type": ["string", "null"], "contentEncoding": "binary",
                 "description": "gyroscope counts (msgpack bin); null if the band has none"},
        "acc_order": {**_INTS, "description": "difference order per acc axis (1 or 2)"},
        "gyro_order": {**_INTS, "description": "difference order per gyro axis (1 or 2)"},
        "chunk_n": {**_INTS, "description": "samples per chunk (sums to n)"},
        "acc_scale": {"type": ["number", "array"], "items": {"type": "number"},
                      "description": "m/s^2 per acc count, per chunk or for all"},
        "gyro_scale": {"type": ["number", "array"], "items": {"type": "number"},
                       "description": "rad/s per gyro count, per chunk or for all"},
        "index": {**_INTS, "description": "running sample number of the chunk's first sample "
                  "since the band's stream started (counts samples known lost)"},
        "seq": {**_OPT_INTS, "description": "the band's own sequence number, null if none"},
        "lost_before": {**_INTS, "description": "samples known lost just before the chunk"},
        "raw_time": {**_OPT_INTS, "description": "the packet's timestamp field exactly as "
                     "sent, in the profile's unit (open: us, polar-pmd: ns since 2000-01-01 "
                     "of the LAST sample of the frame, movesense: uint32 ms), null if none"},
        "device_t0_ns": {**_OPT_INTS, "description": "band clock time of the chunk's first "
                         "sample, ns, unwrapped; null when the band has no clock"},
        "device_period_ns": {"type": ["number", "null", "array"],
                             "items": {"type": ["number", "null"]},
                             "description": "sample spacing on the band clock, per chunk or "
                             "for all"},
        "format": {"type": "integer", "description": "batch format (agent.wrist.imu_batch."
                   "FORMAT); absent: 2 if steps is present, else 1"},
        "arrival_unit_ns": {"type": "integer", "description": "unit of the arrival columns, "
                            "ns (1000: every arrival is a whole us, 1: ns)"},
        "arrival_t0": {"type": "integer", "description": "arrival grid origin, in the unit"},
        "arrival_interval": {"type": "number", "description": "fitted connection interval "
                             "(events between notifications), in the unit per event"},
        "arrival_events": {**_INTS, "description": "connection events since the chunk "
                           "before's notification (first: 0)"},
        "arrival_resid": {"type": "string", "contentEncoding": "binary",
                          "description": "each notification's arrival minus its grid "
                          "event, zigzag, little-endian byte planes"},
        "arrival_after_ns": {**_INTS, "description": "format 2: host time the notification "
                             "arrived, minus that of the chunk's last sample"},
        "steps": {**_OPT_NUMS, "description": "step per sample of the predicted columns "
                  "(index, seq, raw_time, device_t0_ns, host_t0_ns); null: delta coded"},
        "clock_keys": {"type": "integer", "description": "key order of a clock stored as a "
                       "list (agent.wrist.imu_batch.CLOCK_KEYSETS)"},
        "host_t0_ns": {**_INTS, "description": "mapped host time of the chunk's first sample"},
        "host_period_ns": {"type": ["number", "array"], "items": {"type": "number"},
                           "description": "mapped sample spacing on the host, per chunk or "
                           "for all"},
        "absent": {"type": "object", "additionalProperties": {"type": "string"},
                   "description": "streams the band refused or does not have (e.g. gyro), "
                   "each with the band's own reason; their columns are null, never filled"},
        "clock": {"type": ["object", "array"], "description": "state of the mapping when "
                  "written (a list in the clock_keys order, or a map): "
                  "converged; error_bound_ns, a bound on |host time - truth| that holds for "
                  "every sample of the batch, and its parts (bound: fit_ns, latency_ns, "
                  "quantisation_ns, slew_ns); slew_ns, the largest part of a fit change not "
                  "yet slewed into the output, and slew_max_ppm, the rate it is slewed in at; "
                  "drift_ppm; latency_ns and latency_uncertainty_ns assumed, and latency "
                  "(where they come from: profile, config, calibrated); source (one-way, "
                  "rate, two-way, arrival); the full fit is in the segment metadata"},
    },
    "required": ["band", "profile", "encoding", "n", "acc", "chunk_n", "host_t0_ns"],
}


def imu_channel(band_name: str, profile: str) -> ChannelSpec:
    return ChannelSpec(topic=f"/wrist/{band_name}/imu", schema_name=SCHEMA_NAME,
                       schema=SCHEMA, metadata={"band": band_name, "profile": profile,
                                                "encoding": ENCODING})


Fit = BandClock


def make_fit(profile: str, rate_hz: float, latency: Latency | None = None,
             **clock_args: Any) -> BandClock:
    """Old name of agent.wrist.timing.make_clock."""
    return timing.make_clock(profile, rate_hz, latency, **clock_args)


def observe(fit: BandClock, chunk: ImuChunk) -> None:
    """Old name of agent.wrist.timing.observe."""
    timing.observe(fit, chunk)


def host_times(fit: BandClock, chunk: ImuChunk) -> tuple[int, float]:
    """(host time of the chunk's first sample, host sample spacing), committing nothing."""
    t = timing.peek(fit, chunk)
    return t.t0_ns, t.period_ns


def _diff(cols: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    d = cols.copy()
    d[:, 1:] = cols[:, 1:] - cols[:, :-1]  # wraps mod 2**16
    return d


def encode_counts(counts: npt.NDArray[np.int16],
                  order: Sequence[int] | None = None) -> tuple[bytes, list[int]]:
    """(n, 3) int16 -> (d12-zz-i16le-planar bytes, difference order per axis). ``order``:
    force the orders (default: per axis, the one with the smaller sum of magnitudes)."""
    cols = np.ascontiguousarray(counts.astype(np.int16).T)  # axis by axis
    d1 = _diff(cols)
    d2 = _diff(d1)
    if order is None:
        s1 = np.abs(d1[:, 2:].astype(np.int32)).sum(axis=1)
        s2 = np.abs(d2[:, 2:].astype(np.int32)).sum(axis=1)
        two = s2 < s1
    else:
        two = np.asarray(order) == 2
    d = np.where(two[:, None], d2, d1).T  # sample by sample
    zz = ((d << 1) ^ (d >> 15)).astype("<u2")  # zigzag: int16 -> uint16
    b = np.ascontiguousarray(zz).reshape(-1).view(np.uint8)
    return b[0::2].tobytes() + b[1::2].tobytes(), [2 if t else 1 for t in two]


def decode_counts(data: bytes, n: int, order: Sequence[int] = (1, 1, 1),
                  encoding: str = ENCODING) -> npt.NDArray[np.int16]:
    """d12-zz-i16le-planar (or delta-i16le-planar) bytes -> (n, 3) int16."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if raw.size != n * 6:
        raise ValueError(f"{raw.size} bytes for {n} samples")
    b = np.empty(n * 6, dtype=np.uint8)
    b[0::2], b[1::2] = raw[: n * 3], raw[n * 3:]
    if encoding == LEGACY_ENCODING:
        d = b.view("<i2").reshape(3, n).astype(np.int16)
        return np.cumsum(d, axis=1, dtype=np.int16).T.copy()
    if encoding != ENCODING:
        raise ValueError(f"unknown sample encoding {encoding!r}")
    zz = b.view("<u2").reshape(n, 3).T.astype(np.uint16)
    d = ((zz >> 1).astype(np.int16) ^ -(zz & 1).astype(np.int16)).astype(np.int16)
    for axis, k in enumerate(order):
        for _ in range(int(k)):
            d[axis] = np.cumsum(d[axis], dtype=np.int16)
    return d.T.copy()


def fold(values: Sequence[Any]) -> Any:
    """One value if every chunk has the same, else the list (see ``unfold``)."""
    first = values[0]
    return first if all(v == first for v in values) else list(values)


def unfold(value: Any, chunks: int) -> list[Any]:
    return list(value) if isinstance(value, list) else [value] * chunks


FOLDED_COLUMNS = ("acc_scale", "gyro_scale", "device_period_ns", "host_period_ns")
"""Per-chunk columns stored as one value when every chunk of the batch has the same."""

DELTA_COLUMNS = ("index", "seq", "raw_time", "device_t0_ns", "arrival_ns", "host_t0_ns")
"""Integer columns stored as the first value then differences to the previous non-null value
(nulls stay null): a few bytes per chunk instead of nine."""


def delta_column(values: Sequence[int | None]) -> list[int | None]:
    out: list[int | None] = []
    prev: int | None = None
    for v in values:
        if v is None:
            out.append(None)
        else:
            out.append(v if prev is None else v - prev)
            prev = v
    return out


def undelta_column(values: Sequence[int | None]) -> list[int | None]:
    out: list[int | None] = []
    prev: int | None = None
    for v in values:
        if v is None:
            out.append(None)
        else:
            prev = v if prev is None else prev + v
            out.append(prev)
    return out


PREDICTED_COLUMNS = ("index", "seq", "raw_time", "device_t0_ns", "host_t0_ns")
"""Integer columns stored (from the ``steps`` format on) as the first value, then each value
minus its prediction from the chunk before: ``x[c-1] + round(chunk_n[c-1] * steps[col])``,
``steps`` holding, in this order, each column's mean step per sample over the batch (null for
a column with nulls, which stays delta coded). A regular stream stores zeros."""


STEP_FRACTION = 1024
"""Stored steps and intervals are rounded to 1/1024 of their unit: any value decodes exactly
(the residuals absorb it), and a float with few mantissa bits compresses."""


def predict_column(values: Sequence[int], chunk_n: Sequence[int]) -> tuple[list[int], float]:
    """(residuals, step per sample) for a column without nulls (see PREDICTED_COLUMNS)."""
    span = sum(chunk_n[:-1])
    step = (values[-1] - values[0]) / span if len(values) > 1 and span else 0.0
    step = round(step * STEP_FRACTION) / STEP_FRACTION  # few mantissa bits: cheap to store
    out = [int(values[0])]
    for c in range(1, len(values)):
        out.append(int(values[c] - values[c - 1] - round(chunk_n[c - 1] * step)))
    return out, step


def unpredict_column(values: Sequence[int], chunk_n: Sequence[int], step: float) -> list[int]:
    out = [int(values[0])]
    for c in range(1, len(values)):
        out.append(out[-1] + int(values[c]) + round(chunk_n[c - 1] * step))
    return out


def _last_host(t0: int, period: float, n: int) -> int:
    return t0 + round((n - 1) * period)


EVENT_STEP_NS = 1_250_000
"""BLE connection intervals are whole multiples of 1.25 ms (of the controller's clock)."""
ARRIVAL_KEYS = ("arrival_unit_ns", "arrival_t0", "arrival_interval", "arrival_events",
                "arrival_resid")


def _event_grid(a: npt.NDArray[np.int64], step: int) -> tuple[float, npt.NDArray[np.int64]]:
    """(interval, event number per notification, the first's 0) of the connection-event
    grid the arrivals ``a`` sit on. Only how well the residuals compress depends on it: the
    stored residuals make any grid exact. The interval is the typical spacing of
    notifications in different events snapped to ``step``, which numbers the events; a
    least-squares fit of each event's first arrival on those numbers then takes up the drift
    of host against controller."""
    k = np.zeros(len(a), dtype=np.int64)
    d = np.diff(a)
    pos = d[d > 0]
    if pos.size == 0:
        return 0.0, k
    apart = pos[pos > 0.5 * float(np.median(pos))]  # notifications of different events
    interval = float(max(1, round(float(np.median(apart)) / step)) * step)
    x = (a - a[0]) % int(interval)  # phase of each arrival on the grid: its circular mean
    phase = float(np.angle(np.mean(np.exp(2j * np.pi * x / interval)))) / (2 * np.pi)
    k = np.rint((a - a[0]) / interval - phase).astype(np.int64)
    k -= k[0]
    first = np.diff(k, prepend=-1) != 0  # the first notification of each event: later
    if np.count_nonzero(first) > 2 and k[-1] > 0:  # ones wait for air slots
        kf = k[first].astype(np.float64)
        y = (a - a[0])[first].astype(np.float64)
        var = float(np.var(kf))
        if var > 0:
            fitted = float(np.mean((kf - kf.mean()) * (y - y.mean()))) / var
            if math.isfinite(fitted) and fitted > 0:
                interval = round(fitted * STEP_FRACTION) / STEP_FRACTION
    return interval, k


def encode_arrival(arrival_ns: Sequence[int]) -> dict[str, Any]:
    """Notification arrivals -> the ``arrival_*`` columns (see SCHEMA): exact. The unit is
    1 us when every arrival is a whole us (the BLE link stamps in us), else 1 ns."""
    a_ns = np.asarray(arrival_ns, dtype=np.int64)
    unit = 1000 if not np.any(a_ns % 1000) else 1
    a = a_ns // unit
    interval, k = _event_grid(a, EVENT_STEP_NS // unit)
    rel = a - a[0] - np.rint(k * interval).astype(np.int64)
    t0 = int(a[0]) + int(np.median(rel))
    r = a - t0 - np.rint(k * interval).astype(np.int64)
    z = ((r << 1) ^ (r >> 63)).astype("<u8")
    width = (int(z.max()).bit_length() + 7) // 8
    planes = z.view(np.uint8).reshape(-1, 8)[:, :width].T.tobytes()
    return {"arrival_unit_ns": unit, "arrival_t0": t0, "arrival_interval": interval,
            "arrival_events": np.diff(k, prepend=0).tolist(), "arrival_resid": planes}


def decode_arrival(p: Mapping[str, Any]) -> list[int]:
    """The ``arrival_*`` columns of a stored batch -> each chunk's arrival, ns."""
    nc = len(p["chunk_n"])
    raw = np.frombuffer(p["arrival_resid"], dtype=np.uint8)
    if raw.size % nc or raw.size > 8 * nc:
        raise ValueError(f"{raw.size} arrival residual bytes for {nc} chunks")
    b = np.zeros((nc, 8), dtype=np.uint8)
    b[:, : raw.size // nc] = raw.reshape(-1, nc).T
    z = b.view("<u8").reshape(nc)
    r = (z >> np.uint64(1)).astype(np.int64) ^ -(z & np.uint64(1)).astype(np.int64)
    k = np.cumsum(np.asarray(p["arrival_events"], dtype=np.int64))
    a = int(p["arrival_t0"]) + np.rint(k * float(p["arrival_interval"])).astype(np.int64) + r
    return (a * int(p["arrival_unit_ns"])).tolist()  # type: ignore[no-any-return]


CLOCK_KEYSETS: dict[int, tuple[str, ...]] = {
    1: ("converged", "drift_ppm", "latency_ns", "latency_uncertainty_ns", "latency", "kind",
        "slew_max_ppm", "restarts", "error_bound_ns", "bound.fit_ns", "bound.latency_ns",
        "bound.quantisation_ns", "bound.slew_ns", "slew_ns", "source"),
}
"""Key orders a batch's ``clock`` may be stored in as a plain list of values (``clock_keys``
names the order). Never change an entry: add one. A clock whose keys match none is stored
as a map, as before."""


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def pack_clock(clock: Mapping[str, Any]) -> tuple[Any, int | None]:
    """(stored clock, keyset id or None): a list in a known key order, else the map."""
    flat = _flat(clock)
    for kid, keys in CLOCK_KEYSETS.items():
        if len(keys) == len(flat) and all(k in flat for k in keys):
            return [flat[k] for k in keys], kid
    return dict(clock), None


def unpack_clock(p: Mapping[str, Any]) -> dict[str, Any]:
    """A stored batch's ``clock`` as a map, whichever way it was stored ({} if none)."""
    clock = p.get("clock")
    if isinstance(clock, list):
        keys = CLOCK_KEYSETS.get(int(p.get("clock_keys", 0)))
        if keys is None or len(keys) != len(clock):
            raise ValueError(f"clock stored in unknown key order {p.get('clock_keys')!r}")
        out: dict[str, Any] = {}
        for k, v in zip(keys, clock, strict=True):
            head, _, tail = k.partition(".")
            if tail:
                out.setdefault(head, {})[tail] = v
            else:
                out[k] = v
        return out
    return dict(clock) if isinstance(clock, Mapping) else {}


batch_clock = unpack_clock


class BatchClock(Protocol):
    """What a batch needs of its clock when the placements are given (``times``)."""

    def state(self) -> dict[str, Any]: ...


def clock_record(clock: BatchClock, times: Sequence[ChunkTime]) -> dict[str, Any]:
    """The batch's ``clock`` column: the mapper's state and the largest bound (and parts)
    over the batch's chunks."""
    worst = max(times, key=lambda t: t.bound_ns)
    return {**clock.state(), "error_bound_ns": worst.bound_ns,
            "bound": {"fit_ns": worst.fit_ns, "latency_ns": worst.latency_ns,
                      "quantisation_ns": worst.quantisation_ns, "slew_ns": worst.slew_ns},
            "slew_ns": max(t.slew_ns for t in times), "source": worst.source}


def imu_message(band_name: str, chunks: Sequence[ImuChunk], fit: BandClock | BatchClock,
                profile: str = "", times: Sequence[ChunkTime] | None = None,
                absent: Mapping[str, str] | None = None) -> Message:
    """One batch message from consecutive chunks of one band (at least one chunk). Each
    chunk is placed on the band's clock here (``timing.place``: once per chunk, in order),
    unless ``times`` gives its placements already. ``absent``: streams the band refused,
    with its reason (stored as ``absent``)."""
    if not chunks:
        raise ValueError("no chunks")
    if times is None:
        if not isinstance(fit, BandClock):
            raise TypeError("without times, imu_message places chunks on a BandClock")
        times = [timing.place(fit, c) for c in chunks]
    placed = list(times)
    acc = np.concatenate([c.acc for c in chunks])
    has_gyro = all(c.gyro is not None for c in chunks)
    gyro = np.concatenate([c.gyro for c in chunks if c.gyro is not None]) if has_gyro else None
    acc_bytes, acc_order = encode_counts(acc)
    gyro_bytes, gyro_order = encode_counts(gyro) if gyro is not None else (None, None)
    chunk_n = [c.n for c in chunks]
    columns: dict[str, list[int | None]] = {
        "index": [c.index for c in chunks], "seq": [c.seq for c in chunks],
        "raw_time": [c.raw_time for c in chunks],
        "device_t0_ns": [c.device_t0_ns for c in chunks],
        "host_t0_ns": [t.t0_ns for t in placed]}
    stored: dict[str, Any] = {}
    steps: list[float | int | None] = []
    for k, col in columns.items():
        if any(v is None for v in col):
            stored[k] = delta_column(col)
            steps.append(None)
        else:
            stored[k], step = predict_column(cast(list[int], col), chunk_n)
            steps.append(int(step) if step.is_integer() else step)
    clock, clock_keys = pack_clock(clock_record(fit, placed))
    payload: dict[str, Any] = {
        "format": FORMAT,
        "band": band_name,
        "profile": profile,
        "encoding": ENCODING,
        "n": int(acc.shape[0]),
        "acc": acc_bytes,
        "acc_order": acc_order,
        "gyro": gyro_bytes,
        "gyro_order": gyro_order,
        "chunk_n": chunk_n,
        "acc_scale": fold([c.acc_scale for c in chunks]),
        "gyro_scale": fold([c.gyro_scale for c in chunks]),
        **stored,
        "steps": steps,
        "lost_before": [c.lost_before for c in chunks],
        "device_period_ns": fold([c.period_ns for c in chunks]),
        **encode_arrival([c.arrival_ns for c in chunks]),
        "host_period_ns": fold([t.period_ns for t in placed]),
        "clock": clock,
    }
    if clock_keys is not None:
        payload["clock_keys"] = clock_keys
    if absent:
        payload["absent"] = dict(absent)
    return Message(topic=f"/wrist/{band_name}/imu", log_time_ns=placed[0].t0_ns,
                   payload=payload)


def columns(p: Mapping[str, Any]) -> dict[str, Any]:
    """A stored payload's per-chunk columns as absolute values, one per chunk, whichever
    format wrote them (predicted, delta coded, folded), and its clock as a map."""
    nc = len(p["chunk_n"])
    if int(p.get("format", 2)) > FORMAT:
        raise ValueError(f"batch format {p['format']} is newer than this reader ({FORMAT})")
    steps = p.get("steps") or [None] * len(PREDICTED_COLUMNS)
    out = {**p, **{k: unfold(p[k], nc) for k in FOLDED_COLUMNS if k in p}}
    for k, step in zip(PREDICTED_COLUMNS, steps, strict=True):
        if step is not None:
            out[k] = unpredict_column(p[k], p["chunk_n"], float(step))
        elif k in p:
            out[k] = undelta_column(p[k])
    if "arrival_resid" in p:
        out["arrival_ns"] = decode_arrival(p)
    elif "arrival_after_ns" in p:
        out["arrival_ns"] = [_last_host(t0, per, n) + int(a) for t0, per, n, a in zip(
            out["host_t0_ns"], out["host_period_ns"], p["chunk_n"], p["arrival_after_ns"],
            strict=True)]
    elif "arrival_ns" in p:
        out["arrival_ns"] = undelta_column(p["arrival_ns"])
    out["clock"] = unpack_clock(p)
    return out


def decode_payload(p: dict[str, Any]) -> dict[str, Any]:
    """A stored payload back to arrays: acc/gyro (n, 3) counts and per-sample host/device ns."""
    n = int(p["n"])
    p = columns(p)
    enc = p.get("encoding", ENCODING)
    cn = np.asarray(p["chunk_n"], dtype=np.int64)
    i = np.arange(n) - np.repeat(np.cumsum(cn) - cn, cn)
    host = np.repeat(np.asarray(p["host_t0_ns"], dtype=np.int64), cn) + np.rint(
        i * np.repeat(np.asarray(p["host_period_ns"], dtype=np.float64), cn)).astype(np.int64)
    dev_t0 = [-1 if t is None else t for t in p["device_t0_ns"]]
    dev_p = [0.0 if t is None else t for t in p["device_period_ns"]]
    dev = np.repeat(np.asarray(dev_t0, dtype=np.int64), cn) + np.rint(
        i * np.repeat(np.asarray(dev_p, dtype=np.float64), cn)).astype(np.int64)
    return {
        "chunks": p,
        "acc": decode_counts(p["acc"], n, p.get("acc_order") or (1, 1, 1), enc),
        "gyro": (decode_counts(p["gyro"], n, p.get("gyro_order") or (1, 1, 1), enc)
                 if p.get("gyro") is not None else None),
        "host_ns": host,
        "device_ns": dev,
        "index": np.repeat(np.asarray(p["index"], dtype=np.int64), cn) + i,
    }
