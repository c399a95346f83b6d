"""The segment writer: one MCAP file, read back by independent readers (mcap, protobuf, ffprobe)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import shutil
import subprocess

import msgpack
import pytest
from foxglove_schemas_protobuf.CompressedVideo_pb2 import CompressedVideo
from mcap.reader import make_reader

from agent.record.roller import Decision, RollPolicy
from agent.record.schemas import (
    build_video_schema_data,
    encode_video,
    frame_rows,
    video_schema_data,
)
from agent.record.segment import SegmentHeader, SegmentWriter
from agent.sources import GAP_TOPIC, ChannelSpec, Message
from agent.timeline import read_anchor
from tests.h264_frames import encode_frames

IMU = ChannelSpec("/wrist/left/imu", "wearcap.ImuBatch",
                  {"type": "object", "properties": {"t": {"type": "array"}}},
                  {"scale": "0.001"})


def header(seq: int = 7) -> SegmentHeader:
    return SegmentHeader("sim-0001", seq, seq - 1, "ab" * 32, "cd" * 32, read_anchor())


def write_segment(frames, msgs=(), chunk_every: int = 10):
    buf = io.BytesIO()
    w = SegmentWriter(buf, header(), sources_metadata={"left": {"offset_ns": "12"}},
                      channels=[IMU], chunk_bytes=64 * 1024)
    for i, f in enumerate(frames):
        w.write_frame(f)
        if i % chunk_every == chunk_every - 1:
            w.checkpoint()
    for m in msgs:
        w.write_message(m)
    sha, size = w.close()
    return buf.getvalue(), sha, size, w


def test_video_encoding_matches_the_official_protobuf_class():
    for ts in (0, 1, 999_999_999, 1_000_000_000, 123_456_789_012_345):
        m = CompressedVideo.FromString(encode_video(ts, b"\x00\x00\x00\x01\x65abc"))
        assert m.timestamp.seconds * 1_000_000_000 + m.timestamp.nanos == ts
        assert (m.frame_id, m.format, m.data) == ("camera", "h264", b"\x00\x00\x00\x01\x65abc")


def test_embedded_video_schema_is_what_protobuf_builds():
    from google.protobuf.descriptor_pb2 import FileDescriptorSet

    assert video_schema_data() == build_video_schema_data()
    names = {f.name for f in FileDescriptorSet.FromString(video_schema_data()).file}
    assert "foxglove/CompressedVideo.proto" in names


def test_round_trip_with_the_mcap_reader():
    frames = encode_frames(45)
    msgs = [Message("/wrist/left/imu", frames[3].host_ts_ns, {"t": [1, 2, 3]}),
            Message(GAP_TOPIC, frames[4].host_ts_ns,
                    {"stream": "left", "start_ns": 1, "end_ns": 2, "lost": 3,
                     "cause": "ring-overflow"})]
    data, sha, size, _ = write_segment(frames, msgs)
    assert sha == hashlib.sha256(data).hexdigest() and size == len(data)

    reader = make_reader(io.BytesIO(data), validate_crcs=True)
    summary = reader.get_summary()
    assert summary is not None and summary.statistics.chunk_count >= 4
    assert all(ci.compression == "zstd" for ci in summary.chunk_indexes)
    md = {m.name: m.metadata for m in reader.iter_metadata()}
    seg = md["wearcap.segment"]
    assert seg["segment_id"] == "sim-0001-00000007" and seg["sequence"] == "7"
    assert seg["previous_sha256"] == "ab" * 32 and seg["recovered"] == "false"
    assert seg["boot_id"] and int(seg["anchor_realtime_ns"]) > 0
    assert "mid-exposure" in seg["frame_time_doc"] and "CLOCK_MONOTONIC" in seg["timeline_doc"]
    assert md["wearcap.source.left"] == {"offset_ns": "12"}
    assert md["wearcap.segment.end"]["frames"] == "45"
    assert md["wearcap.segment.end"]["gaps"] == "1"

    video, meta, imu, gaps = [], [], [], []
    for schema, channel, msg in reader.iter_messages(log_time_order=False):
        if channel.topic == "/camera/h264":
            assert schema.name == "foxglove.CompressedVideo" and schema.encoding == "protobuf"
            video.append((msg.log_time, CompressedVideo.FromString(msg.data)))
        elif channel.topic == "/camera/frames":
            assert channel.message_encoding == "msgpack" and schema.encoding == "jsonschema"
            assert "mid-exposure" in json.loads(schema.data)["description"]
            meta += frame_rows(msgpack.unpackb(msg.data))
        elif channel.topic == "/wrist/left/imu":
            assert channel.metadata == {"scale": "0.001"}
            imu.append(msgpack.unpackb(msg.data))
        elif channel.topic == GAP_TOPIC:
            gaps.append(msgpack.unpackb(msg.data))
    assert [m.data for _, m in video] == [f.data for f in frames]
    assert [t for t, _ in video] == [f.host_ts_ns for f in frames]
    assert [m["index"] for m in meta] == list(range(45))
    assert meta[0]["keyframe"] and meta[0]["sensor_ts_ns"] == frames[0].sensor_ts_ns
    assert imu == [{"t": [1, 2, 3]}]
    assert gaps[0]["cause"] == "ring-overflow" and gaps[0]["lost"] == 3


def test_camera_loss_is_written_as_a_gap_never_hidden():
    frames = encode_frames(10)
    # Lose frames 4 and 5 (index jump, dropped_before reported).
    kept = [*frames[:4], dataclasses.replace(frames[6], dropped_before=2), *frames[7:]]
    data, *_ = write_segment(kept)
    reader = make_reader(io.BytesIO(data))
    gaps = [msgpack.unpackb(m.data) for _, _, m in reader.iter_messages(topics=[GAP_TOPIC])]
    assert len(gaps) == 1
    g = gaps[0]
    assert (g["stream"], g["lost"], g["cause"]) == ("/camera/h264", 2, "camera-drop")
    assert (g["start_ns"], g["end_ns"]) == (frames[3].host_ts_ns, frames[6].host_ts_ns)


def test_unregistered_topic_is_an_error_not_a_silent_drop():
    from agent.errors import SpoolError

    w = SegmentWriter(io.BytesIO(), header())
    with pytest.raises(SpoolError, match="unregistered"):
        w.write_message(Message("/nope", 1, {}))


def test_roll_policy_table():
    p = RollPolicy(seconds=2)
    assert p.on_frame(0, True) is Decision.OPEN
    p.opened(0)
    assert p.on_frame(1_000_000_000, True) is Decision.WRITE
    assert p.on_frame(2_000_000_000, False) is Decision.REQUEST_KEYFRAME
    assert p.on_frame(2_100_000_000, False) is Decision.WRITE  # asked once only
    assert p.on_frame(2_200_000_000, True) is Decision.ROLL
    p.opened(2_200_000_000)
    assert p.on_frame(4_100_000_000, True) is Decision.WRITE
    assert p.on_frame(4_200_000_000, True) is Decision.ROLL


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe not installed "
                    "(install.sh installs ffmpeg)")
def test_ffprobe_counts_the_frames_of_the_extracted_stream(tmp_path):
    frames = encode_frames(90, fps=30)
    data, *_ = write_segment(frames)
    reader = make_reader(io.BytesIO(data))
    es = b"".join(CompressedVideo.FromString(m.data).data
                  for _, _, m in reader.iter_messages(topics=["/camera/h264"]))
    path = tmp_path / "v.h264"
    path.write_bytes(es)
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
                          "-show_entries", "stream=codec_name,nb_read_frames,r_frame_rate",
                          "-of", "json", str(path)], capture_output=True, text=True,
                         check=True)
    st = json.loads(out.stdout)["streams"][0]
    assert st["codec_name"] == "h264"
    assert int(st["nb_read_frames"]) == 90
    assert st["r_frame_rate"] == "30/1"  # from the SPS timing info the encoder wrote


def test_frame_timing_batches_sit_in_the_chunk_of_their_frames():
    """Whether a chunk closes on size (small chunk_bytes) or on a checkpoint, the timing rows of
    its frames are in it: a crash that loses a chunk loses frames and timing together."""
    from mcap.data_stream import ReadDataStream
    from mcap.records import Chunk
    from mcap.records import Message as McapMessage
    from mcap.stream_reader import breakup_chunk

    frames = encode_frames(70)
    buf = io.BytesIO()
    w = SegmentWriter(buf, header(), chunk_bytes=3000)  # a few frames per chunk
    for i, f in enumerate(frames):
        w.write_frame(f)
        if i == 40:
            w.checkpoint()
    w.close()
    data = buf.getvalue()
    reader = make_reader(io.BytesIO(data))
    summary = reader.get_summary()
    topics = {cid: ch.topic for cid, ch in summary.channels.items()}
    assert len(summary.chunk_indexes) >= 5
    seen = []
    for ci in summary.chunk_indexes:
        rec = data[ci.chunk_start_offset + 9: ci.chunk_start_offset + ci.chunk_length]
        chunk = Chunk.read(ReadDataStream(io.BytesIO(rec)))
        video, timing = [], []
        for r in breakup_chunk(chunk):
            if isinstance(r, McapMessage) and topics[r.channel_id] == "/camera/h264":
                video.append(r.log_time)
            elif isinstance(r, McapMessage) and topics[r.channel_id] == "/camera/frames":
                timing += [row["host_ts_ns"] for row in frame_rows(msgpack.unpackb(r.data))]
        assert video == timing
        seen += video
    assert seen == [f.host_ts_ns for f in frames]
