"""When a link sends the open profile's time requests: the cadence, aimed (sans-IO).

    plan = TimeRequests(aim=aimer.next)   # agent.wrist.timing.PingAimer (None: not aimed)
    t = plan.after(sent_ns)               # when to send the next request after one sent then

The cadence is twice a second for the first ten requests (the two-way fit starts within
5 s), then once a second; one request is in flight at a time. A write waits in the band's
controller for the next connection event, and that wait is on the exchange's low side, so an
exchange is tightest when its request reaches the band just before an event. Each due time is
therefore moved to the instant the aimer picks, a lead before the first connection event
after it (so within one connection interval of the due time). Until the aimer knows the
events (no anchored packets yet), or if it picks an instant outside that window, the request
goes at its due time plus a random spread (``spread_ns``): a cadence that is a multiple of
1.25 ms, as BLE's intervals are, would otherwise visit the same few phases of the interval
forever, and the two-way fit would see only the waits of those phases.
"""

from __future__ import annotations

import random
from collections.abc import Callable

Aim = Callable[[int, float], "int | None"]
"""``aim(not_before_ns, u)``: the send time to use (>= ``not_before_ns``), or None."""

FAST_REQUESTS = 10
FAST_NS = 500_000_000
SLOW_NS = 1_000_000_000
SPREAD_NS = 50_000_000
"""Unaimed requests: a uniform spread after the due time (covers intervals up to 50 ms)."""
AIM_WINDOW_NS = 4_000_000_000
"""An aimed time further than this past its due time is not trusted (BLE intervals <= 4 s)."""


class TimeRequests:
    def __init__(self, aim: Aim | None = None, rng: random.Random | None = None, *,
                 spread_ns: int = SPREAD_NS) -> None:
        self.aim = aim
        self.spread_ns = spread_ns
        self.rng = rng or random.Random()
        self.sent = 0
        self.aimed = 0
        """Requests whose send time the aimer picked (the rest went at their due time)."""

    def due(self, sent_ns: int) -> int:
        """The cadence alone: when the request after one sent at ``sent_ns`` is due."""
        return sent_ns + (FAST_NS if self.sent < FAST_REQUESTS else SLOW_NS)

    def after(self, sent_ns: int) -> int:
        """When to send the next request, one having been sent at ``sent_ns``."""
        self.sent += 1
        due = self.due(sent_ns)
        t = self.aim(due, self.rng.random()) if self.aim is not None else None
        if t is None or not due <= t <= due + AIM_WINDOW_NS:
            return due + round(self.rng.random() * self.spread_ns)
        self.aimed += 1
        return t
