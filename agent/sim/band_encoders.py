"""The simulated bands' firmware encoders, one factory per profile (named as the profile,
``-`` as ``_``): what a band of the profile sends for samples it took. The profile registry
names each profile's factory (``agent.wrist.registry.ProfileFacts.sim_encoder``);
``agent.sim.band_model`` asks it.

    enc = wearcap_open(device_period_ns=5_000_250.0)
    enc(k0, stamped_device_ns, acc, gyro) -> [notification bytes, ...]

Each encoder lives beside its decoder in agent/wrist/decode/; these only adapt the model's
arguments (first sample number, the device times the band stamps on each sample, counts)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

POLAR_EPOCH_OFFSET_NS = 757_382_400_000_000_000  # a 2024 wall time, ns since 2000-01-01

Encoder = Callable[[int, npt.NDArray[np.int64], npt.NDArray[np.int16],
                    npt.NDArray[np.int16]], list[bytes]]
"""(first sample number, stamped device ns per sample, acc, gyro) -> notifications."""


def wearcap_open(device_period_ns: float) -> Encoder:
    """One notification, stamped with its first sample's device time in us."""
    from agent.wrist.decode import open_profile as op

    period = round(device_period_ns)
    return lambda k0, dev, acc, gyro: [op.encode(k0, int(dev[0]) // 1000, period, acc, gyro)]


def polar_pmd(device_period_ns: float) -> Encoder:
    """An ACC and a GYRO frame, stamped with the last sample's ns since 2000-01-01."""
    from agent.wrist.decode import polar_pmd as pp

    pe = pp.PolarEncoder()
    return lambda k0, dev, acc, gyro: pe.encode(dev + POLAR_EPOCH_OFFSET_NS, acc, gyro)


def movesense(device_period_ns: float) -> Encoder:
    """One float32 packet, stamped with its first sample's device time in ms."""
    from agent.wrist.decode import movesense as ms

    me = ms.MovesenseEncoder()
    return lambda k0, dev, acc, gyro: [me.encode(int(dev[0]) // 1_000_000, acc, gyro)]


def witmotion(device_period_ns: float) -> Encoder:
    """One packet per sample, no time at all."""
    from agent.wrist.decode import witmotion as wm

    return lambda k0, dev, acc, gyro: [wm.encode(a, g) for a, g in zip(acc, gyro, strict=True)]
