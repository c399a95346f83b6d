"""Sans-IO wrist-band decoders: one BLE notification in, typed IMU chunks out.

    make_decoder(profile, *, rate_hz) -> Decoder
    decoder.feed(packet, arrival_ns) -> list[ImuChunk]   # never raises on bad bytes
    decoder.malformed                                   # packets counted and skipped

One module per profile (``open_profile``, ``polar_pmd``, ``movesense``, ``witmotion``); each
also holds the matching *encoder* (used by the band simulator and the round-trip tests), so
the two byte layouts live side by side.

Additions to the contract (backward compatible, all with defaults):
- ``ImuChunk.raw_time``: the packet's own timestamp field exactly as sent, in the profile's
  unit (open: µs, Polar: ns since 2000-01-01 of the last sample, Movesense: uint32 ms);
  ``device_t0_ns`` is that value unwrapped/refined into ns of the first sample.
- ``ImuChunk.n``, ``ImuChunk.device_ns(i)``, ``ImuChunk.last_device_ns``: helpers.
- ``ImuChunk.tx_device_ns``: when the band says when it sent the packet (open profile).
  Feed the clock fit with ``agent.wrist.imu_batch.observe(fit, chunk)``: it uses
  ``tx_device_ns`` if known, else ``last_device_ns`` (the packet cannot leave the band before
  its last sample was taken).
- ``ImuChunk.first_arrival_ns``: the first of several notifications a chunk came in.
- ``ImuChunk.index``: the decoder's running sample number of the first sample (counting
  samples known lost), so bands with no device clock can be timed by sample number.
- ``Decoder.reset()``: forget stream state (call when a stream is restarted on the band).
- ``Decoder.flush()``: chunks still held back (WitMotion holds ~2 s of notifications to find
  lost notifications from arrival times; Polar holds samples waiting for their ACC/GYRO
  partner); call when a stream stops and at every break, before ``reset()``.
- ``PolarDecoder.set_streams(acc=, gyro=)``: the streams the band accepted (its control-point
  replies); a refused stream is never waited for and its axes are absent (``gyro`` None).
- Axes a profile could not supply for one sample of a stream that is on (a Polar ACC sample
  whose GYRO frame never came) hold ``MISSING`` (-32768), which no sensor in these profiles
  produces. A stream the band refused is never filled with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from agent.wrist.registry import NAMES

G = 9.80665
DEG = np.pi / 180.0
MISSING = -32768
"""int16 value meaning "this axis has no measurement for this sample"."""

PROFILES = NAMES
"""The wrist profiles (agent.wrist.registry)."""

I16 = npt.NDArray[np.int16]


@dataclass(slots=True, eq=False)
class ImuChunk:
    """Consecutive samples from one notification, evenly spaced on the device clock.

    A value: nothing assigns to a chunk once its decoder made it. It is not a frozen
    dataclass only because a frozen one's ``__init__`` costs ~6 us more (one
    ``object.__setattr__`` per field), paid for every notification on the writer loop."""

    arrival_ns: int
    """Host timeline (CLOCK_MONOTONIC ns) at which the notification arrived."""
    seq: int | None
    """Packet/sample sequence number if the profile has one (open profile: first sample's index)."""
    device_t0_ns: int | None
    """Device-clock time of the FIRST sample in ns, unwrapped (None: no device clock)."""
    period_ns: float | None
    """Device-clock spacing of the samples in ns, if known."""
    acc: I16
    """(n, 3) raw counts."""
    acc_scale: float
    """m/s^2 per count."""
    gyro: I16 | None
    """(n, 3) raw counts, or None if the band sends no gyro."""
    gyro_scale: float
    """rad/s per count."""
    lost_before: int = 0
    """Samples known lost just before this chunk (from sequence gaps); 0 if unknown."""
    raw_time: int | None = None
    """The packet's timestamp field as sent, in the profile's own unit (see module doc)."""
    tx_device_ns: int | None = None
    """Device time at which the band handed the packet to the radio, if it says (open
    profile); the tightest observation for the clock fit."""
    index: int = 0
    """Running number of the first sample since the decoder started, counting known-lost
    samples (the clock fit of a band without device time numbers samples by it)."""
    first_arrival_ns: int | None = None
    """When the chunk's samples came in several notifications (Polar: an ACC and a GYRO
    frame), the arrival of the first; each was sent after the chunk's last sample was taken,
    so the clock fit observes this, the tightest (None: ``arrival_ns``)."""

    @property
    def n(self) -> int:
        return int(self.acc.shape[0])

    def device_ns(self, i: int) -> int | None:
        if self.device_t0_ns is None:
            return None
        return self.device_t0_ns + round(i * (self.period_ns or 0.0))

    @property
    def last_device_ns(self) -> int | None:
        return self.device_ns(self.n - 1)


class Decoder(Protocol):
    profile: str
    malformed: int

    def feed(self, packet: bytes, arrival_ns: int) -> list[ImuChunk]:
        """Decode one notification (one GATT value); bad bytes are counted, never raised."""
        ...

    def reset(self) -> None:
        """Forget sequence/timestamp state (the band restarted its stream)."""
        ...

    def flush(self) -> list[ImuChunk]:
        """Chunks held back, released now (call when the stream stops)."""
        ...


def as_counts(a: npt.ArrayLike) -> I16:
    """Round and clip to int16 counts (keeping -32768 free for ``MISSING``)."""
    if isinstance(a, np.ndarray) and a.dtype.kind == "i" and a.dtype.itemsize <= 2:
        # already counts (a packet's int16 words): only -32768 moves, one pass, one copy
        out: I16 = np.maximum(a, -32767).astype(np.int16, copy=False).reshape(-1, 3)
        return out
    arr = np.clip(np.rint(np.asarray(a, dtype=np.float64)), -32767, 32767)
    return arr.astype(np.int16).reshape(-1, 3)


def make_decoder(profile: str, *, rate_hz: float) -> Decoder:
    """The decoder for ``profile`` (one of PROFILES) at nominal ``rate_hz``
    (agent.wrist.registry names each profile's decoder)."""
    from agent.wrist.registry import facts

    return facts(profile).make_decoder(rate_hz)
