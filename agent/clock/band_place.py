"""Placement and slew (agent/clock/band.py): where a chunk's samples go on the host timeline
and how sure that is. By the fit (``_target``: the point and the bound's fit part, slope
part and local low), or by arrival while the fit's timestamps are suspect; then slewed from
where the previous output predicts towards it, at most ``slew_ppm`` of the elapsed device
time, so host time strictly increases in sample order. What is not yet slewed in is the
bound's slew part.
"""

from __future__ import annotations

from agent.clock.band_grid import GRID_MARGIN_NS
from agent.clock.band_line import MAX_RATE_ERROR, serial
from agent.clock.band_now import BandNow
from agent.clock.band_observe import ARRIVAL_WINDOW_NS
from agent.clock.band_types import ChunkTime

SLEW_PPM = 500.0
"""Largest rate at which a converged fit's change is slewed into the output."""
SLEW_FAST_PPM = 5000.0
"""The same before convergence (0.5 %: the sample spacing stays within 0.5 % of the fit)."""
SLEW_START_PPM = 50_000.0
"""The same while the fit has not settled (5 %: a start-up placement a wait off is absorbed
within a second; sample spacing stays within 5 % of the fit meanwhile)."""


class BandPlacement(BandNow):
    """``place``, ``peek`` and the slew."""

    def __init__(self) -> None:
        super().__init__()
        self.clamped = 0
        """Placements whose fitted slope was outside the physical range (clamped)."""
        self._last: tuple[float, int, float, int, str] | None = None
        """The last sample placed: key, host ns, host spacing, fit epoch, source."""
        self._last_slew_ns = 0
        self.max_slew_seen_ns = 0
        self._committed: dict[tuple[float, int], ChunkTime] = {}  # the last placements

    def _target(self, key: float, period_ns: float | None
                ) -> tuple[float, float, int, int, int, str]:
        """(host t0, spacing, fit part, latency part, quantisation part, source) by the best
        fit now."""
        now = self._now()
        if now.clamped:
            self.clamped += 1
        slope = now.slope
        nominal = self.nominal_period_ns
        if self.kind == "rate":
            spacing = slope * nominal
            x = key * nominal  # ``_x``
        else:
            spacing = (period_ns or nominal) * slope
            x = key
        env = now.ay + slope * (x - now.ax)
        t0 = env - now.ln - now.ex_mid
        # what a slope error adds at ``key`` (``_slope_part``: the edge's, at most what the
        # bins behind the anchor allow; a young window's held slope, the physical range)
        excess = now.excess
        sl = self._slope_part(x, excess) if now.slope_span else 0.0
        if now.lock:
            excess += now.lock
        # the envelope may be above the floor by the excess and the tilt the bins behind
        # the anchor allow; below it, by no more than the recent observations rise above
        # the line (the floor is under every observation) and the tilt they allow beyond
        below = self._local_low(x, excess) if now.settled_bins else sl
        if self._retimed_epoch == self._epoch:
            below += GRID_MARGIN_NS  # a re-timed observation may be that far under its floor
        high, low = excess - now.ex_mid + sl, now.ex_mid + below
        fit_part = round(max(high, low))
        q = self.quantisation_ns
        if q and now.one_sided:
            # the stamps' lag lowers only the low side (module doc): the part is what it
            # adds beyond the high side's room
            q = round(max(high, low + q)) - fit_part
        return t0, spacing, fit_part, now.lat_part, q, now.source

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
        nominal = self.nominal_period_ns
        if arrival_ns is not None and suspect:
            t0, spacing, fit_part, lat_part, source = self._by_arrival(n, arrival_ns, index)
            quant = self.quantisation_ns
        else:
            t0, spacing, fit_part, lat_part, quant, source = self._target(key, period_ns)
            if self.kind == "device" and arrival_ns is not None and not settled:
                # a fit that has not settled may rest on timestamps that have not either
                # (start-up frames): no sample is placed after its chunk's arrival allows
                # (a backlog delays an arrival, it cannot hasten one)
                hi = arrival_ns - (n - 1) * nominal * (1 - MAX_RATE_ERROR) \
                    - self.latency.ns + self.latency.uncertainty_ns
                t0 = min(t0, hi)
                # nor is its spacing trusted further than a sample clock's error from nominal
                if abs(spacing / nominal - 1.0) > MAX_RATE_ERROR:
                    spacing = nominal
                fit_part += round((n - 1) * nominal * MAX_RATE_ERROR)
                quant = self.quantisation_ns
        rate_kind = self.kind == "rate"
        # the key's step on the device (``_x``: kind "rate" keys are sample numbers)
        device_step = nominal if rate_kind else (period_ns or nominal)
        out = t0
        last = self._last
        rate = self._slew_ppm(converged, settled) * 1e-6
        if converged and self._last_slew_ns > fit_part:
            # the output is further from a converged fit than the fit's own uncertainty (the
            # fit moved as it converged): absorbed at the fast rate, not over many seconds
            rate = self.slew_fast_ppm * 1e-6
        if last is not None:
            lkey, lh, _lsp, epoch, lsource = last
            dx = (key * nominal - lkey * nominal) if rate_kind else key - lkey
            if epoch == self._epoch and lsource == source and source != "arrival" and dx > 0:
                step = spacing / device_step
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
        ct = ChunkTime(round(out), out_spacing, fit_part, lat_part, quant, slew, source)
        if commit:
            committed = self._committed
            committed[(key, n)] = ct
            if len(committed) > 64:
                del committed[next(iter(committed))]
            self._last = (key + (n - 1) * (1 if rate_kind else device_step),
                          round(out + (n - 1) * out_spacing), spacing, self._epoch, source)
            self._last_slew_ns = slew
            if slew > self.max_slew_seen_ns:
                self.max_slew_seen_ns = slew
        return ct

    @serial
    def place(self, key: float, n: int = 1, period_ns: float | None = None,
              arrival_ns: int | None = None, index: int | None = None) -> ChunkTime:
        """Host times of a chunk of ``n`` samples from ``key`` (its first sample's device ns,
        or sample number for kind "rate"), ``period_ns`` apart on the device clock, that
        arrived at ``arrival_ns`` (used while the fit has not settled). Call once per chunk,
        in sample order. ``index``: the first sample's running number."""
        return self._placed(key, n, period_ns, arrival_ns, True,
                            index if index is not None else
                            (round(key) if self.kind == "rate" else None))

    @serial
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
