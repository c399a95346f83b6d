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
