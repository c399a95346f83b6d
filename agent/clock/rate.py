"""Timing for bands with no device clock and no counter (WitMotion): host time by sample number.

    fit = RateFit(nominal_rate_hz, latency_ns)     # fed in arrival order
    fit.add(arrival_ns, n, index)                  # samples index..index+n-1 came in one packet
    fit.map_index(k) -> host ns of sample k ; fit.rate_hz ; fit.converged ; fit.snapshot()
    num = ArrivalNumberer(nominal_rate_hz)          # numbers samples, finds lost notifications
    num.push(arrival_ns, n, item) -> [(item, index, lost_before)]   # held back hold_bursts
    num.flush() -> the rest

What an arrival says. Sample ``k`` is taken at ``t_k = c + k P`` (host ns). The band queues
it and sends it at the next BLE connection event ``ev`` (or a later one), so its notification
arrives at ``a = ev + L + j * air + jitter``, where ``j`` is the packet's place in the event's
burst. The newest sample of a burst is the one whose wait ``ev - t_k`` is smallest
(``0 <= wait < P`` for a burst that emptied the queue), but it is also the *last* packet of
the burst, so its own arrival carries the burst's whole air time. The previous version fitted
``(k, a)`` and was therefore late by ``(packets per event - 1) * air`` (1.2 ms at 100 Hz on a
40 ms interval). Here every packet of a burst is observed with the *first* arrival of its
burst (arrivals closer than ``burst_gap_ns`` are one burst: splitting a burst is harmless,
merging two events is not, so the gap is kept well under the 7.5 ms minimum interval).

The lower envelope of ``(k, burst start)`` then lies ``L`` + the smallest wait above the true
line. The wait of the burst's newest sample is a sawtooth: it slides by the rate mismatch
``delta`` between the sample grid and the event grid (``I mod P`` per event), and jumps by the
lattice step ``g = gcd(I, P)`` when a sample crosses an event. Two consequences:

* Slope. A window holding one tooth only is equally well supported by the tooth's ramp (the
  event grid's slope, wrong by ``delta``, 50 ppm here). The plain hull picked that ramp about
  half the time: the 11 ms p99 of the previous bench (a 50 ppm slope error over a 150 s lever
  arm, 7.5 ms, plus the 1.2 ms air-time bias, plus the ramp ending a whole tooth ``P`` high).
  ``RateFit`` runs the one-way fit in sawtooth mode (agent.clock.oneway): the slope comes from
  the tooth bottoms, the window is 15 min, and it is converged only after two bottoms.
* Offset: the physical bound. Arrival times alone constrain sample ``k`` to
  ``t_k <= ev - L``; how far below is the wait, which only the sliding phase reveals. After a
  time ``W`` the smallest wait seen is ``max(0, g - |delta| W)`` (up to jitter). With
  ``delta = 50 ppm`` and ``g = P = 10 ms`` a bottom comes every 200 s and the error reaches
  the envelope's noise (tens of µs). With a band crystal within 1 ppm of the host's and an
  interval that is a multiple of the sample period (``g = P``), nothing slides: the error
  stays anywhere in ``[0, P)`` and **no host-arrival-only method can do better than P** (10 ms
  at 100 Hz). The fit then never reports converged and its error bound stays ``P``
  (bench/bench_clock.py prints the measured case).

Lost notifications. There is no counter, so a lost notification shifts the numbering: every
later sample is called one earlier than it is, and its residual against the rate fit steps
up by ``P``. ``ArrivalNumberer`` holds ``hold_bursts`` bursts back, and before releasing the
oldest compares the lowest residual of the next ``hold_bursts`` bursts with the lowest of the
last ones released: a step of at least 3/4 ``P`` is ``round(step / P)`` lost samples, given to
the chunk as ``lost_before`` (a gap in the segment) and skipped in the numbering. A lattice
step (``g <= P/2``) can never look like that. With ``g = P`` (phase locked) a sample
crossing an event *is* a step of ``P`` indistinguishable by arrival times from a loss; then a
step counts as a loss if the link was seen wrapping *down* (the phase slides up, so its wraps
never step up), or once the fit is converged and the post-step residual exceeds ``1.1 P``
above the envelope (a wrap stays below ``P``); otherwise it is counted in ``ambiguous`` and
not as a loss. Judging starts after 3 s of data (the fit needs a slope). A notification lost
inside a burst is reported before the burst's first sample: arrivals cannot place it closer.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from agent.clock.oneway import DEFAULT_LATENCY_NS, OneWayFit

BURST_GAP_NS = 2_000_000
"""Arrivals closer than this are one connection event's burst (the minimum interval is
7.5 ms; a burst of 10 notifications lasts ~4 ms)."""

T = TypeVar("T")


class RateFit:
    """Sample-rate fit for bands with no device clock: host time of sample ``k``.

    ``add(arrival_ns, n, index)`` numbers the ``n`` samples of one notification; ``map_index(k)``
    gives the host time of sample ``k``. The rate is fitted from arrivals (sawtooth-aware lower
    envelope of burst start vs ``k`` nominal periods, see the module doc), never assumed.
    ``skip(n)`` advances the counter over samples known lost (e.g. across a reconnect).
    """

    def __init__(self, nominal_rate_hz: float, latency_ns: int = DEFAULT_LATENCY_NS, *,
                 burst_gap_ns: int = BURST_GAP_NS, **fit_args: Any) -> None:
        self.nominal_period_ns = 1e9 / nominal_rate_hz
        fit_args.setdefault("jump_ns", min(500_000, round(self.nominal_period_ns / 8)))
        fit_args.setdefault("window_bins", 900)
        fit_args.setdefault("converge_span_ns", 60_000_000_000)
        fit_args.setdefault("unconverged_bound_ns", max(50_000_000, round(self.nominal_period_ns)))
        self.fit = OneWayFit(latency_ns, **fit_args)
        self.burst_gap_ns = burst_gap_ns
        self.next_index = 0
        self._burst_start = 0
        self._last_arrival: int | None = None

    def add(self, arrival_ns: int, n: int = 1, index: int | None = None) -> int:
        """Samples ``index .. index+n-1`` (default: the next ones) arrived at ``arrival_ns``."""
        k = self.next_index if index is None else index
        self.next_index = k + n
        last = self._last_arrival
        if last is None or not 0 <= arrival_ns - last <= self.burst_gap_ns:
            self._burst_start = arrival_ns
        self._last_arrival = arrival_ns
        self.fit.add(round((k + n - 1) * self.nominal_period_ns), self._burst_start)
        return k

    def skip(self, n: int) -> None:
        self.next_index += n

    def map_index(self, k: int) -> int:
        return self.fit.map(round(k * self.nominal_period_ns))

    def residual(self, k: int, burst_start_ns: int) -> int:
        """How far above the envelope a burst starting at ``burst_start_ns`` whose newest
        sample is ``k`` lies: the wait (+ jitter) if ``k`` is right, + P per sample miscounted."""
        return burst_start_ns - self.map_index(k) - self.fit.latency_ns

    @property
    def rate_hz(self) -> float:
        return 1e9 / (self.fit.slope * self.nominal_period_ns)

    @property
    def period_ns(self) -> float:
        return self.fit.slope * self.nominal_period_ns

    @property
    def converged(self) -> bool:
        return self.fit.converged

    def snapshot(self) -> dict[str, Any]:
        snap = self.fit.snapshot()
        snap.update(method="rate fit from arrivals (sawtooth-aware lower envelope of burst "
                           "start vs sample number, no device clock)",
                    mapping="host_ns = ref_host_ns + slope * (k * nominal_period_ns - "
                            "ref_device_ns) - latency_ns, k = sample index",
                    nominal_period_ns=self.nominal_period_ns, rate_hz=self.rate_hz,
                    samples=self.next_index, burst_gap_ns=self.burst_gap_ns)
        return snap


@dataclass(slots=True)
class _Burst(Generic[T]):
    start: int
    last: int
    n: int = 0
    items: list[tuple[int, int, T]] = field(default_factory=list)  # arrival, n, item


class ArrivalNumberer(Generic[T]):
    """Sample numbers for a band with no counter, with lost notifications found from arrivals.

    ``push`` returns the packets it releases, oldest first, as ``(item, index, lost_before)``;
    a packet is held until ``hold_bursts`` later bursts have arrived (0: no hold, no loss
    detection). Call ``flush()`` when the stream ends.
    """

    def __init__(self, nominal_rate_hz: float, *, hold_bursts: int = 16,
                 burst_gap_ns: int = BURST_GAP_NS, **fit_args: Any) -> None:
        self.fit = RateFit(nominal_rate_hz, 0, burst_gap_ns=burst_gap_ns, **fit_args)
        self.hold = hold_bursts
        self.burst_gap_ns = burst_gap_ns
        self._open: _Burst[T] | None = None
        self._pending: deque[_Burst[T]] = deque()
        self._released: deque[tuple[int, int]] = deque(maxlen=max(1, hold_bursts))
        self.next_index = 0
        self.drops = 0
        """Steps judged as lost notifications."""
        self.lost = 0
        """Samples judged lost."""
        self.ambiguous = 0
        """Steps of one period on a phase-locked link before the fit converged (see module)."""
        self.rising = False
        """A phase-locked link was seen wrapping down: its sampling phase slides up, so a
        step up is a loss."""

    def push(self, arrival_ns: int, n: int, item: T) -> list[tuple[T, int, int]]:
        b = self._open
        if b is not None and 0 <= arrival_ns - b.last <= self.burst_gap_ns:
            b.last = arrival_ns
        else:
            if b is not None:
                self._pending.append(b)
            b = self._open = _Burst(arrival_ns, arrival_ns)
        b.n += n
        b.items.append((arrival_ns, n, item))
        out: list[tuple[T, int, int]] = []
        if self.hold == 0:
            self._pending.append(b)
            self._open = None
        while len(self._pending) > self.hold:
            out.extend(self._release(judge=self.hold > 0))
        return out

    def flush(self) -> list[tuple[T, int, int]]:
        if self._open is not None:
            self._pending.append(self._open)
            self._open = None
        out: list[tuple[T, int, int]] = []
        while self._pending:
            out.extend(self._release(judge=False))
        return out

    def _release(self, judge: bool) -> list[tuple[T, int, int]]:
        lost = self._judge() if judge else 0
        b = self._pending.popleft()
        k = self.next_index + lost
        out: list[tuple[T, int, int]] = []
        for j, (arrival, n, item) in enumerate(b.items):
            out.append((item, k, lost if j == 0 else 0))
            self.fit.add(arrival, n, k)
            k += n
        self.next_index = k
        self._released.append((k - 1, b.start))
        return out

    def _judge(self) -> int:
        """Samples lost just before the oldest pending burst (0 if none can be told)."""
        fit = self.fit
        if fit.fit.bins < 3 or len(self._released) < self._released.maxlen // 2:  # type: ignore[operator]
            return 0
        period = fit.period_ns
        prev = sorted(fit.residual(k, s) for k, s in self._released)
        k = self.next_index
        after = []
        for b in list(self._pending)[: self.hold]:
            k += b.n
            after.append(fit.residual(k - 1, b.start))
        low = min(after)
        step = low - prev[0]
        locked = prev[len(prev) // 2] - prev[0] < 0.15 * period
        if step <= -0.75 * period and locked:
            self.rising = True  # a wrap down: the phase slides up, so wraps never step up
            self._released.clear()
            return 0
        if step < 0.75 * period:
            return 0
        self._released.clear()  # judge the next step against the new level only
        if locked and not self.rising:  # phase locked: a wrap up looks alike
            if not fit.converged:
                self.ambiguous += 1
                return 0
            if low < 1.1 * period:
                return 0
            d = int(low // period)
        else:
            d = round(step / period)
        self.drops += 1
        self.lost += d
        return d
