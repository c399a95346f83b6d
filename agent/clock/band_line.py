"""A band mapper's fit and the line drawn from it (agent/clock/band.py): the one-way fit (or
the rate fit holding it, for a band with no clock), a fresh one at every restart, and the
envelope's line: its slope held near 1 while the window is young, a converged slope that jumps
not believed, a band's rate carried over a break (``BandClock.cut``). Also the mapper's lock
(``serial``): one thread at a time reads or changes it.

The mapper is built in layers, each a base class of the next, each in its own module:
``BandLine`` (here) < ``BandBound`` (agent/clock/band_bound.py: the stated bound's parts) <
``BandExchanges`` (band_exchange.py: two-way time replies) < ``BandObservations``
(band_observe.py: observations, restarts, cuts) < ``BandNow`` (band_now.py: what a placement
takes from the fit, cached per version) < ``BandPlacement`` (band_place.py: placement and
slew) < ``BandClock`` (band.py: its arguments, and what a batch and a segment record).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Concatenate, ParamSpec, TypeVar

from agent.clock.band_types import Latency
from agent.clock.oneway import OneWayFit
from agent.clock.rate import RateFit
from agent.clock.twoway import TwoWayFit

KINDS = ("device", "rate", "two-way")
MAX_DRIFT_PPM = 500.0
"""A band's clock vs the host's: crystals are tens of ppm; sleep clocks up to 500."""
MAX_RATE_ERROR = 0.10
"""A band with no device clock: its sample clock (often an RC oscillator) within 10 %."""
YOUNG_SPAN_NS = 60_000_000_000
"""A one-way window shorter than this has its slope held near 1 (``_line``)."""
PRIOR_DRIFT_PPM = 100.0
"""How far from 1 a young window's slope may be used (crystals: tens of ppm each side)."""
SLOPE_JUMP_PPM = 100.0
"""How far a converged fit's slope may move in one refit and still be believed."""
SETTLE_BINS = 6
"""Closed bins (seconds) a fit needs, since its last restart, before it places samples."""

_S = TypeVar("_S", bound="BandLine")
_P = ParamSpec("_P")
_R = TypeVar("_R")


def serial(method: Callable[Concatenate[_S, _P], _R]) -> Callable[Concatenate[_S, _P], _R]:
    """One thread at a time in a mapper: the writer observes and places, and the open
    profile's time-request aimer peeks from the BLE loop. A peek must never read, or cache,
    an observation half done. The lock is uncontended almost always."""
    def serial(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._lock:
            return method(self, *args, **kwargs)
    serial.__name__, serial.__qualname__ = method.__name__, method.__qualname__
    serial.__doc__ = method.__doc__
    return serial


class BandLine:
    """The fit and its line; the mapper's configuration, set by ``BandClock``."""

    kind: str
    """One of ``KINDS``."""
    latency: Latency
    nominal_period_ns: float
    quantisation_ns: int
    wait_prior_ns: int
    slew_ppm: float
    slew_fast_ppm: float
    max_slope_dev: float
    """How far from 1 a slope may physically be (a drift, or a rate error for kind "rate")."""
    jump_ns: int
    asymmetry: float
    settle_ns: int
    _fit_args: dict[str, Any]

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._ver = 0
        """Bumped by whatever changes what ``_now`` and ``_gates`` are computed from, as it
        starts and again when it is done, so a reading taken while a change is half done is
        cached under a version that is already gone. Other threads (the time requests' aimer
        peeks from the BLE loop) cannot read mid-change at all: ``serial`` holds the
        mapper."""
        self._rate: RateFit | None = None
        self._oneway: OneWayFit | None = None
        self._twoway: TwoWayFit | None = None
        self._new_fit()
        self._recent: deque[tuple[int, int, int]] = deque()  # key, arrival, n
        self._line_at: tuple[int, int, int | bool] = (-1, -1, False)
        self._line_cache = (1.0, 0.0, 0.0)
        self._good_slope: float | None = None
        self._line_on_edge = False
        """Whether the line is drawn through the fit's two supports (``edge_ns`` apart)."""
        self._carried: tuple[float, float, int] | None = None
        """Kind "rate": (slope, its uncertainty, window span) of the fit before a break, used
        until the fit after it spans as much or has converged (``cut``)."""
        self.held = 0
        """Refits of a converged fit whose slope jumped by over SLOPE_JUMP_PPM (not used)."""

    def _new_fit(self) -> None:
        self._epoch = getattr(self, "_epoch", -1) + 1
        self._ver += 1
        if self.kind == "rate":
            self._rate = RateFit(1e9 / self.nominal_period_ns, 0, **self._fit_args)
            self._oneway = self._rate.fit
        else:
            args = dict(self._fit_args)
            args.setdefault("max_edge_dev", self.max_slope_dev)
            self._oneway = OneWayFit(0, **args)

    @property
    def fit(self) -> OneWayFit:
        assert self._oneway is not None
        return self._oneway

    def _x(self, key: float) -> float:
        """Key -> the one-way fit's x (device ns, or sample number x nominal period)."""
        return key * self.nominal_period_ns if self.kind == "rate" else key

    def _line(self) -> tuple[float, float, float]:
        """(slope, anchor device ns, anchor host ns) of the envelope. A young window (under
        ``YOUNG_SPAN_NS``) says little about the slope: a few bins, each up to a wait high,
        tilt the hull by thousands of ppm. Its slope is then held within ``PRIOR_DRIFT_PPM``
        of 1 (crystals), the line lowered onto the lowest bin under it, and the bound counts
        the whole physical range of slopes over the distance from that bin."""
        f = self.fit
        key = (f.refits, self._epoch,
               (f.bins == 0 or self._carried is not None) and f.observations)
        if self._line_at == key:
            return self._line_cache
        slope = f.slope
        dev = self.max_slope_dev
        car = self._carrying()
        if car is not None:
            # the band's rate from before the break: only the offset is new
            # (laid on the lowest observation yet, the open bin's too: a reconnection's
            # first second of arrivals is the whole window)
            ax, ay = f.lowest(car[0], open_bin=True)
            line = (car[0], float(ax), float(ay))
            self._line_on_edge = False
            self._line_at, self._line_cache = key, line
            return line
        if self.young:
            dev = min(dev, PRIOR_DRIFT_PPM * 1e-6)
        held = False
        if f.converged:
            # a converged clock's rate wanders by ppm, not by thousands: a refit that jumps
            # further (a backlog read as a tooth bottom) keeps the slope it had
            good = self._good_slope
            if good is None or abs(slope - good) <= SLOPE_JUMP_PPM * 1e-6:
                self._good_slope = slope
            else:
                slope, held = good, True
                self.held += 1
        else:
            self._good_slope = None
        self._line_on_edge = not (abs(slope - 1.0) > dev or held)
        if not self._line_on_edge:
            slope = min(max(slope, 1.0 - dev), 1.0 + dev)
            ax, ay = f.lowest(slope)
            line = (slope, float(ax), float(ay))
        else:
            line = (slope, float(f.ref_device_ns), float(f.map(f.ref_device_ns)))
        self._line_at, self._line_cache = key, line
        return line

    def _carrying(self) -> tuple[float, float, int] | None:
        """The rate carried over a break (``cut``), while the fit after it is the weaker."""
        car = self._carried
        if car is not None and (self.fit.converged or self.fit.window_span_ns >= car[2]):
            self._carried = car = None
            self.fit.key_slope = None
        return car

    @property
    def young(self) -> bool:
        """A one-way window too short for its slope: under ``YOUNG_SPAN_NS``, and its
        supports (the 5th-lowest bin, doubled) loose enough to tilt it by more than the
        prior allows (3 x that over the span). Anchored packets are tight at once."""
        f = self.fit
        span = f.window_span_ns
        if self.kind == "rate" or span >= YOUNG_SPAN_NS:
            return False
        return span <= 0 or 6.0 * f.tight_ns / span > PRIOR_DRIFT_PPM * 1e-6

    def _envelope(self, key: float) -> float:
        """The fitted lower envelope at ``key``: the arrival of an unhindered notification."""
        slope, ax, ay = self._line()
        return ay + slope * (self._x(key) - ax)

    def _above(self, obs: Iterable[tuple[int, int, int]]) -> list[float]:
        """How far each observation (key, arrival, n) arrived above the envelope at its
        newest sample: ``arrival - _envelope(newest key)``, the line taken once."""
        slope, ax, ay = self._line()
        if self.kind == "rate":
            p = self.nominal_period_ns
            return [a - (ay + slope * ((k + m - 1) * p - ax)) for k, a, m in obs]
        return [a - (ay + slope * (k - ax)) for k, a, _m in obs]

    @property
    def ready(self) -> bool:
        return self.fit.ready

    @property
    def converged(self) -> bool:
        tw = self._twoway
        return bool(self.fit.converged or (tw is not None and tw.converged))

    def _bins(self) -> int:
        f = self.fit
        return f.bins + (1 if f.ready else 0)
