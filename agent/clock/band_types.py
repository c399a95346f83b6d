"""What a band's time mapper (agent/clock/band.py) is told and what it says: the transport
``Latency`` it assumes, and the ``ChunkTime`` of each placed chunk (host t0, spacing, and the
bound with its parts)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Latency:
    """The transport latency the mapper assumes: ``ns`` +- ``uncertainty_ns``.

    ``source``: where it comes from ("profile" default, "config" for a per-band setting,
    "calibrated" for a measurement such as a tap seen by the head IMU and the band)."""

    ns: int
    uncertainty_ns: int
    source: str = "profile"

    def __post_init__(self) -> None:
        if self.ns < 0 or self.uncertainty_ns < 0:
            raise ValueError("latency and its uncertainty are >= 0")


@dataclass(frozen=True, slots=True)
class ChunkTime:
    """Where one chunk's samples are on the host timeline, and how sure that is."""

    t0_ns: int
    """Host time of the first sample."""
    period_ns: float
    """Host spacing of the samples."""
    fit_ns: int
    latency_ns: int
    quantisation_ns: int
    slew_ns: int
    """|output - fit| at the first sample: the part of a fit change not yet slewed in."""
    source: str
    """"one-way", "rate", "two-way" or "arrival"."""

    @property
    def bound_ns(self) -> int:
        """|host time - truth| <= this, for each sample of the chunk."""
        return self.fit_ns + self.latency_ns + self.quantisation_ns + self.slew_ns



__all__ = ["ChunkTime", "Latency"]
