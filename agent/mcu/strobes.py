"""Strobes check the camera: match each MCU strobe edge to a frame, report the residuals.

The head MCU sees the camera's strobe output and stamps each exposure on its own clock; the
two-way fit maps the mid-exposure instant onto the host timeline, within its bound. Each
frame carries the camera's own mid-exposure stamp. The two come from independent paths, so

    residual = frame host_ts_ns - strobe host_mid_ns

is an independent check of the camera's timestamps on every recording:

- its median is a constant stamp offset (a wrong exposure convention, a clock-domain error);
- its p99/max and the ``outliers`` (residuals further than ``outlier_ns`` from the median)
  are single bad stamps;
- a strobe with no frame near it is a frame the camera exposed and nobody recorded: if no
  gap record says so (and the frame index does not jump), a *silent* frame loss;
- a frame with no strobe is a frame the MCU did not see (a lost strobe frame on the link
  shows as a gap in the strobes' own numbering, ``strobes_lost``) or a frame that was never
  exposed when it says.

Matching is by time, not by order, so one missing frame does not shift every later match:
each strobe goes to the nearest frame within ``tolerance_ns`` (default half the median frame
interval), and each frame takes at most one strobe (the nearest).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]


@dataclass
class StrobeReport:
    frames: int
    strobes: int
    matched: int
    residual_ns: dict[str, int] = field(default_factory=dict)
    """p50, p99 and max |residual|, and the signed median ("median")."""
    frames_without_strobe: int = 0
    strobes_without_frame: int = 0
    """Exposures the MCU saw that no recorded frame matches (silent losses, unless a gap
    record or a frame index jump accounts for them: ``unexplained_missing_frames``)."""
    unexplained_missing_frames: int = 0
    strobes_lost: int = 0
    """Gaps in the strobes' own numbering (lost on the link, not by the camera)."""
    outliers: int = 0
    """Matched frames whose residual is further than outlier_ns from the median."""
    outlier_frames: list[int] = field(default_factory=list)
    unchecked: int = 0
    """Frames and strobes outside the span both cover (at a segment's ends a strobe can land
    in the neighbouring segment): not counted as missing."""
    missing_at_ns: list[int] = field(default_factory=list)
    """Strobe instants with no frame (the first 20)."""
    strobe_bound_ns: int | None = None
    """Median stored bound of the strobes' mapped times."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def match(frame_ns: I64, frame_index: I64, strobe_ns: I64, *, strobe_index: I64 | None = None,
          strobe_bound_ns: I64 | None = None, tolerance_ns: int | None = None,
          outlier_ns: int = 1_000_000,
          explained: list[tuple[int, int]] | None = None) -> StrobeReport:
    """Match strobes (mapped mid-exposure, host ns) to frames (host ns, sorted or not).

    ``explained``: host-time intervals in which frame losses are already reported (gap
    records of the video); a strobe without frame inside one is not counted as unexplained.
    """
    order = np.argsort(frame_ns, kind="stable")
    f, fi = np.asarray(frame_ns, np.int64)[order], np.asarray(frame_index, np.int64)[order]
    so = np.argsort(np.asarray(strobe_ns, np.int64), kind="stable")
    s = np.asarray(strobe_ns, np.int64)[so]
    sb = (np.asarray(strobe_bound_ns, np.int64)[so] if strobe_bound_ns is not None
          and len(strobe_bound_ns) == len(s) else np.zeros(len(s), np.int64))
    rep = StrobeReport(frames=len(f), strobes=len(s), matched=0)
    if strobe_index is not None and len(strobe_index) > 1:
        si = np.sort(np.asarray(strobe_index, np.int64))
        step = np.diff(si)
        rep.strobes_lost = int((step[step > 1] - 1).sum())
    if strobe_bound_ns is not None and len(strobe_bound_ns):
        rep.strobe_bound_ns = int(np.median(strobe_bound_ns))
    if not len(f) or not len(s):
        rep.frames_without_strobe = len(f)
        rep.strobes_without_frame = len(s)
        return rep
    if tolerance_ns is None:
        tolerance_ns = int(np.median(np.diff(f)) // 2) if len(f) > 1 else 16_000_000
    j = np.clip(np.searchsorted(f, s), 1, len(f) - 1) if len(f) > 1 else np.zeros(len(s), int)
    if len(f) > 1:
        left = np.abs(s - f[j - 1]) <= np.abs(f[j] - s)
        j = np.where(left, j - 1, j)
    d = f[j] - s
    ok = np.abs(d) <= tolerance_ns
    # one strobe per frame: the nearest wins
    best: dict[int, int] = {}
    for k in np.flatnonzero(ok):
        jj = int(j[k])
        if jj not in best or abs(d[k]) < abs(d[best[jj]]):
            best[jj] = int(k)
    taken = np.zeros(len(s), bool)
    taken[list(best.values())] = True
    res = d[taken]
    rep.matched = int(taken.sum())
    # only the span both streams cover can be judged
    lo, hi = max(f[0], s[0]) - tolerance_ns, min(f[-1], s[-1]) + tolerance_ns
    f_in = (f >= lo) & (f <= hi)
    s_in = (s >= lo) & (s <= hi)
    matched_f = np.zeros(len(f), bool)
    matched_f[list(best)] = True
    rep.frames_without_strobe = int((f_in & ~matched_f).sum())
    rep.unchecked = int((~f_in & ~matched_f).sum() + (~s_in & ~taken).sum())
    missing = s[~taken & s_in]
    rep.strobes_without_frame = len(missing)
    intervals = explained or []
    rep.unexplained_missing_frames = sum(
        1 for t in missing if not any(a <= t <= b for a, b in intervals))
    rep.missing_at_ns = [int(t) for t in missing[:20]]
    if len(res):
        a = np.sort(np.abs(res))
        med = int(np.median(res))
        rep.residual_ns = {"median": med, "p50": int(a[len(a) // 2]),
                           "p99": int(a[min(len(a) - 1, int(0.99 * len(a)))]),
                           "max": int(a[-1])}
        far = np.abs(res - med) > np.maximum(outlier_ns, sb[taken])
        rep.outliers = int(far.sum())
        by_strobe = {v: k for k, v in best.items()}
        fr_of = np.array([by_strobe[int(k)] for k in np.flatnonzero(taken)], dtype=np.int64)
        rep.outlier_frames = [int(fi[x]) for x in fr_of[far][:20]]
    return rep


def segment_report(records: list[Any], frame_ns: I64, frame_index: I64,
                   explained: list[tuple[int, int]]) -> StrobeReport | None:
    """The report of one segment from its /head/strobe batches (msgpack payloads, decoded)
    and its frames; None when the segment has no strobes. Strobes the fit could not map yet
    (bound -1) are left out."""
    ns: list[int] = []
    idx: list[int] = []
    bounds: list[int] = []
    for p in records:
        for t, i, b in zip(p["host_mid_ns"], p["index"], p["bound_ns"], strict=True):
            if b >= 0:
                ns.append(int(t))
                idx.append(int(i))
                bounds.append(int(b))
    if not ns:
        return None
    fi = np.asarray(frame_index, np.int64)
    f = np.asarray(frame_ns, np.int64)
    spans = list(explained)
    o = np.argsort(f)
    for a, b in itertools.pairwise(o):
        if fi[b] > fi[a] + 1:  # a counted frame loss: the camera said so
            spans.append((int(f[a]), int(f[b])))
    return match(f, fi, np.asarray(ns, np.int64), strobe_index=np.asarray(idx, np.int64),
                 strobe_bound_ns=np.asarray(bounds, np.int64), explained=spans)
