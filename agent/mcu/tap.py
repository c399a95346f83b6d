"""Tap calibration of a wrist band's latency against the two-way-synced head IMU (pure).

A tap of the band against the head mount is one mechanical event seen by both IMUs. The
head IMU's times come through the two-way fit (no latency assumed); the band's through its
one-way fit, which subtracts an assumed latency ``L``. If the band's tap lands ``delta``
later than the head's, the band's true latency is ``L + delta``.

    s = stream(payloads)                                   # stored IMU batches -> Stream
    onsets(s.host_ns, s.acc, s.acc_scale) -> [ns]          # tap onsets, sub-sample
    calibrate(head_onsets, band_onsets, head_bound_ns=bound_at(head, head_onsets),
              band_period_ns=period_ns(band)) -> TapResult | None

Onsets: the first sample whose acceleration magnitude departs from its running baseline by
``threshold`` (m/s^2, low: a tap's edge is sharp) marks an onset somewhere in the sample
interval before it, so the estimate is that sample's time minus half an interval. Any
interpolation along the waveform is biased by its shape (an exponential decay trades a shift
for an amplitude); this one is unbiased over taps whose sampling phase is random, which a
wearer's taps are. A band at 200 Hz then gives each tap +-2.5 ms, and the mean of N taps
about 5 ms / sqrt(12 N). The stated uncertainty is three times the larger of that and the
observed spread's standard error, plus the head's own bound at the taps: meant to cover,
and checked against the truth by bench/bench_tap_calibration.py (synthetic waveforms) and
bench/bench_tap_rig.py (the simulated rig, end to end).

Pairing and rejection: each band onset pairs with the nearest head onset within 100 ms
(each head onset once); unpaired onsets are counted (``head_only``, ``band_only``). A
paired tap whose offset is further from the median than sampling (half of each IMU's
period), twice the head's bound and 1 ms of mapping jitter allow is rejected: a bump of
the band alone near a head tap, a double tap.

What the offset measures is the band's mapping error at the taps: its latency error, plus
whatever error its fit has there. Measured on the times stored while recording, that is a
young one-way fit's (agent/clock/band.py: it wanders by milliseconds, and a converged fit
later no longer has that error); so the command maps the band's samples through its clock
refitted over the whole recording instead (agent.mcu.tap_refit), and adds that fit's own
bound at the taps to the uncertainty. See docs/design-notes.md (Head MCU and the wearer).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

THRESHOLD = 6.0
"""m/s^2 off the running baseline that marks a tap: far below a tap's shock on a hard mount
(tens of m/s^2), above what a wrist held still moves in a baseline window."""


def deviation(acc: npt.ArrayLike, acc_scale: npt.ArrayLike,
              baseline_n: int = 32) -> np.ndarray[Any, Any]:
    """|acceleration| minus the median of the preceding ``baseline_n`` samples (m/s^2);
    ``acc_scale`` is one number or one per sample."""
    a = np.asarray(acc, np.float64)
    sc = np.asarray(acc_scale, np.float64)
    a = a * (sc[:, None] if sc.ndim else sc)
    mag = np.sqrt((a * a).sum(axis=1))
    base = np.empty_like(mag)
    if len(mag):
        base[0] = mag[0]
        for i in range(1, min(baseline_n, len(mag))):
            base[i] = np.median(mag[:i])
        if len(mag) > baseline_n:
            win = np.lib.stride_tricks.sliding_window_view(mag[:-1], baseline_n)
            base[baseline_n:] = np.median(win, axis=1)
    return np.asarray(mag - base)


def onsets(host_ns: npt.ArrayLike, acc: npt.ArrayLike, acc_scale: npt.ArrayLike, *,
           threshold: float = THRESHOLD, refractory_ns: int = 300_000_000,
           baseline_n: int = 32) -> list[int]:
    t = np.asarray(host_ns, np.int64)
    if len(t) < baseline_n + 2:
        return []
    dev = np.abs(deviation(acc, acc_scale, baseline_n))
    out: list[int] = []
    i = baseline_n
    while i < len(dev):
        if dev[i] >= threshold and dev[i - 1] < threshold:
            on = int(t[i] - (t[i] - t[i - 1]) / 2)  # the onset is somewhere since t[i-1]
            out.append(on)
            j = np.searchsorted(t, on + refractory_ns)
            i = max(int(j), i + 1)
            continue
        i += 1
    return out


@dataclass
class TapResult:
    taps: int
    """Taps used: seen by both IMUs and consistent with the others."""
    offset_ns: int
    """Mean (band onset - head onset): how much later the band's times are than the truth."""
    uncertainty_ns: int
    offsets_ns: list[int]
    rejected_ns: list[int] = field(default_factory=list)
    """Offsets of taps seen by both but inconsistent with the rest (a bump, a double tap)."""
    head_only: int = 0
    """Head onsets with no band onset near them (the head was touched, or the band missed)."""
    band_only: int = 0
    """Band onsets with no head onset near them (the band hit something else)."""
    span_ns: tuple[int, int] = (0, 0)
    """Host times of the first and last tap used."""
    head_bound_ns: int = 0
    band_bound_ns: int = 0
    """The parts of ``uncertainty_ns`` the two mappings add (the rest is sampling)."""

    def latency_ms(self, assumed_ms: float) -> float:
        """The band's calibrated latency setting, given the one it was recorded with."""
        return assumed_ms + self.offset_ns / 1e6

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pair(head: list[int], band: list[int],
         max_sep_ns: int) -> tuple[list[tuple[int, int]], int, int]:
    """([(head onset, band - head offset)] of taps seen by both, head-only onsets, band-only
    onsets): each band onset pairs with the nearest head onset within ``max_sep_ns``, each
    head onset once."""
    h = np.asarray(sorted(head), np.int64)
    used: set[int] = set()
    out: list[tuple[int, int]] = []
    for b in sorted(band):
        if not len(h):
            break
        j = int(np.argmin(np.abs(h - b)))
        if abs(int(h[j]) - b) <= max_sep_ns and j not in used:
            used.add(j)
            out.append((int(h[j]), b - int(h[j])))
    return out, len(h) - len(used), len(band) - len(out)


def consistent(offs: list[int], tolerance_ns: float) -> tuple[list[int], list[int]]:
    """(kept, rejected): offsets within ``tolerance_ns`` of their median."""
    if not offs:
        return [], []
    med = float(np.median(offs))
    kept = [o for o in offs if abs(o - med) <= tolerance_ns]
    return kept, [o for o in offs if abs(o - med) > tolerance_ns]


def calibrate(head: list[int], band: list[int], *, head_bound_ns: int, band_period_ns: int,
              head_period_ns: int = 1_000_000, max_sep_ns: int = 100_000_000,
              jitter_ns: int = 1_000_000, band_bound_ns: int = 0) -> TapResult | None:
    """Fit the band's offset from the taps both IMUs saw.

    A genuine tap's offset is the true one plus a sampling error within half a period of
    each IMU, the head's mapping error (``head_bound_ns``) and the band mapping's jitter;
    offsets further than that from the median are rejected (a bump of the band alone near
    a head tap, a double tap). ``band_bound_ns``: how far the band's mapping (its clock
    fit, latency aside) may be off at the taps; the mean offset is off by as much, so it is
    in the uncertainty (agent.mcu.tap_refit gives it for the fit over the whole
    recording)."""
    pairs, head_only, band_only = pair(head, band, max_sep_ns)
    tol = (band_period_ns + head_period_ns) / 2 + 2 * head_bound_ns + jitter_ns
    kept, rejected = consistent([o for _h, o in pairs], tol)
    if not kept:
        return None
    o = np.asarray(kept, np.float64)
    n = len(o)
    mean = float(o.mean())
    model = np.sqrt((band_period_ns ** 2 + head_period_ns ** 2) / 12 / n)
    spread = float(o.std(ddof=1) / np.sqrt(n)) if n > 1 else float(band_period_ns)
    unc = int(3 * max(model, spread) + head_bound_ns + band_bound_ns)
    at = [h for h, o in pairs if o in kept]
    return TapResult(n, round(mean), unc, kept, rejected, head_only, band_only,
                     (min(at), max(at)), head_bound_ns, band_bound_ns)


@dataclass
class Stream:
    """One IMU stream's samples as stored (agent.wrist.imu_batch payloads, in order)."""

    host_ns: np.ndarray[Any, Any]
    acc: np.ndarray[Any, Any]
    acc_scale: np.ndarray[Any, Any]
    bound_ns: int
    """The largest error bound its batches stored (-1: none stored)."""
    sample_bound_ns: np.ndarray[Any, Any]
    """Each sample's stored bound (its batch's; -1: none)."""
    latency_ns: int | None
    """The latency its mapper assumed (bands), from the last batch's clock state."""
    latency_uncertainty_ns: int | None


def stream(payloads: list[dict[str, Any]], *, sort: bool = True) -> Stream:
    """``payloads``' samples, in time order (``sort=False``: in stored order)."""
    from agent.wrist.imu_batch import decode_payload

    hs, accs, scales, bounds = [], [], [], []
    bound, lat, unc = -1, None, None
    for p in payloads:
        d = decode_payload(p)
        cn = np.asarray(d["chunks"]["chunk_n"], np.int64)
        sc = d["chunks"].get("acc_scale")
        hs.append(d["host_ns"])
        accs.append(np.asarray(d["acc"], np.float64))
        scales.append(np.repeat(np.asarray(sc, np.float64), cn) if isinstance(sc, list)
                      else np.full(int(cn.sum()), float(sc)))
        clock = d["chunks"]["clock"]  # a map, however the batch stored it
        raw = clock.get("error_bound_ns")
        b = int(raw) if isinstance(raw, (int, float)) and raw >= 0 else -1
        bound = max(bound, b)
        bounds.append(np.full(len(d["host_ns"]), b, np.int64))
        if clock.get("latency_ns") is not None:
            lat = int(clock["latency_ns"])
            unc = int(clock.get("latency_uncertainty_ns") or 0)
    if not hs:
        return Stream(np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros(0), -1,
                      np.zeros(0, np.int64), None, None)
    h = np.concatenate(hs)
    order = np.argsort(h, kind="stable") if sort else np.arange(len(h))
    return Stream(h[order], np.concatenate(accs)[order], np.concatenate(scales)[order],
                  bound, np.concatenate(bounds)[order], lat, unc)


def bound_at(s: Stream, times: list[int]) -> int:
    """The mean stored bound of ``s`` at ``times`` (the error of a mean of taps is within
    the mean of their bounds); its largest bound when none is stored there."""
    if not times or not len(s.host_ns):
        return max(0, s.bound_ns)
    i = np.clip(np.searchsorted(s.host_ns, np.asarray(times, np.int64)), 0, len(s.host_ns) - 1)
    b = s.sample_bound_ns[i]
    return int(b.mean()) if (b >= 0).all() else max(0, s.bound_ns)


def period_ns(s: Stream) -> int:
    """The stream's median sample spacing."""
    return int(np.median(np.diff(s.host_ns))) if len(s.host_ns) > 2 else 0
