"""Strobes check the camera: an injected stamp offset and a silently dropped frame are both
caught by the residual report (pure matching on a controlled timeline)."""

from __future__ import annotations

import numpy as np

from agent.mcu.strobes import match, segment_report

PERIOD = 33_333_333


def timeline(n=300, seed=1):
    rng = np.random.default_rng(seed)
    truth = 10**9 + np.arange(n, dtype=np.int64) * PERIOD  # true mid-exposures
    strobes = truth + rng.integers(-40_000, 40_000, n)  # mapped within a 40 us bound
    return truth, strobes


def test_honest_stamps_give_small_residuals_and_no_missing_frames():
    truth, strobes = timeline()
    r = match(truth, np.arange(len(truth)), strobes)
    assert r.matched == len(truth) and r.frames_without_strobe == 0
    assert r.strobes_without_frame == 0 and r.outliers == 0
    assert r.residual_ns["p99"] <= 40_000


def test_a_stamp_offset_and_a_silently_dropped_frame_are_both_reported():
    truth, strobes = timeline()
    stamps = truth.copy()
    stamps[200:] += 4_000_000  # the camera's stamps move 4 ms late from frame 200 on
    keep = np.ones(len(truth), bool)
    keep[100] = False  # frame 100 vanishes: no index jump is possible to see, we renumber
    frames = stamps[keep]
    index = np.arange(len(frames))  # silently: the numbering hides the loss
    r = match(frames, index, strobes, explained=[])
    assert r.strobes_without_frame == 1 and r.unexplained_missing_frames == 1
    assert abs(r.missing_at_ns[0] - truth[100]) < 100_000
    assert r.frames_without_strobe == 0
    assert r.residual_ns["p99"] >= 3_900_000  # the offset shows
    assert r.outliers == 100  # every frame after the step is off the median
    # and the matching did not shift after the drop: frame 101 matched its own strobe
    assert r.matched == len(frames)


def test_a_counted_frame_loss_is_explained_and_lost_strobes_are_not_camera_faults():
    truth, strobes = timeline()
    keep = np.ones(len(truth), bool)
    keep[50:53] = False
    idx = np.arange(len(truth))[keep]  # the index jumps 49 -> 53: counted by the camera
    s_keep = np.ones(len(truth), bool)
    s_keep[200] = False  # a strobe frame lost on the serial link
    payload = {"host_mid_ns": strobes[s_keep].tolist(),
               "index": np.arange(len(truth))[s_keep].tolist(),
               "bound_ns": [40_000] * int(s_keep.sum())}
    r = segment_report([payload], truth[keep], idx, [])
    assert r is not None
    assert r.strobes_without_frame == 3 and r.unexplained_missing_frames == 0
    assert r.frames_without_strobe == 1 and r.strobes_lost == 1
    assert r.strobe_bound_ns == 40_000


def test_single_bad_stamp_is_an_outlier_named_by_frame_index():
    truth, strobes = timeline()
    stamps = truth.copy()
    stamps[77] += 6_000_000
    r = match(stamps, np.arange(len(truth)) + 1000, strobes)
    assert r.outliers == 1 and r.outlier_frames == [1077]


# ------------------------------------------------------------------ matched at capture time
from agent.mcu.strobes import MATCH_COLUMNS, StrobeMatcher, stored_report  # noqa: E402


def capture(frames, strobes, *, frame_delay=20_000_000, strobe_delay=4_000_000,
            late=None, rolls=(), drain_ns=20_000_000):
    """Feed a StrobeMatcher as the capture loop does: frames when written (their stamp +
    encoder latency), strobes when they arrive (+ link latency; ``late``: (first, last,
    extra) strobes held up on the link), drains every ``drain_ns``, a roll (flush, then a new
    segment) after each frame index in ``rolls``. Returns per segment (frame stamps, frame
    indexes, stored match payloads)."""
    events = [(int(t) + frame_delay, 1, ("f", i, int(t))) for i, t in enumerate(frames)]
    arrive = np.asarray(strobes, np.int64) + strobe_delay
    if late:
        a, b, extra = late
        arrive[a:b + 1] = arrive[b] + extra  # one wire: what follows waits too
        arrive = np.maximum.accumulate(arrive)
    events += [(int(t), 0, ("s", k, int(m)))
               for k, (t, m) in enumerate(zip(arrive, strobes, strict=True))]
    events.sort()
    m = StrobeMatcher()
    segs: list[tuple[list[int], list[int], list[dict]]] = [([], [], [])]
    next_drain = events[0][0]

    def flush(now, final=False):
        rows = m.decide(now, final=final)
        if rows:
            segs[-1][2].append({c: [r[i] for r in rows] for i, c in enumerate(MATCH_COLUMNS)})

    for t, _, (kind, i, ns) in events:
        while t >= next_drain:
            flush(next_drain)
            next_drain += drain_ns
        if kind == "f":
            if i - 1 in rolls:
                flush(t)
                segs.append(([], [], []))
            segs[-1][0].append(ns)
            segs[-1][1].append(i)
            m.frame(i, ns)
        else:
            m.strobe(i, ns, 40_000)
    flush(events[-1][0], final=True)
    return [(np.asarray(f, np.int64), np.asarray(x, np.int64), p) for f, x, p in segs]


def test_the_capture_time_match_catches_a_stamp_offset_and_a_silent_drop():
    truth, strobes = timeline()
    stamps = truth.copy()
    stamps[200:] += 4_000_000
    keep = np.ones(len(truth), bool)
    keep[100] = False
    ((f, idx, rows),) = capture(stamps[keep], strobes)
    idx = np.arange(len(f))  # renumbered: the loss is silent
    r = stored_report(rows, f, idx, [], [{"index": list(range(len(strobes))),
                                          "bound_ns": [40_000] * len(strobes)}])
    assert r is not None and r.stored
    assert r.strobes_without_frame == 1 and r.unexplained_missing_frames == 1
    assert abs(r.missing_at_ns[0] - truth[100]) < 100_000
    assert r.frames_without_strobe == 0 and r.matched == len(f) and r.unchecked == 0
    assert r.residual_ns["p99"] >= 3_900_000 and r.outliers == 100
    # the same answer as matching the whole segment afterwards
    offline = match(f, idx, strobes, explained=[])
    assert (r.matched, r.residual_ns, r.outliers) == (offline.matched, offline.residual_ns,
                                                      offline.outliers)


def test_a_strobe_after_the_roll_is_stored_with_its_frame_in_the_next_segment():
    truth, strobes = timeline()
    keep = np.ones(len(truth), bool)
    keep[60] = False  # an exposure no frame matches (renumbered: silent)
    s_keep = np.ones(len(truth), bool)
    s_keep[120] = False  # a frame the MCU saw no strobe for
    frames = truth[keep]
    # strobes 139..147 are held up on the link 200 ms, past the roll after frame 148
    segs = capture(frames, strobes[s_keep], late=(139, 147, 200_000_000), rolls=(148,))
    assert len(segs) == 2
    reps = [stored_report(p, f, x, [], []) for f, x, p in segs]
    a, b = reps
    assert a is not None and b is not None
    assert a.unchecked > 0 and b.for_previous_segment == a.unchecked  # decided after the roll
    total = a.matched + b.matched + b.for_previous_segment
    frames_with_strobe = len(frames) - 1  # frame 120 has none
    assert total == frames_with_strobe
    assert a.frames_without_strobe + b.frames_without_strobe == 1
    assert a.strobes_without_frame + b.strobes_without_frame == 1  # frame 60's exposure
    assert a.residual_ns["p99"] <= 40_000
    # every frame has exactly one row, in one of the two segments
    seen = [t for _, _, p in segs for row in p
            for t, i in zip(row["host_ns"], row["frame_index"], strict=True) if i >= 0]
    assert sorted(seen) == sorted(frames.tolist())
