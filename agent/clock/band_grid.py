"""The connection events a band's notifications arrive on (agent/clock/band.py, kind "device").

A notification leaves the band at a BLE connection event, and events come on the host's
controller at a fixed interval (a multiple of 1.25 ms). Each arrival is its event plus the
transport latency plus the host's jitter (and a slot per packet before it in the event), so
the arrivals of many events, each with its own jitter, lie on a grid whose lower edge is the
events plus the latency. That grid is found from the arrivals alone, and an earlier arrival,
re-timed onto it, is the arrival its notification would have had with no jitter: what the
band's one-way fit then sees is the band's own wait for the event, not the host's noise on
top (agent/clock/band_observe.py lowers the fit's observation to it).

Never later than the truth allows:

- **A grid of true events.** The interval is the largest one on which nine in ten recent
  arrivals fall within ``GRID_WIDTH_NS`` of one phase (a coarser grid than the link's, as on a
  link phase-locked to the band, is a subset of its events, which is as good).
- **Each arrival at its own event.** An arrival is taken for the event whose grid point is at
  most ``GRID_WIDTH_NS`` before it (or ``GRID_MARGIN_NS`` after it); any other one (a
  retransmission, a notification of an event off a coarse grid, a stall) is not re-timed, and
  many in a row start the grid again. Its event then left after the packet was ready, so the
  event plus the latency is not before the sample plus the latency (the fit's floor).
- **Re-timed inside the grid's span only.** The grid's value at an event is the lower convex
  hull of the taken arrivals (lowest per event) there, and only between two taken arrivals: a
  hull of points that are all above a line is above it between them (the events are periodic
  on the host, so their line is one). An arrival stalled by nearly an interval may be taken
  for the next event and lie up to ``GRID_MARGIN_NS`` under its grid point: the bound counts
  that (``BandClock`` adds it to how far the envelope may be below its floor).

Until the grid is found (a second or so of arrivals), after a break (``reset``) and while
arrivals fit no grid (jitter wider than ``GRID_WIDTH_NS``), nothing is re-timed.
"""

from __future__ import annotations

import itertools
import math
from collections import deque

from agent.clock.window_hull import WindowHull

BLE_STEP_NS = 1_250_000
"""BLE connection intervals are whole multiples of this."""
MIN_INTERVAL_NS = 7_500_000
"""The shortest BLE connection interval."""
GRID_WIDTH_NS = 3_000_000
"""An arrival more than this after its event's grid point is not taken for it (jitter, a slot
per packet before it): under half the shortest interval, so it is never another event's."""
GRID_MARGIN_NS = 200_000
"""An arrival up to this before the grid's line is still taken for its event (the line is
drawn through arrivals that are late by a little themselves)."""
GRID_SHARE = 0.9
"""The share of recent arrivals that must fall on a grid for it to be taken."""
SEARCH_ARRIVALS = 16
"""Arrivals a grid is searched from."""
SEARCH_EVERY = 8
"""Arrivals between two searches while none finds a grid (a search costs ~100 candidates)."""
GRID_POINTS = 128
"""Events (with an arrival) the grid's hull is drawn over."""
GRID_SPAN_NS = 30_000_000_000
"""... and at most this long (events are periodic on the host; its clock may be slewed)."""
BURST_NS = 3_000_000
"""Arrivals closer than this are one event's (not used to find the interval)."""
EDGE_EVENTS = 512
"""Events the hull edge that measures the interval on the host clock must span (``_refit``)."""
MAX_GRID_PPM = 500.0
"""How far the controller's clock (the events) may run from the host's."""
REJECTS = 8
"""Arrivals in a row that fit no event of the grid: it is searched again."""


class EventGrid:
    """The grid of connection events (plus latency) the arrivals sit on."""

    def __init__(self) -> None:
        self._arr: deque[int] = deque()
        self.interval_ns: float | None = None
        """The grid's interval on the host clock (None until found)."""
        self._nominal = 0.0
        self._pts = WindowHull()  # (event number, lowest arrival), and their lower hull
        self._ref = (0, 0.0)  # an event number and its grid time: where new arrivals index from
        self._rejects = 0
        self._since = SEARCH_EVERY  # arrivals since the last search that found no grid
        self.resets = 0
        self.found = 0
        """Grids found (the first, and again after each reset)."""
        self.seeded: dict[int, int] = {}
        """The arrivals the last grid was found from, and their events."""

    def reset(self) -> None:
        """A break (a new connection has a new event phase, perhaps a new interval)."""
        self._arr.clear()
        self._pts.clear()
        self.interval_ns = None
        self._rejects = 0
        self._since = SEARCH_EVERY
        self.resets += 1

    def add(self, arrival_ns: int) -> int | None:
        """One arrival (in order); its event's number on the grid, or None when it is not
        taken for one (no grid yet, or it fits none)."""
        if self.interval_ns is None:
            arr = self._arr
            arr.append(arrival_ns)
            while arr and (len(arr) > SEARCH_ARRIVALS or arr[0] < arrival_ns - GRID_SPAN_NS):
                arr.popleft()
            self._since += 1
            if len(arr) < SEARCH_ARRIVALS or self._since < SEARCH_EVERY:
                return None
            self._since = 0
            if not self._search():
                return None
            return self._pts[-1][0] if self._pts and self._pts[-1][1] == arrival_ns else None
        k = self._take(arrival_ns)
        if k is None:
            self._rejects += 1
            if self._rejects >= REJECTS:
                self.reset()
                self._arr.append(arrival_ns)
        return k

    def value(self, k: int) -> float | None:
        """The grid at event ``k`` (its lower hull), if ``k`` lies between two taken arrivals
        (strictly before the newest): None otherwise."""
        h = self._pts.hull
        if len(h) < 2 or not (h[0][0] <= k < self._pts[-1][0]):
            return None
        for (x1, y1), (x2, y2) in itertools.pairwise(h):
            if x1 <= k <= x2:
                return y1 + (y2 - y1) * (k - x1) / (x2 - x1)
        return None

    def event(self, i: int) -> int | None:
        """The event number of the ``i``-th taken arrival in the window (negative: from the
        newest), or None."""
        pts = self._pts
        if not -len(pts) <= i < len(pts):
            return None
        return pts[i][0]

    @property
    def active(self) -> bool:
        return self.interval_ns is not None

    def _take(self, a: int, refit: bool = True) -> int | None:
        iv = self.interval_ns
        assert iv is not None
        k0, g0 = self._ref
        k = k0 + math.floor((a - g0 + GRID_MARGIN_NS) / iv)
        rho = a - (g0 + (k - k0) * iv)
        pts = self._pts
        if not -GRID_MARGIN_NS <= rho <= GRID_WIDTH_NS or (pts and k < pts[-1][0]):
            return None  # not this grid's (arrivals come in order: an earlier event is too)
        self._rejects = 0
        if pts and pts[-1][0] == k:
            if a < pts[-1][1]:
                pts.lower_last(a)
        else:
            pts.push((k, a))
        while len(pts) > GRID_POINTS or pts[0][1] < a - GRID_SPAN_NS:
            pts.popleft()
        if refit:
            self._refit()
        return k

    def _refit(self) -> None:
        """The hull (the grid's values) and the line new arrivals are numbered by: the hull's
        lowest of the newest arrivals under it (new arrivals are numbered from near it). Its
        interval is the search's (whole BLE steps) while that edge spans
        fewer than ``EDGE_EVENTS`` or runs at a rate no two crystals differ by; then it
        measures how the host's and the controller's clocks differ (tens of ppm)."""
        pts = self._pts
        h = pts.hull
        iv = self._nominal
        if len(h) >= 2:
            km = pts.sum_x / len(pts)
            i = 0
            while i < len(h) - 2 and h[i + 1][0] < km:
                i += 1
            (k1, y1), (k2, y2) = h[i], h[i + 1]
            s = (y2 - y1) / (k2 - k1)
            if k2 - k1 >= EDGE_EVENTS and abs(s / iv - 1.0) <= MAX_GRID_PPM * 1e-6:
                iv = s
        self.interval_ns = iv
        # the first of the lowest (newest first: a tie goes to the older)
        best = None
        low = 0.0
        for p in pts.newest(max(8, len(pts) // 3)):
            v = p[1] - iv * p[0]
            if best is None or v <= low:
                best, low = p, v
        assert best is not None
        self._ref = (best[0], float(best[1]))

    def _search(self) -> bool:
        """The largest interval (on BLE's 1.25 ms steps) on which ``GRID_SHARE`` of the
        recent arrivals fall within ``GRID_WIDTH_NS`` of one phase; its arrivals seed the
        grid. The interval divides every difference of arrivals of two events, give or take
        their jitter: candidates come from the least such difference."""
        arr = list(self._arr)
        diffs = [b - a for a, b in itertools.pairwise(arr) if b - a > BURST_NS]
        if not diffs:
            return False
        d = min(diffs)
        need = math.ceil(GRID_SHARE * len(arr))
        best: tuple[float, float] | None = None
        for m in range(1, int(d // MIN_INTERVAL_NS) + 2):
            base = d / m / BLE_STEP_NS
            r = math.ceil(BURST_NS / (m * BLE_STEP_NS))
            for s in range(max(6, round(base) - r), round(base) + r + 1):
                cand = float(s * BLE_STEP_NS)
                if best is not None and cand <= best[0]:
                    continue
                phase = _cluster(arr, cand, need)
                if phase is not None:
                    best = (cand, phase)
        if best is None:
            return False
        iv, phase = best
        self.interval_ns = self._nominal = iv
        self._ref = (0, arr[0] + phase)
        self._pts.clear()
        self.seeded = {}
        # every seed is numbered from the phase found (the cluster's lowest arrival), and only
        # then is the line drawn: drawn after each, it would move to the first seed (which
        # may sit up to the cluster's width above that lowest) and the rest, earlier than
        # that line by more than the margin, would not be taken
        for a in arr:
            k = self._take(a, refit=False)
            if k is not None:
                self.seeded[a] = k
        if self._pts:
            self._refit()
        self._arr.clear()
        self.found += 1
        return bool(self._pts)


def _cluster(arr: list[int], iv: float, need: int) -> float | None:
    """The phase (from ``arr[0]``) at which at least ``need`` arrivals fall within
    ``GRID_WIDTH_NS`` after it, modulo ``iv``; None if there is none."""
    w = min(GRID_WIDTH_NS, iv / 4)
    ph = sorted((a - arr[0]) % iv for a in arr)
    n = len(ph)
    ext = ph + [p + iv for p in ph]
    j = 0
    for i in range(n):
        j = max(j, i)
        while j + 1 < i + n and ext[j + 1] - ext[i] <= w:
            j += 1
        if j - i + 1 >= need:
            return ph[i]
    return None


__all__ = ["GRID_MARGIN_NS", "GRID_WIDTH_NS", "EventGrid"]
