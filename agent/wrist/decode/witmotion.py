"""WitMotion WT901BLE ``55 61`` packets: decoder and encoder.

Notification: 20 bytes, ``55 61`` then 9 x int16 LE: acc x,y,z (x 16 g / 32768), gyro x,y,z
(x 2000 °/s / 32768), angle roll, pitch, yaw (x 180° / 32768). Some firmware concatenates
several 20-byte packets in one notification; each is decoded. Other packet kinds (``55 71``
register replies) are counted in ``ignored``.

There is no device time and no counter: chunks carry ``device_t0_ns=None`` and the rate is
fitted from arrivals (agent.clock.oneway.RateFit) by sample number (``ImuChunk.index``).
The angles are the band's own fusion output, derivable from acc/gyro; they are not stored.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from agent.wrist.decode import DEG, G, ImuChunk, as_counts

ACC_SCALE = 16 * G / 32768
GYRO_SCALE = 2000 * DEG / 32768
SIZE = 20


def encode(acc: npt.ArrayLike, gyro: npt.ArrayLike,
           angle: npt.ArrayLike = (0, 0, 0)) -> bytes:
    vals = np.concatenate([np.asarray(v, dtype=np.int64).reshape(3) for v in (acc, gyro, angle)])
    return b"\x55\x61" + vals.astype("<i2").tobytes()


class WitMotionDecoder:
    profile = "witmotion"

    def __init__(self) -> None:
        self.malformed = 0
        self.ignored = 0
        self._index = 0

    def reset(self) -> None:
        self._index = 0

    def feed(self, packet: bytes, arrival_ns: int) -> list[ImuChunk]:
        if not packet or len(packet) % SIZE:
            self.malformed += 1
            return []
        out: list[ImuChunk] = []
        for off in range(0, len(packet), SIZE):
            p = packet[off:off + SIZE]
            if p[0] != 0x55:
                self.malformed += 1
                continue
            if p[1] != 0x61:
                self.ignored += 1
                continue
            v = np.frombuffer(p, dtype="<i2", offset=2)
            out.append(ImuChunk(
                arrival_ns=arrival_ns, seq=None, device_t0_ns=None, period_ns=None,
                acc=as_counts(v[0:3]), acc_scale=ACC_SCALE, gyro=as_counts(v[3:6]),
                gyro_scale=GYRO_SCALE, index=self._index))
            self._index += 1
        return out
