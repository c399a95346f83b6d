"""The wearer's one button, as a state machine in one table (sans-IO: edges and ticks in,
actions out).

    c = Controls(ControlSettings())
    c.edge(down=True, host_ns=t)  -> [Action]     # a debounced button edge (MCU time, mapped)
    c.tick(now_ns)                -> [Action]     # call often: held-button and timeout steps

    state        event                                   next         actions
    -----------  --------------------------------------  -----------  -----------------------
    idle         down                                    held         -
    held         tick, held >= discard_press_s           arming       discard-armed (LED, haptic)
    held         up, held < long_press_s                 idle         pause | resume (toggle)
    held         up, long_press_s <= held                idle         annotation
    arming       up                                      confirming   - (cancel window opens)
    confirming   down                                    cancelling   -
    cancelling   up (any length)                         idle         discard-cancelled
    confirming   tick, cancel_s after the release        idle         discard-requested

A very long press (>= discard_press_s, default 5 s) arms a discard of the last
``discard_minutes`` before the press; the LED and haptic confirm at once, and a press within
``cancel_s`` of the release cancels it. Every action is an explicit event in the recording.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class State(enum.Enum):
    IDLE = "idle"
    HELD = "held"
    ARMING = "arming"
    CONFIRMING = "confirming"
    CANCELLING = "cancelling"


@dataclass(frozen=True)
class ControlSettings:
    long_press_s: float = 1.0
    discard_press_s: float = 5.0
    cancel_s: float = 5.0
    discard_minutes: float = 5.0


@dataclass(frozen=True)
class Action:
    kind: str
    """pause, resume, annotation, discard-armed, discard-cancelled, discard-requested"""
    host_ns: int
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Controls:
    settings: ControlSettings = field(default_factory=ControlSettings)
    state: State = State.IDLE
    paused: bool = False
    _down_ns: int = 0
    _armed_at: int = 0
    _released_ns: int = 0

    def edge(self, down: bool, host_ns: int) -> list[Action]:
        s = self.settings
        out: list[Action] = []
        if down:
            if self.state is State.IDLE:
                self.state, self._down_ns = State.HELD, host_ns
            elif self.state is State.CONFIRMING:
                self.state = State.CANCELLING
            return out
        # up
        if self.state is State.HELD:
            held = (host_ns - self._down_ns) / 1e9
            if held >= s.discard_press_s:  # no tick came while held: arm now
                out += self._arm(self._down_ns + int(s.discard_press_s * 1e9))
                self.state, self._released_ns = State.CONFIRMING, host_ns
            elif held >= s.long_press_s:
                out.append(Action("annotation", self._down_ns, {"held_s": round(held, 3)}))
                self.state = State.IDLE
            else:
                self.paused = not self.paused
                out.append(Action("pause" if self.paused else "resume", host_ns,
                                  {"held_s": round(held, 3)}))
                self.state = State.IDLE
        elif self.state is State.ARMING:
            self.state, self._released_ns = State.CONFIRMING, host_ns
        elif self.state is State.CANCELLING:
            out.append(Action("discard-cancelled", host_ns, {"armed_ns": self._armed_at}))
            self.state = State.IDLE
        return out

    def _arm(self, at_ns: int) -> list[Action]:
        self._armed_at = at_ns
        window = int(self.settings.discard_minutes * 60e9)
        return [Action("discard-armed", at_ns, {"press_ns": self._down_ns,
                                                "from_ns": self._down_ns - window,
                                                "to_ns": self._down_ns,
                                                "cancel_s": self.settings.cancel_s})]

    def tick(self, now_ns: int) -> list[Action]:
        s = self.settings
        if self.state is State.HELD and now_ns - self._down_ns >= s.discard_press_s * 1e9:
            self.state = State.ARMING
            return self._arm(now_ns)
        if self.state is State.CONFIRMING and now_ns - self._released_ns >= s.cancel_s * 1e9:
            self.state = State.IDLE
            window = int(s.discard_minutes * 60e9)
            return [Action("discard-requested", now_ns, {
                "press_ns": self._down_ns, "from_ns": self._down_ns - window,
                "to_ns": self._down_ns, "minutes": s.discard_minutes})]
        return []

    @property
    def discarding(self) -> bool:
        return self.state in (State.ARMING, State.CONFIRMING, State.CANCELLING)
