"""Pairing at provisioning: the nearest bands by RSSI, then left and right by which one moved.

The technician shakes the band meant for the left wrist; the rig streams both bands and
compares how much each one's acceleration varies. The band that moved clearly more (at least
``MIN_RATIO`` times the other) is the left one. A tie is an error, never a guess.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from agent.config import BleSection, WristBand
from agent.errors import SourceError

MIN_RATIO = 3.0


def motion(samples: list[Any]) -> float:
    """How much a band moved: the spread of its acceleration magnitude (counts)."""
    if not samples:
        return 0.0
    acc = np.concatenate(samples).astype(np.float64)
    if len(acc) < 10:
        return 0.0
    return float(np.std(np.linalg.norm(acc, axis=1)))


def which_moved(energy: dict[str, float]) -> str:
    """The address of the band that moved, or SourceError saying why it cannot tell."""
    ranked = sorted(energy.items(), key=lambda kv: -kv[1])
    if len(ranked) < 2:
        return ranked[0][0]
    (top, e1), (_, e2) = ranked[0], ranked[1]
    if e1 < MIN_RATIO * max(e2, 1.0):
        raise SourceError("could not tell which band was shaken (motion "
                          + ", ".join(f"{a}: {e:.0f}" for a, e in ranked)
                          + "): shake the left band harder for the whole time and keep the "
                          "other one still, or give --left ADDR --right ADDR", device="pairing")
    return top


def shake_to_assign(bands: list[dict[str, Any]], ble: BleSection, *, rate_hz: float,
                    seconds: float, prompt: Callable[[], None],
                    ready_timeout: float = 60.0) -> tuple[dict[str, Any], dict[str, Any],
                                                          dict[str, float]]:
    """Stream both bands, ``prompt()`` the technician (or the simulated wearer) to shake the
    left one, and return (left, right, motion per address)."""
    from agent.wrist.imu_batch import decode_payload
    from agent.wrist.source import WristSource

    srcs = [WristSource(WristBand(name=f"band{i}", address=b["address"], profile=b["profile"],
                                  rate_hz=rate_hz), ble) for i, b in enumerate(bands)]
    for s in srcs:
        s.start()
    try:
        deadline = time.monotonic() + ready_timeout
        while not all(s.status().get("streaming") for s in srcs):
            if time.monotonic() > deadline:
                off = [b["address"] for b, s in zip(bands, srcs, strict=True)
                       if not s.status().get("streaming")]
                raise SourceError(f"band(s) {', '.join(off)} do not stream: are they on and "
                                  "charged?", device="pairing")
            for s in srcs:
                s.drain()
            time.sleep(0.1)
        for s in srcs:
            s.flush()
            s.drain()  # what came before the shake does not count
        prompt()
        got: dict[str, list[Any]] = {b["address"]: [] for b in bands}
        end = time.monotonic() + seconds
        while True:
            last = time.monotonic() >= end
            for b, s in zip(bands, srcs, strict=True):
                if last:
                    s.flush()
                for m in s.drain():
                    if m.topic.endswith("/imu"):
                        got[b["address"]].append(decode_payload(m.payload)["acc"])
            if last:
                break
            time.sleep(0.1)
    finally:
        for s in srcs:
            s.stop()
    energy = {a: motion(v) for a, v in got.items()}
    left_addr = which_moved(energy)
    left = next(b for b in bands if b["address"] == left_addr)
    right = next(b for b in bands if b["address"] != left_addr)
    return left, right, energy
