"""One band's time mapper: clock observations in, monotonic host times with an honest bound out.

    clock = BandClock("device", Latency(1_650_000, 1_350_000, "profile"), period_ns=1e9 / 52)
    clock.observe_device(device_ns, arrival_ns)   # a sample stamped device_ns had arrived by then
    clock.observe_index(arrival_ns, n, index)      # kind "rate": samples index.. came in one packet
    clock.observe_exchange(send_ns, rx_dev_ns, recv_ns, tx_dev_ns)   # a two-way time reply
    t = clock.place(key, n, period_ns)             # ChunkTime: host t0, spacing, bound and parts
    clock.peek(key, n, period_ns)                  # the same, committing nothing (gap spans)
    clock.state() -> the batch's "clock" dict ; clock.snapshot() -> the segment's fit

``key`` is the device time (ns) of a chunk's first sample for kinds "device" and "two-way",
its sample number for kind "rate" (bands with no device clock). Call ``place`` once per chunk,
in sample order: it is what keeps host time monotonic.

**The bound and its parts.** Every placement says how far the host time may be from the truth:

- ``latency_ns``: the uncertainty of the transport latency. A one-way fit (the lower envelope
  of arrival vs device time, agent/clock/oneway.py) sits the constant latency above the
  truth and cannot observe it; the mapper subtracts the configured ``Latency.ns`` and counts
  ``Latency.uncertainty_ns`` in the bound. It is never taken from a simulator. A two-way
  exchange (the open profile's time request) observes it instead: the envelope at the event
  a request went on air in, less the request's send time, is the sum of the notification
  and write latencies (plus the least wait); the notification latency is half of it, give
  or take half their difference (``asymmetry``: at most half their sum) and half the wait
  still possible (judged from how the sums spread). Where that range and the configured one
  overlap, the latency is in both: the latency part is half of what is left.
- ``fit_ns``: how far the envelope may be above the floor it estimates (the wait for a
  connection event, jitter) and what its slope error adds at the newest sample. While the
  fit has few bins it is ``wait_prior_ns / bins`` (the largest plausible wait, shrinking as
  bins come); then ``TAIL_FACTOR`` x the 10th-lowest bin residual (a wait plus jitter: the
  lowest of N is further from the floor than a uniform wait's). A band with no clock adds its
  floor, one sample period, until its rate fit has converged (a phase-locked link never does:
  arrival times cannot place its samples closer, agent/clock/rate.py). The slope error adds
  what the bins behind the line's anchor allow it to tilt, at most what supports at either end
  of the window, each up to that excess high, allow (``_slope_part``).
- ``quantisation_ns``: the resolution of the band's timestamps.
- ``slew_ns``: how far the output is still from the fit (below).

**Monotonic time.** The output never steps: each chunk's first sample is placed where the
previous output predicts, corrected towards the fit by at most ``slew_ppm`` of the elapsed
device time (``slew_fast_ppm`` until the fit has converged), so host time strictly increases
in sample order across fit updates, restarts, reconnections and segment rolls. What is left
to absorb is the recorded slew, and it is part of the bound.

**Physically possible fits only.** A device clock runs within ``max_drift_ppm`` (hundreds of
ppm) of the host, a sample clock of a band with no device clock within ``max_rate_error``.
Start-up frames whose timestamps have not settled (Polar's first frames jump) break that:
an observation ``jump_ns`` below the envelope, or a whole ``settle_ns`` of them above it,
restarts the fit from the recent observations; a slope outside the physical range is
clamped and counted, never used. Until the restarted fit has bins again, the bound is wide.
A young window (under 60 s) has its slope held within ``PRIOR_DRIFT_PPM`` of 1; a converged
fit's slope that jumps by over ``SLOPE_JUMP_PPM`` in one refit is not believed (``_line``).
Before the fit settles, no sample is placed after its arrival allows and a chunk's spacing is
kept within ``max_rate_error`` of nominal.

**Phase-locked waits.** A band with a device clock whose packets all wait the same time for
their connection event shows no spread of waits; its lowest is not zero. Such waits (spread
under ``LOCK_SPREAD_NS``, per-second lows unmoved over the window) put one packet period into
the fit part (``lock_floor_ns``).
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

from agent.clock.oneway import TAIL_RANK, OneWayFit
from agent.clock.rate import BURST_GAP_NS, RateFit
from agent.clock.twoway import TwoWayFit

KINDS = ("device", "rate", "two-way")

SLEW_PPM = 500.0
"""Largest rate at which a converged fit's change is slewed into the output."""
SLEW_FAST_PPM = 5000.0
"""The same before convergence (0.5 %: the sample spacing stays within 0.5 % of the fit)."""
SLEW_START_PPM = 50_000.0
"""The same while the fit has not settled (5 %: a start-up placement a wait off is absorbed
within a second; sample spacing stays within 5 % of the fit meanwhile)."""
MAX_DRIFT_PPM = 500.0
"""A band's clock vs the host's: crystals are tens of ppm; sleep clocks up to 500."""
MAX_RATE_ERROR = 0.10
"""A band with no device clock: its sample clock (often an RC oscillator) within 10 %."""
TWO_WAY_ASYMMETRY = 0.5
"""Two-way exchange: the write and the notification cross the same stack (D-Bus, BlueZ, the
kernel, HCI, the controller) in opposite directions; their constant latencies are taken to
differ by at most this share of their sum (one may be three times the other). Two-way time
transfer cannot observe the difference: this assumption is what the latency part holds."""
RTT_WINDOW = 1024
"""Two-way exchanges kept to measure the latency from (about 50 s at 20 a second)."""
YOUNG_SPAN_NS = 60_000_000_000
"""A one-way window shorter than this has its slope held near 1 (``_line``)."""
PRIOR_DRIFT_PPM = 100.0
"""How far from 1 a young window's slope may be used (crystals: tens of ppm each side)."""
SLOPE_JUMP_PPM = 100.0
"""How far a converged fit's slope may move in one refit and still be believed."""
LOCAL_LOW_NS = 30_000_000_000
"""The recent stretch whose lowest observation bounds how far the envelope may be below the
floor at the newest samples (``_local_low``)."""
REPLAY_NS = 2_000_000_000
"""Observations a fit restarted for an impossible rate starts again from."""
LOCK_SPREAD_NS = 6_000_000
"""Waits that slide over even the shortest BLE interval (7.5 ms) spread wider than this."""
LOCK_BIN_SPREAD_NS = 3_000_000
"""... and their per-second lowest residuals move by more than this over the window."""
BLE_STEP_NS = 1_250_000
"""BLE connection intervals are whole multiples of this."""
WAIT_WITNESSES = 4
"""Exchanges behind the least one on the event-grid circle that bound its lateness."""
SUSPECT_NS = 1_500_000_000
"""A young fit's chunks are placed by arrival when every observation of this long is far
(``jump_ns``) from it."""
ARRIVAL_WINDOW_NS = 6_000_000_000
"""Placed by arrival, a sample is timed by the earliest arrival of this long, counted back
by sample numbers at the nominal rate (a backlog delays arrivals; it cannot hasten one)."""
SETTLE_BINS = 6
"""Closed bins (seconds) a fit needs, since its last restart, before it places samples."""
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


@dataclass(frozen=True, slots=True)
class Latency:
    """The transport latency the mapper assumes: ``ns`` +- ``uncertainty_ns``.

    ``source``: where it comes from ("profile" default, "config" for a per-band setting,
    "calibrated" for a measurement such as a tap seen by the head IMU and the band)."""

    ns: int
    uncertainty_ns: int
    source: str = "profile"

    def __post_init__(self) -> None:
        if self.ns < 0 or self.uncertainty_ns < 0:
            raise ValueError("latency and its uncertainty are >= 0")


@dataclass(frozen=True, slots=True)
class ChunkTime:
    """Where one chunk's samples are on the host timeline, and how sure that is."""

    t0_ns: int
    """Host time of the first sample."""
    period_ns: float
    """Host spacing of the samples."""
    fit_ns: int
    latency_ns: int
    quantisation_ns: int
    slew_ns: int
    """|output - fit| at the first sample: the part of a fit change not yet slewed in."""
    source: str
    """"one-way", "rate", "two-way" or "arrival"."""

    @property
    def bound_ns(self) -> int:
        """|host time - truth| <= this, for each sample of the chunk."""
        return self.fit_ns + self.latency_ns + self.quantisation_ns + self.slew_ns


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
    ln: float
    """The latency subtracted from the envelope."""
    lat_part: int
    source: str


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _serial(method: Callable[Concatenate[BandClock, _P], _R]
            ) -> Callable[Concatenate[BandClock, _P], _R]:
    """One thread at a time in a mapper: the writer observes and places, and the open
    profile's time-request aimer peeks from the BLE loop. A peek must never read, or cache,
    an observation half done. The lock is uncontended almost always."""
    def serial(self: BandClock, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._lock:
            return method(self, *args, **kwargs)
    serial.__name__, serial.__qualname__ = method.__name__, method.__qualname__
    serial.__doc__ = method.__doc__
    return serial


class BandClock:
    def __init__(self, kind: str, latency: Latency, *, period_ns: float,
                 quantisation_ns: int = 0, wait_prior_ns: int = WAIT_PRIOR_NS,
                 slew_ppm: float = SLEW_PPM, slew_fast_ppm: float = SLEW_FAST_PPM,
                 max_drift_ppm: float = MAX_DRIFT_PPM, max_rate_error: float = MAX_RATE_ERROR,
                 jump_ns: int = 150_000_000, settle_ns: int = 8_000_000_000,
                 asymmetry: float = TWO_WAY_ASYMMETRY, **fit_args: Any) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind is one of {', '.join(KINDS)}")
        self._lock = threading.RLock()
        self.kind = kind
        self.latency = latency
        self.nominal_period_ns = float(period_ns)
        self.quantisation_ns = int(quantisation_ns)
        self.wait_prior_ns = int(wait_prior_ns)
        self.slew_ppm = slew_ppm
        self.slew_fast_ppm = slew_fast_ppm
        self.max_slope_dev = (max_rate_error if kind == "rate" else max_drift_ppm * 1e-6)
        self.jump_ns = int(jump_ns)
        self.asymmetry = float(asymmetry)
        self.settle_ns = int(settle_ns)
        self._fit_args = fit_args
        self._ver = 0
        """Bumped by whatever changes what ``_now`` and ``_gates`` are computed from, as it
        starts and again when it is done, so a reading taken while a change is half done is
        cached under a version that is already gone. Other threads (the time requests' aimer
        peeks from the BLE loop) cannot read mid-change at all: ``_serial`` holds the
        mapper."""
        self._now_cache: _FitNow | None = None
        self._gates_cache: tuple[int, tuple[bool, bool, bool]] = (-1, (False, False, False))
        self._rate: RateFit | None = None
        self._oneway: OneWayFit | None = None
        self._twoway: TwoWayFit | None = None
        self._new_fit()
        self._recent: deque[tuple[int, int, int]] = deque()  # key, arrival, n
        self._res: deque[tuple[int, float]] = deque()  # arrival, residual: last SUSPECT_NS
        self._arr: deque[tuple[int, int]] = deque()  # sample index, arrival: recent
        self.restarts = 0
        """Fit restarts: start-up timestamps that jumped, a device clock that went back."""
        self.clamped = 0
        """Placements whose fitted slope was outside the physical range (clamped)."""
        self.exchanges = 0
        self._xch: deque[tuple[int, int]] = deque(maxlen=RTT_WINDOW)  # device rx, send
        self._lat_cache: tuple[tuple[int, int, int], tuple[float, float] | None] = (
            (-1, -1, -1), None)
        self._spread_at: tuple[int, int] = (-1, -1)
        self._checked = -1
        self._spread_cache = 0.0
        self._last: tuple[float, int, float, int, str] | None = None
        """The last sample placed: key, host ns, host spacing, fit epoch, source."""
        self._last_slew_ns = 0
        self.max_slew_seen_ns = 0
        self._committed: dict[tuple[float, int], ChunkTime] = {}  # the last placements
        self._line_at: tuple[int, int, int | bool] = (-1, -1, False)
        self._line_cache = (1.0, 0.0, 0.0)
        self._good_slope: float | None = None
        self._line_on_edge = False
        self._carried: tuple[float, float, int] | None = None
        """Kind "rate": (slope, its uncertainty, window span) of the fit before a break, used
        until the fit after it spans as much or has converged (``cut``)."""
        """Whether the line is drawn through the fit's two supports (``edge_ns`` apart)."""
        self._bin_spread_at = (-1, -1)
        self._bin_spread_cache = 0.0
        self._low_at = (-1, -1)
        self._low_cache: list[tuple[float, float]] = []
        self._tilt_at: tuple[int, int, int] = (-1, -1, -1)
        self._tilt_cache = (math.inf, math.inf)
        self.held = 0
        """Refits of a converged fit whose slope jumped by over SLOPE_JUMP_PPM (not used)."""

    # ---------------------------------------------------------------- fits
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
        key = (f.refits, self._epoch, f.bins == 0 and f.observations)
        if self._line_at == key:
            return self._line_cache
        slope = f.slope
        dev = self.max_slope_dev
        car = self._carrying()
        if car is not None:
            # the band's rate from before the break: only the offset is new
            ax, ay = f.lowest(car[0])
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

    # ---------------------------------------------------------------- observations
    @_serial
    def observe_device(self, device_ns: int, arrival_ns: int,
                       index: int | None = None) -> None:
        """A sample stamped ``device_ns`` on the band's clock had arrived by ``arrival_ns``
        (the newest sample of a notification, or the instant the band says it sent it);
        ``index``: that sample's running number (used while timestamps are not trusted)."""
        if self.kind == "rate":
            raise ValueError("a band with no device clock is observed by sample number")
        if index is not None:
            self._note_arrival(index, arrival_ns)
        self._observe(device_ns, arrival_ns, 1)
        self._ver += 1

    def _note_arrival(self, index: int, arrival_ns: int) -> None:
        arr = self._arr
        arr.append((index, arrival_ns))
        while arr and arr[0][1] < arrival_ns - ARRIVAL_WINDOW_NS:
            arr.popleft()

    @_serial
    def observe_index(self, arrival_ns: int, n: int, index: int) -> None:
        """Kind "rate": samples ``index .. index + n - 1`` came in one notification."""
        if self.kind != "rate":
            raise ValueError("observe_index is for bands with no device clock")
        self._note_arrival(index + n - 1, arrival_ns)
        self._observe(index, arrival_ns, n)
        self._ver += 1

    def _add(self, key: int, arrival_ns: int, n: int) -> None:
        if self._rate is not None:
            self._rate.add(arrival_ns, n, key)
        else:
            self.fit.add(key, arrival_ns)

    def _observe(self, key: int, arrival_ns: int, n: int) -> None:
        self._ver += 1
        f = self.fit
        restarts = f.restarts
        if f.ready:
            # newest sample of the notification vs the envelope
            top = key + n - 1 if self.kind == "rate" else key
            r = arrival_ns - self._envelope(top)
            res = self._res
            res.append((arrival_ns, r))
            while res and res[0][0] < arrival_ns - SUSPECT_NS:
                res.popleft()
            if r < -self.jump_ns:  # far below: what came before was stamped wrong
                self._restart([])
        self._add(key, arrival_ns, n)
        if self.fit.restarts != restarts:
            self.restarts += 1  # the device clock went back (OneWayFit restarted itself)
            self._recent.clear()
        rec = self._recent
        rec.append((key, arrival_ns, n))
        while rec and rec[0][1] < arrival_ns - self.settle_ns:
            rec.popleft()
        f = self.fit
        if self._checked != f.refits and len(rec) >= 4 \
                and arrival_ns - rec[0][1] >= self.settle_ns * 3 // 4:
            self._checked = f.refits  # once per closed bin
            low = min(self._above(rec))
            if low > self.jump_ns:  # a whole settle window above: the envelope is stale
                self._restart(list(rec))
                return
        if self._bins() >= SETTLE_BINS and not self._plausible():
            # timestamps that run at an impossible rate (start-up frames): start again from
            # the last REPLAY_NS of observations (older ones may still be unsettled: a
            # transient's last frames lie below the envelope and would lower it)
            half = arrival_ns - REPLAY_NS
            self._restart([o for o in rec if o[1] >= half])

    def _plausible(self) -> bool:
        """Whether the fitted slope is one a real clock can have, given the noise a slope
        over the window's span can carry (waits of up to ``wait_prior_ns`` at each end)."""
        f = self.fit
        span = max(1, f.window_span_ns)
        tol = self.max_slope_dev + 2 * self.wait_prior_ns / span
        return abs(f.slope - 1.0) <= tol

    def _suspect(self) -> bool:
        """Whether this chunk's timestamps cannot be trusted: the fit runs at an impossible
        rate, or, while it is young, the chunk is further from it than any wait explains."""
        f = self.fit
        if f.bins >= 2 and not self._plausible():
            return True
        if self._bins() >= SETTLE_BINS:
            return False  # settled: a late chunk is a backlog, not a bad timestamp
        # every recent observation far from the fit (one late packet is a retransmission,
        # a backlog drains within a second or so; timestamps that lag or lead stay off)
        res = self._res
        return bool(res) and (min(r for _a, r in res) > self.jump_ns
                              or max(r for _a, r in res) < -self.jump_ns)

    @property
    def settled(self) -> bool:
        """The fit has enough bins since its last restart, at a physically possible rate:
        until then chunks are placed by their arrival."""
        return self._bins() >= SETTLE_BINS and self._plausible()

    def _restart(self, replay: list[tuple[int, int, int]]) -> None:
        self._ver += 1
        self.restarts += 1
        self._checked = -1
        self._new_fit()
        self._recent.clear()
        for k, a, m in replay:
            self._add(k, a, m)
            self._recent.append((k, a, m))

    @_serial
    def cut(self) -> None:
        """The stream broke (a lost link, dropped notifications). A band with a device clock
        keeps its fit: that clock ran on. A band with none is numbered by arrivals, and what
        it took meanwhile is only an estimate, so the numbers after the break are not those
        of the fit's line: it starts again from the arrivals after (placed by arrival, widely
        bounded, until it settles), and host time stays monotonic (``place``). The band's
        rate does not change at a break: the slope of a settled fit is carried over, with
        its uncertainty (its supports at either end each up to the excess high: 3 excess /
        span), and lays the line through the arrivals after until the new fit spans as much
        or has converged (a band 3 % off its nominal rate otherwise ran 3 % off for the
        first second after every break: up to 29 ms)."""
        if self.kind != "rate":
            return
        f = self.fit
        carried = self._carrying()
        if self.settled and f.window_span_ns > 0 and (
                carried is None or f.window_span_ns >= carried[2]):
            span = f.window_span_ns
            carried = (self._line()[0], 3.0 * self._fit_part() / span, span)
        self._restart([])
        self._arr.clear()
        self._res.clear()
        self._carried = carried
        self._ver += 1

    @_serial
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
        sums = sorted(s for s in (ay + slope * (rx - ax) - send for rx, send in self._xch)
                      if s > 0)
        out: tuple[float, float] | None = None
        if sums:
            out = (sums[0], self._least_wait(sums))
        self._lat_cache = (key, out)
        return out

    def _interval_ns(self) -> float | None:
        """The connection interval, from the anchors the band stamps (each an event: their
        differences are whole intervals, on BLE's 1.25 ms grid): their greatest common
        divisor. None until two anchors differ."""
        keys = [k for k, _a, _m in self._recent]
        g = 0
        for a, b in itertools.pairwise(keys):
            steps = round((b - a) / BLE_STEP_NS)
            if steps > 0:
                g = math.gcd(g, steps)
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
        waits are then counted in full. The whole S while there are too few."""
        low = sums[0]
        iv = self._interval_ns()
        if iv is None or len(sums) <= WAIT_WITNESSES:
            return low
        m = low % iv
        back = sorted((m - s % iv) % iv for s in sums[1:])
        return min(low, back[WAIT_WITNESSES - 1])

    # ---------------------------------------------------------------- results
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
        # a rate fit's slope is the chord of its tooth bottoms (agent/clock/rate.py), each
        # up to its own wait high: its bound holds what its newest observations show
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
            settled_bins=settled_bins,
            ln=ln, lat_part=lat_part, source=source)

    def _target(self, key: float, period_ns: float | None) -> tuple[float, float, int, int, str]:
        """(host t0, spacing, fit part, latency part, source) by the best fit now."""
        now = self._now()
        if now.clamped:
            self.clamped += 1
        slope = now.slope
        if self.kind == "rate":
            spacing = slope * self.nominal_period_ns
        else:
            spacing = (period_ns or self.nominal_period_ns) * slope
        x = self._x(key)
        env = now.ay + slope * (x - now.ax)
        t0 = env - now.ln - now.ex_mid
        # what a slope error adds at ``key`` (``_slope_part``: the edge's, at most what the
        # bins behind the anchor allow; a young window's held slope, the physical range)
        excess = now.excess
        sl = self._slope_part(key, excess) if now.slope_span else 0.0
        if now.lock:
            excess += now.lock
        # the envelope may be above the floor by the excess and the tilt the bins behind
        # the anchor allow; below it, by no more than the recent observations rise above
        # the line (the floor is under every observation) and the tilt they allow beyond
        below = self._local_low(key, excess) if now.settled_bins else sl
        fit_part = round(max(excess - now.ex_mid + sl, now.ex_mid + below))
        return t0, spacing, fit_part, now.lat_part, now.source

    def _by_arrival(self, n: int, arrival_ns: int,
                    index: int | None) -> tuple[float, float, int, int, str]:
        """No trusted fit: a sample was taken before its notification arrived, at most the
        largest plausible wait before; with sample numbers, the earliest recent arrival
        counted back at the nominal rate bounds it tighter (a band's rate is within
        ``max_rate_error`` of nominal, which the bound allows for)."""
        spacing = self.nominal_period_ns
        last = float(arrival_ns)
        lever = 0.0
        if index is not None:
            top = index + n - 1
            for k, a in self._arr:
                if abs(top - k) * spacing <= ARRIVAL_WINDOW_NS:
                    cand = a + (top - k) * spacing
                    if cand < last:
                        last, lever = cand, abs(top - k) * spacing
        t0 = last - self.latency.ns - (n - 1) * spacing
        fit_part = self.wait_prior_ns + round(((n - 1) * spacing + lever) * MAX_RATE_ERROR)
        return t0, spacing, fit_part, self.latency.uncertainty_ns, "arrival"

    def _placed(self, key: float, n: int, period_ns: float | None, arrival_ns: int | None,
                commit: bool, index: int | None = None) -> ChunkTime:
        if not self.fit.ready:
            raise ValueError("no observations yet")
        suspect, settled, converged = self._gates()
        if arrival_ns is not None and suspect:
            t0, spacing, fit_part, lat_part, source = self._by_arrival(n, arrival_ns, index)
        else:
            t0, spacing, fit_part, lat_part, source = self._target(key, period_ns)
            if self.kind == "device" and arrival_ns is not None and not settled:
                # a fit that has not settled may rest on timestamps that have not either
                # (start-up frames): no sample is placed after its chunk's arrival allows
                # (a backlog delays an arrival, it cannot hasten one)
                hi = arrival_ns - (n - 1) * self.nominal_period_ns * (1 - MAX_RATE_ERROR) \
                    - self.latency.ns + self.latency.uncertainty_ns
                t0 = min(t0, hi)
                # nor is its spacing trusted further than a sample clock's error from nominal
                nom = self.nominal_period_ns
                if abs(spacing / nom - 1.0) > MAX_RATE_ERROR:
                    spacing = nom
                fit_part += round((n - 1) * nom * MAX_RATE_ERROR)
        out = t0
        last = self._last
        rate = self._slew_ppm(converged, settled) * 1e-6
        if converged and self._last_slew_ns > fit_part:
            # the output is further from a converged fit than the fit's own uncertainty (the
            # fit moved as it converged): absorbed at the fast rate, not over many seconds
            rate = self.slew_fast_ppm * 1e-6
        if last is not None:
            lkey, lh, _lsp, epoch, lsource = last
            dx = self._x(key) - self._x(lkey)
            if epoch == self._epoch and lsource == source and source != "arrival" and dx > 0:
                step = spacing / (self.nominal_period_ns if self.kind == "rate"
                                  else (period_ns or self.nominal_period_ns))
                pred = lh + dx * step  # where the previous output puts this sample
                room = rate * dx
                out = pred + min(max(t0 - pred, -room), room)
            else:
                # a new fit, or placed by arrival: nothing to predict from; never step back,
                # and slew what the new placement is behind by from here on
                out = max(t0, lh + spacing * (1.0 - rate))
        slew = int(abs(out - t0) + 0.5)
        # within the chunk, the spacing is slewed too (by at most the rate) towards the fit
        span = (n - 1) * spacing
        sigma = min(max((t0 - out) / span, -rate), rate) if span > 0 else 0.0
        out_spacing = spacing * (1.0 + sigma)
        ct = ChunkTime(round(out), out_spacing, fit_part, lat_part, self.quantisation_ns,
                       slew, source)
        if commit:
            self._committed[(key, n)] = ct
            if len(self._committed) > 64:
                del self._committed[next(iter(self._committed))]
            self._last = (key + (n - 1) * (1 if self.kind == "rate" else
                                           (period_ns or self.nominal_period_ns)),
                          round(out + (n - 1) * out_spacing), spacing, self._epoch, source)
            self._last_slew_ns = slew
            self.max_slew_seen_ns = max(self.max_slew_seen_ns, slew)
        return ct

    @_serial
    def place(self, key: float, n: int = 1, period_ns: float | None = None,
              arrival_ns: int | None = None, index: int | None = None) -> ChunkTime:
        """Host times of a chunk of ``n`` samples from ``key`` (its first sample's device ns,
        or sample number for kind "rate"), ``period_ns`` apart on the device clock, that
        arrived at ``arrival_ns`` (used while the fit has not settled). Call once per chunk,
        in sample order. ``index``: the first sample's running number."""
        return self._placed(key, n, period_ns, arrival_ns, True,
                            index if index is not None else
                            (round(key) if self.kind == "rate" else None))

    @_serial
    def peek(self, key: float, n: int = 1, period_ns: float | None = None,
             arrival_ns: int | None = None, index: int | None = None) -> ChunkTime:
        """``place`` without committing (e.g. to span a gap); a chunk placed already gets
        the placement it was given."""
        done = self._committed.get((key, n))
        if done is not None:
            return done
        return self._placed(key, n, period_ns, arrival_ns, False,
                            index if index is not None else
                            (round(key) if self.kind == "rate" else None))

    @property
    def slew_rate_ppm(self) -> float:
        """The slew rate now: ``slew_ppm`` once converged (``slew_fast_ppm`` while the output
        is further from the fit than the fit part of its bound), ``slew_fast_ppm`` before, and
        ``SLEW_START_PPM`` while the fit has not settled (the first seconds, and after a
        restart: a first placement may be a whole wait off, and what is not yet slewed in
        is in every bound until it is)."""
        return self._slew_ppm(self.converged, self.settled)

    def _slew_ppm(self, converged: bool, settled: bool) -> float:
        if converged:
            return self.slew_ppm
        return self.slew_fast_ppm if settled else max(self.slew_fast_ppm, SLEW_START_PPM)

    @_serial
    def state(self) -> dict[str, Any]:
        """What a batch records about the mapping (see agent/wrist/imu_batch.py)."""
        f = self.fit
        return {"converged": self.converged, "drift_ppm": f.drift_ppm,
                "latency_ns": self.latency.ns,
                "latency_uncertainty_ns": self.latency.uncertainty_ns,
                "latency": self.latency.source, "kind": self.kind,
                "slew_max_ppm": self.slew_rate_ppm, "restarts": self.restarts}

    @_serial
    def snapshot(self) -> dict[str, Any]:
        """The fit (and the two-way fit, if any), JSON-ready, for the segment metadata."""
        snap = self._rate.snapshot() if self._rate is not None else self.fit.snapshot()
        snap.update(latency_ns=self.latency.ns,
                    latency_uncertainty_ns=self.latency.uncertainty_ns,
                    latency=self.latency.source,
                    mapping=snap["mapping"].replace("- latency_ns", "- latency_ns (assumed)"),
                    error_bound_ns=self._fit_part() + self.latency.uncertainty_ns
                    + self.quantisation_ns,
                    slew={"max_ppm": self.slew_rate_ppm, "last_ns": self._last_slew_ns,
                          "max_ns": self.max_slew_seen_ns},
                    max_slope_deviation=self.max_slope_dev, clamped=self.clamped,
                    slope_jumps_held=self.held,
                    mapper_restarts=self.restarts)
        if self._twoway is not None:
            snap["two_way"] = self._twoway.snapshot()
        return snap


__all__ = ["BURST_GAP_NS", "BandClock", "ChunkTime", "Latency"]
