"""What a band mapper is shown (agent/clock/band.py): device-clock and sample-number
observations into the fit; start-up timestamps that jump, or run at an impossible rate,
restart it from the recent observations; a chunk is suspect (placed by arrival) while its
timestamps cannot be trusted; a break (``cut``) restarts a band with no clock, its rate
carried over.
"""

from __future__ import annotations

import math
from collections import deque

from agent.clock.band_exchange import BandExchanges
from agent.clock.band_grid import SEARCH_ARRIVALS, EventGrid
from agent.clock.band_line import SETTLE_BINS, serial

REPLAY_NS = 2_000_000_000
"""Observations a fit restarted for an impossible rate starts again from."""
SUSPECT_NS = 1_500_000_000
"""A young fit's chunks are placed by arrival when every observation of this long is far
(``jump_ns``) from it."""
ARRIVAL_WINDOW_NS = 6_000_000_000
"""Placed by arrival, a sample is timed by the earliest arrival of this long, counted back
by sample numbers at the nominal rate (a backlog delays arrivals; it cannot hasten one)."""


RETIME_AFTER = 8
"""Events with an arrival a re-timed observation waits for after its own (the grid's hull is
then drawn on both sides of it, through arrivals with less jitter than its own)."""


class BandObservations(BandExchanges):
    """Observations, restarts and cuts."""

    def __init__(self) -> None:
        super().__init__()
        self._res: deque[tuple[int, float]] = deque()  # arrival, residual: last SUSPECT_NS
        self._arr: deque[tuple[int, int]] = deque()  # sample index, arrival: recent
        self.restarts = 0
        """Fit restarts: start-up timestamps that jumped, a device clock that went back."""
        self._checked = -1
        self._grid = EventGrid()
        self._pending: deque[tuple[int, int, int]] = deque()  # device ns, arrival, event
        self._raw: deque[tuple[int, int]] = deque(maxlen=SEARCH_ARRIVALS)  # device, arrival
        self._retime_bin = -1
        self.retimed = 0
        """Observations re-timed onto their connection event (``_retime``)."""
        self._retimed_epoch = -1
        """The fit epoch that holds re-timed observations: its bound counts the grid's
        margin (agent/clock/band_grid.py)."""

    @serial
    def observe_device(self, device_ns: int, arrival_ns: int,
                       index: int | None = None) -> None:
        """A sample stamped ``device_ns`` on the band's clock had arrived by ``arrival_ns``
        (the newest sample of a notification, or the instant the band says it sent it);
        ``index``: that sample's running number (used while timestamps are not trusted)."""
        if self.kind == "rate":
            raise ValueError("a band with no device clock is observed by sample number")
        if index is not None:
            self._note_arrival(index, arrival_ns)
        grid = self._grid
        k = None
        if self.kind == "device":
            found, resets = grid.found, grid.resets
            k = grid.add(arrival_ns)
            self._raw.append((device_ns, arrival_ns))
            if grid.resets != resets:
                self._pending.clear()  # their events are another grid's
            if grid.found != found:  # a grid found: the arrivals it was found from too
                self._pending.extend((d, a, grid.seeded[a]) for d, a in self._raw
                                     if a != arrival_ns and a in grid.seeded)
        self._observe(device_ns, arrival_ns, 1)
        if k is not None:
            self._pending.append((device_ns, arrival_ns, k))
        if self._pending:
            self._retime(device_ns)
        self._ver += 1

    def _retime(self, device_ns: int) -> None:
        """Lower the fit's earlier observations onto the connection events they came in
        (agent/clock/band_grid.py): the host's jitter on top of each is then gone, and what
        is left above the floor is the band's wait for its event. Each waits for
        ``RETIME_AFTER`` events after its own; done once per bin of the fit (one refit)."""
        f = self.fit
        b = device_ns // f.bin_ns
        if b == self._retime_bin:
            return
        self._retime_bin = b
        grid = self._grid
        pend = self._pending
        newest = grid.event(-RETIME_AFTER)
        lows: list[tuple[int, int]] = []
        while pend and newest is not None and pend[0][2] < newest:
            dev, arr, k = pend.popleft()
            v = grid.value(k)
            if v is not None and v < arr:
                lows.append((dev, math.ceil(v)))
        if not grid.active:
            pend.clear()
        if lows:
            self._ver += 1
            n = f.lower(lows)
            if n:
                self.retimed += n
                self._retimed_epoch = self._epoch

    def _note_arrival(self, index: int, arrival_ns: int) -> None:
        arr = self._arr
        arr.append((index, arrival_ns))
        while arr and arr[0][1] < arrival_ns - ARRIVAL_WINDOW_NS:
            arr.popleft()

    @serial
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
        self._pending.clear()
        self._raw.clear()
        self.restarts += 1
        self._checked = -1
        self._new_fit()
        self._recent.clear()
        for k, a, m in replay:
            self._add(k, a, m)
            self._recent.append((k, a, m))

    @serial
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
            # a new connection: a new event phase (perhaps a new interval)
            self._grid.reset()
            self._pending.clear()
            self._raw.clear()
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
        if carried is not None:
            # the new fit's bins keep their lowest observation under the band's rate, not
            # the nominal one (``OneWayFit.key_slope``)
            self.fit.key_slope = self.fit.slope = carried[0]
        self._ver += 1
