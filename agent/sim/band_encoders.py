"""The simulated bands' firmware encoders, one factory per profile (named as the profile,
``-`` as ``_``): what a band of the profile sends for samples it took. The profile registry
names each profile's factory (``agent.wrist.registry.ProfileFacts.sim_encoder``);
``agent.sim.band_model`` asks it.

    enc = wearcap_open(device_period_ns=5_000_250.0)
    enc(k0, stamped_device_ns, acc, gyro, None) -> [(notification, first, n), ...]

Each encoder lives beside its decoder in agent/wrist/decode/; these only adapt the model's
arguments (first sample number, the device times the band stamps on each sample, counts,
the connection event's anchor) and say which samples each notification carries."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

POLAR_EPOCH_OFFSET_NS = 757_382_400_000_000_000  # a 2024 wall time, ns since 2000-01-01

Packet = tuple[bytes, int, int]
"""A notification: (its bytes, the offset of its first sample among those given, samples)."""
Encoder = Callable[[int, npt.NDArray[np.int64], npt.NDArray[np.int16], npt.NDArray[np.int16],
                    int | None], list[Packet]]
"""(first sample number, stamped device ns per sample, acc, gyro, the device ns of the
connection event's anchor when the firmware stamps one, else None) -> its notifications."""


def wearcap_open(device_period_ns: float) -> Encoder:
    """One notification, stamped with its first sample's device time in us, and with the
    connection event's anchor when given (the firmware packs at the radio notification)."""
    from agent.wrist.decode import open_profile as op

    period = round(device_period_ns)

    def enc(k0: int, dev: npt.NDArray[np.int64], acc: npt.NDArray[np.int16],
            gyro: npt.NDArray[np.int16], tx_ns: int | None) -> list[Packet]:
        tx_us = None if tx_ns is None else tx_ns // 1000
        return [(op.encode(k0, int(dev[0]) // 1000, period, acc, gyro, tx_us=tx_us,
                           anchor=tx_ns is not None), 0, len(acc))]
    return enc


def polar_pmd(device_period_ns: float) -> Encoder:
    """An ACC and a GYRO frame of the same samples, stamped with the last sample's ns since
    2000-01-01."""
    from agent.wrist.decode import polar_pmd as pp

    pe = pp.PolarEncoder()
    return lambda k0, dev, acc, gyro, tx: [
        (f, 0, len(acc)) for f in pe.encode(dev + POLAR_EPOCH_OFFSET_NS, acc, gyro)]


def movesense(device_period_ns: float) -> Encoder:
    """One float32 packet, stamped with its first sample's device time in ms."""
    from agent.wrist.decode import movesense as ms

    me = ms.MovesenseEncoder()
    return lambda k0, dev, acc, gyro, tx: [
        (me.encode(int(dev[0]) // 1_000_000, acc, gyro), 0, len(acc))]


def witmotion(device_period_ns: float) -> Encoder:
    """One packet per sample, no time at all."""
    from agent.wrist.decode import witmotion as wm

    return lambda k0, dev, acc, gyro, tx: [
        (wm.encode(a, g), i, 1) for i, (a, g) in enumerate(zip(acc, gyro, strict=True))]
