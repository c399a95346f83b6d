"""WitMotion WT901BLE ``55 61`` packets: decoder and encoder.

Notification: 20 bytes, ``55 61`` then 9 x int16 LE: acc x,y,z (x 16 g / 32768), gyro x,y,z
(x 2000 °/s / 32768), angle roll, pitch, yaw (x 180° / 32768). Some firmware concatenates
several 20-byte packets in one notification; each is decoded. Other packet kinds (``55 71``
register replies) are counted in ``ignored``.

There is no device time and no counter: chunks carry ``device_t0_ns=None`` and the rate is
fitted from arrivals (agent.clock.rate.RateFit) by sample number (``ImuChunk.index``).
The angles are the band's own fusion output, derivable from acc/gyro; they are not stored.

Nothing is held back (``hold_bursts=0``, the default): every notification is decoded as it
arrives and numbered after the previous one. Arrival times alone cannot prove a loss: on a
congested link a retransmission backlog raises arrivals exactly as a lost notification
would, and judging from them read backlogs as losses (agent/clock/rate.py). A connected BLE
link acknowledges every notification, so the numbering runs on; after a silence of 2 s or
more (a reconnection: the band kept sampling) the numbering resumes where the rate fit puts
the band, and ``numberer.estimated`` says that this ``lost_before`` is an estimate (+-1), not
a count. ``hold_bursts > 0`` turns the old arrival judge back on (holds ~2 s; usable only on
uncongested links); call ``flush()`` when the stream stops (before ``reset()``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from agent.clock.rate import ArrivalNumberer
from agent.wrist.decode import DEG, I16, G, ImuChunk, as_counts

ACC_SCALE = 16 * G / 32768
GYRO_SCALE = 2000 * DEG / 32768
SIZE = 20


def encode(acc: npt.ArrayLike, gyro: npt.ArrayLike,
           angle: npt.ArrayLike = (0, 0, 0)) -> bytes:
    vals = np.concatenate([np.asarray(v, dtype=np.int64).reshape(3) for v in (acc, gyro, angle)])
    return b"\x55\x61" + vals.astype("<i2").tobytes()


Held = tuple[int, list[tuple[I16, I16]]]


class WitMotionDecoder:
    profile = "witmotion"

    def __init__(self, rate_hz: float = 100.0, *, hold_bursts: int = 0) -> None:
        self.rate_hz = rate_hz
        self.hold_bursts = hold_bursts
        self.malformed = 0
        self.ignored = 0
        self.numberer: ArrivalNumberer[Held] = ArrivalNumberer(rate_hz, hold_bursts=hold_bursts)

    def reset(self) -> None:
        self.numberer = ArrivalNumberer(self.rate_hz, hold_bursts=self.hold_bursts)

    def flush(self) -> list[ImuChunk]:
        return self._chunks(self.numberer.flush())

    def feed(self, packet: bytes, arrival_ns: int) -> list[ImuChunk]:
        if not packet or len(packet) % SIZE:
            self.malformed += 1
            return []
        samples: list[tuple[I16, I16]] = []
        bad = False  # malformed counts notifications, however many packets in one are bad
        for off in range(0, len(packet), SIZE):
            p = packet[off:off + SIZE]
            if p[0] != 0x55:
                bad = True
                continue
            if p[1] != 0x61:
                self.ignored += 1
                continue
            v = np.frombuffer(p, dtype="<i2", offset=2)
            samples.append((as_counts(v[0:3]), as_counts(v[3:6])))
        self.malformed += bad
        if not samples:
            return []
        return self._chunks(self.numberer.push(arrival_ns, len(samples), (arrival_ns, samples)))

    @staticmethod
    def _chunks(released: list[tuple[Held, int, int]]) -> list[ImuChunk]:
        out: list[ImuChunk] = []
        for (arrival_ns, samples), index, lost in released:
            for j, (acc, gyro) in enumerate(samples):
                out.append(ImuChunk(
                    arrival_ns=arrival_ns, seq=None, device_t0_ns=None, period_ns=None,
                    acc=acc, acc_scale=ACC_SCALE, gyro=gyro, gyro_scale=GYRO_SCALE,
                    lost_before=lost if j == 0 else 0, index=index + j))
        return out
