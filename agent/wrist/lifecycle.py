"""The wrist band connection lifecycle: one transition table, read at a glance.

    idle ─start─> scanning ─found─> connecting ─connected─> subscribing ─subscribed─> streaming
                     │                  │                       │                      │
                 not_found            failed                 failed/lost              lost
                     v                  v                       v                      v
                  backoff <─retry── disconnected <──────────────┴──────────────────────┘
                       │
                       ├──rescan──> scanning       (address unknown to BlueZ or cache cleared)
                       └──reconnect──> connecting  (BlueZ still knows the device)

``stop`` leads from every state to ``stopped``. Anything else raises ``IllegalTransition``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from agent.timeline import Clock, monotonic_ns


class State(StrEnum):
    IDLE = "idle"
    SCANNING = "scanning"
    CONNECTING = "connecting"
    SUBSCRIBING = "subscribing"
    STREAMING = "streaming"
    DISCONNECTED = "disconnected"
    BACKOFF = "backoff"
    STOPPED = "stopped"


S = State
TRANSITIONS: dict[tuple[State, str], State] = {
    (S.IDLE, "start"): S.SCANNING,
    (S.SCANNING, "found"): S.CONNECTING,
    (S.SCANNING, "not_found"): S.BACKOFF,
    (S.CONNECTING, "connected"): S.SUBSCRIBING,
    (S.CONNECTING, "failed"): S.DISCONNECTED,
    (S.SUBSCRIBING, "subscribed"): S.STREAMING,
    (S.SUBSCRIBING, "failed"): S.DISCONNECTED,
    (S.SUBSCRIBING, "lost"): S.DISCONNECTED,
    (S.STREAMING, "lost"): S.DISCONNECTED,
    (S.DISCONNECTED, "retry"): S.BACKOFF,
    (S.BACKOFF, "rescan"): S.SCANNING,
    (S.BACKOFF, "reconnect"): S.CONNECTING,
}
for _s in State:
    if _s is not S.STOPPED:
        TRANSITIONS[(_s, "stop")] = S.STOPPED

EVENTS = frozenset(e for _s, e in TRANSITIONS)


class IllegalTransition(RuntimeError):
    def __init__(self, state: State, event: str) -> None:
        allowed = sorted(e for (s, e) in TRANSITIONS if s is state)
        super().__init__(f"no transition from {state.value!r} on {event!r} "
                         f"(allowed: {', '.join(allowed) or 'none'})")
        self.state = state
        self.event = event


@dataclass(frozen=True, slots=True)
class Transition:
    t_ns: int
    before: State
    event: str
    after: State
    detail: str = ""


class Lifecycle:
    """The current state of one band's connection, with a short history."""

    def __init__(self, clock: Clock = monotonic_ns, history: int = 64) -> None:
        self.clock = clock
        self.state = State.IDLE
        self.since_ns = clock()
        self.history: deque[Transition] = deque(maxlen=history)
        self.counts: dict[str, int] = {}

    def fire(self, event: str, detail: str = "") -> State:
        after = TRANSITIONS.get((self.state, event))
        if after is None:
            raise IllegalTransition(self.state, event)
        now = self.clock()
        self.history.append(Transition(now, self.state, event, after, detail))
        self.counts[event] = self.counts.get(event, 0) + 1
        self.state = after
        self.since_ns = now
        return after

    def can(self, event: str) -> bool:
        return (self.state, event) in TRANSITIONS

    @property
    def reconnects(self) -> int:
        """Connections made after the first."""
        return max(0, self.counts.get("subscribed", 0) - 1)
