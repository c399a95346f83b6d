"""What the LED shows: one pure function of the agent's state, through one table.

    led(RigState(...)) -> (pattern, rgb)     # patterns as in docs/mcu-protocol.md

The first row that applies wins, so the order is the priority: a fault hides everything, a
pending discard must be seen (it is waiting for a cancel), a low battery warns before the
rig stops. A clean stop (SIGTERM, the end of ``--duration``) shows ``stopped`` (white,
solid: powered, not recording), sent before ``bye`` so the MCU keeps it; a stop for a fault
or a low battery keeps that row instead.
"""

from __future__ import annotations

from dataclasses import dataclass

OFF, SOLID, SLOW, FAST, DOUBLE, BREATHE = 0, 1, 2, 3, 4, 5

RED, GREEN, AMBER, BLUE, WHITE = 0xFF0000, 0x00FF00, 0xFFA000, 0x0040FF, 0xFFFFFF


@dataclass(frozen=True)
class RigState:
    fault: bool = False
    discarding: bool = False
    low_battery: bool = False
    paused: bool = False
    recording: bool = True
    syncing: bool = False
    stopped: bool = False
    """Capture stopped on purpose and is about to close the port."""


TABLE: list[tuple[str, int, int]] = [
    # state        pattern  colour
    ("fault", FAST, RED),
    ("discarding", FAST, AMBER),
    ("low_battery", DOUBLE, RED),
    ("stopped", SOLID, WHITE),
    ("paused", SLOW, AMBER),
    ("syncing", BREATHE, BLUE),
    ("recording", SOLID, GREEN),
]
"""(RigState field, pattern, rgb), highest priority first; nothing true: off."""


def led(state: RigState) -> tuple[int, int]:
    for name, pattern, rgb in TABLE:
        if getattr(state, name):
            return pattern, rgb
    return OFF, 0
