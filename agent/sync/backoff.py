"""Capped, jittered retry delays: a pure function, testable without sleeping."""

from __future__ import annotations

import random
from typing import Protocol


class Rng(Protocol):
    def random(self) -> float: ...


def backoff(attempt: int, *, base: float, cap: float, rng: Rng = random,
            auth: bool = False) -> float:
    """Seconds to wait before retry number ``attempt`` (1 = the first retry).

    Exponential (``base * 2**(attempt-1)``), capped at ``cap``, with "equal jitter": the wait
    is drawn from [d/2, d] so that many rigs behind one access point do not retry in step,
    yet no wait is ever shorter than half the nominal one. An authentication failure
    (``auth``) goes straight to the cap: retrying sooner cannot fix a bad token.
    """
    if cap <= 0:
        return 0.0
    if auth:
        nominal = cap
    else:
        exp = min(max(attempt, 1) - 1, 62)
        nominal = min(cap, base * (2.0**exp))
    return nominal / 2 + rng.random() * nominal / 2
