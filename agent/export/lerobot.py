"""``wearcap export PATH... --to lerobot OUT``: a LeRobot v3 dataset (``codebase_version``
v3.0), as LeRobot's ``LeRobotDataset`` reads it.

    meta/info.json  meta/stats.json  meta/tasks.parquet  meta/episodes/chunk-000/file-000.parquet
    data/chunk-000/file-000.parquet  videos/observation.images.camera/chunk-000/file-NNN.mp4

**Episodes.** A take (``agent.export.takes``) is cut into episodes wherever the frames are
not consecutive: at pauses, discards and annotation events, at every dropped frame (a drop
never becomes a duplicated frame: the episode ends before it and the next starts after it),
and where frames were lost to a damaged chunk. Each episode is a run of consecutive frames.

**Timestamps.** LeRobot puts frame ``k`` of an episode at ``timestamp = k / fps`` and checks
decoded frames against that within 1e-4 s, so the video is written at a constant ``fps`` (the
recording's nominal rate). The true times are kept as int64 features, per frame:
``observation.camera.host_ns`` (mid-exposure, CLOCK_MONOTONIC), ``.wall_ns``, ``.sensor_ns``,
``.frame_index`` (the recorded frame counter), and ``.grid_residual_ns`` = host_ns - (first
frame's host_ns + k / fps): how far the constant-rate grid is from the real frame time.

An episode's ``align_residual_max_ms`` is None when no motion sample lay within a sample
period of any of its frames.

**Motion alignment** (documented method: nearest sample, no interpolation). For each frame and
each IMU stream, the sample whose host time is nearest the frame's recorded mid-exposure time
is taken as it is: ``observation.<stream>.acc`` (m/s^2), ``.gyro`` (rad/s), with that sample's
``.host_ns``, ``.device_ns`` and ``.offset_ns`` (sample time - frame time). Nothing is
resampled: when no sample lies within one sample period of the frame (a gap), the values are
NaN and the ns features -1. The *alignment residual* of an episode is the largest
``|offset_ns|`` over its frames and streams (and the grid residual is reported beside it). The
full-rate samples are in the MP4 export's Parquet.

**Video.** Re-encoded by default with LeRobot's own short-GOP choice, a keyframe every 2
frames (``g=2``), in H.264 (libx264, crf 23, yuv420p; LeRobot's default codec is AV1, H.264
decodes everywhere, torchcodec included), one file per dataset, episodes one after another.
``--copy-video`` copies the recorded H.264 instead, one file per episode, when the episode
starts on a keyframe (else that episode is re-encoded, and the result says so).
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .mp4 import take_frames
from .streams import Imu, imu_streams
from .takes import Take

CODEBASE_VERSION = "v3.0"
VIDEO_KEY = "observation.images.camera"
GOP = 2
CRF = 23
_STATS_Q = (0.01, 0.10, 0.50, 0.90, 0.99)


def _episodes(take: Take) -> list[list[dict[str, Any]]]:
    """Runs of consecutive frames of the take (see the module doc for where they are cut),
    each row with its decoded picture (``frame``); a frame that does not decode (it refers to
    one that was lost) is left out, which cuts the episode there too."""
    rows, _skipped = take_frames(take)
    rows = [r for r in _decode(rows) if r.get("frame") is not None]
    cuts = sorted(e.t_ns for evs in take.events for e in evs if e.splits)
    out: list[list[dict[str, Any]]] = []
    cur: list[dict[str, Any]] = []
    for r in rows:
        if cur:
            prev = cur[-1]
            broken = (r["index"] != prev["index"] + 1 or r["dropped_before"] > 0
                      or any(prev["host_ts_ns"] < t <= r["host_ts_ns"] for t in cuts))
            if broken:
                out.append(cur)
                cur = []
        cur.append(r)
    if cur:
        out.append(cur)
    return out


def _nearest(host: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Index into ``samples`` (sorted) of the sample nearest each of ``host``."""
    i = np.searchsorted(samples, host)
    i = np.clip(i, 1, max(1, len(samples) - 1))
    left = samples[np.maximum(i - 1, 0)]
    right = samples[np.minimum(i, len(samples) - 1)]
    return np.where(np.abs(host - left) <= np.abs(right - host), i - 1, i)


def _stats(values: np.ndarray) -> dict[str, list[Any]]:
    """LeRobot's per-feature statistics, per column, NaN (no measurement) left out."""
    v = values.astype(np.float64)
    if v.ndim == 1:
        v = v[:, None]
    empty = np.asarray(np.isnan(v).all(axis=0), dtype=bool)
    filled = np.where(empty[None, :], 0.0, v)

    def col(x: np.ndarray) -> list[float]:
        return [float(y) for y in np.nan_to_num(x)]

    with np.errstate(all="ignore"):
        s: dict[str, list[Any]] = {
            "min": col(np.nanmin(filled, axis=0)), "max": col(np.nanmax(filled, axis=0)),
            "mean": col(np.nanmean(filled, axis=0)), "std": col(np.nanstd(filled, axis=0)),
            "count": [len(v)]}
        for q in _STATS_Q:
            s[f"q{round(q * 100):02d}"] = col(np.nanquantile(filled, q, axis=0))
    return s


class _Encoder:
    """Decodes the recorded H.264 and re-encodes it with a short GOP into one MP4."""

    def __init__(self, path: Path, fps: int, width: int, height: int) -> None:
        import av

        self.out = av.open(str(path), "w", format="mp4")
        st = self.out.add_stream("libx264", rate=fps)
        st.width, st.height, st.pix_fmt = width, height, "yuv420p"
        st.codec_context.gop_size = GOP
        st.codec_context.max_b_frames = 0
        st.codec_context.options = {"crf": str(CRF), "preset": "veryfast"}
        self.st = st
        self.n = 0

    def add(self, frame: Any) -> None:
        import av

        f = frame.reformat(format="yuv420p")
        f.pts = self.n
        f.pict_type = av.video.frame.PictureType.NONE  # the recorded I/P type is not kept
        self.n += 1
        for p in self.st.encode(f):
            self.out.mux(p)

    def close(self) -> None:
        for p in self.st.encode(None):
            self.out.mux(p)
        self.out.close()


def _decode(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` (consecutive access units of one take, no B-frames) each with ``frame``: its
    decoded picture, or None when it does not decode (until the next keyframe after one that
    failed)."""
    import av

    ctx = av.CodecContext.create("h264", "r")
    ok = True
    for r in rows:
        r["frame"] = None
        if not ok and not r["keyframe"]:
            continue
        try:
            got = ctx.decode(av.Packet(r["data"]))
        except av.error.FFmpegError:
            ok = False
            continue
        ok = True
        if got:
            r["frame"] = got[-1]
    return rows


def _copy(rows: list[dict[str, Any]], path: Path, fps: int) -> None:
    """The episode's access units as they are, frame k at k / fps."""
    import av

    from .mp4 import _nal_headers, _probe

    tb = Fraction(1, 90_000)
    step = 90_000 // fps
    with av.open(str(path), "w", format="mp4",
                 options={"video_track_timescale": "90000"}) as out:
        st = out.add_stream("h264")
        st.time_base = tb
        st.codec_context.width, st.codec_context.height = _probe(rows[0]["data"])
        st.codec_context.pix_fmt = "yuv420p"
        st.codec_context.extradata = _nal_headers(rows[0]["data"])
        for k, r in enumerate(rows):
            pkt = av.Packet(r["data"])
            pkt.pts = pkt.dts = k * step
            pkt.time_base = tb
            pkt.stream = st
            pkt.is_keyframe = bool(r["keyframe"])
            out.mux(pkt)


def export(takes: list[Take], out: Path, *, task: str = "recorded work",
           copy_video: bool = False) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from agent.errors import InputError

    plans = []
    fps_seen: set[int] = set()
    for t in takes:
        eps = _episodes(t)
        if not eps:
            continue
        hosts = np.asarray([r["host_ts_ns"] for e in eps for r in e], dtype=np.int64)
        d = np.diff(hosts)
        d = d[d > 0]
        fps = round(1e9 / float(np.median(d))) if d.size else 30
        fps_seen.add(fps)
        imus: dict[str, list[Imu]] = {}
        for s in t.segments:
            for topic, imu in imu_streams(s).items():
                imus.setdefault(topic, []).append(imu)
        plans.append((t, eps, imus))
    if not plans:
        raise InputError("no camera frames in the input: a LeRobot dataset needs video")
    if len(fps_seen) > 1:
        raise InputError(f"takes recorded at different frame rates {sorted(fps_seen)}: "
                         "export them into separate datasets")
    fps = fps_seen.pop()
    topics = sorted({tp for _, _, imus in plans for tp in imus})
    vdir = out / "videos" / VIDEO_KEY / "chunk-000"
    vdir.mkdir(parents=True, exist_ok=True)
    for sub in ("data/chunk-000", "meta/episodes/chunk-000"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    cols: dict[str, list[Any]] = {}
    episodes: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    encoder: _Encoder | None = None
    width = height = 0
    img_samples: list[np.ndarray] = []
    ep_index = 0
    total = 0
    notes: list[str] = []
    for t, eps, imus in plans:
        cat = {tp: (np.concatenate([p.host_ns for p in ps]),
                    np.concatenate([p.device_ns for p in ps]),
                    np.concatenate([p.acc.astype(np.float64) * p.acc_scale[:, None]
                                    for p in ps]),
                    np.concatenate([(p.gyro.astype(np.float64) if p.gyro is not None
                                     else np.full((len(p), 3), np.nan)) * p.gyro_scale[:, None]
                                    for p in ps]),
                    np.concatenate([p.acc == -32768 for p in ps]),
                    np.concatenate([(p.gyro == -32768) if p.gyro is not None
                                    else np.ones((len(p), 3), np.bool_) for p in ps]))
               for tp, ps in imus.items()}
        for e in eps:
            n = len(e)
            host = np.asarray([r["host_ts_ns"] for r in e], dtype=np.int64)
            grid = host[0] + np.rint(np.arange(n) * 1e9 / fps).astype(np.int64)
            feats: dict[str, Any] = {
                "observation.camera.host_ns": host,
                "observation.camera.wall_ns": np.asarray([r["wall_ns"] for r in e], np.int64),
                "observation.camera.sensor_ns": np.asarray([r["sensor_ts_ns"] for r in e],
                                                           np.int64),
                "observation.camera.frame_index": np.asarray([r["index"] for r in e], np.int64),
                "observation.camera.grid_residual_ns": host - grid,
            }
            worst: int | None = None
            for tp in topics:
                key = "observation." + tp.strip("/").replace("/imu", "").replace("/", ".")
                if tp not in cat or not len(cat[tp][0]):
                    s_host = np.full(n, -1, np.int64)
                    acc = np.full((n, 3), np.nan)
                    gyro = np.full((n, 3), np.nan)
                    dev = off = np.full(n, -1, np.int64)
                else:
                    h, dv, a, g, am, gm = cat[tp]
                    order = np.argsort(h, kind="stable")
                    h, dv, a, g, am, gm = h[order], dv[order], a[order], g[order], am[order], \
                        gm[order]
                    j = _nearest(host, h)
                    period = float(np.median(np.diff(h))) if len(h) > 1 else 0.0
                    off = h[j] - host
                    far = np.abs(off) > max(period, 1.0)
                    acc, gyro = a[j].copy(), g[j].copy()
                    acc[am[j]] = np.nan
                    gyro[gm[j]] = np.nan
                    acc[far] = np.nan
                    gyro[far] = np.nan
                    s_host = np.where(far, -1, h[j])
                    dev = np.where(far | (dv[j] < 0), -1, dv[j])
                    off = np.where(far, -1, off)
                    if (~far).any():
                        worst = max(worst or 0, int(np.abs(off[~far]).max()))
                feats[f"{key}.acc"] = acc.astype(np.float32)
                feats[f"{key}.gyro"] = gyro.astype(np.float32)
                feats[f"{key}.host_ns"] = s_host.astype(np.int64)
                feats[f"{key}.device_ns"] = dev.astype(np.int64)
                feats[f"{key}.offset_ns"] = off.astype(np.int64)
            feats["timestamp"] = (np.arange(n) / fps).astype(np.float32)
            feats["frame_index"] = np.arange(n, dtype=np.int64)
            feats["episode_index"] = np.full(n, ep_index, np.int64)
            feats["index"] = np.arange(total, total + n, dtype=np.int64)
            feats["task_index"] = np.zeros(n, np.int64)
            for k, v in feats.items():
                cols.setdefault(k, []).append(v)

            # video
            ep_file = 0
            from_ts = 0.0
            how = "re-encoded"
            if copy_video and e[0]["keyframe"]:
                ep_file = ep_index
                _copy(e, vdir / f"file-{ep_file:03d}.mp4", fps)
                how = "copied"
                if not width:
                    from .mp4 import _probe

                    width, height = _probe(e[0]["data"])
            else:
                frames_e = [r["frame"] for r in e]
                if copy_video:
                    notes.append(f"episode {ep_index} starts between keyframes: re-encoded")
                    ep_file = ep_index
                    enc = _Encoder(vdir / f"file-{ep_file:03d}.mp4", fps,
                                   frames_e[0].width, frames_e[0].height)
                    for f in frames_e:
                        enc.add(f)
                    enc.close()
                else:
                    if encoder is None:
                        width, height = frames_e[0].width, frames_e[0].height
                        encoder = _Encoder(vdir / "file-000.mp4", fps, width, height)
                    from_ts = encoder.n / fps
                    for f in frames_e:
                        encoder.add(f)
                if not width:
                    width, height = frames_e[0].width, frames_e[0].height
                for f in frames_e[:: max(1, n // 4)]:  # image stats from a thinned sample
                    if len(img_samples) < 64:
                        img_samples.append(f.to_ndarray(format="rgb24")[::8, ::8])
            to_ts = from_ts + n / fps
            grid_res = feats["observation.camera.grid_residual_ns"]
            episodes.append({
                "episode_index": ep_index, "tasks": [task], "length": n,
                "data/chunk_index": 0, "data/file_index": 0,
                "dataset_from_index": total, "dataset_to_index": total + n,
                f"videos/{VIDEO_KEY}/chunk_index": 0,
                f"videos/{VIDEO_KEY}/file_index": ep_file,
                f"videos/{VIDEO_KEY}/from_timestamp": from_ts,
                f"videos/{VIDEO_KEY}/to_timestamp": to_ts,
                "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
            })
            summary.append({"episode_index": ep_index, "take": t.name, "length": n,
                            "first_frame": int(e[0]["index"]), "last_frame": int(e[-1]["index"]),
                            "video": how,
                            "align_residual_max_ms": None if worst is None else worst / 1e6,
                            "grid_residual_max_ms": float(np.abs(grid_res).max()) / 1e6})
            ep_index += 1
            total += n
    if encoder is not None:
        encoder.close()

    arrays = {k: np.concatenate(v) for k, v in cols.items()}
    features: dict[str, Any] = {VIDEO_KEY: {
        "dtype": "video", "shape": [height, width, 3], "names": ["height", "width", "channels"],
        "info": {"video.height": height, "video.width": width,
                 "video.codec": "h264", "video.pix_fmt": "yuv420p",
                 "video.is_depth_map": False, "video.fps": fps, "video.channels": 3,
                 "has_audio": False}}}
    fields = []
    for k, v in arrays.items():
        if v.ndim == 2:
            features[k] = {"dtype": "float32", "shape": [v.shape[1]], "names": ["x", "y", "z"]}
            fields.append(pa.field(k, pa.list_(pa.float32(), v.shape[1])))
        else:
            dt = "float32" if v.dtype == np.float32 else "int64"
            features[k] = {"dtype": dt, "shape": [1], "names": None}
            fields.append(pa.field(k, pa.float32() if dt == "float32" else pa.int64()))
    data = pa.table([pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), v.shape[1])
                     if v.ndim == 2 else pa.array(v) for v in arrays.values()],
                    schema=pa.schema(fields))
    pq.write_table(data, out / "data" / "chunk-000" / "file-000.parquet")

    stats = {k: _stats(v) for k, v in arrays.items()}
    if img_samples:
        px = np.stack(img_samples).astype(np.float64) / 255.0  # (n, h, w, 3)
        flat = px.reshape(-1, 3)
        img = _stats(flat)
        stats[VIDEO_KEY] = {k: ([[[x]] for x in v] if k != "count" else [len(img_samples)])
                            for k, v in img.items()}
    (out / "meta" / "stats.json").write_text(json.dumps(stats, indent=2))
    ep_table = pa.table({k: [e[k] for e in episodes] for k in episodes[0]})
    pq.write_table(ep_table, out / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    _write_tasks(out / "meta" / "tasks.parquet", [task])
    info = {
        "codebase_version": CODEBASE_VERSION, "robot_type": "wearcap",
        "total_episodes": len(episodes), "total_frames": total, "total_tasks": 1,
        "chunks_size": 1000, "data_files_size_in_mb": 100, "video_files_size_in_mb": 200,
        "fps": fps, "splits": {"train": f"0:{len(episodes)}"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": features,
        "wearcap": {"alignment": "nearest IMU sample to each frame's recorded mid-exposure "
                    "time, no interpolation; NaN when none within one sample period",
                    "video": "copied H.264" if copy_video else
                    f"re-encoded H.264 libx264 crf {CRF}, GOP {GOP}, yuv420p",
                    "takes": [t.name for t, _, _ in plans]},
    }
    (out / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    return {"episodes": summary, "fps": fps, "frames": total, "notes": notes}


def _write_tasks(path: Path, tasks: list[str]) -> None:
    """meta/tasks.parquet as pandas writes it: the task text is the index."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = {"index_columns": ["__index_level_0__"],
            "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode",
                                "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
            "columns": [{"name": "task_index", "field_name": "task_index",
                         "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
                        {"name": None, "field_name": "__index_level_0__",
                         "pandas_type": "unicode", "numpy_type": "object", "metadata": None}],
            "attributes": {}, "creator": {"library": "pyarrow", "version": pa.__version__},
            "pandas_version": "2.2.0"}
    t = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()),
                  "__index_level_0__": pa.array(tasks, pa.string())})
    pq.write_table(t.replace_schema_metadata({b"pandas": json.dumps(meta).encode()}), path)
