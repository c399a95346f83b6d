"""Every wrist profile's facts, in one table: what each other module asks about a profile.

    facts(name) -> ProfileFacts       # KeyError-free: ValueError naming the known ones
    NAMES                             # the profiles, in a stable order (config choices)

A profile's facts are: its decoder (module and class, imported only when asked), its clock
fit's kind (the placement parameters are ``agent.wrist.timing.TIMING``, keyed by the same
names), whether its band answers control writes, whether its stop reply counts the samples
it sent, from which profile version it takes the two-way time exchange, the batch encoding
its samples are stored in, how many samples its simulated firmware packs per notification,
and its sensor-profile file (GATT layout, commands, scales, the latency default and its
uncertainty: ``device_configs/sensors/<name>.toml``, ``agent.wrist.profiles``).

This module imports nothing heavy: ``agent.config`` reads its choices from here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.wrist.decode import Decoder
    from agent.wrist.profiles import SensorProfile


@dataclass(frozen=True, slots=True)
class ProfileFacts:
    name: str
    decoder: str
    """``module:Class`` of its decoder (agent.wrist.decode.*)."""
    decoder_takes_rate: bool
    fit_kind: str
    """agent.clock.band kinds: "two-way", "device" (one-way), "rate" (no device clock)."""
    replies_from_version: int | None
    """The profile version from which its band answers every control write on the control
    point (agent.wrist.control; 0: every version); None: its replies are not read."""
    stop_count: bool
    """Its stop reply carries the seq after the last sample sent (``next_seq``)."""
    two_way_from_version: int | None
    """The profile version (Info) from which the band takes the time exchange; None: never."""
    sim_samples_per_packet: int
    """What the simulated firmware packs per notification (agent.sim.band_model)."""
    batch_encoding: str = "d12-zz-i16le-planar"
    """How its samples are stored (agent.wrist.imu_batch ENCODING): the same for all today."""

    def make_decoder(self, rate_hz: float) -> Decoder:
        module, _, cls = self.decoder.partition(":")
        factory: Any = getattr(importlib.import_module(module), cls)
        return factory(rate_hz=rate_hz) if self.decoder_takes_rate else factory()  # type: ignore[no-any-return]

    def sensor_profile(self) -> SensorProfile:
        from agent.wrist.profiles import load_profile

        return load_profile(self.name)

    @property
    def replies(self) -> bool:
        """Whether bands of this profile ever answer control writes."""
        return self.replies_from_version is not None

    def answers(self, version: int) -> bool:
        """Whether a band of this profile at ``version`` replies to control writes."""
        return self.replies_from_version is not None and version >= self.replies_from_version

    def two_way(self, version: int) -> bool:
        return self.two_way_from_version is not None and version >= self.two_way_from_version


_D = "agent.wrist.decode."
REGISTRY: dict[str, ProfileFacts] = {f.name: f for f in (
    ProfileFacts("wearcap-open", _D + "open_profile:OpenDecoder", False, "two-way",
                 replies_from_version=2, stop_count=True, two_way_from_version=2,
                 sim_samples_per_packet=4),
    ProfileFacts("polar-pmd", _D + "polar_pmd:PolarDecoder", True, "device",
                 replies_from_version=0, stop_count=False, two_way_from_version=None,
                 sim_samples_per_packet=16),
    ProfileFacts("movesense", _D + "movesense:MovesenseDecoder", True, "device",
                 replies_from_version=None, stop_count=False, two_way_from_version=None,
                 sim_samples_per_packet=8),
    ProfileFacts("witmotion", _D + "witmotion:WitMotionDecoder", True, "rate",
                 replies_from_version=None, stop_count=False, two_way_from_version=None,
                 sim_samples_per_packet=1),
)}
NAMES = tuple(REGISTRY)


def facts(name: str) -> ProfileFacts:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown wrist profile {name!r}; known: {', '.join(NAMES)}") from None
