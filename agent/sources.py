"""The small interface between sensor sources and the segment writer.

A source (wrist band, MCU, ...) runs on its own thread or event loop and pushes raw input
into a ring. The writer thread calls ``drain()`` regularly; a source decodes there, off the
hot path of its callbacks, and returns typed messages to write. ``channels()`` declares the
streams the source writes (registered again in every new segment); ``segment_metadata()``
is written into every segment at roll (e.g. the current clock mapping).

Messages are columnar batches: each payload is a dict of equal-length lists or scalars, encoded
with msgpack on a channel whose JSON schema is declared in the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

GAP_TOPIC = "/wearcap/gaps"
"""Every loss is written here: {stream, start_ns, end_ns, lost, cause}. Never hidden."""

GAP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "wearcap.Gap",
    "description": "Data that should exist and does not. Times on the host timeline (ns).",
    "properties": {
        "stream": {"type": "string", "description": "topic or device that lost data"},
        "start_ns": {"type": "integer"},
        "end_ns": {"type": "integer"},
        "lost": {"type": "integer", "description": "records known lost (-1: unknown)"},
        "cause": {"type": "string", "description": "e.g. ring-overflow, disconnect:<reason>"},
    },
    "required": ["stream", "start_ns", "end_ns", "lost", "cause"],
}


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    topic: str
    schema_name: str
    schema: dict[str, Any]
    """JSON schema of one message (msgpack-encoded)."""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    log_time_ns: int
    """Host timeline (CLOCK_MONOTONIC ns) of the batch; the first sample's mapped time."""
    payload: dict[str, Any]


class Source(Protocol):
    name: str

    def channels(self) -> list[ChannelSpec]: ...

    def start(self) -> None: ...

    def drain(self) -> list[Message]:
        """Non-blocking: everything decoded since the last call."""
        ...

    def flush(self) -> None:
        """Close what is pending (a partial batch, the part of an open gap) so that the next
        ``drain()`` returns it; called just before a segment is sealed at a roll."""
        ...

    def segment_metadata(self) -> dict[str, str]: ...

    def status(self) -> dict[str, Any]: ...

    def stop(self) -> None: ...
