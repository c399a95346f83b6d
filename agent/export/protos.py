"""The protobuf schemas of the Foxglove export (package ``wearcap.export``), built at run time.

Every message carries ``timestamp`` (wall clock, google.protobuf.Timestamp) for Foxglove's
timeline, and the recorded host time (``host_ns``, CLOCK_MONOTONIC of the boot) and, where
there is one, the device's own time, so nothing recorded is lost to the wall clock.

    ImuSample    one IMU sample: acc (m/s^2), gyro (rad/s), the raw int16 counts, times,
                 running sample number, error bound of the host mapping (-1: not converged).
                 An axis the band did not measure (stored -32768) is NaN in the scaled field.
    FrameTiming  one camera frame: index, sensor/host times, exposure, drops, size.
    ClockFit     a source's clock mapping as written at a segment's start, with its bound.
    Gap          data that should exist and does not (host ns and wall clock).
    SegmentStart where a segment begins, and the anchor that placed it on the wall clock.

Wearer events use the well-known ``foxglove.Log``; the video stays ``foxglove.CompressedVideo``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

PACKAGE = "wearcap.export"
_T = descriptor_pb2.FieldDescriptorProto

_FIELDS: dict[str, list[tuple[str, int, str | None]]] = {
    # name -> [(field, type, message type name)]
    "Vector3": [("x", _T.TYPE_DOUBLE, None), ("y", _T.TYPE_DOUBLE, None),
                ("z", _T.TYPE_DOUBLE, None)],
    "RawVector3": [("x", _T.TYPE_SINT32, None), ("y", _T.TYPE_SINT32, None),
                   ("z", _T.TYPE_SINT32, None)],
    "ImuSample": [("timestamp", _T.TYPE_MESSAGE, ".google.protobuf.Timestamp"),
                  ("acc", _T.TYPE_MESSAGE, ".wearcap.export.Vector3"),
                  ("gyro", _T.TYPE_MESSAGE, ".wearcap.export.Vector3"),
                  ("acc_raw", _T.TYPE_MESSAGE, ".wearcap.export.RawVector3"),
                  ("gyro_raw", _T.TYPE_MESSAGE, ".wearcap.export.RawVector3"),
                  ("host_ns", _T.TYPE_INT64, None),
                  ("device_ns", _T.TYPE_INT64, None),
                  ("has_device_time", _T.TYPE_BOOL, None),
                  ("index", _T.TYPE_INT64, None),
                  ("error_bound_ns", _T.TYPE_INT64, None)],
    "FrameTiming": [("timestamp", _T.TYPE_MESSAGE, ".google.protobuf.Timestamp"),
                    ("index", _T.TYPE_INT64, None),
                    ("sensor_ts_ns", _T.TYPE_INT64, None),
                    ("host_ns", _T.TYPE_INT64, None),
                    ("exposure_us", _T.TYPE_INT64, None),
                    ("frame_duration_us", _T.TYPE_INT64, None),
                    ("keyframe", _T.TYPE_BOOL, None),
                    ("dropped_before", _T.TYPE_INT64, None),
                    ("size", _T.TYPE_INT64, None)],
    "ClockFit": [("timestamp", _T.TYPE_MESSAGE, ".google.protobuf.Timestamp"),
                 ("source", _T.TYPE_STRING, None),
                 ("segment_id", _T.TYPE_STRING, None),
                 ("method", _T.TYPE_STRING, None),
                 ("mapping", _T.TYPE_STRING, None),
                 ("converged", _T.TYPE_BOOL, None),
                 ("error_bound_ns", _T.TYPE_INT64, None),
                 ("slope", _T.TYPE_DOUBLE, None),
                 ("drift_ppm", _T.TYPE_DOUBLE, None),
                 ("latency_ns", _T.TYPE_INT64, None),
                 ("ref_device_ns", _T.TYPE_INT64, None),
                 ("ref_host_ns", _T.TYPE_INT64, None),
                 ("observations", _T.TYPE_INT64, None),
                 ("snapshot_json", _T.TYPE_STRING, None)],
    "Gap": [("timestamp", _T.TYPE_MESSAGE, ".google.protobuf.Timestamp"),
            ("end", _T.TYPE_MESSAGE, ".google.protobuf.Timestamp"),
            ("stream", _T.TYPE_STRING, None),
            ("start_ns", _T.TYPE_INT64, None),
            ("end_ns", _T.TYPE_INT64, None),
            ("lost", _T.TYPE_INT64, None),
            ("cause", _T.TYPE_STRING, None)],
    "SegmentStart": [("timestamp", _T.TYPE_MESSAGE, ".google.protobuf.Timestamp"),
                     ("segment_id", _T.TYPE_STRING, None),
                     ("sequence", _T.TYPE_INT64, None),
                     ("host_ns", _T.TYPE_INT64, None),
                     ("intact", _T.TYPE_BOOL, None),
                     ("anchor_segment", _T.TYPE_STRING, None),
                     ("anchor_monotonic_ns", _T.TYPE_INT64, None),
                     ("anchor_realtime_ns", _T.TYPE_INT64, None),
                     ("anchor_uncertainty_ns", _T.TYPE_INT64, None),
                     ("placement", _T.TYPE_STRING, None)],
}


def file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto(name="wearcap/export.proto", package=PACKAGE,
                                            syntax="proto3",
                                            dependency=["google/protobuf/timestamp.proto"])
    for name, fields in _FIELDS.items():
        m = fd.message_type.add(name=name)
        for i, (fname, ftype, tname) in enumerate(fields, start=1):
            f = m.field.add(name=fname, number=i, type=ftype, label=_T.LABEL_OPTIONAL,
                            json_name=fname)
            if tname:
                f.type_name = tname
    return fd


@lru_cache(maxsize=1)
def classes() -> dict[str, Any]:
    """Message classes by short name (ImuSample, ...)."""
    pool = descriptor_pool.DescriptorPool()
    ts = descriptor_pb2.FileDescriptorProto()
    timestamp_pb2.DESCRIPTOR.CopyToProto(ts)
    pool.Add(ts)
    pool.Add(file_descriptor())
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{n}"))
            for n in _FIELDS}


def descriptor_set(name: str) -> bytes:
    """The FileDescriptorSet of ``wearcap.export.<name>`` with its imports (schema data)."""
    from mcap_protobuf.schema import build_file_descriptor_set

    return bytes(build_file_descriptor_set(classes()[name]).SerializeToString())
