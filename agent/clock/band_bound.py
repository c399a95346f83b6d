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
PHASE_GAP = 0.25
"""Stamps whose recent phases (device time modulo their resolution) leave no wider gap than
this share of it slide through the whole resolution (``_one_sided``)."""
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
        self._slope_memo: tuple[int, float, float, int, float, float | None,
                                float | None, float] | None = None
        self._low_memo: _LowMemo | None = None
        self._phase_at = (-1, -1)
        self._phase_gap = 0.0

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

    def _slope_part(self, x: float, excess: float) -> float:
        """What a slope error adds at ``x`` (a key's ``_x``), on the side where the envelope
        is above its floor. The line is ``h`` (<= the excess) above the floor at its anchor;
        tilted by ``s`` against the floor, it is ``h + s d`` above it a distance ``d`` away,
        and as far below it on the other side of the anchor, where every observation is above
        the floor: a bin there ``r`` above the line, ``d'`` from the anchor, allows
        ``s <= (r + h) / d'``. The tightest of those bins bounds the tilt (``_tilt``), however
        the supports are spread; with no bin on that side, the supports at either end may each
        be up to the excess high (3 excess / span per unit of distance). A young window's held
        slope: the physical range over the distance. What does not depend on ``x`` is kept per
        version (``_slope_factors``)."""
        memo = self._slope_memo
        if memo is None or memo[0] != self._ver or memo[1] != excess:
            memo = self._slope_memo = (self._ver, excess, *self._slope_factors(excess))
        _v, _e, ax, how, per, behind, ahead, dev = memo
        if how == 0:
            return 0.0
        d = x - ax
        if how == 1:
            return per * abs(d)
        ad = abs(d)
        part = ad * per
        tilt = ahead if d >= 0 else behind
        if tilt is not None:
            part = min(part, ad * tilt)
        if how == 3:
            part = max(part, dev * ad)
        return part

    def _slope_factors(self, excess: float) -> tuple[float, int, float, float | None,
                                                     float | None, float]:
        """What ``_slope_part`` takes from the fit, whatever the key: (anchor, how, factor,
        tilt behind, tilt ahead, physical range); ``how`` 0: nothing, 1: a carried rate's
        uncertainty (``factor``), 2: the edge's (``factor``, at most the tilt), 3: that, at
        least the physical range (a young window). Kept per ``_ver`` and excess (nothing it
        reads changes between observations); read in the order and under the conditions the
        per-key computation read them, so the fit's own caches fill as they always did."""
        f = self.fit
        if self._bins() < SETTLE_BINS or f.window_span_ns <= 0:
            return 0.0, 0, 0.0, None, None, 0.0
        _s, ax, _ay = self._line()
        car = self._carrying()
        if car is not None:
            return ax, 1, car[1], None, None, 0.0
        # a rate fit's slope is drawn through two of its tooth bottoms (the bridge of
        # agent/clock/oneway.py), each up to its own wait high: its bound holds what its
        # newest observations show
        edge = f.edge_ns if self._line_on_edge else 0
        per = excess / edge if edge > 0 else 3.0 * excess / f.window_span_ns
        behind = ahead = None
        if self.kind != "rate":
            ahead = self._tilt(excess, True)
            behind = self._tilt(excess, False)
        return ax, (3 if self.young else 2), per, behind, ahead, self.max_slope_dev

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

    def _local_low(self, x: float, excess: float) -> float:
        """How far the envelope may be below its floor at ``x`` (a key's ``_x``), from the
        recent observations (the window's last ``LOCAL_LOW_NS`` of bins, and the open one): the
        floor is under every one of them, so at a bin ``r`` above the line the envelope is
        at most ``r`` below it. Further from the anchor (at ``d`` vs the bin's ``d'``) a
        line ``h`` (<= the excess) above the floor at its anchor and ``r + h`` under it at
        ``d'`` falls by ``(r + h) / d'`` per unit of distance: ``r + (r + h)(d - d') / d'``.
        The lowest of those over the recent bins. A slope drawn through a few supports far
        back (the tooth bottoms of a rate fit, each up to its own wait high) is off by what
        those supports' elevations differ by over the span; this is where that shows, and
        the bound need not guess it from the tightest bins. Residuals once per refit."""
        memo = self._low_memo
        if memo is None or memo.ver != self._ver or memo.excess != excess:
            memo = self._low_memo = self._low_prepared(excess)
        if memo.empty:
            return 0.0
        d = x - memo.ax
        if d > 0:
            out, side = memo.low_behind, memo.ahead
        elif d < 0:
            out, side = memo.low_ahead, memo.behind
            d = -d
        else:
            return max(0.0, memo.low_all)
        # bins on the key's side of the anchor, nearer to it than the key: the line may fall
        # beyond them (``r + (r + h)(d - d') / d'``); the others bound it by ``r``
        for adj, r, c in side:
            v = r + c * (d - adj) / adj if d > adj else r
            if v < out:
                out = v
        return max(0.0, out)

    def _low_prepared(self, excess: float) -> _LowMemo:
        """What ``_local_low`` takes from the fit, whatever the key, kept per ``_ver`` and
        excess: the recent bins' residuals (once per refit, as they always were), split by
        the side of the anchor they lie on, each with ``r + excess``."""
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
        memo = _LowMemo(self._ver, excess)
        if not rec:
            return memo
        memo.empty = False
        memo.ax = self._line()[1]
        for dj, r in rec:
            if r < memo.low_all:
                memo.low_all = r
            if dj > 0:
                memo.ahead.append((dj, r, r + excess))
                if r < memo.low_ahead:
                    memo.low_ahead = r
            elif dj < 0:
                memo.behind.append((-dj, r, r + excess))
                if r < memo.low_behind:
                    memo.low_behind = r
            else:  # at the anchor: r on either side
                if r < memo.low_ahead:
                    memo.low_ahead = r
                if r < memo.low_behind:
                    memo.low_behind = r
        return memo

    def _one_sided(self) -> bool:
        """Whether the timestamps' quantisation can only put the truth after where the fit
        places it (module doc, ``quantisation``): the fit's part is its tail estimate (the
        window holds ``4 x TAIL_RANK`` bins), its slope is its own (not a young window's),
        and the recent observations' stamp phases (device time modulo the resolution) leave
        no gap wider than ``PHASE_GAP`` of it: the phases slide through the whole
        resolution within seconds, so the window's lowest observations have seen its
        extreme. Once per refit."""
        q = self.quantisation_ns
        f = self.fit
        if self.kind != "device" or not q or f.bins < 4 * TAIL_RANK or self.young:
            return False
        at = (f.refits, self._epoch)
        if self._phase_at != at:
            ph = sorted(k % q for k, _a, _m in self._recent)
            gap = float(q)
            if len(ph) >= 8:
                gap = max(ph[0] + q - ph[-1],
                          max(b - a for a, b in itertools.pairwise(ph)))
            self._phase_at, self._phase_gap = at, gap
        return self._phase_gap <= PHASE_GAP * q

    def _window_obs(self) -> int:
        """Observations the fit's window holds (bins x observations per bin lately)."""
        rec = self._recent
        if len(rec) < 2:
            return len(rec)
        dt = rec[-1][1] - rec[0][1]
        per_bin = len(rec) * self.fit.bin_ns / max(dt, self.fit.bin_ns)
        return max(1, round(per_bin * max(1, self.fit.bins)))


class _LowMemo:
    """``BandBound._local_low``'s key-independent part (``_low_prepared``)."""

    __slots__ = ("ahead", "ax", "behind", "empty", "excess", "low_ahead", "low_all",
                 "low_behind", "ver")

    def __init__(self, ver: int, excess: float) -> None:
        self.ver = ver
        self.excess = excess
        self.empty = True
        self.ax = 0.0
        self.ahead: list[tuple[float, float, float]] = []
        """Bins ahead of the anchor: (distance, residual, residual + excess)."""
        self.behind: list[tuple[float, float, float]] = []
        self.low_all = math.inf
        self.low_ahead = math.inf
        """The lowest residual of the bins ahead of the anchor (or at it)."""
        self.low_behind = math.inf
