"""``wearcap export PATH... --to mp4 OUT``: per take, the H.264 in an MP4 plus Parquet tables.

    OUT/<take>/video.mp4         the recorded access units remuxed (no re-encode)
    OUT/<take>/frames.parquet    one row per frame: recorded times, exposure, drops, pts
    OUT/<take>/<stream>.parquet  one row per IMU sample (e.g. wrist_left_imu.parquet)
    OUT/<take>/gaps.parquet      every loss of the take, damaged chunks included
    OUT/<take>/take.json         the take: segments, why it ends, the anchors used

**Timing.** The MP4's track time base is ``TIME_BASE`` (1/90000 s). A frame's presentation
time is its recorded mid-exposure host time minus the take's first frame, rounded to the
nearest tick, so it is within half a tick of the recording; ``frames.parquet`` has the exact
nanoseconds and the ``pts`` used. Frames are never duplicated or resampled: a drop or a gap
stays a longer interval (the MP4 is variable frame rate). After a damaged chunk, frames up to
the next keyframe cannot be decoded and are left out (a gap says so).

**Parquet columns** (IMU): ``host_ns`` (CLOCK_MONOTONIC), ``wall_ns`` (wall clock through the
segment's anchor), ``device_ns`` (band clock, null without one), ``index`` (running sample
number), ``acc_{x,y,z}_raw`` / ``gyro_{x,y,z}_raw`` (int16 counts), ``acc_{x,y,z}`` (m/s^2)
and ``gyro_{x,y,z}`` (rad/s), null where the band measured nothing, ``acc_scale``,
``gyro_scale``, ``error_bound_ns`` (null while the clock fit had not converged), and
``segment_id``.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from agent.record.schemas import VIDEO_TOPIC

from .streams import Gap, frames, gaps, imu_streams
from .takes import Take

TIME_BASE = Fraction(1, 90_000)


def _video_data(payload: bytes) -> bytes:
    from foxglove_schemas_protobuf.CompressedVideo_pb2 import CompressedVideo

    return bytes(CompressedVideo.FromString(payload).data)


def _nal_headers(au: bytes) -> bytes:
    """SPS and PPS NAL units (Annex B) of an access unit: the MP4's codec configuration."""
    out = bytearray()
    i = 0
    starts = []
    while True:
        j = au.find(b"\x00\x00\x01", i)
        if j < 0:
            break
        starts.append(j + 3)
        i = j + 3
    for k, s in enumerate(starts):
        end = (starts[k + 1] - 3) if k + 1 < len(starts) else len(au)
        while end > s and au[end - 1] == 0:
            end -= 1
        if au[s] & 0x1F in (7, 8):
            out += b"\x00\x00\x00\x01" + au[s:end]
    return bytes(out)


def take_frames(take: Take) -> tuple[list[dict[str, Any]], list[Gap]]:
    """Every frame of the take in host-time order with its access unit, and the frames left
    out after damaged chunks (as gaps)."""
    rows: list[dict[str, Any]] = []
    skipped: list[Gap] = []
    for seg, place in zip(take.segments, take.placements, strict=True):
        fr = frames(seg)
        units = {r.log_time: r.data for r in seg.records if r.topic == VIDEO_TOPIC}
        if fr is None:
            continue
        damage = [(d.start_ns or 0, d.end_ns or 0) for d in seg.damage]
        need_key = False
        prev: int | None = None
        c = fr.columns
        run: list[int] = []
        for i in range(len(fr)):
            host = int(c["host_ts_ns"][i])
            if host not in units:
                continue  # its video message was in a damaged chunk
            if damage and any((prev or 0) <= b and a <= host for a, b in damage):
                need_key = True
            prev = host
            if need_key and not bool(c["keyframe"][i]):
                run.append(host)
                continue
            if run:
                skipped.append(Gap(VIDEO_TOPIC, run[0], run[-1], len(run),
                                   "undecodable: references a frame of a damaged chunk"))
                run = []
            need_key = False
            row: dict[str, Any] = {k: int(v[i]) for k, v in c.items()}
            row["keyframe"] = bool(c["keyframe"][i])
            row["wall_ns"] = place.wall(host)
            row["segment_id"] = seg.id
            row["data"] = _video_data(units[host])
            rows.append(row)
        if run:
            skipped.append(Gap(VIDEO_TOPIC, run[0], run[-1], len(run),
                               "undecodable: references a frame of a damaged chunk"))
    rows.sort(key=lambda r: r["host_ts_ns"])
    return rows, skipped


def write_mp4(rows: list[dict[str, Any]], path: Path) -> list[int]:
    """Remux the access units into ``path``; returns each frame's pts in TIME_BASE ticks."""
    import av

    if not rows:
        return []
    first_key = next((i for i, r in enumerate(rows) if r["keyframe"]), None)
    if first_key is None:
        raise ValueError("no keyframe in the take: nothing decodable to write")
    t0 = rows[0]["host_ts_ns"]
    pts_all = [round((r["host_ts_ns"] - t0) * TIME_BASE.denominator / 1e9) for r in rows]
    with av.open(str(path), "w", format="mp4",
                 options={"video_track_timescale": str(TIME_BASE.denominator)}) as out:
        st = out.add_stream("h264")
        st.time_base = TIME_BASE
        cc = st.codec_context
        probe = _probe(rows[first_key]["data"])
        cc.width, cc.height = probe
        cc.pix_fmt = "yuv420p"
        cc.extradata = _nal_headers(rows[first_key]["data"])
        last = -1
        for i, (r, pts) in enumerate(zip(rows, pts_all, strict=True)):
            if i < first_key:
                continue
            if pts <= last:
                pts = last + 1  # never happens for frames >11 us apart; keeps pts strictly rising
                pts_all[i] = pts
            pkt = av.Packet(r["data"])
            pkt.pts = pkt.dts = pts
            pkt.time_base = TIME_BASE
            pkt.stream = st
            if r["keyframe"]:
                pkt.is_keyframe = True
            out.mux(pkt)
            last = pts
    return pts_all


def _probe(au: bytes) -> tuple[int, int]:
    """(width, height) from the access unit, by decoding it once."""
    import av

    ctx = av.CodecContext.create("h264", "r")
    for p in ctx.parse(au) or [av.Packet(au)]:
        for f in ctx.decode(p):
            return int(f.width), int(f.height)
    for f in ctx.decode(None):
        return int(f.width), int(f.height)
    raise ValueError("cannot decode the first keyframe")


def imu_table(take: Take, topic: str) -> Any:
    import pyarrow as pa

    cols: dict[str, list[Any]] = {}
    for seg, place in zip(take.segments, take.placements, strict=True):
        s = imu_streams(seg).get(topic)
        if s is None:
            continue
        n = len(s)
        part: dict[str, Any] = {
            "host_ns": s.host_ns, "wall_ns": s.host_ns + (place.realtime_ns - place.monotonic_ns),
            "device_ns": np.where(s.device_ns >= 0, s.device_ns, 0), "index": s.index}
        dev_valid = s.device_ns >= 0
        for name, raw, scale in (("acc", s.acc, s.acc_scale), ("gyro", s.gyro, s.gyro_scale)):
            if raw is None:
                raw = np.full((n, 3), -32768, np.int16)
            for k, axis in enumerate("xyz"):
                part[f"{name}_{axis}_raw"] = raw[:, k]
                part[f"{name}_{axis}"] = pa.array(raw[:, k] * scale, mask=raw[:, k] == -32768)
            part[f"{name}_scale"] = scale
        part["device_ns"] = pa.array(part["device_ns"], mask=~dev_valid)
        part["error_bound_ns"] = pa.array(s.bound_ns, mask=s.bound_ns < 0)
        part["segment_id"] = [seg.id] * n
        for key, val in part.items():
            cols.setdefault(key, []).append(val if isinstance(val, pa.Array) else pa.array(val))
    return pa.table({k: pa.concat_arrays(v) for k, v in cols.items()})


def _gap_table(rows: list[Gap], take: Take) -> Any:
    import pyarrow as pa

    return pa.table({"stream": [g.stream for g in rows],
                     "start_ns": pa.array([g.start_ns for g in rows], pa.int64()),
                     "end_ns": pa.array([g.end_ns for g in rows], pa.int64()),
                     "lost": pa.array([g.lost for g in rows], pa.int64()),
                     "cause": [g.cause for g in rows]})


def _file_name(topic: str) -> str:
    return topic.strip("/").replace("/", "_") + ".parquet"


def export_take(take: Take, out: Path) -> list[Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = out / take.name
    d.mkdir(parents=True, exist_ok=True)
    meta = {"take": take.name, "device_id": take.device_id, "boot_id": take.boot_id,
            "segments": [s.id for s in take.segments], "ends": take.ends,
            "placements": {s.id: p.to_dict() for s, p in zip(take.segments, take.placements,
                                                             strict=True)},
            "mp4_time_base": f"{TIME_BASE.numerator}/{TIME_BASE.denominator}"}
    kv = {b"wearcap.take": json.dumps(meta).encode()}
    written: list[Path] = []
    rows, skipped = take_frames(take)
    if rows:
        pts = write_mp4(rows, d / "video.mp4")
        written.append(d / "video.mp4")
        cols = [k for k in rows[0] if k != "data"]
        t = pa.table({k: [r[k] for r in rows] for k in cols})
        t = t.append_column("pts", pa.array(pts, pa.int64()))
        pq.write_table(t.replace_schema_metadata(kv), d / "frames.parquet")
        written.append(d / "frames.parquet")
    topics = sorted({t for s in take.segments for t in imu_streams(s)})
    for topic in topics:
        p = d / _file_name(topic)
        pq.write_table(imu_table(take, topic).replace_schema_metadata(kv), p)
        written.append(p)
    all_gaps = [g for s in take.segments for g in gaps(s)] + skipped
    pq.write_table(_gap_table(all_gaps, take).replace_schema_metadata(kv), d / "gaps.parquet")
    written.append(d / "gaps.parquet")
    (d / "take.json").write_text(json.dumps(meta, indent=2))
    written.append(d / "take.json")
    return written
