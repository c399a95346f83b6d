"""Every wrist profile's facts, in one table: what each other module asks about a profile.

    facts(name) -> ProfileFacts       # KeyError-free: ValueError naming the known ones
    NAMES                             # the profiles, in a stable order (config choices)

A profile's facts are: its decoder (module and class, imported only when asked), its clock
fit (kind and placement parameters, ``ProfileTiming``: ``agent.wrist.timing`` builds each
band's mapper from it), whether its band answers control writes, whether its stop reply
counts the samples it sent, from which profile version it takes the two-way time exchange,
the batch encoding its samples are stored in, how many samples its simulated firmware packs
per notification and the encoder that packs them, and its sensor-profile file (GATT layout,
commands, scales, the latency default and its uncertainty:
``device_configs/sensors/<name>.toml``, ``agent.wrist.profiles``).

This module imports nothing heavy: ``agent.config`` reads its choices from here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.sim.band_encoders import Encoder
    from agent.wrist.decode import Decoder
    from agent.wrist.profiles import SensorProfile


@dataclass(frozen=True, slots=True)
class ProfileTiming:
    """How a profile's band is timed (agent.clock.band.BandClock's arguments)."""

    kind: str
    """agent.clock.band kinds: "device" (one-way), "rate" (no device clock), "two-way"."""
    quantisation_ns: int
    """Resolution of the band's timestamps."""
    wait_prior_ns: int
    """Largest plausible wait of a packet between its observed instant and the connection
    event it leaves in (vendor bands: an interval; the open profile's anchor: ~0)."""
    fit_args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProfileFacts:
    name: str
    decoder: str
    """``module:Class`` of its decoder (agent.wrist.decode.*)."""
    decoder_takes_rate: bool
    timing: ProfileTiming
    """Its clock fit: kind and placement parameters."""
    replies_from_version: int | None
    """The profile version from which its band answers every control write on the control
    point (agent.wrist.control; 0: every version); None: its replies are not read."""
    stop_count: bool
    """Its stop reply carries the seq after the last sample sent (``next_seq``)."""
    two_way_from_version: int | None
    """The profile version (Info) from which the band takes the time exchange; None: never."""
    sim_samples_per_packet: int
    """What the simulated firmware packs per notification (agent.sim.band_model)."""
    sim_encoder: str
    """``module:function`` making the simulated firmware's encoder from the band's device
    sample period (agent.sim.band_encoders; imported only when asked)."""
    sim_packs_at_events: bool = False
    """Its simulated firmware packs what it has at each connection event and stamps the
    event's anchor (the open profile), rather than a packet of a fixed size when full."""
    batch_encoding: str = "d12-zz-i16le-planar"
    """How its samples are stored (agent.wrist.imu_batch ENCODING): the same for all today."""

    @property
    def fit_kind(self) -> str:
        """agent.clock.band kinds: "two-way", "device" (one-way), "rate" (no device clock)."""
        return self.timing.kind

    def make_decoder(self, rate_hz: float) -> Decoder:
        module, _, cls = self.decoder.partition(":")
        factory: Any = getattr(importlib.import_module(module), cls)
        return factory(rate_hz=rate_hz) if self.decoder_takes_rate else factory()  # type: ignore[no-any-return]

    def make_sim_encoder(self, device_period_ns: float) -> Encoder:
        module, _, fn = self.sim_encoder.partition(":")
        factory: Any = getattr(importlib.import_module(module), fn)
        return factory(device_period_ns)  # type: ignore[no-any-return]

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
_S = "agent.sim.band_encoders:"
_BURST_GAP_NS = 2_000_000  # agent.clock.rate.BURST_GAP_NS (checked by the tests)
REGISTRY: dict[str, ProfileFacts] = {f.name: f for f in (
    # anchored packets: the tx instant is the connection event; the fit converges in seconds
    ProfileFacts("wearcap-open", _D + "open_profile:OpenDecoder", False,
                 ProfileTiming("two-way", 1_000, 20_000_000,
                               {"converge_span_ns": 20_000_000_000}),
                 replies_from_version=2, stop_count=True, two_way_from_version=2,
                 sim_samples_per_packet=4,
                 sim_encoder=_S + "wearcap_open", sim_packs_at_events=True),
    # ns timestamps of each frame's last sample (the band's own clock ticks: 1/32768 s)
    ProfileFacts("polar-pmd", _D + "polar_pmd:PolarDecoder", True,
                 ProfileTiming("device", 31_000, 150_000_000,
                               {"converge_span_ns": 240_000_000_000,
                                "burst_gap_ns": _BURST_GAP_NS}),
                 replies_from_version=0, stop_count=False, two_way_from_version=None,
                 sim_samples_per_packet=16,
                 sim_encoder=_S + "polar_pmd"),
    # uint32 ms of the packet's first sample: a sample is up to 1 ms after its stamp
    ProfileFacts("movesense", _D + "movesense:MovesenseDecoder", True,
                 ProfileTiming("device", 1_000_000, 150_000_000,
                               {"converge_span_ns": 240_000_000_000,
                                "burst_gap_ns": _BURST_GAP_NS}),
                 replies_from_version=None, stop_count=False, two_way_from_version=None,
                 sim_samples_per_packet=8,
                 sim_encoder=_S + "movesense"),
    # no clock: sample numbers, rate fitted from arrivals (agent/clock/rate.py)
    ProfileFacts("witmotion", _D + "witmotion:WitMotionDecoder", True,
                 ProfileTiming("rate", 0, 150_000_000),
                 replies_from_version=None, stop_count=False, two_way_from_version=None,
                 sim_samples_per_packet=1,
                 sim_encoder=_S + "witmotion"),
)}
NAMES = tuple(REGISTRY)


def facts(name: str) -> ProfileFacts:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown wrist profile {name!r}; known: {', '.join(NAMES)}") from None
