"""Timing for bands with no device clock and no counter (WitMotion): host time by sample number.

    fit = RateFit(nominal_rate_hz, latency_ns)     # fed in arrival order
    fit.add(arrival_ns, n, index)                  # samples index..index+n-1 came in one packet
    fit.map_index(k) -> host ns of sample k ; fit.rate_hz ; fit.converged ; fit.snapshot()
    num = ArrivalNumberer(nominal_rate_hz)          # numbers samples, finds lost notifications
    num.push(arrival_ns, n, item) -> [(item, index, lost_before)]   # held back ~2 s
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
merging two events is not, so the gap is kept well under the 7.5 ms minimum interval; should
a host stall bunch two events' notifications together, the observation is early by at most
``burst_gap_ns``).

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
  at 100 Hz). The fit then never reports converged and its error bound stays at least ``P``
  (50 ms by default). bench/bench_clock.py measures both: over intervals 7.5/15/30/50 ms and
  4 seeds x 10 min, the worst p99 after convergence is 0.76 ms (converged within 350 s); four
  phase-locked bands (0.2 ppm, 40 ms) keep errors of 1.2, 2.9, 5.4 and 6.2 ms, each its own
  unobservable wait, and none claims convergence.

Lost notifications. There is no counter, so a lost notification shifts the numbering: every
later sample is called one earlier than it is, and its residual against the rate fit steps
up by ``P``. ``ArrivalNumberer`` holds bursts back for ``hold_ns`` (2 s, and at least
``hold_bursts``), and before releasing the oldest compares the lowest residual of the bursts
held with the lowest of those released in the last ``hold_ns`` (a retransmission backlog
raises residuals too, but only until it drains, well within 2 s): a step of at least 3/4
``P`` is ``round(step / P)`` lost samples, given to
the chunk as ``lost_before`` (a gap in the segment) and skipped in the numbering. A lattice
step (``g <= P/2``) can never look like that. With ``g = P`` (phase locked) a sample
crossing an event *is* a step of ``P`` indistinguishable by arrival times from a loss; then a
step of one period counts as a loss if the link was seen wrapping *down* (the phase slides
up, so its wraps never step up), or once the fit is converged and the post-step residual
exceeds ``1.1 P`` above the envelope (a wrap stays below ``P``); otherwise it is counted in
``ambiguous`` and not as a loss (a larger step cannot be a wrap: a reconnection after a
silence counts the samples the band took meanwhile, to within one). Judging starts after
~2 s of data (it needs a local slope). A notification lost
inside a burst is reported before the burst's first sample: arrivals cannot place it closer;
nor can they tell a lost *newest* sample of an event from a loss just after it, so a gap may
land one event early. Measured (tests/test_clock_rate.py, 0.2 % of notifications lost, 4 min):
94-98 % of lost samples found on 7.5 and 15 ms intervals (the misses: the first seconds),
53-83 % on phase-locked 30-50 ms ones (a phase sliding down is the hard case), none invented.
A loss that is missed shifts every later sample number by one: the timestamps of what follows
are then a period early until the fit's window forgets the samples before the miss.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from agent.clock.oneway import DEFAULT_LATENCY_NS, OneWayFit

BURST_GAP_NS = 2_000_000
"""Arrivals closer than this are one connection event's burst (the minimum interval is
7.5 ms; a burst of 10 notifications lasts ~4 ms)."""

LOCAL_BIN_NS = 500_000_000
LOCAL_BINS = 40
PLACE_NS = 500_000
"""A burst this far below the lowest of the bursts after it comes before a step up (half the
smallest lattice step, 1.25 ms, of a 100 Hz band on the 1.25 ms BLE grid)."""

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
    newest: int = 0
    """Provisional number of the burst's newest sample when it closed."""
    shift: int = 0
    """Samples judged lost when it closed: its newest is now ``newest + (shift_now - shift)``."""
    seq: int = 0


class _MinWindow:
    """Sliding-window minimum of (key, seq) in arrival order: O(1) amortised."""

    def __init__(self) -> None:
        self.q: deque[tuple[float, int, int]] = deque()  # key, seq, start

    def push(self, key: float, seq: int, start: int) -> None:
        q = self.q
        while q and q[-1][0] >= key:
            q.pop()
        q.append((key, seq, start))

    def drop_upto(self, seq: int) -> None:
        while self.q and self.q[0][1] <= seq:
            self.q.popleft()

    def drop_before(self, start: int) -> None:
        while self.q and self.q[0][2] < start:
            self.q.popleft()


class ArrivalNumberer(Generic[T]):
    """Sample numbers for a band with no counter, with lost notifications found from arrivals.

    ``push`` returns the packets it releases, oldest first, as ``(item, index, lost_before)``;
    a burst is held until ``hold_bursts`` later bursts spanning ``hold_ns`` have arrived, so
    that a retransmission backlog (which also raises residuals, for as long as it lasts) is
    not taken for a loss (``hold_bursts=0``: no hold, no loss detection). Call ``flush()``
    when the stream ends. Work per burst is O(1) amortised (sliding-window minima, rebuilt
    when the rate fit moves, once per second).
    """

    def __init__(self, nominal_rate_hz: float, *, hold_bursts: int = 0,
                 hold_ns: int = 2_000_000_000, burst_gap_ns: int = BURST_GAP_NS,
                 silence_ns: int = 2_000_000_000, **fit_args: Any) -> None:
        self.fit = RateFit(nominal_rate_hz, 0, burst_gap_ns=burst_gap_ns, **fit_args)
        self.silence_ns = silence_ns
        self.estimated: dict[int, int] = {}
        """Without judging (``hold_bursts=0``): index of the first sample after a silence of
        ``silence_ns`` or more (a reconnection) -> samples estimated to have been taken
        meanwhile, from arrival times and the rate fit: an estimate (+-1), not a count."""
        self._last_start: int | None = None
        self.hold = hold_bursts
        self.hold_ns = hold_ns if hold_bursts else 0
        self.burst_gap_ns = burst_gap_ns
        self._open: _Burst[T] | None = None
        self._pending: deque[_Burst[T]] = deque()
        self._pending_n = 0  # samples in pending bursts
        self._released: deque[tuple[int, int, int]] = deque()  # newest, start, seq
        self._ahead = _MinWindow()  # pending bursts: residual at provisional number + shift*P
        self._behind = _MinWindow()  # bursts released in the last hold_ns: residual
        self._mark = 0  # local line version
        self._built = -1  # local line version the windows were built with
        self._lbins: deque[tuple[float, int]] = deque(maxlen=LOCAL_BINS)
        self._lcur: tuple[int, float, int] | None = None
        self._ls = 1.0
        self._lx = 0.0
        self._ly = 0
        self._recent: deque[float] = deque(maxlen=64)  # released residuals, for `locked`
        self._released_n = 0
        self._locked = False
        self._seq = 0
        self.shift = 0
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
        out: list[tuple[T, int, int]] = []
        if b is not None and 0 <= arrival_ns - b.last <= self.burst_gap_ns:
            b.last = arrival_ns
        else:
            if b is not None:
                self._close(b)
            b = self._open = _Burst(arrival_ns, arrival_ns)
        b.n += n
        b.items.append((arrival_ns, n, item))
        if self.hold == 0:
            self._close(b)
            self._open = None
        pend = self._pending
        while pend and len(pend) > self.hold and pend[-1].start - pend[0].start >= self.hold_ns:
            out.extend(self._release(judge=self.hold > 0))
        return out

    def flush(self) -> list[tuple[T, int, int]]:
        if self._open is not None:
            self._close(self._open)
            self._open = None
        out: list[tuple[T, int, int]] = []
        while self._pending:
            out.extend(self._release(judge=False))
        return out

    # ------------------------------------------------------------------ residual windows
    # Residuals for judging are taken against a *local* line: the Theil-Sen slope (median of
    # pairwise slopes) of the lowest point per LOCAL_BIN_NS of the last LOCAL_BINS bins. A
    # loss missed early (before judging starts) puts every later point P higher; the hull's
    # slope then tilts by P / span, the median hardly moves.
    def _usable(self) -> bool:
        return len(self._lbins) >= 3

    def _local(self, k: int, start: int) -> float:
        x = k * self.fit.nominal_period_ns
        return start - (self._ly + self._ls * (x - self._lx))

    def _observe_local(self, k: int, start: int) -> None:
        x = k * self.fit.nominal_period_ns
        b = start // LOCAL_BIN_NS
        cur = self._lcur
        if cur is None or b != cur[0]:
            if cur is not None:
                self._lbins.append((cur[1], cur[2]))
                self._relocal()
            self._lcur = (b, x, start)
        elif start - self._ls * x < cur[2] - self._ls * cur[1]:
            self._lcur = (b, x, start)

    def _relocal(self) -> None:
        pts = list(self._lbins)
        if len(pts) < 2:
            return
        slopes = sorted((y2 - y1) / (x2 - x1) for i, (x1, y1) in enumerate(pts)
                        for x2, y2 in pts[i + 1:] if x2 != x1)
        if slopes:
            self._ls = slopes[len(slopes) // 2]
        # anchored on the lowest bin, so a backlogged bin never moves the line
        self._lx, self._ly = min(pts, key=lambda p: p[1] - self._ls * p[0])
        self._mark += 1

    def _ahead_key(self, b: _Burst[T]) -> float:
        return self._local(b.newest, b.start) + b.shift * self.fit.period_ns

    def _refresh(self) -> None:
        """Recompute both windows when the local line has moved (cached residuals are stale)."""
        if not self._usable() or self._mark == self._built:
            return
        self._built = self._mark
        self._ahead = _MinWindow()
        for b in self._pending:
            self._ahead.push(self._ahead_key(b), b.seq, b.start)
        self._behind = _MinWindow()
        for k, start, seq in self._released:
            self._behind.push(self._local(k, start), seq, start)

    def _close(self, b: _Burst[T]) -> None:
        self._pending_n += b.n
        self._seq += 1
        b.seq, b.shift = self._seq, self.shift
        b.newest = self.next_index + self._pending_n - 1
        self._pending.append(b)
        if self._usable():
            self._refresh()
            self._ahead.push(self._ahead_key(b), b.seq, b.start)

    def _release(self, judge: bool) -> list[tuple[T, int, int]]:
        lost = self._judge() if judge else 0
        b = self._pending[0]
        if not self.hold and not lost:
            lost = self._silence(b)
        self._last_start = b.start
        self._pending.popleft()
        self._pending_n -= b.n
        self._ahead.drop_upto(b.seq)
        self.shift += lost
        k = self.next_index + lost
        out: list[tuple[T, int, int]] = []
        for j, (arrival, n, item) in enumerate(b.items):
            out.append((item, k, lost if j == 0 else 0))
            self.fit.add(arrival, n, k)
            k += n
        self.next_index = k
        self._observe_local(k - 1, b.start)
        rel = self._released
        rel.append((k - 1, b.start, b.seq))
        while rel and rel[0][1] < b.start - self.hold_ns:
            rel.popleft()
        if self._usable():
            self._refresh()
            r = self._local(k - 1, b.start)
            self._behind.push(r, b.seq, b.start)
            self._behind.drop_before(b.start - self.hold_ns)
            self._recent.append(r)
        self._released_n += 1
        if self._released_n % 16 == 0 and self._recent:
            # phase locked: the newest-sample waits sit at one level, give or take whole
            # periods (a backlog holds back whole samples); a finer lattice puts some at
            # fractions of P
            rec, per = self._recent, self.fit.period_ns
            low = min(rec)
            on = sum(1 for r in rec if not 0.15 < ((r - low) / per) % 1.0 < 0.85)
            self._locked = on >= 0.8 * len(rec)
        return out

    def _silence(self, b: _Burst[T]) -> int:
        """Samples the band took during a silence before burst ``b`` (a reconnection: the
        band kept sampling), estimated from the rate fit: its newest sample is the one whose
        envelope time is the last before the burst began."""
        last = self._last_start
        f = self.fit
        if last is None or b.start - last < self.silence_ns or f.fit.bins < 2:
            return 0
        env0 = f.map_index(0)
        newest = int((b.start - env0) // f.period_ns)
        lost = newest - (self.next_index + b.n - 1)
        if lost <= 0:
            return 0
        self.estimated[self.next_index + lost] = lost
        self.lost += lost
        return lost

    def _judge(self) -> int:
        """Samples lost just before the oldest pending burst (0 if none can be told)."""
        fit = self.fit
        rel = self._released
        if len(self._lbins) < 4 or len(rel) < 32 or rel[-1][1] - rel[0][1] < self.hold_ns // 2:
            return 0  # no slope yet, or too little behind to know the level (backlogs)
        self._refresh()
        if not self._behind.q or not self._ahead.q:
            return 0
        period = fit.period_ns
        off = self.shift * period
        b0 = self._pending[0]
        ahead = self._ahead.q
        low = ahead[0][0] - off
        if ahead[0][1] == b0.seq and len(ahead) > 1 and ahead[0][0] < ahead[1][0] - PLACE_NS:
            return 0  # the oldest burst is below the ones after it: any step comes later
        step = low - self._behind.q[0][0]
        locked = self._locked
        if step <= -0.75 * period and locked:
            self.rising = True  # a wrap down: the phase slides up, so wraps never step up
            self._forget_behind()
            return 0
        if step < 0.75 * period:
            return 0
        if locked and not self.rising and step < 1.5 * period:  # a wrap up looks alike
            if not fit.converged:
                self.ambiguous += 1
                self._forget_behind()
                return 0
            # the envelope is known: a wrap stays under P above it, a loss goes over
            k = self.next_index - 1
            lows = []
            for b in self._pending:
                k += b.n
                lows.append(fit.residual(k, b.start))
            absolute = min(lows)
            d = int(absolute // period) if absolute >= 1.1 * period else 0
            if not d:
                self._forget_behind()
        else:
            d = round(step / period)
        if d <= 0:
            return 0
        self.drops += 1
        self.lost += d
        return d

    def _forget_behind(self) -> None:
        """A step accepted as the sampling phase's own: judge later ones from the new level."""
        self._released.clear()
        self._behind = _MinWindow()
