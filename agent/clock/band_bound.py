"""The stated bound's fit part (agent/clock/band.py): how far a band's envelope may be from the
floor it estimates, as ``BandClock.place`` counts it in every bound.

- ``_fit_part``: the excess at the line's anchor: ``wait_prior_ns / bins`` while the fit has
  few bins; then ``TAIL_FACTOR`` x the 10th-lowest bin residual (a wait plus jitter: the
  lowest of N is further from the floor than a uniform wait's), at least what the lowest of N
  waits over the spread stays above with 1 % chance; a band with no clock adds one sample
  period until its rate fit has converged.
- ``_slope_part``: what a slope error adds away from the anchor (the edge the line is drawn
  through; at most what the bins behind the anchor allow it to tilt, ``_tilt``; a young
  window's held slope: the physical range).
- ``_local_low``: how far the envelope may be below its floor at the newest samples, from the
  recent bins, and beyond them.
- ``lock_floor_ns``: waits that do not slide (phase-locked to the link) put one packet period
  in; ``stated_floor_ns`` is the floor the bound states (that, or one sample period for an
  unconverged band with no clock).
"""

from __future__ import annotations

import itertools
import math

from agent.clock.band_line import SETTLE_BINS, BandLine
from agent.clock.oneway import TAIL_RANK
from agent.clock.rate import BURST_GAP_NS

LOCAL_LOW_NS = 30_000_000_000
"""The recent stretch whose lowest observation bounds how far the envelope may be below the
floor at the newest samples (``_local_low``)."""
LOCK_SPREAD_NS = 6_000_000
"""Waits that slide over even the shortest BLE interval (7.5 ms) spread wider than this."""
LOCK_BIN_SPREAD_NS = 3_000_000
"""... and their per-second lowest residuals move by more than this over the window."""
TAIL_FACTOR = 1.73
"""How far the lowest support may be above the floor, in units of the ``TAIL_RANK``-th
lowest bin residual (agent/clock/oneway.py: the spacing of the lowest ten): 1 % of the time
further. A notification's delay above the floor is the sum of two independent parts, its
wait for the connection event and the host's jitter, each with a finite density at zero, so
the chance that one is within ``x`` of the floor grows as ``x**2``, not ``x``. With the
ratio of the lowest to the 10th-lowest of such delays ``sqrt(Beta(1, 9))`` distributed, the
lowest is beyond 1.73 x (10th - lowest) with 1 % chance (``(1 - q**2)**9 = 0.01``, factor
``q / (1 - q)``); from the 5th-lowest it would take 4.78 x, and a single uniform part gives
2.16 x the 5th."""
WAIT_PRIOR_NS = 150_000_000
"""Largest plausible wait of a notification for its connection event (intervals up to
100 ms, plus jitter), the fit part of a bound before any bin has closed."""


class BandBound(BandLine):
    """The fit part of the bound, its slope part, the local low and the lock floor."""

    def __init__(self) -> None:
        super().__init__()
        self._spread_at: tuple[int, int] = (-1, -1)
        self._spread_cache = 0.0
        self._bin_spread_at = (-1, -1)
        self._bin_spread_cache = 0.0
        self._alike_at = (-1, -1)
        self._alike_cache = False
        self._low_at = (-1, -1)
        self._low_cache: list[tuple[float, float]] = []
        self._tilt_at: tuple[int, int, int] = (-1, -1, -1)
        self._tilt_cache = (math.inf, math.inf)

    def _spread(self) -> float:
        """How widely recent observations sit above the envelope (the wait distribution's
        width: 90th percentile / 0.9), recomputed when the fit moves."""
        f = self.fit
        if self._spread_at != (f.refits, self._epoch):
            res = sorted(self._above(self._recent))
            self._spread_cache = (res[int(0.9 * (len(res) - 1))] / 0.9 if res
                                  else float(self.wait_prior_ns))
            self._spread_at = (f.refits, self._epoch)
        return min(self._spread_cache, float(self.wait_prior_ns))

    def lock_floor_ns(self) -> float:
        """A band with a device clock whose packets wait for their connection event by an
        amount that does not slide (its packet period a multiple of the interval, its
        crystal within ~1 ppm of the host's): the lowest wait says nothing about the
        constant one, which is anywhere below the interval, itself at most the packet
        period. Seen as residuals spread less than a sliding wait on the shortest BLE
        interval would (``LOCK_SPREAD_NS``); the floor is then the packet period (at most
        the largest plausible wait). 0 when the waits slide (or for anchored packets)."""
        if self.kind != "device" or len(self._recent) < 8:
            return 0.0
        if self._spread() >= LOCK_SPREAD_NS or self._bin_spread() >= LOCK_BIN_SPREAD_NS:
            return 0.0  # waits spread now, or have slid over the window (slowly)
        keys = [k for k, _a, _m in self._recent]
        gaps = sorted(b - a for a, b in itertools.pairwise(keys) if b > a)
        if not gaps:
            return 0.0
        return float(min(gaps[len(gaps) // 2], self.wait_prior_ns))

    def stated_floor_ns(self) -> float:
        """The floor this fit states in its bound now: what arrival times cannot place
        closer. A band with a device clock whose waits do not slide: its packet period
        (``lock_floor_ns``); a band with no clock whose rate fit has not converged (on a
        link phase-locked to its sample clock it never does): one sample period. 0 where
        the bound holds no such floor (anchored or two-way packets, waits that slide)."""
        if self.kind == "rate":
            return 0.0 if self.fit.converged else self.nominal_period_ns
        return self.lock_floor_ns()

    def _waits_alike(self) -> bool:
        """Kind "rate": whether the newest sample of each recent burst (notifications
        ``BURST_GAP_NS`` apart or less, as the rate fit observes them) waited alike for its
        event: its residuals above the envelope spread under ``LOCK_SPREAD_NS`` (from the
        75th percentile, as for a uniform spread; host jitter, a burst it splits or a
        retransmission raise a few). A sample clock phase-locked to the connection interval
        (or sliding too slowly to show yet) waits alike every time, and nothing tells how
        long; waits that slide or step through the interval spread over it. Once per
        refit."""
        f = self.fit
        at = (f.refits, self._epoch)
        if self._alike_at == at:
            return self._alike_cache
        bursts: list[tuple[int, int, int]] = []  # newest index, burst start, 1
        last: int | None = None
        for k, a, m in self._recent:
            if last is not None and bursts and 0 <= a - last <= BURST_GAP_NS:
                bursts[-1] = (k + m - 1, bursts[-1][1], 1)
            else:
                bursts.append((k + m - 1, a, 1))
            last = a
        out = False
        if len(bursts) >= 8:
            res = sorted(self._above(bursts))
            out = (res[int(0.75 * (len(res) - 1))] - res[0]) / 0.75 < LOCK_SPREAD_NS
        self._alike_at, self._alike_cache = at, out
        return out

    def _bin_spread(self) -> float:
        """How far the window's per-bin lowest residuals spread (90th percentile): waits
        that slide, however slowly, move them; locked ones do not. Once per refit."""
        f = self.fit
        at = (f.refits, self._epoch)
        if self._bin_spread_at == at:
            return self._bin_spread_cache
        pts = list(f._bins)
        if len(pts) < 4:
            out = 0.0
        else:
            res = sorted(y - f._line(x) for x, y in pts)
            out = float(res[int(0.9 * (len(res) - 1))] - res[0])
        self._bin_spread_at, self._bin_spread_cache = at, out
        return out

    def _fit_part(self) -> int:
        """How far the envelope may be above its floor at its anchor (module doc): the
        excess ``E``, at least ``TAIL_FACTOR`` x the 10th-lowest bin residual and at least
        what the lowest of N waits spread over [0, W) stays above with 1 % chance
        (W ln(100) / N). What a slope error adds away from the anchor is ``_slope_part``."""
        f = self.fit
        nb = self._bins()
        if nb < SETTLE_BINS:
            part = self.wait_prior_ns / max(1, nb)
        else:
            n_obs = max(1, min(f.observations, self._window_obs()))
            # the tail of the lowest delays shows once the window holds several times
            # TAIL_RANK bins; before, its 5th-lowest bin, doubled (one uniform wait)
            low = TAIL_FACTOR * f.tail_ns if f.bins >= 4 * TAIL_RANK else 2.0 * f.tight_ns
            part = max(low, self._spread() * 4.6 / n_obs)
        if self.kind == "rate" and not f.converged:
            part += self.nominal_period_ns  # the floor: wait unknown within a period
        return round(part)

    def _slope_part(self, key: float, excess: float) -> float:
        """What a slope error adds at ``key``, on the side where the envelope is above its
        floor. The line is ``h`` (<= the excess) above the floor at its anchor; tilted by
        ``s`` against the floor, it is ``h + s d`` above it a distance ``d`` away, and as far
        below it on the other side of the anchor, where every observation is above the floor:
        a bin there ``r`` above the line, ``d'`` from the anchor, allows ``s <= (r + h) / d'``.
        The tightest of those bins bounds the tilt (``_tilt``), however the supports are
        spread; with no bin on that side, the supports at either end may each be up to the
        excess high (3 excess / span per unit of distance). A young window's held slope: the
        physical range over the distance."""
        f = self.fit
        if self._bins() < SETTLE_BINS or f.window_span_ns <= 0:
            return 0.0
        _s, ax, _ay = self._line()
        d = self._x(key) - ax
        car = self._carrying()
        if car is not None:
            return car[1] * abs(d)
        # a rate fit's slope is drawn through two of its tooth bottoms (the bridge of
        # agent/clock/oneway.py), each up to its own wait high: its bound holds what its
        # newest observations show
        edge = f.edge_ns if self._line_on_edge else 0
        part = abs(d) * (excess / edge if edge > 0 else 3.0 * excess / f.window_span_ns)
        tilt = None if self.kind == "rate" else self._tilt(excess, d >= 0)
        if tilt is not None:
            part = min(part, abs(d) * tilt)
        if self.young:
            part = max(part, self.max_slope_dev * abs(d))
        return part

    def _tilt(self, excess: float, ahead: bool) -> float | None:
        """The largest tilt of the line against its floor that raises it ``ahead`` of its
        anchor (or behind it): min over the bins on the other side of ``(r + excess) / d'``
        (``_slope_part``). None with no bin there. Once per refit and excess."""
        f = self.fit
        at = (f.refits, self._epoch, round(excess))
        if self._tilt_at != at:
            slope, ax, ay = self._line()
            x0, y0 = f._x0 or 0, f._y0
            behind = ahead_ = math.inf
            for x, y in f._bins:
                dx = x0 + x - ax
                if dx == 0:
                    continue
                r = max(0.0, y0 + y - (ay + slope * dx))
                if dx < 0:
                    behind = min(behind, (r + excess) / -dx)
                else:
                    ahead_ = min(ahead_, (r + excess) / dx)
            self._tilt_at, self._tilt_cache = at, (behind, ahead_)
        out = self._tilt_cache[0 if ahead else 1]
        return None if math.isinf(out) else out

    def _local_low(self, key: float, excess: float) -> float:
        """How far the envelope may be below its floor at ``key``, from the recent
        observations (the window's last ``LOCAL_LOW_NS`` of bins, and the open one): the
        floor is under every one of them, so at a bin ``r`` above the line the envelope is
        at most ``r`` below it. Further from the anchor (at ``d`` vs the bin's ``d'``) a
        line ``h`` (<= the excess) above the floor at its anchor and ``r + h`` under it at
        ``d'`` falls by ``(r + h) / d'`` per unit of distance: ``r + (r + h)(d - d') / d'``.
        The lowest of those over the recent bins. A slope drawn through a few supports far
        back (the tooth bottoms of a rate fit, each up to its own wait high) is off by what
        those supports' elevations differ by over the span; this is where that shows, and
        the bound need not guess it from the tightest bins. Residuals once per refit."""
        f = self.fit
        at = (f.refits, self._epoch)
        if self._low_at != at:
            slope, ax, ay = self._line()
            x0, y0 = f._x0 or 0, f._y0
            pts = list(f._bins)
            if f._cur is not None:
                pts.append(f._cur)
            rec: list[tuple[float, float]] = []
            if pts:
                newest = pts[-1][0]
                rec = [(x0 + x - ax, y0 + y - (ay + slope * (x0 + x - ax)))
                       for x, y in pts if x >= newest - LOCAL_LOW_NS]
            self._low_at, self._low_cache = at, rec
        rec = self._low_cache
        if not rec:
            return 0.0
        d = self._x(key) - self._line()[1]
        out = math.inf
        for dj, r in rec:
            v = r
            if dj * d > 0 and abs(d) > abs(dj):
                v += (r + excess) * (abs(d) - abs(dj)) / abs(dj)
            out = min(out, v)
        return max(0.0, out)

    def _window_obs(self) -> int:
        """Observations the fit's window holds (bins x observations per bin lately)."""
        rec = self._recent
        if len(rec) < 2:
            return len(rec)
        dt = rec[-1][1] - rec[0][1]
        per_bin = len(rec) * self.fit.bin_ns / max(dt, self.fit.bin_ns)
        return max(1, round(per_bin * max(1, self.fit.bins)))
