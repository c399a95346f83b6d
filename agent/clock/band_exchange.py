"""Two-way time replies (agent/clock/band.py, kind "two-way"): each exchange bounds the truth
at the connection event the request went on air in (``TwoWayFit``), and the recent ones
observe the sum of the notification and write latencies (plus the least wait), from which
``BandNow`` takes the latency part of the bound instead of the configured one.
"""

from __future__ import annotations

import heapq
import math
from collections import deque

from agent.clock.band_bound import BandBound
from agent.clock.band_line import serial
from agent.clock.twoway import TwoWayFit

TWO_WAY_ASYMMETRY = 0.5
"""Two-way exchange: the write and the notification cross the same stack (D-Bus, BlueZ, the
kernel, HCI, the controller) in opposite directions; their constant latencies are taken to
differ by at most this share of their sum (one may be three times the other). Two-way time
transfer cannot observe the difference: this assumption is what the latency part holds."""
RTT_WINDOW = 1024
"""Two-way exchanges kept to measure the latency from (about 50 s at 20 a second)."""
BLE_STEP_NS = 1_250_000
"""BLE connection intervals are whole multiples of this."""
WAIT_WITNESSES = 4
"""Exchanges behind the least one on the event-grid circle that bound its lateness."""


class BandExchanges(BandBound):
    """Two-way exchanges and the latency they measure."""

    def __init__(self) -> None:
        super().__init__()
        self.exchanges = 0
        self._xch: deque[tuple[int, int]] = deque(maxlen=RTT_WINDOW)  # device rx, send
        self._lat_cache: tuple[tuple[int, int, int], tuple[float, float] | None] = (
            (-1, -1, -1), None)
        self._iv_seen: deque[tuple[int, int, int]] = deque()
        """The observations ``_interval_ns`` has counted (``_recent``'s, by identity)..."""
        self._iv_steps: deque[int] = deque()
        """... and the steps between neighbours (in BLE steps; 0 where not forward)."""

    @serial
    def observe_exchange(self, host_send_ns: int, device_rx_ns: int, host_recv_ns: int,
                         device_tx_ns: int) -> None:
        """A two-way reply: the request written at ``host_send_ns`` went on air in the
        connection event the band stamped ``device_rx_ns``; the reply, packed for the event
        stamped ``device_tx_ns``, arrived at ``host_recv_ns``. The truth at ``device_rx_ns``
        lies between the send and the arrival less the band time between the two events
        (at the slowest physical rate), whatever the latencies of either direction."""
        if self.kind != "two-way":
            raise ValueError("exchanges are for kind 'two-way'")
        if self._twoway is None:
            self._twoway = TwoWayFit(max_drift_ppm=self.max_slope_dev * 1e6)
        between = max(0, device_tx_ns - device_rx_ns) * (1.0 - self.max_slope_dev)
        recv = host_recv_ns - round(between)
        self._ver += 1
        if self._twoway.add(host_send_ns, device_rx_ns, recv):
            self.exchanges += 1
            self._xch.append((device_rx_ns, host_send_ns))
        self._ver += 1

    def _measured_latency(self) -> tuple[float, float] | None:
        """(S, wait): the least of ``envelope(device_rx) - host_send`` over the recent
        exchanges, and how much of it may still be wait. The envelope at the event a
        request went on air in is that event plus the notification latency ``Ln`` (what an
        unhindered notification from it would show), and the request left ``Lw`` + its wait
        before the event, so S = Ln + Lw + the least wait: the exchange observes the sum of
        the two latencies whatever the reply's own delay was (a retransmitted reply, its
        jitter). Recomputed when the fit moves, or every 32 exchanges."""
        f = self.fit
        if not f.ready or not self._xch:
            return None
        key = (f.refits, self._epoch, self.exchanges // 32)
        if self._lat_cache[0] == key:
            return self._lat_cache[1]
        slope, ax, ay = self._line()  # the envelope at each rx (kind "two-way": x is rx)
        sums = [s for rx, send in self._xch if (s := ay + slope * (rx - ax) - send) > 0]
        out: tuple[float, float] | None = None
        if sums:
            out = (min(sums), self._least_wait(sums))
        self._lat_cache = (key, out)
        return out

    def _interval_ns(self) -> float | None:
        """The connection interval, from the anchors the band stamps (each an event: their
        differences are whole intervals, on BLE's 1.25 ms grid): their greatest common
        divisor. None until two anchors differ."""
        rec, seen, steps = self._recent, self._iv_seen, self._iv_steps
        # the window only drops its oldest observations and takes new ones (or starts
        # again): the steps between neighbours already counted are kept (by identity)
        while seen and (not rec or seen[0] is not rec[0]):
            seen.popleft()
            if steps:
                steps.popleft()
        if seen and (len(seen) > len(rec) or rec[len(seen) - 1] is not seen[-1]):
            seen.clear()
            steps.clear()
        for i in range(len(seen), len(rec)):
            o = rec[i]
            if seen:
                s = round((o[0] - seen[-1][0]) / BLE_STEP_NS)
                steps.append(s if s > 0 else 0)  # 0 leaves a gcd as it is
            seen.append(o)
        g = math.gcd(*steps)
        return g * BLE_STEP_NS if g else None

    def _least_wait(self, sums: list[float]) -> float:
        """How much of the least sum S (= Ln + Lw + the least lateness y) may be lateness (a
        request's wait for its event, its write jitter). Each request's S, modulo the
        interval, is (Ln + Lw + y) mod I: requests sent at other phases of the event grid
        land elsewhere on that circle. If y of the least exchange exceeded the arc back to
        its ``WAIT_WITNESSES``-th predecessor on the circle, every one of those predecessors
        would be late by a whole interval or more (a lateness under it would make its S the
        least); so that arc bounds y unless all of them missed an event. Requests that all
        come at a few phases (a fixed cadence on the 1.25 ms grid) leave wide arcs: their
        waits are then counted in full. The whole S while there are too few. ``sums``: in
        any order."""
        low = min(sums)
        iv = self._interval_ns()
        if iv is None or len(sums) <= WAIT_WITNESSES:
            return low
        m = low % iv
        rest = list(sums)
        rest.remove(low)  # the least once: the others are its predecessors on the circle
        back = heapq.nsmallest(WAIT_WITNESSES, [(m - s % iv) % iv for s in rest])
        return min(low, back[WAIT_WITNESSES - 1])
