"""What a band answers on its control point: sans-IO codecs of control-point replies.

    decode_reply(profile, data) -> Reply | None    # None: not a reply this profile defines
    encode_pmd_reply(op, measurement, status) -> bytes   # band side (simulator, tests)
    encode_open_reply(op, status, params=b"") -> bytes

A band that refuses a stream says so here, not by silence: Polar PMD answers every control
write with ``F0 <op> <measurement> <status> [more] [params]`` (status 0 = success, 3 = "not
supported", ...); the wearcap open profile with ``F0 <op> <status> [params]``
(docs/wrist-profile.md, "Control point"). The link turns a refusal into a ``refused`` event
(``agent.wrist.ble``); the source records the stream as absent with the band's reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.wrist.registry import REGISTRY

RESPONSE = 0xF0

PMD_STREAMS = {0x02: "acc", 0x05: "gyro", 0x00: "ecg", 0x01: "ppg", 0x06: "mag"}
PMD_OPS = {0x01: "get-settings", 0x02: "start", 0x03: "stop"}
PMD_STATUS = {
    0: "success", 1: "invalid op code", 2: "invalid measurement type", 3: "not supported",
    4: "invalid length", 5: "invalid parameter", 6: "already in state",
    7: "invalid resolution", 8: "invalid sample rate", 9: "invalid range", 10: "invalid MTU",
    11: "invalid number of channels", 12: "invalid state", 13: "device in charger",
}
PMD_ALREADY = 6

OPEN_OPS = {0x01: "start", 0x02: "stop", 0x03: "set-rate", 0x04: "time"}
OPEN_STATUS = {0: "success", 1: "unknown command", 2: "invalid length",
               3: "not supported", 4: "invalid parameter", 5: "invalid state"}


@dataclass(frozen=True, slots=True)
class Reply:
    op: str
    """start | stop | set-rate | get-settings | time | op-0x.."""
    stream: str
    """The measurement the reply is about ("acc", "gyro"), or "" for the whole band."""
    status: int
    reason: str
    """The band's own status text ("not supported"), "success" when ``ok``."""
    params: bytes = b""

    @property
    def ok(self) -> bool:
        return self.status == 0 or (self.op == "stop" and self.status == PMD_ALREADY)


REPLYING = tuple(f.name for f in REGISTRY.values() if f.replies)
"""Profiles whose bands answer every control write (the others' replies are not read):
``replies_from_version`` in agent.wrist.registry."""


def decode_reply(profile: str, data: bytes) -> Reply | None:
    """The control-point reply in ``data`` (None if ``data`` is not one; never raises)."""
    if len(data) < 3 or data[0] != RESPONSE:
        return None
    if profile == "polar-pmd":
        if len(data) < 4:
            return None
        op, meas, status = data[1], data[2], data[3]
        return Reply(PMD_OPS.get(op, f"op-0x{op:02x}"),
                     PMD_STREAMS.get(meas & 0x3F, f"measurement-{meas & 0x3F}"), status,
                     PMD_STATUS.get(status, f"error {status}"), bytes(data[5:]))
    if profile == "wearcap-open":
        op, status = data[1], data[2]
        return Reply(OPEN_OPS.get(op, f"op-0x{op:02x}"), "", status,
                     OPEN_STATUS.get(status, f"error {status}"), bytes(data[3:]))
    return None


def refusal(reply: Reply) -> str:
    """The cause written for a refused stream: the band's words and its status code."""
    return f"{reply.reason} (band status {reply.status} to {reply.op})"


def encode_pmd_reply(op: int, measurement: int, status: int, params: bytes = b"") -> bytes:
    return bytes([RESPONSE, op, measurement, status, 0]) + params


def encode_open_reply(op: int, status: int, params: bytes = b"") -> bytes:
    return bytes([RESPONSE, op, status]) + params


def pmd_request(value: bytes) -> tuple[int, int] | None:
    """(op, measurement) of a PMD control write (band side), None if too short."""
    return (value[0], value[1]) if len(value) >= 2 else None
