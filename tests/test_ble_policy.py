"""Pure parts of the BLE transport: backoff policy, lifecycle table, GATT check (error
classes: tests/test_ble_errors.py)."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from agent import backoff
from agent.wrist.ble import NOT_FOUND_MIN_S, BackoffPolicy, check_services
from agent.wrist.ble_errors import StaleGatt
from agent.wrist.lifecycle import TRANSITIONS, IllegalTransition, Lifecycle, State
from agent.wrist.profiles import load_profile


class Fixed:
    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def test_backoff_grows_and_is_capped():
    p = BackoffPolicy(first_s=0.25, factor=2.0, cap_s=5.0, jitter=0.0)
    delays = [backoff.delay(p, i + 1, Fixed(0.5)) for i in range(12)]
    assert delays[:4] == [0.25, 0.5, 1.0, 2.0]
    assert max(delays) == 5.0
    assert delays == sorted(delays)


def test_backoff_jitter_stays_within_bounds_and_cap():
    p = BackoffPolicy(first_s=1.0, factor=2.0, cap_s=3.0, jitter=0.25)
    assert backoff.delay(p, 1, Fixed(0.0)) == pytest.approx(0.75)
    assert backoff.delay(p, 1, Fixed(0.999999)) == pytest.approx(1.0, rel=1e-5)
    assert all(backoff.delay(p, i, Fixed(r / 10)) <= 3.0 for i in range(1, 11) for r in range(10))
    assert backoff.delay(p, 10**6, Fixed(1.0)) == 3.0  # no overflow on huge attempt counts
    assert backoff.delay(p, 10**6, Fixed(0.0)) == pytest.approx(2.25)


def test_backoff_stays_spread_at_the_cap():
    """Two bands that failed together must not retry in step once both waits reach the cap
    (a window reaching above the nominal wait, clipped to the cap, put half of all draws on
    the cap itself)."""
    p = BackoffPolicy(first_s=1.0, cap_s=3.0)
    rng = random.Random(3)
    waits = [backoff.delay(p, 50, rng) for _ in range(400)]
    assert max(waits) <= 3.0 and min(waits) >= 1.5
    assert sum(w == 3.0 for w in waits) <= 2
    assert len({round(w, 3) for w in waits}) > 300


def test_ble_and_sync_share_one_backoff():
    """The same function and semantics; only the numbers are each caller's."""
    from agent.config import BleSection, SyncSection

    ble = BackoffPolicy(cap_s=BleSection().backoff_max)
    sc = SyncSection()
    sync = backoff.Policy(first_s=sc.backoff_base, cap_s=sc.backoff_cap)
    for pol in (ble, sync):
        for n in (1, 3, 60):
            d = backoff.nominal(pol, n)
            assert backoff.delay(pol, n, Fixed(0.0)) == pytest.approx(d / 2)
            assert backoff.delay(pol, n, Fixed(1.0)) == pytest.approx(d)
            assert d <= pol.cap_s
    with pytest.raises(ValueError):
        backoff.Policy(jitter=1.5)


def test_backoff_not_found_waits_at_least_the_floor():
    p = BackoffPolicy(first_s=0.1, jitter=0.0)
    assert backoff.delay(p, 1, Fixed(0.5)) == 0.1
    assert backoff.delay(p, 1, Fixed(0.5), floor_s=NOT_FOUND_MIN_S) == 1.0


def test_lifecycle_full_cycle_and_reconnect_count():
    lc = Lifecycle(clock=iter(range(100)).__next__)
    for ev in ("start", "found", "connected", "subscribed", "lost", "retry", "reconnect",
               "connected", "subscribed"):
        lc.fire(ev)
    assert lc.state is State.STREAMING
    assert lc.reconnects == 1
    assert [t.event for t in lc.history][-2:] == ["connected", "subscribed"]


def test_lifecycle_rejects_illegal_transitions():
    lc = Lifecycle()
    with pytest.raises(IllegalTransition, match="allowed: start, stop"):
        lc.fire("subscribed")
    lc.fire("start")
    with pytest.raises(IllegalTransition):
        lc.fire("lost")  # scanning cannot lose a link
    assert lc.state is State.SCANNING


def test_every_state_can_stop_and_stopped_is_terminal():
    for s in State:
        if s is not State.STOPPED:
            assert TRANSITIONS[(s, "stop")] is State.STOPPED
    assert not any(s is State.STOPPED for s, _e in TRANSITIONS)
    # every state is reachable from idle
    reach, todo = {State.IDLE}, [State.IDLE]
    while todo:
        cur = todo.pop()
        for (s, _e), t in TRANSITIONS.items():
            if s is cur and t not in reach:
                reach.add(t)
                todo.append(t)
    assert reach == set(State)


def _services(layout):
    return [SimpleNamespace(uuid=s, characteristics=[SimpleNamespace(uuid=c) for c in chars])
            for s, chars in layout]


def test_check_services_against_the_profile():
    p = load_profile("wearcap-open")
    good = [(p.service_uuid, [p.notify_uuid, p.control_uuid]), ("0000180a-0000-1000-8000-"
                                                                "00805f9b34fb", [])]
    check_services(_services(good), p)
    with pytest.raises(StaleGatt, match="2 instances of service"):
        check_services(_services(good + good[:1]), p)
    with pytest.raises(StaleGatt, match="0 instances of characteristic"):
        check_services(_services([(p.service_uuid, [p.notify_uuid])]), p)
    with pytest.raises(StaleGatt):
        check_services(_services([]), p)
