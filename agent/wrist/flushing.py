"""When a band stream writes what it has: flush, cut, roll and stop as one transition table.

    streaming ─flush─> flush-asked ─drain─> flushed ─roll─> streaming  (the roll it was for)
        │                                      └─drain─> streaming  (the next roll cuts again)
        └─roll─> roll-asked ─drain─> streaming
    every phase ─stop─> stopping ─drain─> stopped

The writer's calls are the events: ``flush`` (just before it seals a segment), ``open`` (the
first segment opens), ``roll`` (a later one opens), ``drain`` (it takes the messages) and
``stop``. Each transition names the actions it takes, in this order, at the event itself or
at the drain that follows:

- ``mark``: remember this instant as where an open gap is cut;
- ``held``: take what the decoder still holds, and give a break still waiting for its count
  its fallback (only at stop: anywhere else that would cost the decoder its loss detection);
- ``tail``: judge the end of the stream against the stop and the recording's end (once);
- ``cut``: write the part of an open gap up to the mark (the rest stays open), and a break
  still waiting for its count with its fallback;
- ``emit``: write the pending batch, however short.

The table is total: every (phase, event) pair has a row, so no order of the writer's calls
can raise while recording (``tests/test_wrist_stream.py`` checks it).
"""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    STREAMING = "streaming"
    """Nothing asked: batches are written when they are full."""
    FLUSH_ASKED = "flush-asked"
    FLUSHED = "flushed"
    """The last drain served a flush: the roll that follows it cuts nothing again."""
    ROLL_ASKED = "roll-asked"
    STOPPING = "stopping"
    STOPPED = "stopped"
    """The stop's drain is done; later drains still write whatever comes."""


EVENTS = ("flush", "open", "roll", "drain", "stop")
ACTIONS = ("mark", "held", "tail", "cut", "emit")

P = Phase
_AFTER_STOP = frozenset({"held", "cut", "emit"})
TRANSITIONS: dict[tuple[Phase, str], tuple[Phase, frozenset[str]]] = {
    (P.STREAMING, "flush"): (P.FLUSH_ASKED, frozenset({"mark"})),
    (P.STREAMING, "open"): (P.STREAMING, frozenset()),
    (P.STREAMING, "roll"): (P.ROLL_ASKED, frozenset({"mark"})),
    (P.STREAMING, "drain"): (P.STREAMING, frozenset()),
    (P.FLUSH_ASKED, "flush"): (P.FLUSH_ASKED, frozenset({"mark"})),
    (P.FLUSH_ASKED, "open"): (P.FLUSH_ASKED, frozenset()),
    (P.FLUSH_ASKED, "roll"): (P.FLUSH_ASKED, frozenset()),  # the flush was for this roll
    (P.FLUSH_ASKED, "drain"): (P.FLUSHED, frozenset({"cut", "emit"})),
    (P.FLUSHED, "flush"): (P.FLUSH_ASKED, frozenset({"mark"})),
    (P.FLUSHED, "open"): (P.STREAMING, frozenset()),
    (P.FLUSHED, "roll"): (P.STREAMING, frozenset()),
    (P.FLUSHED, "drain"): (P.STREAMING, frozenset()),
    (P.ROLL_ASKED, "flush"): (P.FLUSH_ASKED, frozenset({"mark"})),
    (P.ROLL_ASKED, "open"): (P.ROLL_ASKED, frozenset()),
    (P.ROLL_ASKED, "roll"): (P.ROLL_ASKED, frozenset({"mark"})),
    (P.ROLL_ASKED, "drain"): (P.STREAMING, frozenset({"cut", "emit"})),
    (P.STOPPING, "flush"): (P.STOPPING, frozenset({"mark"})),
    (P.STOPPING, "open"): (P.STOPPING, frozenset()),
    (P.STOPPING, "roll"): (P.STOPPING, frozenset({"mark"})),
    (P.STOPPING, "drain"): (P.STOPPED, frozenset({"held", "tail", "cut", "emit"})),
    (P.STOPPING, "stop"): (P.STOPPING, frozenset()),
    (P.STOPPED, "flush"): (P.STOPPED, frozenset({"mark"})),
    (P.STOPPED, "open"): (P.STOPPED, frozenset()),
    (P.STOPPED, "roll"): (P.STOPPED, frozenset({"mark"})),
    (P.STOPPED, "drain"): (P.STOPPED, _AFTER_STOP),
    (P.STOPPED, "stop"): (P.STOPPED, frozenset()),
}
for _p in (P.STREAMING, P.FLUSH_ASKED, P.FLUSHED, P.ROLL_ASKED):
    TRANSITIONS[(_p, "stop")] = (P.STOPPING, frozenset())


class Flushing:
    """The phase of one band stream, and the cut instant it remembers."""

    def __init__(self) -> None:
        self.phase = Phase.STREAMING
        self.mark_ns: int | None = None

    def fire(self, event: str, now_ns: int) -> frozenset[str]:
        """Move on ``event``; the actions the caller takes now (``mark`` is taken here)."""
        self.phase, actions = TRANSITIONS[(self.phase, event)]
        if "mark" in actions:
            self.mark_ns = now_ns
        return actions

    def take_mark(self) -> int | None:
        mark, self.mark_ns = self.mark_ns, None
        return mark
