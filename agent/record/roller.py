"""When to roll to the next segment (sans-IO: frames in, decisions out).

A segment rolls every ``seconds`` at a keyframe. When the roll time is reached the policy asks
the camera for a keyframe once; the first keyframe at or after the roll time opens the next
segment and is its first frame, so no frame is lost or duplicated across the roll and every
segment starts on an IDR. Without a camera, segments roll on the clock alone.

    state       event                              decision
    ---------   --------------------------------   ------------------------------------
    no segment  any frame                          OPEN (the frame starts segment 1)
    recording   frame before the roll time         WRITE
    recording   non-key frame at/after roll time   REQUEST_KEYFRAME once, then WRITE
    recording   keyframe at/after the roll time    ROLL (seal, open, frame goes in the new one)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Decision(enum.Enum):
    OPEN = "open"
    WRITE = "write"
    REQUEST_KEYFRAME = "request-keyframe"
    ROLL = "roll"


@dataclass
class RollPolicy:
    seconds: float
    start_ns: int | None = None
    requested: bool = False

    @property
    def due_ns(self) -> int | None:
        if self.start_ns is None:
            return None
        return self.start_ns + int(self.seconds * 1e9)

    def on_frame(self, t_ns: int, keyframe: bool) -> Decision:
        due = self.due_ns
        if due is None:
            return Decision.OPEN
        if t_ns < due:
            return Decision.WRITE
        if keyframe:
            return Decision.ROLL
        if not self.requested:
            self.requested = True
            return Decision.REQUEST_KEYFRAME
        return Decision.WRITE

    def on_tick(self, now_ns: int) -> Decision:
        """For a recording without a camera: roll on time."""
        due = self.due_ns
        if due is None:
            return Decision.OPEN
        return Decision.ROLL if now_ns >= due else Decision.WRITE

    def opened(self, t_ns: int) -> None:
        self.start_ns = t_ns
        self.requested = False
