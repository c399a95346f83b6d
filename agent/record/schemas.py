"""The channels every segment carries, and how their messages are encoded.

- ``/camera/h264``: ``foxglove.CompressedVideo`` (protobuf), one H.264 access unit per message,
  so a segment plays in Foxglove as written. The message is encoded by hand (four fields) to
  keep the hot path free of a protobuf object per frame; tests decode it with the official
  generated class.
- ``/camera/frames``: per-frame timing as columnar batches, one per chunk (msgpack, JSON
  schema declared).
- ``/wearcap/gaps``: every loss (msgpack, JSON schema declared), always registered.
- any ``ChannelSpec`` a source declares (msgpack, JSON schema).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from agent.camera.base import FRAME_TIME_DOC
from agent.sources import GAP_SCHEMA, GAP_TOPIC, ChannelSpec

VIDEO_TOPIC = "/camera/h264"
FRAMES_TOPIC = "/camera/frames"
VIDEO_SCHEMA_NAME = "foxglove.CompressedVideo"
FRAME_ID = "camera"

VIDEO_DOC = (
    "foxglove.CompressedVideo, format h264: data is one Annex B access unit (SPS/PPS before "
    "every IDR, no B-frames); timestamp and log_time are the frame's mid-exposure instant on "
    "the host timeline (CLOCK_MONOTONIC, seconds+nanos since boot)"
)

FRAME_FIELDS: tuple[str, ...] = ("index", "sensor_ts_ns", "host_ts_ns", "exposure_us",
                                 "frame_duration_us", "keyframe", "dropped_before", "size")
"""The columns of a ``/camera/frames`` batch, in the order the writer fills them."""

_FRAME_COLUMNS: dict[str, dict[str, Any]] = {
    "index": {"items": {"type": "integer"}, "description": "frame counter since capture "
              "started; a jump means frames were lost (also written to /wearcap/gaps)"},
    "sensor_ts_ns": {"items": {"type": "integer"}, "description": "raw sensor timestamp, ns"},
    "host_ts_ns": {"items": {"type": "integer"}, "description": "mid-exposure, host "
                   "timeline, ns (= log_time of the frame's video message)"},
    "exposure_us": {"items": {"type": "integer"}},
    "frame_duration_us": {"items": {"type": "integer"}},
    "keyframe": {"items": {"type": "boolean"}},
    "dropped_before": {"items": {"type": "integer"}, "description": "frames lost just before"},
    "size": {"items": {"type": "integer"}, "description": "bytes of the access unit"},
}

FRAMES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "wearcap.CameraFrames",
    "description": "Timing of consecutive camera frames, one column per field (row i of "
                   "every column is frame i of the batch). A batch holds the frames of one "
                   "MCAP chunk and is written into that chunk; the message's log_time is its "
                   "first frame's host_ts_ns. " + FRAME_TIME_DOC,
    "properties": {k: {"type": "array", **v} for k, v in _FRAME_COLUMNS.items()},
    "required": list(FRAME_FIELDS),
}

def frame_rows(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The frames of one decoded ``/camera/frames`` message, one dict per frame (a message
    written per frame, as before batching, is one row)."""
    idx = payload.get("index")
    if not isinstance(idx, list):
        return [payload]
    cols = [(k, v) for k, v in payload.items() if isinstance(v, list) and len(v) == len(idx)]
    return [{k: v[i] for k, v in cols} for i in range(len(idx))]


FRAMES_SPEC = ChannelSpec(FRAMES_TOPIC, "wearcap.CameraFrames", FRAMES_SCHEMA,
                          {"time_doc": FRAME_TIME_DOC})
GAP_SPEC = ChannelSpec(GAP_TOPIC, "wearcap.Gap", GAP_SCHEMA,
                       {"time_doc": "start_ns/end_ns: host timeline (CLOCK_MONOTONIC ns)"})


@dataclass(frozen=True, slots=True)
class ChannelDef:
    """Everything needed to register a channel (again) in an MCAP file."""

    topic: str
    message_encoding: str
    schema_name: str
    schema_encoding: str
    schema_data: bytes
    metadata: dict[str, str] = field(default_factory=dict)


def msgpack_channel(spec: ChannelSpec) -> ChannelDef:
    data = json.dumps(spec.schema, sort_keys=True).encode()
    return ChannelDef(spec.topic, "msgpack", spec.schema_name, "jsonschema", data,
                      dict(spec.metadata))


_VIDEO_FDS_B64 = (
    "Cv8BCh9nb29nbGUvcHJvdG9idWYvdGltZXN0YW1wLnByb3RvEg9nb29nbGUucHJvdG9idWYiOwoJVGltZXN0"
    "YW1wEhgKB3NlY29uZHMYASABKANSB3NlY29uZHMSFAoFbmFub3MYAiABKAVSBW5hbm9zQoUBChNjb20uZ29v"
    "Z2xlLnByb3RvYnVmQg5UaW1lc3RhbXBQcm90b1ABWjJnb29nbGUuZ29sYW5nLm9yZy9wcm90b2J1Zi90eXBl"
    "cy9rbm93bi90aW1lc3RhbXBwYvgBAaICA0dQQqoCHkdvb2dsZS5Qcm90b2J1Zi5XZWxsS25vd25UeXBlc2IG"
    "cHJvdG8zCsUBCh5mb3hnbG92ZS9Db21wcmVzc2VkVmlkZW8ucHJvdG8SCGZveGdsb3ZlGh9nb29nbGUvcHJv"
    "dG9idWYvdGltZXN0YW1wLnByb3RvInAKD0NvbXByZXNzZWRWaWRlbxItCgl0aW1lc3RhbXAYASABKAsyGi5n"
    "b29nbGUucHJvdG9idWYuVGltZXN0YW1wEhAKCGZyYW1lX2lkGAIgASgJEgwKBGRhdGEYAyABKAwSDgoGZm9y"
    "bWF0GAQgASgJYgZwcm90bzM="
)
"""The FileDescriptorSet of foxglove.CompressedVideo (with its imports), serialized once from
foxglove-schemas-protobuf, so recording needs no protobuf runtime (a test rebuilds it and
compares)."""


@lru_cache(maxsize=1)
def video_schema_data() -> bytes:
    return base64.b64decode(_VIDEO_FDS_B64)


def build_video_schema_data() -> bytes:
    """The same bytes, built by the protobuf runtime (what the constant is checked against)."""
    from foxglove_schemas_protobuf.CompressedVideo_pb2 import CompressedVideo
    from mcap_protobuf.schema import build_file_descriptor_set

    return bytes(build_file_descriptor_set(CompressedVideo).SerializeToString())


def video_channel() -> ChannelDef:
    return ChannelDef(VIDEO_TOPIC, "protobuf", VIDEO_SCHEMA_NAME, "protobuf",
                      video_schema_data(), {"time_doc": VIDEO_DOC})


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


_FRAME_ID_FIELD = b"\x12" + _varint(len(FRAME_ID)) + FRAME_ID.encode()
_FORMAT_FIELD = b"\x22\x04h264"


def encode_video(ts_ns: int, data: bytes) -> bytes:
    """foxglove.CompressedVideo{timestamp, frame_id="camera", data, format="h264"}."""
    sec, nsec = divmod(ts_ns, 1_000_000_000)
    ts = b""
    if sec:
        ts += b"\x08" + _varint(sec)
    if nsec:
        ts += b"\x10" + _varint(nsec)
    return b"".join((b"\x0a", _varint(len(ts)), ts, _FRAME_ID_FIELD,
                     b"\x1a", _varint(len(data)), data, _FORMAT_FIELD))
