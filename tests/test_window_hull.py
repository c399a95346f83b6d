"""The sliding window's hull (agent/clock/window_hull.py) is, after every change, exactly the
hull drawn anew from the window's points: points that join, a rightmost point lowered, the
oldest leaving, on clustered and collinear points as well as random ones."""

from __future__ import annotations

import numpy as np
import pytest

from agent.clock.oneway import lower_hull
from agent.clock.window_hull import WindowHull


@pytest.mark.parametrize("shape", ["random", "comb", "collinear", "rising"])
def test_the_hull_is_the_one_drawn_anew_after_every_change(shape):
    rng = np.random.default_rng(len(shape))
    w = WindowHull()
    x = 0
    for i in range(2000):
        op = rng.random()
        if op < 0.2 and len(w):
            w.lower_last(w[-1][1] - int(rng.integers(0, 3)))
        elif (op < 0.45 and len(w) > 1) or len(w) > 80:  # a window of up to 80
            w.popleft()
        else:
            x += int(rng.integers(1, 4))
            y = {"random": int(rng.integers(0, 50)),
                 "comb": 7 * x + 13 * int(rng.integers(0, 4)),
                 "collinear": 3 * x + int(rng.random() < 0.1),
                 "rising": x * x // 40 + int(rng.integers(0, 2))}[shape]
            w.push((x, y))
        pts = list(w)
        assert w.hull == lower_hull(pts), i
        assert w.sum_x == sum(p[0] for p in pts)
    assert len(w) > 20


def test_a_point_must_join_at_the_right_and_only_move_down():
    w = WindowHull()
    w.push((5, 10))
    with pytest.raises(ValueError):
        w.push((5, 3))
    with pytest.raises(ValueError):
        w.lower_last(11)
    w.lower_last(4)
    assert w.hull == [(5, 4)] and w.popleft() == (5, 4) and w.hull == [] and not len(w)
