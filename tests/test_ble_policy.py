"""Pure parts of the BLE transport: backoff policy, lifecycle table, error causes, GATT check."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from agent.wrist.ble import BackoffPolicy, StaleGatt, backoff_delay, check_services, classify
from agent.wrist.lifecycle import TRANSITIONS, IllegalTransition, Lifecycle, State
from agent.wrist.profiles import load_profile


def test_backoff_grows_and_is_capped():
    p = BackoffPolicy(first_s=0.25, factor=2.0, cap_s=5.0, jitter=0.0)
    delays = [backoff_delay(i, 0.5, p) for i in range(12)]
    assert delays[:4] == [0.25, 0.5, 1.0, 2.0]
    assert max(delays) == 5.0
    assert delays == sorted(delays)


def test_backoff_jitter_stays_within_bounds_and_cap():
    p = BackoffPolicy(first_s=1.0, factor=2.0, cap_s=3.0, jitter=0.25)
    assert backoff_delay(0, 0.0, p) == pytest.approx(0.75)
    assert backoff_delay(0, 0.999999, p) == pytest.approx(1.25, rel=1e-5)
    assert all(backoff_delay(i, r / 10, p) <= 3.0 for i in range(10) for r in range(10))
    assert backoff_delay(10**6, 0.5, p) == 3.0  # no overflow on huge attempt counts


def test_backoff_not_found_waits_at_least_the_floor():
    p = BackoffPolicy(first_s=0.1, jitter=0.0, not_found_min_s=1.0)
    assert backoff_delay(0, 0.5, p, cause="link-lost") == 0.1
    assert backoff_delay(0, 0.5, p, cause="not-found") == 1.0


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


def test_classify_causes():
    assert classify(TimeoutError()) == "timeout"
    assert classify(Exception("[org.bluez.Error.Failed] le-connection-abort-by-local")) \
        == "connect-aborted"
    assert classify(Exception("Device with address X was not found")) == "not-found"
    assert classify(Exception("org.freedesktop.DBus.Error.UnknownMethod: StartNotify")) \
        .startswith("stale-gatt")
    assert classify(StaleGatt("2 instances")).startswith("stale-gatt:")
    assert classify(ValueError("odd")) == "error:ValueError"


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
