"""The lower convex hull of a sliding window of points, kept as the window moves.

The window holds integer points in strictly increasing x. A point joins at the right (or the
rightmost one is lowered in place), and the oldest leave at the left. The hull after each
change is exactly ``lower_hull`` (agent/clock/oneway.py) of the window's points: the same
vertices (collinear ones dropped), since the arithmetic is on integers and a hull's vertex set
does not depend on how it is found. Drawing it anew costs the whole window per change; here a
point joining costs the vertices it hides (each hidden once), and one leaving redraws only the
hull's first edge:

- **Joining at the right** is one step of the monotone chain.
- **Lowering the rightmost point** hides at least what it hid before (a lower point is under
  every chord the higher one was under), so the chain steps again from the hull without it.
- **The leftmost point leaving** (always the hull's first vertex): the hull from its second
  vertex on stays (every point left of that vertex is on or above the first edge, whose slope
  is under the next edge's), and only the points up to the second vertex are chained again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from itertools import islice

Point = tuple[int, int]


def _step(hull: list[Point], p: Point) -> None:
    """One monotone-chain step: ``p`` (right of every vertex) joins, hiding what it covers."""
    px, py = p
    while len(hull) >= 2:
        (ox, oy), (ax, ay) = hull[-2], hull[-1]
        if (ax - ox) * (py - oy) - (ay - oy) * (px - ox) > 0:
            break
        hull.pop()
    hull.append(p)


class WindowHull:
    """A window of points (x strictly increasing) and its lower convex hull."""

    def __init__(self) -> None:
        self._pts: deque[Point] = deque()
        self._hull: list[Point] = []
        self.sum_x = 0
        """The sum of the window's x (exact)."""

    def __len__(self) -> int:
        return len(self._pts)

    def __getitem__(self, i: int) -> Point:
        return self._pts[i]

    def __iter__(self) -> Iterator[Point]:
        return iter(self._pts)

    def newest(self, n: int) -> Iterator[Point]:
        """The newest ``n`` points (all if fewer), newest first."""
        return islice(reversed(self._pts), n)

    @property
    def hull(self) -> list[Point]:
        """The window's lower hull, left to right (do not change it)."""
        return self._hull

    def clear(self) -> None:
        self._pts.clear()
        self._hull = []
        self.sum_x = 0

    def push(self, p: Point) -> None:
        """``p`` joins at the right (its x above every point's)."""
        pts = self._pts
        if pts and p[0] <= pts[-1][0]:
            raise ValueError("a point joins right of the window")
        pts.append(p)
        self.sum_x += p[0]
        _step(self._hull, p)

    def lower_last(self, y: int) -> None:
        """The rightmost point moves down to ``y``."""
        pts = self._pts
        x, old = pts[-1]
        if y > old:
            raise ValueError("the rightmost point only moves down")
        p = (x, y)
        pts[-1] = p
        hull = self._hull
        hull.pop()  # it was the last vertex
        _step(hull, p)

    def popleft(self) -> Point:
        """The leftmost point leaves."""
        pts = self._pts
        gone = pts.popleft()
        self.sum_x -= gone[0]
        old = self._hull
        hull: list[Point] = []
        if len(old) < 2:  # it was the only point
            self._hull = hull
            return gone
        second = old[1]
        for p in pts:
            _step(hull, p)
            if p[0] == second[0]:
                break
        for p in islice(old, 2, None):
            _step(hull, p)
        self._hull = hull
        return gone


__all__ = ["WindowHull"]
