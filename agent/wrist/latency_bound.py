"""The open profile's time exchange, turned into a bound on the band's radio latency.

A one-way fit (``agent.clock.oneway``) finds the line ``raw(d) = f(d) + L``: the true
device-to-host mapping ``f`` plus the smallest latency ``L`` from the band's radio to the
agent, which it cannot see. Until now ``L`` was assumed. The time exchange observes it:
the host writes its send time ``t0``; the band reads its clock ``d`` when the write reaches
it and replies. The band read its clock after the host sent, so ``f(d) >= t0``, hence

    L <= raw(d) - t0            for every exchange, and  L >= floor_ns (physics: >= 0)

The tightest exchange (a write that reached the band at once) gives the upper bound; the
fit's latency becomes the middle of ``[floor, upper]`` and its latency uncertainty half the
width: a bound that holds whatever the two directions' latencies are. (A midpoint of the
round trip, TICSync-style, would be biased by half the asymmetry, and over BLE the two
directions differ by up to a connection interval: the write waits for the next event, the
reply for the one after.) ``raw`` moves as the one-way fit refits, so the bound is
recomputed over the last ``keep`` exchanges each time one comes in.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from agent.clock.oneway import OneWayFit


class LatencyBound:
    def __init__(self, *, floor_ns: int = 0, keep: int = 128) -> None:
        self.floor_ns = int(floor_ns)
        self._ex: deque[tuple[int, int]] = deque(maxlen=keep)  # (host send ns, device ns)
        self.exchanges = 0
        self.upper_ns: int | None = None

    def add(self, fit: OneWayFit, host_send_ns: int, device_ns: int) -> None:
        """One exchange; when the fit has a line, set its latency from the bound."""
        self._ex.append((int(host_send_ns), int(device_ns)))
        self.exchanges += 1
        self.apply(fit)

    def apply(self, fit: OneWayFit) -> None:
        if not fit.ready or not self._ex:
            return
        lat = fit.latency_ns
        upper = min(fit.map(d) + lat - t0 for t0, d in self._ex)
        upper = max(upper, self.floor_ns)
        self.upper_ns = upper
        fit.latency_ns = (self.floor_ns + upper) // 2
        fit.latency_uncertainty_ns = (upper - self.floor_ns + 1) // 2
        fit.latency_kind = "bounded"

    def snapshot(self) -> dict[str, Any]:
        return {"method": "time exchange: latency <= raw(d) - t0", "exchanges": self.exchanges,
                "latency_floor_ns": self.floor_ns, "latency_upper_ns": self.upper_ns}
