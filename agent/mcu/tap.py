"""Tap calibration of a wrist band's latency against the two-way-synced head IMU (pure).

A tap of the band against the head mount is one mechanical event seen by both IMUs. The
head IMU's times come through the two-way fit (no latency assumed); the band's through its
one-way fit, which subtracts an assumed latency ``L``. If the band's tap lands ``delta``
later than the head's, the band's true latency is ``L + delta``.

    s = stream(payloads)                                   # stored IMU batches -> Stream
    onset_spans(s.host_ns, s.acc, s.acc_scale) -> [(lo, hi)]   # each tap between two samples
    calibrate(head_spans, band_spans, head_bound_ns=bound_at(head, onsets),
              band_period_ns=period_ns(band), band_bounds_ns=...) -> TapResult | None

Onsets: the first sample whose acceleration magnitude departs from its running baseline by
``threshold`` (m/s^2, low: a tap's edge is sharp) marks an onset somewhere in the sample
interval before it: the tap's span is (the sample before, that sample). Any interpolation
along the waveform is biased by its shape (an exponential decay trades a shift for an
amplitude); the span is not.

The offset: a tap's band span less its head span, each widened by its mapping's bound at
that tap, holds the band's offset, for every tap. The result is the middle of the range all
taps' spans allow (``intersect``) and the uncertainty its half-width. Averaging the taps'
midpoints instead (and a sampling term of P / sqrt(12 N)) assumes their sampling phases
spread over the period: taps in a rhythm locked to a band's rate (taps 1 s apart, a band at
416 Hz, the head at 1 kHz) all land at one phase, and such a mean is off by up to half a
period of each IMU however many taps there are. The spans show how the phases spread: taps
at random phases narrow the range (12 taps at 416 Hz: about +-0.5 ms before the mappings'
bounds), locked ones leave it half a period of each IMU wide. Checked against the truth by
tests/test_tap.py, bench/bench_tap_calibration.py (synthetic waveforms) and
bench/bench_tap_rig.py (the simulated rig, end to end).

Pairing and rejection: each band onset pairs with the nearest head onset within 100 ms
(each head onset once); unpaired onsets are counted (``head_only``, ``band_only``). A
paired tap whose offset is further from the median than sampling (half of each IMU's
period), twice the head's bound and 1 ms of mapping jitter allow is rejected: a bump of
the band alone near a head tap, a double tap. So is a tap whose range misses the one most
taps share (an onset seen a sample late).

What the offset measures is the band's mapping error at the taps: its latency error, plus
whatever error its fit has there. Measured on the times stored while recording, that is a
young one-way fit's (agent/clock/band.py: it wanders by milliseconds, and a converged fit
later no longer has that error); so the command maps the band's samples through its clock
refitted over the whole recording instead (agent.mcu.tap_refit), and adds that fit's own
bound at the taps to the uncertainty. See docs/design-notes.md (Head MCU and the wearer).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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


Span = tuple[int, int]
"""(last sample under the threshold, first at or over it): a tap's onset is in between."""


def onset_spans(host_ns: npt.ArrayLike, acc: npt.ArrayLike, acc_scale: npt.ArrayLike, *,
                threshold: float = THRESHOLD, refractory_ns: int = 300_000_000,
                baseline_n: int = 32) -> list[Span]:
    """Each tap's span: the times of the last sample before it crosses the threshold and of
    the first at or over it; the tap's edge crossed the threshold in between."""
    t = np.asarray(host_ns, np.int64)
    if len(t) < baseline_n + 2:
        return []
    dev = np.abs(deviation(acc, acc_scale, baseline_n))
    out: list[Span] = []
    i = baseline_n
    while i < len(dev):
        if dev[i] >= threshold and dev[i - 1] < threshold:
            out.append((int(t[i - 1]), int(t[i])))
            j = np.searchsorted(t, _mid(out[-1]) + refractory_ns)
            i = max(int(j), i + 1)
            continue
        i += 1
    return out


def _mid(span: Span) -> int:
    lo, hi = span
    return int(hi - (hi - lo) / 2)


def onsets(host_ns: npt.ArrayLike, acc: npt.ArrayLike, acc_scale: npt.ArrayLike, *,
           threshold: float = THRESHOLD, refractory_ns: int = 300_000_000,
           baseline_n: int = 32) -> list[int]:
    """Tap onsets: the middle of each tap's span (``onset_spans``)."""
    return [_mid(s) for s in onset_spans(host_ns, acc, acc_scale, threshold=threshold,
                                         refractory_ns=refractory_ns, baseline_n=baseline_n)]


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
    """The mean bounds of the two mappings at the taps (in ``uncertainty_ns``)."""
    sampling_ns: int = 0
    """Half the range the taps' spans alone allow (their sampling: the rest is the mappings';
    0 when only the mappings' bounds make the spans meet)."""

    def latency_ms(self, assumed_ms: float) -> float:
        """The band's calibrated latency setting, given the one it was recorded with."""
        return assumed_ms + self.offset_ns / 1e6

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pairs(head: list[int], band: list[int], max_sep_ns: int) -> list[tuple[int, int]]:
    """(head index, band index) of taps seen by both: each band onset pairs with the nearest
    head onset within ``max_sep_ns``, each head onset once (band onsets in time order)."""
    h = np.asarray(head, np.int64)
    used: set[int] = set()
    out: list[tuple[int, int]] = []
    for k in sorted(range(len(band)), key=lambda k: band[k]):
        if not len(h):
            break
        j = int(np.argmin(np.abs(h - band[k])))
        if abs(int(h[j]) - band[k]) <= max_sep_ns and j not in used:
            used.add(j)
            out.append((j, k))
    return out


def pair(head: list[int], band: list[int],
         max_sep_ns: int) -> tuple[list[tuple[int, int]], int, int]:
    """([(head onset, band - head offset)] of taps seen by both, head-only onsets, band-only
    onsets): each band onset pairs with the nearest head onset within ``max_sep_ns``, each
    head onset once."""
    head = sorted(head)
    out = [(head[j], band[k] - head[j]) for j, k in _pairs(head, band, max_sep_ns)]
    return out, len(head) - len(out), len(band) - len(out)


def consistent(offs: list[int], tolerance_ns: float) -> tuple[list[int], list[int]]:
    """(kept, rejected): offsets within ``tolerance_ns`` of their median."""
    if not offs:
        return [], []
    med = float(np.median(offs))
    kept = [o for o in offs if abs(o - med) <= tolerance_ns]
    return kept, [o for o in offs if abs(o - med) > tolerance_ns]


def intersect(spans: list[Span]) -> tuple[Span, list[int]]:
    """The range covered by the most of ``spans`` (closed intervals), and the indices of the
    spans that do not cover it (Marzullo's algorithm). Every span that holds the truth
    covers the range the truth is in; when all do, the range is their intersection and none
    is left out. Several disjoint ranges covered as often: the smallest range holding them
    all, and out are the spans that cover none of them."""
    ends = sorted([(lo, -1) for lo, _hi in spans] + [(hi, 1) for _lo, hi in spans])
    best, n = 0, 0
    ranges: list[list[int]] = []
    for x, kind in ends:  # at one x, starts (-1) come before ends: the spans are closed
        if kind < 0:
            n += 1
            if n > best:
                best, ranges = n, [[x, x]]
            elif n == best:
                ranges.append([x, x])
        else:
            if n == best:
                ranges[-1][1] = x
            n -= 1
    out = [i for i, (a, b) in enumerate(spans)
           if not any(a <= lo and hi <= b for lo, hi in ranges)]
    return (ranges[0][0], ranges[-1][1]), out


def calibrate(head: Sequence[int | Span], band: Sequence[int | Span], *, head_bound_ns: int,
              band_period_ns: int, head_period_ns: int = 1_000_000,
              max_sep_ns: int = 100_000_000, jitter_ns: int = 1_000_000,
              band_bound_ns: int = 0, head_bounds_ns: Sequence[int] | None = None,
              band_bounds_ns: Sequence[int] | None = None,
              band_jitter_ns: int = 0) -> TapResult | None:
    """Fit the band's offset from the taps both IMUs saw.

    ``head``, ``band``: each IMU's tap spans (``onset_spans``), or onsets with half a period
    either side. A tap crossed the threshold within its head span, on the head's mapping
    (off by at most ``head_bound_ns``, or that tap's ``head_bounds_ns``), and within its
    band span less the offset, on the band's (off by at most ``band_bound_ns`` or that tap's
    ``band_bounds_ns``, the band mapping's bound latency aside, plus ``band_jitter_ns``, how
    far a sample's stamp may stray from its neighbours' line). So the offset is within
    (band low - head high, band high - head low), widened by those bounds, for every tap:
    the result is the middle of the range all taps allow, and the uncertainty its half-width.
    Nothing is assumed about the taps' sampling phases: taps at random phases narrow the
    range towards the head's bound and the band's; taps all at one phase (a rhythm locked to
    the band's rate) leave it half a period of each IMU wide, as it then is.

    Rejected, and counted: a paired tap whose offset is further from the median than
    sampling (half of each IMU's period), twice the head's bound and ``jitter_ns`` allow (a
    bump of the band alone near a head tap, a double tap), and a tap whose range misses the
    one most taps share (an onset seen a sample late)."""
    hs = [_span(x, head_period_ns) for x in head]
    bs = [_span(x, band_period_ns) for x in band]
    order_h = sorted(range(len(hs)), key=lambda i: _mid(hs[i]))
    hs = [hs[i] for i in order_h]
    hb = [int(head_bounds_ns[i]) if head_bounds_ns is not None else head_bound_ns
          for i in order_h]
    bb = [int(band_bounds_ns[i]) if band_bounds_ns is not None else band_bound_ns
          for i in range(len(bs))]
    idx = _pairs([_mid(h) for h in hs], [_mid(b) for b in bs], max_sep_ns)
    head_only, band_only = len(hs) - len(idx), len(bs) - len(idx)
    offs = [_mid(bs[k]) - _mid(hs[j]) for j, k in idx]
    tol = (band_period_ns + head_period_ns) / 2 + 2 * head_bound_ns + jitter_ns
    med = float(np.median(offs)) if offs else 0.0
    keep = [p for p, o in zip(idx, offs, strict=True) if abs(o - med) <= tol]
    rejected = [o for o, p in zip(offs, idx, strict=True) if p not in keep]
    if not keep:
        return None
    raw = [(bs[k][0] - hs[j][1], bs[k][1] - hs[j][0]) for j, k in keep]
    wide = [(lo - w, hi + w) for (lo, hi), w in
            zip(raw, [hb[j] + bb[k] + band_jitter_ns for j, k in keep], strict=True)]
    (lo, hi), out = intersect(wide)
    rejected += [_mid(bs[keep[i][1]]) - _mid(hs[keep[i][0]]) for i in out]
    keep = [p for i, p in enumerate(keep) if i not in out]
    raw = [r for i, r in enumerate(raw) if i not in out]
    n = len(keep)
    slo, shi = max(r[0] for r in raw), min(r[1] for r in raw)
    at = [_mid(hs[j]) for j, _k in keep]
    return TapResult(n, round((lo + hi) / 2), math.ceil((hi - lo) / 2),
                     [_mid(bs[k]) - _mid(hs[j]) for j, k in keep], sorted(rejected),
                     head_only, band_only, (min(at), max(at)),
                     round(float(np.mean([hb[j] for j, _k in keep]))),
                     round(float(np.mean([bb[k] for _j, k in keep]))),
                     max(0, math.ceil((shi - slo) / 2)))


def _span(x: int | Span, period_ns: int) -> Span:
    if isinstance(x, tuple):
        return int(x[0]), int(x[1])
    return int(x) - period_ns // 2, int(x) + (period_ns - period_ns // 2)


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
    b = bounds_at(s, times)
    return int(np.mean(b)) if b else max(0, s.bound_ns)


def bounds_at(s: Stream, times: list[int]) -> list[int]:
    """The stored bound of ``s`` at each of ``times`` (its sample there); its largest bound
    for all when one has none stored."""
    if not times or not len(s.host_ns):
        return [max(0, s.bound_ns)] * len(times)
    i = np.clip(np.searchsorted(s.host_ns, np.asarray(times, np.int64)), 0, len(s.host_ns) - 1)
    b = s.sample_bound_ns[i]
    return [int(x) for x in b] if (b >= 0).all() else [max(0, s.bound_ns)] * len(times)


def stamp_jitter_at(s: Stream, times: list[int], half_ns: int = 1_000_000_000) -> list[int]:
    """How far the samples' times stray from a straight line through their neighbours
    (within ``half_ns`` either side of each of ``times``): the largest residual there. A
    band's chunk starts come from its own timestamps (Movesense: truncated to 1 ms, then
    fitted), so a tap's sample may be off its neighbours' line; a mapping's bound holds the
    line, not that."""
    p = period_ns(s)
    out = []
    for t in times:
        lo, hi = np.searchsorted(s.host_ns, [t - half_ns, t + half_ns])
        h = s.host_ns[lo:hi].astype(np.float64)
        if len(h) < 8 or p <= 0:
            out.append(0)
            continue
        k = np.rint((h - h[0]) / p)
        res = h - np.polyval(np.polyfit(k, h - h[0], 1), k) - h[0]
        out.append(int(np.abs(res).max()))
    return out


def period_ns(s: Stream) -> int:
    """The stream's median sample spacing."""
    return int(np.median(np.diff(s.host_ns))) if len(s.host_ns) > 2 else 0
