"""Sync's backoff (the shared agent.backoff with sync's policy) and the opportunistic policy:
pure functions, tested without sleeping."""

from __future__ import annotations

import random

import pytest

from agent.backoff import Policy, delay
from agent.sync import policy


def backoff(attempt, *, base, cap, rng=random, auth=False):
    """Sync's call: its base and cap from the config; an auth failure waits the cap."""
    return delay(Policy(first_s=base, cap_s=cap), attempt, rng, floor_s=cap if auth else 0.0)


class Fixed:
    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize(("attempt", "lo", "hi"), [
    (1, 0.5, 1.0), (2, 1.0, 2.0), (3, 2.0, 4.0), (6, 16.0, 32.0), (7, 30.0, 60.0),
    (50, 30.0, 60.0), (10_000, 30.0, 60.0),
])
def test_backoff_grows_then_caps(attempt, lo, hi):
    assert backoff(attempt, base=1.0, cap=60.0, rng=Fixed(0.0)) == pytest.approx(lo)
    assert backoff(attempt, base=1.0, cap=60.0, rng=Fixed(1.0)) == pytest.approx(hi)


def test_backoff_jitter_stays_within_half_to_full_and_spreads():
    rng = random.Random(7)
    waits = [backoff(4, base=1.0, cap=60.0, rng=rng) for _ in range(500)]
    assert min(waits) >= 4.0 and max(waits) <= 8.0
    assert len({round(w, 3) for w in waits}) > 100  # rigs do not retry in step


def test_auth_errors_go_straight_to_the_cap():
    assert backoff(1, base=1.0, cap=300.0, rng=Fixed(1.0), auth=True) == 300.0
    assert backoff(1, base=1.0, cap=300.0, rng=Fixed(0.0), auth=True) == 150.0


def test_zero_cap_means_no_wait():
    assert backoff(5, base=1.0, cap=0.0) == 0.0


# ---------------------------------------------------------------- policy

OK = policy.Situation(collector_reachable=True, networks=("lab-wifi", "wlan0"),
                      charging=True, recording=False)


@pytest.mark.parametrize(("situation", "rules", "upload", "why"), [
    (OK, policy.Rules(), True, "ok"),
    (policy.Situation(False), policy.Rules(), False, "collector unreachable"),
    (OK, policy.Rules(allowed_networks=("lab-wifi",)), True, "ok"),
    (OK, policy.Rules(allowed_networks=("wlan0",)), True, "ok"),
    (OK, policy.Rules(allowed_networks=("home",)), False, "not on an allowed network"),
    (policy.Situation(True), policy.Rules(allowed_networks=("home",)), False, "no known"),
    (policy.Situation(True, charging=False), policy.Rules(only_while_charging=True), False,
     "not charging"),
    (policy.Situation(True, charging=None), policy.Rules(only_while_charging=True), True, "ok"),
    (policy.Situation(True, charging=None),
     policy.Rules(only_while_charging=True, charging_unknown_allows=False), False, "unknown"),
    (policy.Situation(True, charging=False), policy.Rules(), True, "ok"),
    (policy.Situation(True, recording=True), policy.Rules(pause_while_recording=True), False,
     "paused while recording"),
    (policy.Situation(True, recording=True), policy.Rules(), True, "ok"),
])
def test_decide(situation, rules, upload, why):
    d = policy.decide(situation, rules)
    assert d.upload is upload
    assert why in d.reason


def test_probes_read_what_they_are_given(tmp_path):
    route = ("Iface\tDestination\tGateway\tFlags\n"
             "eth0\t0000A8C0\t00000000\t0001\n"
             "wlan0\t00000000\t0101A8C0\t0003\n")
    assert policy.default_route_interface(route) == "wlan0"
    assert policy.default_route_interface("Iface\tDestination\n") is None
    wireless = ("Inter-| sta-|   Quality\n face | tus | link level noise\n"
                " wlan0: 0000   70.  -40.  -256\n")
    assert policy.wireless_interfaces(wireless) == ["wlan0"]
    assert policy.ssid(lambda cmd: "lab-wifi\n") == "lab-wifi"
    assert policy.ssid(lambda cmd: "") is None
    assert policy.networks(lambda cmd: "lab\n", lambda p: route) == ("lab", "wlan0")
    for text, want in [('{"charging": true}', True), ('{"state": "discharging"}', False),
                       ("charging\n", True), ("full", True), ("battery", False),
                       ("", None), (None, None), ("{garbage", None), ("[1]", None),
                       ('{"charging": "yes"}', None), ("weird", None)]:
        assert policy.charging(text) is want, text
    active = tmp_path / "active"
    assert policy.recording(active) is False
    active.mkdir()
    (active / "x.mcap").write_bytes(b"")
    assert policy.recording(active) is False
    (active / "sim-0001-00000001.mcap.part").write_bytes(b"")
    assert policy.recording(active) is True


def test_token_bucket_paces_without_sleeping():
    now = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    bucket = policy.TokenBucket(1000.0, 100.0, clock=lambda: now[0], sleep=sleep)
    total = sum(bucket.take(100) for _ in range(11))
    # 100 bytes of burst, then 1000 bytes at 1000 B/s
    assert total == pytest.approx(1.0)
    assert now[0] == pytest.approx(1.0)
