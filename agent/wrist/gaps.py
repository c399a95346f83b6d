"""What a wrist band's gaps are: the records a ``WristSource`` keeps while its stream is broken,
the cause names of losses, and the rule that gives a break its count.

Every loss is a message on ``agent.sources.GAP_TOPIC``:

- never connected yet: cause ``not-connected:<last error>`` (``connecting`` when no attempt
  has failed yet), from ``start()`` to the first packet, ``lost`` -1;
- a lost link: cause ``disconnect:<cause>``, from the last packet before the loss to the first
  packet after the reconnection;
- a ring overflow (tickets missing): cause ``ring-overflow:<n> packets``, from the last packet
  before to the first after;
- samples a decoder says are missing (``ImuChunk.lost_before``) anywhere else: cause
  ``lost:sequence`` (the band's sequence numbers), ``lost:timestamp`` (its sample times,
  Movesense) or ``lost:arrival-envelope`` (arrival times, WitMotion), from the host time of
  the last sample before to that of the first after, ``lost`` the count.

``lost`` is exact wherever the band has a counter or a device clock. Where it has neither
(WitMotion), what a silence hid is only an estimate from the rate fit: such a gap has ``lost``
-1 and the estimate in its cause (``estimated_loss``, ``estimate_cause``); the batches'
``lost_before`` still carries it, as the jump in the sample numbering.

The count of a break (disconnect, overflow) is the ``lost_before`` of the first chunk after it,
which a decoder that holds chunks back releases later (WitMotion: ~2 s). So a break's gap is
written once that chunk is decoded, and its ``lost_before`` is the break's count, never a gap
of its own (``settle``). A chunk with a sequence number counts even when it says 0. Without
one, 0 means "not found": the break waits up to ``SETTLE_NS`` of arrivals for a chunk with a
count, then is written with its fallback: ``lost`` -1 (a disconnect: unknown) or the ring's
estimate (packets dropped x samples per packet). If a roll or ``flush()`` comes first, the
break is written then with its fallback, and a count found later is written as a ``lost:...``
gap over the same span holding only what the fallback did not: no sample is counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.sources import GAP_TOPIC, Message

SETTLE_NS = 1_000_000_000
"""How long (in arrival time after a break) a break waits for a chunk that counts its loss
when the profile has no sequence numbers (the WitMotion count lands within a few connection
events of the break, released ~2 s later)."""


@dataclass(slots=True)
class OpenGap:
    """The band is not streaming (not connected yet, or its link was lost)."""

    start_ns: int
    lost_ns: int
    cause: str
    """``disconnect:<cause>``, or ``not-connected`` (the last error is added when written)"""
    connected: bool = False
    since_ns: int = 0
    """Start of the whole outage (``start_ns`` moves to each segment roll)."""


@dataclass(slots=True)
class Break:
    """A break in the stream, over, whose gap waits for the count of the chunk after it."""

    start_ns: int
    end_ns: int
    """Arrival of the first packet after the break."""
    cause: str
    fallback: int
    """``lost`` if no chunk counts it: -1 (unknown) or the ring's estimate."""
    written: int | None = None
    """``lost`` already written (a roll or ``flush()`` came before the count)."""


def settle(b: Break, c: Any) -> tuple[bool, int] | None:
    """``(counted, lost)`` for break ``b`` given the next chunk ``c`` (None: the stream broke
    again or stopped, no count will come), or None to keep waiting. ``counted``: ``c``'s
    ``lost_before`` is the break's count (not a loss of its own)."""
    if c is None:
        return False, b.fallback
    if c.lost_before > 0 or c.seq is not None:
        return True, int(c.lost_before)
    if c.arrival_ns - b.end_ns <= SETTLE_NS:
        return None
    return False, b.fallback


def loss_cause(c: Any) -> str:
    """How a decoder found the samples missing before chunk ``c``."""
    if c.seq is not None:
        return "lost:sequence"
    return "lost:timestamp" if c.device_t0_ns is not None else "lost:arrival-envelope"


def estimated_loss(decoder: Any, c: Any) -> bool:
    """Whether the ``lost_before`` of chunk ``c`` is an estimate, not a count: a band with no
    counter and no clock, after a silence (``agent.clock.rate.ArrivalNumberer.estimated``)."""
    if c is None or c.lost_before <= 0 or c.seq is not None or c.device_t0_ns is not None:
        return False
    numberer = getattr(decoder, "numberer", None)
    return numberer is not None and c.index in getattr(numberer, "estimated", {})


def estimate_cause(cause: str, estimate: int) -> str:
    """A gap's cause when its count is an estimate (the gap's ``lost`` is -1)."""
    return (f"{cause} (about {estimate} samples taken meanwhile, estimated from the rate fit: "
            "the band has no counter or clock to count them)")


def gap_message(stream: str, start: int, end: int, lost: int, cause: str) -> Message:
    return Message(GAP_TOPIC, start, {"stream": stream, "start_ns": start, "end_ns": end,
                                      "lost": lost, "cause": cause})
