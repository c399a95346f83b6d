"""Tap calibration of a wrist band's latency against the two-way-synced head IMU (pure).

A tap of the band against the head mount is one mechanical event seen by both IMUs. The
head IMU's times come through the two-way fit (no latency assumed); the band's through its
one-way fit, which subtracts an assumed latency ``L``. If the band's tap lands ``delta``
later than the head's, the band's true latency is ``L + delta``.

    onsets(host_ns, acc_counts, acc_scale) -> [ns]        # tap onsets, sub-sample
    calibrate(head_onsets, band_onsets, head_bound_ns, band_period_ns) -> TapResult

Onsets: the first sample whose acceleration magnitude departs from its running baseline by
``threshold`` (m/s^2, low: a tap's edge is sharp) marks an onset somewhere in the sample
interval before it, so the estimate is that sample's time minus half an interval. Any
interpolation along the waveform is biased by its shape (an exponential decay trades a shift
for an amplitude); this one is unbiased over taps whose sampling phase is random, which a
wearer's taps are. A band at 200 Hz then gives each tap +-2.5 ms, and the mean of N taps
about 5 ms / sqrt(12 N). The stated uncertainty is three times the larger of that and the
observed spread's standard error, plus the head's own bound: meant to cover, and checked
against the truth by bench/bench_tap_calibration.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


def deviation(acc: npt.ArrayLike, acc_scale: float, baseline_n: int = 32) -> np.ndarray[Any, Any]:
    """|acceleration| minus the median of the preceding ``baseline_n`` samples (m/s^2)."""
    a = np.asarray(acc, np.float64) * acc_scale
    mag = np.sqrt((a * a).sum(axis=1))
    base = np.array([np.median(mag[max(0, i - baseline_n):i]) if i else mag[0]
                     for i in range(len(mag))])
    return np.asarray(mag - base)


def onsets(host_ns: npt.ArrayLike, acc: npt.ArrayLike, acc_scale: float, *,
           threshold: float = 3.0, refractory_ns: int = 300_000_000,
           baseline_n: int = 32) -> list[int]:
    t = np.asarray(host_ns, np.int64)
    if len(t) < baseline_n + 2:
        return []
    dev = np.abs(deviation(acc, acc_scale, baseline_n))
    out: list[int] = []
    i = 1
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
    offset_ns: int
    """Mean (band onset - head onset): how much later the band's times are than the truth."""
    uncertainty_ns: int
    offsets_ns: list[int]

    def latency_ms(self, assumed_ms: float) -> float:
        """The band's calibrated latency setting, given the one it was recorded with."""
        return assumed_ms + self.offset_ns / 1e6

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibrate(head: list[int], band: list[int], *, head_bound_ns: int, band_period_ns: int,
              head_period_ns: int = 1_000_000,
              max_sep_ns: int = 100_000_000) -> TapResult | None:
    """Pair each band onset with the nearest head onset within ``max_sep_ns``."""
    h = np.asarray(sorted(head), np.int64)
    offs: list[int] = []
    for b in band:
        if not len(h):
            break
        j = int(np.argmin(np.abs(h - b)))
        if abs(int(h[j]) - b) <= max_sep_ns:
            offs.append(b - int(h[j]))
    if not offs:
        return None
    o = np.asarray(offs, np.float64)
    n = len(o)
    mean = float(o.mean())
    model = np.sqrt((band_period_ns ** 2 + head_period_ns ** 2) / 12 / n)
    spread = float(o.std(ddof=1) / np.sqrt(n)) if n > 1 else float(band_period_ns)
    unc = int(3 * max(model, spread) + head_bound_ns)
    return TapResult(n, round(mean), unc, offs)
