"""Columnar msgpack channels (a source's batches: equal-length lists per field) as one protobuf
message per row, with a schema built from the channel's own JSON schema.

    row_schema(channel) -> RowSchema | None     # None: not columnar, export it as JSON
    RowSchema.rows(payload, log_time) -> [(host_ns, message bytes)]

Each row message ``wearcap.export.<Title>`` has ``timestamp`` (wall clock, filled by the
caller) and one field per column: JSON ``integer`` -> int64, ``number`` -> double,
``boolean`` -> bool, ``string`` -> string (a null is left at the field's default and its name
is listed in the row's ``nulls``). Scalar fields of the batch are repeated on every row. The
row's host time is its first column among ``HOST_COLUMNS``, else the batch's ``log_time``.
This serves the head MCU's strobes, button, battery and clock exchanges, and any later source
that follows the batch convention of ``agent.sources``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from agent.record.schemas import ChannelDef

HOST_COLUMNS = ("host_ns", "host_mid_ns", "host_ts_ns", "host_send_ns", "host_t0_ns",
                "start_ns")
PACKAGE = "wearcap.export"
_TYPES = {"integer": 3, "number": 1, "boolean": 8, "string": 9}
"""JSON type -> FieldDescriptorProto type (INT64, DOUBLE, BOOL, STRING)."""


@dataclass(frozen=True)
class Columns:
    """What a columnar channel's JSON schema says: its columns, scalars and their types."""

    title: str
    columns: list[str]
    scalars: list[str]
    fields: list[tuple[str, int]]

    @property
    def host_column(self) -> str | None:
        return next((c for c in HOST_COLUMNS if c in self.columns), None)

    def row_times(self, payload: Any, log_time: int) -> list[int]:
        """Host time of every row of one message (the batch's log_time where none)."""
        if not isinstance(payload, dict):
            return [log_time]
        n = max((len(payload[c]) for c in self.columns if isinstance(payload.get(c), list)),
                default=0)
        col = payload.get(self.host_column) if self.host_column else None
        return [int(col[i]) if isinstance(col, list) and i < len(col)
                and isinstance(col[i], int) else log_time for i in range(n)]


def columns(ch: ChannelDef) -> Columns | None:
    """The columns of a msgpack batch channel (None: not columnar). Needs no protobuf."""
    if ch.message_encoding != "msgpack" or ch.schema_encoding != "jsonschema":
        return None
    try:
        schema = json.loads(ch.schema_data)
    except ValueError:
        return None
    if not isinstance(schema, dict):
        return None
    props = schema.get("properties") or {}
    cols: list[str] = []
    scalars: list[str] = []
    fields: list[tuple[str, int]] = []
    for k, p in props.items():
        kind = _kind(p) if isinstance(p, dict) else None
        if kind is None or _field_name(k) != k or k in ("timestamp", "nulls"):
            continue
        (cols if kind[0] else scalars).append(k)
        fields.append((k, kind[1]))
    if not cols:
        return None
    title = re.sub(r"\W", "", str(schema.get("title") or ch.schema_name).split(".")[-1]) or "Row"
    return Columns(title, cols, scalars, fields)


def _kind(prop: dict[str, Any]) -> tuple[bool, int] | None:
    """(is a column, protobuf type) of a JSON schema property, or None (not representable)."""
    t = prop.get("type")
    col = t == "array"
    if col:
        t = (prop.get("items") or {}).get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), None)
    if not isinstance(t, str) or t not in _TYPES:
        return None
    if t == "string" and prop.get("contentEncoding") == "binary":
        return None
    return col, _TYPES[t]


@dataclass
class RowSchema:
    name: str
    columns: list[str]
    scalars: list[str]
    cls: Any
    data: bytes
    """FileDescriptorSet (schema data)."""

    def rows(self, payload: dict[str, Any], log_time: int) -> list[tuple[int, Any]]:
        n = max((len(payload[c]) for c in self.columns if isinstance(payload.get(c), list)),
                default=0)
        host_col = next((c for c in HOST_COLUMNS if c in self.columns), None)
        out = []
        for i in range(n):
            m = self.cls()
            nulls = []
            for c in self.columns:
                v = payload.get(c)
                v = v[i] if isinstance(v, list) and i < len(v) else None
                if v is None:
                    nulls.append(c)
                else:
                    setattr(m, c, v)
            for c in self.scalars:
                v = payload.get(c)
                if v is None or isinstance(v, list | dict):
                    continue
                setattr(m, c, v)
            m.nulls = ",".join(nulls)
            v = payload.get(host_col) if host_col else None
            host = v[i] if isinstance(v, list) and i < len(v) and v[i] is not None else log_time
            out.append((int(host), m))
        return out


def _field_name(name: str) -> str:
    return re.sub(r"\W", "_", name)


def row_schema(ch: ChannelDef) -> RowSchema | None:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

    c = columns(ch)
    if c is None:
        return None
    T = descriptor_pb2.FieldDescriptorProto
    title = c.title
    fd = descriptor_pb2.FileDescriptorProto(name=f"wearcap/export_{title}.proto",
                                            package=PACKAGE, syntax="proto3",
                                            dependency=["google/protobuf/timestamp.proto"])
    msg = fd.message_type.add(name=title)
    msg.field.add(name="timestamp", number=1, type=T.TYPE_MESSAGE,
                  label=T.LABEL_OPTIONAL, type_name=".google.protobuf.Timestamp")
    for i, (k, t) in enumerate(c.fields, start=2):
        msg.field.add(name=k, number=i, type=t, label=T.LABEL_OPTIONAL, json_name=k)
    msg.field.add(name="nulls", number=len(c.fields) + 2, type=T.TYPE_STRING,
                  label=T.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    ts = descriptor_pb2.FileDescriptorProto()
    timestamp_pb2.DESCRIPTOR.CopyToProto(ts)
    pool.Add(ts)
    pool.Add(fd)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{title}"))
    fds = descriptor_pb2.FileDescriptorSet(file=[ts, fd])
    return RowSchema(f"{PACKAGE}.{title}", c.columns, c.scalars, cls, fds.SerializeToString())
