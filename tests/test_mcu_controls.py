"""The wearer's button (one state machine) and the LED (one pure function of state)."""

from __future__ import annotations

from agent.mcu.controls import Controls, ControlSettings, State
from agent.mcu.led import AMBER, DOUBLE, FAST, GREEN, RED, SLOW, SOLID, WHITE, RigState, led

S = 1_000_000_000


def press(c: Controls, at: float, held: float, ticks: float = 0.1):
    out = c.edge(True, int(at * S))
    t = at
    while t < at + held:
        out += c.tick(int(t * S))
        t += ticks
    return out + c.edge(False, int((at + held) * S))


def kinds(actions):
    return [a.kind for a in actions]


def test_short_press_toggles_pause_and_resume():
    c = Controls()
    assert kinds(press(c, 10, 0.2)) == ["pause"] and c.paused
    assert kinds(press(c, 20, 0.3)) == ["resume"] and not c.paused


def test_long_press_is_an_annotation_at_the_press():
    c = Controls()
    (a,) = press(c, 10, 1.5)
    assert a.kind == "annotation" and a.host_ns == 10 * S and not c.paused


def test_very_long_press_arms_then_requests_a_discard_of_the_minutes_before_it():
    c = Controls(ControlSettings(discard_minutes=5, cancel_s=4))
    acts = press(c, 1000, 6.0)
    assert kinds(acts) == ["discard-armed"] and c.discarding  # feedback while still held
    assert acts[0].host_ns <= 1005.1 * S
    assert c.tick(int(1009 * S)) == []  # inside the cancel window
    (req,) = c.tick(int(1010.1 * S))
    assert req.kind == "discard-requested" and c.state is State.IDLE
    assert req.detail["to_ns"] == 1000 * S and req.detail["from_ns"] == 700 * S


def test_a_press_in_the_window_cancels_the_discard_and_does_not_pause():
    c = Controls(ControlSettings(cancel_s=5))
    press(c, 100, 5.5)
    acts = press(c, 107, 0.2)
    assert kinds(acts) == ["discard-cancelled"] and not c.paused
    assert c.tick(int(200 * S)) == [] and c.state is State.IDLE


def test_a_release_without_ticks_still_arms_once():
    c = Controls()
    c.edge(True, 0)
    assert kinds(c.edge(False, 7 * S)) == ["discard-armed"]
    assert kinds(c.tick(13 * S)) == ["discard-requested"]


def test_led_table_priorities():
    assert led(RigState()) == (SOLID, GREEN)
    assert led(RigState(paused=True)) == (SLOW, AMBER)
    assert led(RigState(paused=True, discarding=True)) == (FAST, AMBER)
    assert led(RigState(paused=True, fault=True, low_battery=True)) == (FAST, RED)
    assert led(RigState(recording=False)) == (0, 0)
    assert led(RigState(recording=False, stopped=True)) == (SOLID, WHITE)
    assert led(RigState(stopped=True, low_battery=True)) == (DOUBLE, RED)
    assert led(RigState(stopped=True, fault=True)) == (FAST, RED)


class _Leds:
    battery: dict | None = None

    def __init__(self) -> None:
        self.sent: list[tuple[int, int]] = []

    def set_led(self, pattern, rgb):
        self.sent.append((pattern, rgb))

    def haptic(self, pattern, ms):
        pass

    def status(self):
        return {"streaming": True}


def test_a_clean_stop_leaves_recording_even_from_a_pending_discard():
    from agent.mcu.wearer import Wearer

    src = _Leds()
    w = Wearer(src, None)
    w.on_button(True, 1 * S)
    w.poll(7 * S)  # held 6 s: a discard is armed, waiting for a cancel
    assert src.sent[-1] == (FAST, AMBER)
    assert w.show_stopped() and src.sent[-1] == (SOLID, WHITE)
    w.poll(8 * S)  # nothing after the stop brings "recording" or the discard back
    assert src.sent[-1] == (SOLID, WHITE)


def test_a_low_battery_stop_keeps_its_pattern():
    from agent.mcu.wearer import Wearer

    src = _Leds()
    src.battery = {"percent": 3, "millivolts": 3300, "charging": False}
    w = Wearer(src, None)
    w.poll(1 * S)
    assert w.show_stopped() and src.sent[-1] == (DOUBLE, RED)


def test_the_led_shows_syncing_from_the_sync_status_file(tmp_path):
    import json
    import time

    from agent.mcu.led import BLUE, BREATHE
    from agent.mcu.wearer import SYNC_STATUS, Wearer

    class Leds:
        battery = None
        sent: list[tuple[int, int]] = []

        def set_led(self, pattern, rgb):
            self.sent.append((pattern, rgb))

        def haptic(self, pattern, ms):
            pass

    src = Leds()
    w = Wearer(src, tmp_path)
    w.poll(10 * S)
    assert src.sent[-1] == (SOLID, GREEN)
    (tmp_path / SYNC_STATUS).write_text(json.dumps(
        {"uploading": True, "backlog_segments": 3, "updated": time.time()}))
    w.poll(16 * S)
    assert src.sent[-1] == (BREATHE, BLUE)
    w.poll(17 * S)
    w.on_button(True, 18 * S)
    w.on_button(False, int(18.2 * S))
    w.poll(19 * S)
    assert src.sent[-1] == (SLOW, AMBER)
