"""Capped, jittered retry delays for every retry loop of the agent (BLE links, sync): pure.

    policy = Policy(first_s=2.0, cap_s=300.0)        # each caller keeps its own policy
    wait = delay(policy, retry, rng)                 # retry 1 = the first retry after a failure
    wait = delay(policy, retry, rng, floor_s=1.0)    # at least this nominal wait (a cause's own)

One set of semantics for all of them:

- the nominal wait grows exponentially, ``first_s * factor ** (retry - 1)``, raised to
  ``floor_s`` if the caller gives one, and never above ``cap_s``;
- the wait is drawn uniformly from ``[(1 - jitter) * nominal, nominal]`` ("equal jitter" at
  the default 0.5): many rigs behind one access point, or two bands on one adapter, do not
  retry in step, yet no wait is shorter than ``(1 - jitter)`` of the nominal one;
- so no wait exceeds the cap, and the jitter stays spread at the cap too (a window that
  reaches above the nominal wait and is then clipped to the cap would put every draw above
  the middle onto the cap, in step).

``rng`` is anything with ``random()`` in [0, 1) (``random.Random``, or a fixed value in
tests); it is drawn once per call, and not at all when the cap is 0.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol


class Rng(Protocol):
    def random(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Policy:
    first_s: float = 0.25
    """The nominal wait before the first retry."""
    cap_s: float = 30.0
    """No wait is longer (0: retry at once)."""
    factor: float = 2.0
    jitter: float = 0.5
    """The share of the nominal wait the draw may take off (0: no jitter, 1: full jitter)."""

    def __post_init__(self) -> None:
        if not (self.first_s >= 0 and self.cap_s >= 0 and self.factor >= 1
                and 0 <= self.jitter <= 1):
            raise ValueError(f"invalid backoff policy {self}")


def nominal(policy: Policy, retry: int, floor_s: float = 0.0) -> float:
    """The wait before retry number ``retry`` (1 = the first) without jitter."""
    exp = min(max(retry, 1) - 1, 1000)
    try:
        grown = policy.first_s * policy.factor ** exp
    except OverflowError:
        grown = policy.cap_s
    return min(policy.cap_s, max(floor_s, grown))


def delay(policy: Policy, retry: int, rng: Rng = random, *, floor_s: float = 0.0) -> float:
    """Seconds to wait before retry number ``retry`` (1 = the first retry after a failure)."""
    if policy.cap_s <= 0:
        return 0.0
    d = nominal(policy, retry, floor_s)
    u = min(max(rng.random(), 0.0), 1.0)
    return d * (1.0 - policy.jitter * (1.0 - u))
