"""Two-way clock mapping (TICSync-style) for a device that answers pings with its own clock.

The host sends a ping at host time ``t0``; the device stamps it with its clock reading ``d``
and answers; the answer arrives at ``t1``. Whatever the two directions' latencies are, the
device read its clock between the send and the arrival, so the true mapping ``f`` from the
device clock to the host timeline satisfies

    t0 <= f(d) <= t1                                   (the *band* of one exchange)

This holds for any asymmetry between the two directions (USB CDC: the request waits for the
next 1 ms frame, the answer for the one after). The midpoint ``(t0 + t1) / 2`` is biased by
half the asymmetry; the half round trip ``(t1 - t0) / 2`` always covers it. No latency has to
be assumed or calibrated: that is what makes a two-way clock the reference the one-way fits
(agent/clock/oneway.py) are calibrated against.

The fit (Moon, Skelly & Towsley 1999; Harrison & Newman, TICSync, 2011):

- Exchanges are reduced to the tightest (smallest round trip) per ``bin_ns`` of device time;
  the window keeps the last ``window_bins`` bins, so the fit follows slow drift wander.
- The drift is the weighted least-squares slope of the tightest exchanges' midpoints,
  confined to the slopes that every pair of them allows (a line through both bands) and to a
  physically possible clock (``max_drift_ppm``; crystals are tens of ppm). A slope outside
  that is a bad fit, not a finding: it is clamped and counted.
- The offset is the centre of the offsets that keep the line inside every tight band.

The error bound at a device instant ``d`` is honest by construction: for each tight exchange
``j``, the fitted line ``g`` is at most ``|g(d_j) - mid_j| + half_rtt_j`` from the truth at
``d_j`` (the truth is in the band), and the slopes differ by at most the slope uncertainty
(the width of the pairwise-feasible slopes plus ``drift_floor_ppm`` of wander), so

    |g(d) - f(d)| <= min_j ( |g(d_j) - mid_j| + half_rtt_j + slope_unc * |d - d_j| ) + tick_ns

Before there are two exchanges far enough apart to give a slope, the slope is 1 (the
device's nominal rate) and the uncertainty is the whole physical range, so the bound grows
with the distance from the last exchange: large, but true.

Cost: one refit per closed bin (and per improving exchange until converged) over at most
``tight`` exchanges: O(tight^2) pairs, a few hundred operations a second at the defaults.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any


def _second(pair: tuple[int, float]) -> float:
    return pair[1]


DEFAULT_MAX_DRIFT_PPM = 200.0
"""Largest device-vs-host rate difference the fit accepts (two crystals of +-100 ppm)."""


@dataclass(frozen=True)
class Exchange:
    """One ping/pong, relative to the fit's origin: device ``x``, host band ``[lo, hi]``."""

    x: int
    lo: int
    hi: int

    @property
    def mid(self) -> float:
        return (self.lo + self.hi) / 2

    @property
    def half(self) -> float:
        return (self.hi - self.lo) / 2


class TwoWayFit:
    """Offset + drift from ping/pong exchanges, with a bound that covers the true error.

    ``add(host_send_ns, device_ns, host_recv_ns)`` one exchange; ``map(device_ns)`` the host
    instant; ``bound_ns(device_ns)`` the error bound there; ``converged``; ``drift_ppm``
    (how much faster the host clock runs than the device's, as in OneWayFit);
    ``snapshot()`` the fit and its tightest exchanges, JSON-ready, for the segment.
    """

    def __init__(
        self,
        *,
        bin_ns: int = 1_000_000_000,
        window_bins: int = 60,
        tight: int = 12,
        max_drift_ppm: float = DEFAULT_MAX_DRIFT_PPM,
        drift_floor_ppm: float = 0.5,
        tick_ns: int = 1_000,
        converge_span_ns: int = 10_000_000_000,
        min_slope_span_ns: int = 2_000_000_000,
        restart_back_ns: int = 1_000_000_000,
        max_rtt_ns: int = 100_000_000,
    ) -> None:
        self.bin_ns = int(bin_ns)
        self.tight = max(2, int(tight))
        self.max_drift = max_drift_ppm * 1e-6
        self.drift_floor = drift_floor_ppm * 1e-6
        self.tick_ns = int(tick_ns)
        self.converge_span_ns = int(converge_span_ns)
        self.min_slope_span_ns = int(min_slope_span_ns)
        self.restart_back_ns = int(restart_back_ns)
        self.max_rtt_ns = int(max_rtt_ns)
        self._bins: deque[Exchange] = deque(maxlen=int(window_bins))
        self.exchanges = 0
        """Exchanges accepted since the start (across restarts)."""
        self.rejected = 0
        """Exchanges refused: the answer before the request, or a round trip over max_rtt_ns."""
        self.restarts = 0
        """Times the device clock went back (a reboot, a replug): the fit started again."""
        self.clamped = 0
        """Refits whose slope left the physical range or the pairwise-feasible slopes."""
        self.refits = 0
        self._reset()

    def _reset(self) -> None:
        self._x0: int | None = None
        self._y0 = 0
        self._bins.clear()
        self._cur_bin = -1
        self._cur: Exchange | None = None
        self._last_x = 0
        self.slope = 1.0
        self._a = 0.0  # line: y = a + slope * x (relative to the origin)
        self.slope_unc = self.max_drift
        self._anchors: list[tuple[int, float]] = []  # (x_j, |resid_j| + half_j)
        self._by_c: list[tuple[int, float]] = []  # bound_ns's cache: the anchors sorted by c
        self._by_c_of: list[tuple[int, float]] | None = None  # ... of this anchors list
        self._span = 0
        self._feasible = False
        self._best_rtt: int | None = None

    # -------------------------------------------------------------- observations
    def add(self, host_send_ns: int, device_ns: int, host_recv_ns: int) -> bool:
        """One exchange: the ping left at ``host_send_ns``, the device read ``device_ns``
        (its clock, in ns), the answer was back at ``host_recv_ns``. False if refused."""
        rtt = host_recv_ns - host_send_ns
        if rtt < 0 or rtt > self.max_rtt_ns:
            self.rejected += 1
            return False
        if self._x0 is None:
            self._x0, self._y0 = int(device_ns), int(host_send_ns)
        x = int(device_ns) - self._x0
        if x < self._last_x - self.restart_back_ns:
            self.restarts += 1
            self._reset()
            return self.add(host_send_ns, device_ns, host_recv_ns)
        self._last_x = max(self._last_x, x)
        self.exchanges += 1
        if self._best_rtt is None or rtt < self._best_rtt:
            self._best_rtt = rtt
        e = Exchange(x, int(host_send_ns) - self._y0, int(host_recv_ns) - self._y0)
        b = x // self.bin_ns
        if b != self._cur_bin:
            if self._cur is not None:
                self._bins.append(self._cur)
            self._cur_bin, self._cur = b, e
            self._refit()
        elif e.half < self._cur.half:  # type: ignore[union-attr]
            self._cur = e
            if not self.converged:
                self._refit()
        return True

    def _points(self) -> list[Exchange]:
        pts = list(self._bins)
        if self._cur is not None:
            pts.append(self._cur)
        return pts

    def _refit(self) -> None:
        self.refits += 1
        pts = self._points()
        if not pts:
            return
        self._span = pts[-1].x - pts[0].x
        tight = sorted(pts, key=lambda e: e.half)[: self.tight]
        tight.sort(key=lambda e: e.x)
        span = tight[-1].x - tight[0].x
        lo_s, hi_s = 1.0 - self.max_drift, 1.0 + self.max_drift
        self._feasible = False
        if span >= self.min_slope_span_ns:
            s = self._ls_slope(tight)
            f_lo, f_hi = -float("inf"), float("inf")
            for i, p in enumerate(tight):
                for q in tight[i + 1:]:
                    dx = q.x - p.x
                    if dx < self.min_slope_span_ns:
                        continue
                    f_lo = max(f_lo, (q.lo - p.hi - 2 * self.tick_ns) / dx)
                    f_hi = min(f_hi, (q.hi - p.lo + 2 * self.tick_ns) / dx)
            if f_lo <= f_hi:
                self._feasible = True
                if not f_lo <= s <= f_hi:
                    self.clamped += 1
                    s = min(max(s, f_lo), f_hi)
                unc = max(s - f_lo, f_hi - s)
            else:  # no line crosses every band: the clock is not linear over the window
                self.clamped += 1
                unc = (f_lo - f_hi) + max(abs(s - f_lo), abs(s - f_hi))
            if not lo_s <= s <= hi_s:
                self.clamped += 1
                s = min(max(s, lo_s), hi_s)
            self.slope = s
            self.slope_unc = min(unc + self.drift_floor, 2 * self.max_drift)
        else:
            self.slope = 1.0
            self.slope_unc = self.max_drift
        s = self.slope
        a_lo = max(e.lo - s * e.x for e in tight)
        a_hi = min(e.hi - s * e.x for e in tight)
        if a_lo <= a_hi:
            self._a = (a_lo + a_hi) / 2
        else:
            w = [1.0 / (e.half + self.tick_ns) ** 2 for e in tight]
            self._a = sum(wi * (e.mid - s * e.x) for wi, e in zip(w, tight, strict=True)) / sum(w)
        anchors = {e.x: e for e in tight}
        for e in pts[-3:]:
            anchors.setdefault(e.x, e)
        self._anchors = [(e.x, abs(self._a + s * e.x - e.mid) + e.half)
                         for e in anchors.values()]

    def _ls_slope(self, pts: list[Exchange]) -> float:
        w = [1.0 / (e.half + self.tick_ns) ** 2 for e in pts]
        sw = sum(w)
        mx = sum(wi * e.x for wi, e in zip(w, pts, strict=True)) / sw
        my = sum(wi * e.mid for wi, e in zip(w, pts, strict=True)) / sw
        sxx = sum(wi * (e.x - mx) ** 2 for wi, e in zip(w, pts, strict=True))
        if sxx <= 0:
            return 1.0
        return sum(wi * (e.x - mx) * (e.mid - my) for wi, e in zip(w, pts, strict=True)) / sxx

    # -------------------------------------------------------------- results
    @property
    def ready(self) -> bool:
        return self._x0 is not None

    def map(self, device_ns: int) -> int:
        """Host timeline ns of a device-clock instant."""
        if self._x0 is None:
            raise ValueError("no exchanges yet")
        return self._y0 + round(self._a + self.slope * (int(device_ns) - self._x0))

    def bound_ns(self, device_ns: int | None = None) -> int:
        """Error bound of ``map(device_ns)`` (default: at the latest exchange)."""
        if self._x0 is None:
            raise ValueError("no exchanges yet")
        x = self._last_x if device_ns is None else int(device_ns) - self._x0
        anchors = self._anchors
        if anchors is not self._by_c_of:  # a refit since: sort its anchors by their c once
            self._by_c = sorted(anchors, key=_second)
            self._by_c_of = anchors
        # min_j (c_j + u |x - x_j|), the same sums as the formula: each term is >= its c_j,
        # so once c_j >= the best so far no later anchor (sorted by c) can be below it
        if not anchors:
            raise ValueError("no exchanges in the window")
        u = self.slope_unc
        best = float("inf")
        for xj, c in self._by_c:
            if c >= best:
                break
            v = c + u * abs(x - xj)
            if v < best:
                best = v
        return int(best + self.tick_ns) + 1

    @property
    def converged(self) -> bool:
        return self._feasible and self._span >= self.converge_span_ns

    @property
    def drift_ppm(self) -> float:
        """How much faster the host clock runs than the device clock, in ppm."""
        return (self.slope - 1.0) * 1e6

    @property
    def drift_uncertainty_ppm(self) -> float:
        return self.slope_unc * 1e6

    @property
    def best_rtt_ns(self) -> int | None:
        return self._best_rtt

    def snapshot(self, max_points: int = 32) -> dict[str, Any]:
        """The fit and its tightest exchanges (absolute ns), JSON-ready, for the segment."""
        x0, y0 = self._x0 or 0, self._y0
        pts = sorted(self._points(), key=lambda e: e.half)[:max_points]
        pts.sort(key=lambda e: e.x)
        return {
            "method": "two-way band fit (TICSync)",
            "mapping": "host_ns = ref_host_ns + slope * (device_ns - ref_device_ns)",
            "ref_device_ns": x0,
            "ref_host_ns": y0 + round(self._a),
            "slope": self.slope,
            "drift_ppm": self.drift_ppm,
            "drift_uncertainty_ppm": self.drift_uncertainty_ppm,
            "converged": self.converged,
            "error_bound_ns": self.bound_ns() if self._x0 is not None else None,
            "best_rtt_ns": self._best_rtt,
            "window_span_ns": self._span,
            "exchanges": self.exchanges,
            "rejected": self.rejected,
            "restarts": self.restarts,
            "clamped": self.clamped,
            "observations": [[y0 + e.lo, x0 + e.x, y0 + e.hi] for e in pts],
            "observation_fields": ["host_send_ns", "device_ns", "host_recv_ns"],
        }
