"""What every placement of a band mapper takes from the fit, whatever its chunk
(agent/clock/band.py): the line, the excess and the point placed inside it, the lock floor,
the latency subtracted and its part of the bound (configured, or measured by two-way
exchanges), and the gates (suspect, settled, converged). Kept per version: ``_ver`` changes
with every observation, exchange, restart and cut, and the cache with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.clock.band_line import SETTLE_BINS
from agent.clock.band_observe import BandObservations
from agent.clock.band_types import Latency


@dataclass(frozen=True, slots=True)
class _FitNow:
    """What every placement takes from the fit, whatever its chunk (``BandClock._now``)."""

    ver: int
    """``BandClock._ver`` when computed: it changes with every observation, exchange,
    restart and cut."""
    latency: Latency
    slope: float
    ax: float
    ay: float
    """The envelope's line (``_line``)."""
    clamped: bool
    """The fitted slope is outside the physical range."""
    excess: float
    """The fit part before the lock floor and the slope part (``_fit_part``)."""
    ex_mid: float
    """The excess the point is placed at."""
    slope_span: float
    """The window span a slope error is judged over; 0 while it adds nothing."""
    young: bool
    lock: float
    settled_bins: bool
    """Enough bins for the recent ones to bound the envelope below the floor
    (``_local_low``); else the slope part does."""
    one_sided: bool
    """The stamps' quantisation lag is one-sided in the error (``BandBound.one_sided``)."""
    ln: float
    """The latency subtracted from the envelope."""
    lat_part: int
    source: str


class BandNow(BandObservations):
    """``_now`` and ``_gates``, cached per ``_ver``."""

    def __init__(self) -> None:
        super().__init__()
        self._now_cache: _FitNow | None = None
        self._gates_cache: tuple[int, tuple[bool, bool, bool]] = (-1, (False, False, False))

    def _now(self) -> _FitNow:
        """What a placement takes from the fit that no chunk changes (``_FitNow``), kept
        until the next change to what it is computed from: an observation, an exchange, a
        restart, a cut (each bumps ``_ver``) or a new ``latency``. A batch places all its
        chunks between two observations, so most placements reuse it. Computed only where a
        placement by the fit reads it (``_target``), as the fit's own caches expect."""
        now = self._now_cache
        if now is not None and now.ver == self._ver and now.latency is self.latency:
            return now
        now = self._now_cache = self._fit_now()
        return now

    def _gates(self) -> tuple[bool, bool, bool]:
        """(``_suspect()``, ``settled``, ``converged``), kept until ``_ver`` changes."""
        at, gates = self._gates_cache
        if at == self._ver:
            return gates
        ver = self._ver  # before anything is read (see ``_ver``)
        gates = self._fresh_gates()
        self._gates_cache = (ver, gates)
        return gates

    def _fresh_gates(self) -> tuple[bool, bool, bool]:
        return self._suspect(), self.settled, self.converged

    def _fit_now(self) -> _FitNow:
        """``_now`` computed afresh (what the cache must always equal)."""
        ver = self._ver  # before anything is read (see ``_ver``)
        f = self.fit
        slope, ax, ay = self._line()
        lat = self.latency
        # the envelope is above the truth by the latency and by an excess in [0, fit]: the
        # truth is in [env - latency_hi - fit, env - latency_lo]; placed at its middle
        excess = float(self._fit_part())
        # placed at the excess to expect (the lowest of N waits spread over W: W / (N + 1)),
        # bounded by the distance to either end of [0, excess]
        n_obs = max(1, min(f.observations, self._window_obs()))
        ex_mid = min(excess / 2, self._spread() / (n_obs + 1))
        if self.kind == "rate" and not f.converged and self._waits_alike():
            # no wait seen sliding: the lowest is anywhere in [0, P) (the period the bound
            # holds, ``_fit_part``). Placed at its middle, not at one edge: the worst error
            # is half a period, and the bound still spans the whole period
            ex_mid += self.nominal_period_ns / 2
        settled_bins = self._bins() >= SETTLE_BINS
        span = f.window_span_ns
        # waits that do not slide: the lowest is anywhere in [0, lock). Counted in the
        # bound, not guessed at in the point (a slow slide looks alike for a while, and
        # its envelope is right)
        lock = self.lock_floor_ns()
        ln: float = lat.ns
        lat_part, source = lat.uncertainty_ns, ("rate" if self.kind == "rate" else "one-way")
        m = self._measured_latency() if self.kind == "two-way" else None
        if m is not None:
            # the exchanges observe Ln + Lw (+ the least wait): Ln is half of it, give or
            # take half the two latencies' difference (<= asymmetry x their sum) and half
            # the wait; where that and the configured range overlap, Ln is in both. Placed
            # at the middle of what is left, bounded by the distance to either end.
            total, wait = m
            l_lo = max(0.0, (total - wait) / 2 * (1 - self.asymmetry))
            l_hi = total / 2 * (1 + self.asymmetry)
            c_lo, c_hi = lat.ns - lat.uncertainty_ns, lat.ns + lat.uncertainty_ns
            if c_lo <= l_hi and l_lo <= c_hi:
                l_lo, l_hi = max(l_lo, c_lo), min(l_hi, c_hi)
            ln = (l_lo + l_hi) / 2
            lat_part, source = round((l_hi - l_lo) / 2), "two-way"
        return _FitNow(
            ver=ver, latency=lat, slope=slope, ax=ax, ay=ay,
            clamped=abs(f.slope - 1.0) > self.max_slope_dev, excess=excess, ex_mid=ex_mid,
            slope_span=float(span) if settled_bins and span > 0 else 0.0,
            young=self.young, lock=lock,
            settled_bins=settled_bins, one_sided=self._one_sided(),
            ln=ln, lat_part=lat_part, source=source)
