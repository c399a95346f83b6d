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

The match is made at capture time and stored with the frames (``StrobeMatcher``, run by
agent.mcu.source on the writer's thread): ``/head/strobe_match`` holds one row per written
frame (its strobe's index, mapped mid-exposure, residual and bound, or ``strobe_index`` -1:
no strobe) and one per strobe no frame took (``frame_index`` -1). A row is written when its
decision is final, into the segment open then: the last frames of a segment are usually
decided before its roll, and when a strobe is late the row lands in the next segment, naming
its frame by index and stamp. ``stored_report`` reads those rows back (``wearcap inspect``);
``match``/``segment_report`` match at inspect time, for recordings made before the rows.
"""

from __future__ import annotations

import collections
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
    stored: bool = False
    """From the match stored at capture time (``/head/strobe_match``), not made here."""
    for_previous_segment: int = 0
    """Stored rows about frames of the previous segment (their strobe came after the roll)."""

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
    spans = _explained(f, fi, explained)
    return match(f, fi, np.asarray(ns, np.int64), strobe_index=np.asarray(idx, np.int64),
                 strobe_bound_ns=np.asarray(bounds, np.int64), explained=spans)


def _explained(frame_ns: I64, frame_index: I64,
               explained: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Gap records plus the spans of frame-index jumps (frame losses the camera counted)."""
    fi = np.asarray(frame_index, np.int64)
    f = np.asarray(frame_ns, np.int64)
    spans = list(explained)
    o = np.argsort(f)
    for a, b in itertools.pairwise(o):
        if fi[b] > fi[a] + 1:  # a counted frame loss: the camera said so
            spans.append((int(f[a]), int(f[b])))
    return spans


MATCH_COLUMNS = ("host_ns", "frame_index", "strobe_index", "strobe_mid_ns", "residual_ns",
                 "bound_ns")
"""One row per decision: host_ns is the frame's stamp (a strobe without frame: its mapped
mid-exposure); frame_index or strobe_index -1 when that side is missing; residual_ns =
frame stamp - strobe mid (0 when either is missing); bound_ns -1 without a strobe."""


class StrobeMatcher:
    """The capture-time match: frames (as written) and mapped strobes in, final rows out.

        m.frame(index, host_ns)              # each frame written to a segment
        m.strobe(index, mid_ns, bound_ns)    # each strobe, once the clock fit maps it
        rows = m.decide(now_ns)              # decisions that can no longer change
        rows = m.decide(now_ns, final=True)  # at stop: everything left (frames past the
                                             # last strobe and strobes past the last frame
                                             # get no row: unchecked, not missing)

    The rule is ``match``'s (nearest frame within half the median frame interval, one strobe
    per frame, the nearest), decided as soon as no frame or strobe still to come could
    change it: frames arrive in index order and strobes in theirs, so a strobe later than a
    frame's stamp + tolerance closes that frame's candidates. Anything older than
    ``timeout_ns`` (a stalled camera or MCU) is decided on what is known.
    """

    def __init__(self, *, timeout_ns: int = 2_000_000_000, default_period_ns: int = 33_333_333,
                 ) -> None:
        self.timeout_ns = timeout_ns
        self._frames: collections.deque[tuple[int, int]] = collections.deque()
        self._strobes: collections.deque[tuple[int, int, int]] = collections.deque()
        self._intervals: collections.deque[int] = collections.deque(maxlen=31)
        self._last_frame: int | None = None
        self._last_strobe: int | None = None
        self._default = default_period_ns
        self.stats = {"matched": 0, "frames_without_strobe": 0, "strobes_without_frame": 0,
                      "unchecked": 0}

    @property
    def tolerance_ns(self) -> int:
        iv = sorted(self._intervals)
        return (iv[len(iv) // 2] if iv else self._default) // 2

    def frame(self, index: int, host_ns: int) -> None:
        if self._last_frame is not None and host_ns > self._last_frame:
            self._intervals.append(host_ns - self._last_frame)
        self._last_frame = host_ns if self._last_frame is None else max(self._last_frame,
                                                                        host_ns)
        self._frames.append((index, host_ns))

    def strobe(self, index: int, mid_ns: int, bound_ns: int) -> None:
        self._last_strobe = mid_ns if self._last_strobe is None else max(self._last_strobe,
                                                                         mid_ns)
        self._strobes.append((index, mid_ns, bound_ns))

    @property
    def pending(self) -> tuple[int, int]:
        return len(self._frames), len(self._strobes)

    def _row(self, f: tuple[int, int] | None, s: tuple[int, int, int] | None) -> list[int]:
        if f is not None and s is not None:
            self.stats["matched"] += 1
            return [f[1], f[0], s[0], s[1], f[1] - s[1], s[2]]
        if f is not None:
            self.stats["frames_without_strobe"] += 1
            return [f[1], f[0], -1, 0, 0, -1]
        assert s is not None
        self.stats["strobes_without_frame"] += 1
        return [s[1], -1, s[0], s[1], 0, s[2]]

    def decide(self, now_ns: int, *, final: bool = False) -> list[list[int]]:
        """Rows (``MATCH_COLUMNS`` order) whose decision is final."""
        out: list[list[int]] = []
        fr, st = self._frames, self._strobes
        tol = self.tolerance_ns
        big = 1 << 62
        if final:  # what lies past the other stream's end cannot be judged: no row
            while fr and (self._last_strobe is None or fr[-1][1] > self._last_strobe + tol):
                fr.pop()
                self.stats["unchecked"] += 1
            while st and (self._last_frame is None or st[-1][1] > self._last_frame + tol):
                st.pop()
                self.stats["unchecked"] += 1
        old = now_ns - self.timeout_ns
        s_last = big if final else (self._last_strobe if self._last_strobe is not None
                                    else -big)
        f_last = big if final else (self._last_frame if self._last_frame is not None
                                    else -big)
        while fr or st:
            f = fr[0] if fr else None
            s = st[0] if st else None
            if s is not None and (f is None or s[1] < f[1] - tol):
                # no frame left within tolerance; frames still to come are after f_last
                if s[1] < f_last - tol or s[1] < old:
                    out.append(self._row(None, st.popleft()))
                    continue
                break
            if f is not None and (s is None or f[1] < s[1] - tol):
                if f[1] < s_last - tol or f[1] < old:  # strobes to come are after s_last
                    out.append(self._row(fr.popleft(), None))
                    continue
                break
            assert f is not None and s is not None
            d = abs(f[1] - s[1])
            s2 = st[1] if len(st) > 1 else None
            f2 = fr[1] if len(fr) > 1 else None
            if s2 is not None and abs(s2[1] - f[1]) < d:  # f keeps its nearer strobe
                out.append(self._row(None, st.popleft()))
                continue
            if f2 is not None and abs(f2[1] - s[1]) < d:  # s goes to the nearer frame
                out.append(self._row(fr.popleft(), None))
                continue
            timed_out = f[1] < old and s[1] < old
            # a strobe still to come is later than s_last; a frame, than f_last + tol
            if s2 is None and s_last - f[1] < d and not timed_out:
                break
            if f2 is None and f_last + tol - s[1] < d and not timed_out:
                break
            out.append(self._row(fr.popleft(), st.popleft()))
        return out


def stored_report(rows: list[dict[str, Any]], frame_ns: I64, frame_index: I64,
                  explained: list[tuple[int, int]], strobe_payloads: list[Any],
                  outlier_ns: int = 1_000_000) -> StrobeReport | None:
    """The report of one segment from its stored match (``/head/strobe_match`` payloads,
    decoded) and its frames; None when it has no rows. Frames of this segment with no row
    were decided after the roll (their row is in the next segment): ``unchecked``."""
    cols: dict[str, list[int]] = {c: [] for c in MATCH_COLUMNS}
    for p in rows:
        for c in MATCH_COLUMNS:
            cols[c].extend(int(v) for v in p[c])
    if not cols["host_ns"]:
        return None
    t = np.asarray(cols["host_ns"], np.int64)
    fi = np.asarray(cols["frame_index"], np.int64)
    si = np.asarray(cols["strobe_index"], np.int64)
    res = np.asarray(cols["residual_ns"], np.int64)
    bound = np.asarray(cols["bound_ns"], np.int64)
    f = np.asarray(frame_ns, np.int64)
    here = set(f.tolist())
    is_frame = fi >= 0
    ours = is_frame & np.isin(t, f)
    rep = StrobeReport(frames=len(f), strobes=int((si >= 0).sum()), matched=0, stored=True)
    rep.for_previous_segment = int((is_frame & ~ours).sum())
    matched = ours & (si >= 0)
    rep.matched = int(matched.sum())
    rep.frames_without_strobe = int((ours & (si < 0)).sum())
    decided = set(t[ours].tolist())
    rep.unchecked = len(here - decided)
    idx: list[int] = []
    for p in strobe_payloads:
        idx.extend(int(i) for i, b in zip(p["index"], p["bound_ns"], strict=True) if b >= 0)
    if len(idx) > 1:
        step = np.diff(np.sort(np.asarray(idx, np.int64)))
        rep.strobes_lost = int((step[step > 1] - 1).sum())
    with_strobe = si >= 0
    if with_strobe.any():
        rep.strobe_bound_ns = int(np.median(bound[with_strobe]))
    # as in ``match``: only the span the frames cover can be judged (a pause that outlasts
    # the segment leaves its exposures after the last frame; the pause's gap record is in
    # the segment where it ends)
    tol = int(np.median(np.diff(np.sort(f))) // 2) if len(f) > 1 else 16_000_000
    lone = ~is_frame
    inside = (t >= f.min() - tol) & (t <= f.max() + tol) if len(f) else np.zeros(len(t), bool)
    rep.unchecked += int((lone & ~inside).sum())
    missing = t[lone & inside]
    rep.strobes_without_frame = len(missing)
    spans = _explained(f, frame_index, explained)
    rep.unexplained_missing_frames = sum(
        1 for x in missing if not any(a <= x <= b for a, b in spans))
    rep.missing_at_ns = [int(x) for x in missing[:20]]
    r = res[matched]
    if len(r):
        a = np.sort(np.abs(r))
        med = int(np.median(r))
        rep.residual_ns = {"median": med, "p50": int(a[len(a) // 2]),
                           "p99": int(a[min(len(a) - 1, int(0.99 * len(a)))]),
                           "max": int(a[-1])}
        far = np.abs(r - med) > np.maximum(outlier_ns, bound[matched])
        rep.outliers = int(far.sum())
        rep.outlier_frames = [int(x) for x in fi[matched][far][:20]]
    return rep
