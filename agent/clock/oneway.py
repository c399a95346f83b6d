"""One-way clock mapping for BLE bands: the lower envelope of arrival vs device time.

A notification carrying a sample taken at device time ``d`` arrives at host time
``a >= f(d) + L``, where ``f`` maps the device clock to the host timeline and ``L`` is the
minimum transport latency (radio, controller, kernel, D-Bus). The lower convex hull of the
(d, a) points therefore lies just above ``f + L``; its edge under the centre of the window is
the line that minimises the summed residuals (Zhang, Liu & Xia 2002). It gives the drift
exactly in the limit, and an offset that is early by ``L``.

``L`` is a constant the fit cannot observe. It is either *calibrated* (known: the simulator's
minimum latency, or measured against a two-way clock on the same link) or *bounded* (only a
range is known; ``latency_ns`` is then the bound's midpoint and ``latency_uncertainty_ns`` its
half-width). ``snapshot()["latency"]`` says which.

Cost: observations are reduced to the lowest point (smallest ``a - d``) per ``bin_ns`` of
device time; the hull is rebuilt over at most ``window_bins`` bins when a bin closes. Memory
is bounded and the work is O(1) amortised per observation. The sliding window (default
120 s) lets the fit follow slow drift wander (temperature).

Sawtooth mode (``jump_ns``): when a sample waits for the next connection event, the lowest
residual per bin is a *sawtooth*: the wait slides by the rate mismatch between the sample grid
and the event grid, and jumps by the lattice step when a sample crosses an event. A window
that holds one tooth only is also supported by the tooth's ramp, whose slope is the event
grid's, not the band's: the plain hull then picks a slope wrong by the whole mismatch. With
``jump_ns`` set, bins next to a jump of at least ``jump_ns`` are the tooth *bottoms* (wait
near zero); the slope is then the lower bridge between the bottoms of the window's outer
thirds (``_bridge``), the line is lowered onto the window's lowest bin, and the fit counts as
converged only with two bottoms at least ``converge_span_ns`` apart. agent.clock.rate.RateFit
(bands with no device clock) uses it.
"""

from __future__ import annotations

from collections import deque
from typing import Any

TAIL_RANK = 10
"""The bin residual whose rank ``tail_ns`` reports."""
DEFAULT_LATENCY_NS = 400_000
"""Minimum host-side latency of a notification (controller -> BlueZ -> D-Bus -> the agent):
the simulated rig's calibrated constant. A real rig calibrates its own (docs/wrist-profile.md)."""


def _cross(o: tuple[int, int], a: tuple[int, int], b: tuple[int, int]) -> int:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def lower_hull(points: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Lower convex hull of points sorted by x (Andrew's monotone chain), left to right."""
    hull: list[tuple[int, int]] = []
    for p in points:
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], p) <= 0:
            hull.pop()
        hull.append(p)
    return hull


class OneWayFit:
    def __init__(
        self,
        latency_ns: int = DEFAULT_LATENCY_NS,
        *,
        latency_kind: str = "calibrated",
        latency_uncertainty_ns: int = 100_000,
        bin_ns: int = 1_000_000_000,
        window_bins: int = 300,
        converge_span_ns: int = 20_000_000_000,
        restart_back_ns: int = 1_000_000_000,
        jump_ns: int | None = None,
        unconverged_bound_ns: int = 50_000_000,
        burst_gap_ns: int = 0,
        max_edge_dev: float | None = None,
    ) -> None:
        if latency_kind not in ("calibrated", "bounded"):
            raise ValueError("latency_kind is 'calibrated' or 'bounded'")
        self.latency_ns = int(latency_ns)
        self.latency_kind = latency_kind
        self.latency_uncertainty_ns = int(latency_uncertainty_ns)
        self.bin_ns = int(bin_ns)
        self.converge_span_ns = int(converge_span_ns)
        self.restart_back_ns = restart_back_ns
        self.jump_ns = jump_ns
        self.burst_gap_ns = burst_gap_ns
        self.max_edge_dev = max_edge_dev
        """|slope - 1| no clock can have: a hull edge past it is not taken for the slope."""
        self._burst_start = 0
        self._last_arrival: int | None = None
        self.unconverged_bound_ns = int(unconverged_bound_ns)
        self._bins: deque[tuple[int, int]] = deque(maxlen=window_bins)
        self.observations = 0
        self.restarts = 0
        self.back_joins = 0
        """Observations that joined a closed bin (device time back by less than a restart)."""
        self.refits = 0
        """Times the line was re-fitted (a bin closed): cached residuals are stale after."""
        self.key_slope: float | None = None
        """The slope a bin's lowest observation is chosen under, where one is known better
        than the young window's own (a band's rate carried over a break): 1, or a hull of a
        few bins, is 3 % off for a band 3 % off its nominal rate, and over a 1 s bin that
        picks an observation up to 15 ms above the lowest."""
        self._reset_state()

    def _reset_state(self) -> None:
        self._x0: int | None = None
        self._y0 = 0
        self._cur_bin = -1
        self._cur: tuple[int, int] | None = None
        self._bins.clear()
        self._hull: list[tuple[int, int]] = []
        self._ax = 0  # the line: y = ay + slope * (x - ax), relative to (x0, y0)
        self._ay = 0
        self.slope = 1.0
        self._tight_ns = 0
        self._tail_ns = 0
        self._edge_ns = 0
        self._span_ns = 0
        self._bottoms: list[tuple[int, int]] = []

    # -------------------------------------------------------------- observations
    def add(self, device_ns: int, host_arrival_ns: int) -> None:
        """One observation: a sample taken at ``device_ns`` had arrived by ``host_arrival_ns``.

        With ``burst_gap_ns``, arrivals closer than that to the previous one are one connection
        event's burst, and all are observed at the burst's first arrival (every packet of an
        event was queued before it began; agent/clock/rate.py explains the bias this removes)."""
        if self.burst_gap_ns:
            last = self._last_arrival
            self._last_arrival = host_arrival_ns
            if last is not None and 0 <= host_arrival_ns - last <= self.burst_gap_ns:
                host_arrival_ns = self._burst_start
            else:
                self._burst_start = host_arrival_ns
        if self._x0 is None:
            self._x0, self._y0 = device_ns, host_arrival_ns
        x = device_ns - self._x0
        y = host_arrival_ns - self._y0
        last_x = self._cur[0] if self._cur else (self._bins[-1][0] if self._bins else 0)
        if x < last_x - self.restart_back_ns:
            self.restarts += 1  # the device clock went back: a reboot; start again
            self._reset_state()
            self.add(device_ns, host_arrival_ns)
            return
        self.observations += 1
        b = x // self.bin_ns
        if b < self._cur_bin:
            self._join_closed(b, x, y)
            return
        if b != self._cur_bin:
            if self._cur is not None:
                self._bins.append(self._cur)
                self._refit()
            self._cur_bin, self._cur = b, (x, y)
        elif self._key(x, y) < self._key(*self._cur):  # type: ignore[misc]
            self._cur = (x, y)
        if not self._bins and self._cur is not None:  # no closed bin: the best point, slope 1
            self._ax, self._ay = self._cur

    def _join_closed(self, b: int, x: int, y: int) -> None:
        """An observation for a bin already closed: streams that share one device clock (a
        band's ACC and GYRO frames) interleave by up to a frame, and a device clock may step
        back by less than ``restart_back_ns``. It joins its own bin, so the bins stay in
        device order (the hull needs x increasing: two bins at one x have no slope between
        them), and the line is refitted if the bin's lowest point changed."""
        self.back_joins += 1
        bins = self._bins
        i = len(bins) - 1
        while i >= 0 and bins[i][0] // self.bin_ns > b:
            i -= 1
        if i >= 0 and bins[i][0] // self.bin_ns == b:
            if self._key(x, y) >= self._key(*bins[i]):
                return
            bins[i] = (x, y)
        else:
            if len(bins) == bins.maxlen:
                if i < 0:
                    return  # older than the whole window
                bins.popleft()
                i -= 1
            bins.insert(i + 1, (x, y))
        self._refit()

    def lower(self, points: list[tuple[int, int]]) -> int:
        """Earlier observations, re-timed lower (each ``(device_ns, host_ns)``: an arrival
        less a lateness learnt since, agent/clock/band_grid.py). A bin takes one if it lies
        lower under the line than what the bin holds; none counts as an observation, and all
        take one refit. Those outside the window, or in a bin that has no observation, are
        left out. Returns how many were taken."""
        if self._x0 is None:
            return 0
        bins = self._bins
        taken = 0
        refit = False
        for dev, host in points:
            x, y = dev - self._x0, host - self._y0
            b = x // self.bin_ns
            if b == self._cur_bin and self._cur is not None:
                if self._key(x, y) < self._key(*self._cur):
                    self._cur = (x, y)
                    taken += 1
                    if not bins:
                        self._ax, self._ay = self._cur
                continue
            for i in range(len(bins) - 1, -1, -1):
                bi = bins[i][0] // self.bin_ns
                if bi < b:
                    break
                if bi == b:
                    if self._key(x, y) < self._key(*bins[i]):
                        bins[i] = (x, y)
                        taken += 1
                        refit = True
                    break
        if refit:
            self._refit()
        return taken

    def _key(self, x: int, y: int) -> float:
        s = self.key_slope
        return y - (self.slope if s is None else s) * x

    def _refit(self) -> None:
        self.refits += 1
        pts = list(self._bins)
        hull = lower_hull(pts)
        self._hull = hull
        self._span_ns = pts[-1][0] - pts[0][0]
        if len(hull) == 1:
            self._ax, self._ay = hull[0]
            return
        xm = sum(p[0] for p in pts) / len(pts)
        i = 0
        while i < len(hull) - 2 and hull[i + 1][0] < xm:
            i += 1
        (x1, y1), (x2, y2) = hull[i], hull[i + 1]
        self.slope = (y2 - y1) / (x2 - x1)
        self._ax, self._ay = x1, y1
        self._edge_ns = x2 - x1
        dev = self.max_edge_dev
        if dev is not None and abs(self.slope - 1.0) > dev:
            # an edge no clock can have: it spans a change of wait (a phase-locked wait that
            # wrapped by an interval), not drift. The nearest edge a clock can have gives the
            # slope, and the line is lowered onto the lowest bin under it
            edges = [(abs(j - i), j) for j in range(len(hull) - 1)
                     if abs((hull[j + 1][1] - hull[j][1]) / (hull[j + 1][0] - hull[j][0]) - 1.0)
                     <= dev]
            if edges:
                j = min(edges)[1]
                (x1, y1), (x2, y2) = hull[j], hull[j + 1]
                self.slope = (y2 - y1) / (x2 - x1)
                self._edge_ns = x2 - x1
                self._ax, self._ay = min(pts, key=lambda p: p[1] - self.slope * p[0])
        if self.jump_ns:
            self._fit_bottoms(pts)
        res = sorted(y - self._line(x) for x, y in pts)
        self._tight_ns = int(res[min(len(res) - 1, 4)])
        self._tail_ns = int(res[min(len(res) - 1, TAIL_RANK - 1)])

    def _fit_bottoms(self, pts: list[tuple[int, int]]) -> None:
        """Sawtooth mode: re-fit through the tooth bottoms (see the module doc)."""
        assert self.jump_ns is not None
        s = self.slope
        r = [y - s * x for x, y in pts]
        diffs = [r[i + 1] - r[i] for i in range(len(pts) - 1)]
        trend = sorted(diffs)[len(diffs) // 2] if diffs else 0.0  # a slope error, not a jump
        bottoms: list[tuple[int, int]] = []
        for i in range(len(pts) - 1):
            if pts[i + 1][0] - pts[i][0] > 2 * self.bin_ns:
                continue  # a hole in the data: no jump is judged across it
            d = diffs[i] - trend
            b = pts[i] if d >= self.jump_ns else pts[i + 1] if d <= -self.jump_ns else None
            if b is not None and (not bottoms or bottoms[-1] != b):
                bottoms.append(b)
        self._bottoms = bottoms
        if len(bottoms) < 2 or bottoms[-1][0] - bottoms[0][0] < self.converge_span_ns:
            return  # bottoms too close together (or noise early on): keep the hull's slope
        (x1, y1), (x2, y2) = self._bridge(bottoms)
        self.slope = (y2 - y1) / (x2 - x1)
        self._edge_ns = x2 - x1
        self._ax, self._ay = min(pts, key=lambda p: p[1] - self.slope * p[0])

    @staticmethod
    def _bridge(bottoms: list[tuple[int, int]]) -> tuple[tuple[int, int], tuple[int, int]]:
        """The two supports a rate fit's slope is drawn through: the lower bridge between the
        bottoms of the window's first and last thirds (the edge of their lower hull across the
        middle third; Bartlett's three groups, taken from below). Every bottom is up to its own
        wait high (and a bin beside a backlog may pass for one), so the slope is off by what
        its two supports' elevations differ by over their distance. The first and last
        bottoms are vertices of any hull whatever their elevation, so the chord between them
        is tilted by however high either end sits (1.9 ms at the start of a WitMotion default
        link: 25 ppm); an edge of the whole hull may be a few seconds long. The bridge's
        supports are the lowest of each outer third (hull vertices: under every bottom of
        both), at least a third of the span apart."""
        lo, hi = bottoms[0][0], bottoms[-1][0]
        third = (hi - lo) / 3
        hb = lower_hull([b for b in bottoms if b[0] <= lo + third or b[0] >= hi - third])
        xm = (lo + hi) / 2
        i = 0
        while i < len(hb) - 2 and hb[i + 1][0] < xm:
            i += 1
        return hb[i], hb[i + 1]

    def lowest(self, slope: float, open_bin: bool = False) -> tuple[int, int]:
        """The observation (absolute device ns, host ns) lowest under a line of ``slope``:
        over the closed bins, or the open one while none has closed (``open_bin``: and the
        open one too)."""
        pts = list(self._bins) if self._bins else []
        if self._cur is not None and (open_bin or not pts):
            pts.append(self._cur)
        if not pts:
            raise ValueError("no observations yet")
        x, y = min(pts, key=lambda p: p[1] - slope * p[0])
        return (self._x0 or 0) + x, self._y0 + y

    def _line(self, x: float) -> float:
        return self._ay + self.slope * (x - self._ax)

    # -------------------------------------------------------------- results
    def map(self, device_ns: int) -> int:
        """Host timeline ns of a device-clock instant."""
        if self._x0 is None:
            raise ValueError("no observations yet")
        return self._y0 + round(self._line(device_ns - self._x0)) - self.latency_ns

    @property
    def ready(self) -> bool:
        return self._x0 is not None

    @property
    def converged(self) -> bool:
        if self.jump_ns:
            b = self._bottoms
            return len(b) >= 2 and b[-1][0] - b[0][0] >= self.converge_span_ns
        return len(self._hull) >= 2 and self._span_ns >= self.converge_span_ns

    @property
    def bins(self) -> int:
        """Closed bins in the window (the fit has a slope from 2)."""
        return len(self._bins)

    @property
    def ref_device_ns(self) -> int:
        """Device instant the line is anchored at (a hull vertex under the window centre)."""
        return (self._x0 or 0) + self._ax

    @property
    def window_span_ns(self) -> int:
        """Device time between the window's first and last closed bins."""
        return self._span_ns

    @property
    def tight_ns(self) -> int:
        """5th-lowest bin residual above the line: how tightly the envelope is supported."""
        return self._tight_ns

    @property
    def bottoms(self) -> int:
        """Sawtooth mode: tooth bottoms found in the window."""
        return len(self._bottoms)

    @property
    def edge_ns(self) -> int:
        """Device time between the two supports the slope is drawn through (the hull edge,
        or the tooth bottoms' bridge); 0 with one support."""
        return self._edge_ns

    @property
    def tail_ns(self) -> int:
        """``TAIL_RANK``-th lowest bin residual above the line (agent/clock/band_bound.py's
        ``TAIL_FACTOR`` says how far the lowest support may be under it)."""
        return self._tail_ns

    @property
    def drift_ppm(self) -> float:
        """How much faster the host clock runs than the device clock, in ppm."""
        return (self.slope - 1.0) * 1e6

    @property
    def offset_ns(self) -> int:
        """host_ns - device_ns at the reference device instant ``x0``."""
        if self._x0 is None:
            return 0
        return self.map(self._x0) - self._x0

    @property
    def error_bound_ns(self) -> int:
        """Latency uncertainty plus how tightly the envelope is supported (5th-lowest
        residual of the window's bins, doubled); large until converged."""
        if not self.converged:
            return max(self.latency_uncertainty_ns + 2 * self._tight_ns,
                       self.unconverged_bound_ns)
        return self.latency_uncertainty_ns + 2 * self._tight_ns

    def snapshot(self, max_points: int = 64) -> dict[str, Any]:
        """The fit and its hull observations (absolute ns), JSON-ready, for the segment."""
        x0, y0 = self._x0 or 0, self._y0
        hull = self._hull[-max_points:]
        return {
            "method": "one-way lower convex hull",
            "mapping": "host_ns = ref_host_ns + slope * (device_ns - ref_device_ns) - latency_ns",
            "ref_device_ns": x0 + self._ax,
            "ref_host_ns": y0 + self._ay,
            "slope": self.slope,
            "drift_ppm": self.drift_ppm,
            "latency_ns": self.latency_ns,
            "latency": self.latency_kind,
            "latency_uncertainty_ns": self.latency_uncertainty_ns,
            "converged": self.converged,
            "error_bound_ns": self.error_bound_ns,
            "window_span_ns": self._span_ns,
            "observations": self.observations,
            "restarts": self.restarts,
            **({"sawtooth_jump_ns": self.jump_ns, "bottoms": len(self._bottoms)}
               if self.jump_ns else {}),
            "hull": [[x0 + x, y0 + y] for x, y in hull],
        }
