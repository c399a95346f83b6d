"""Every decoder: random, truncated and corrupted notifications are counted, never raised."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sim.band_model import BandModel, BandParams
from agent.wrist.decode import PROFILES, make_decoder


def sample_packets(profile: str) -> list[bytes]:
    m = BandModel(BandParams(profile=profile, seed=1), 0)
    return [d.packet for d in m.deliveries_until(400_000_000)][:6]


GOOD = {p: sample_packets(p) for p in PROFILES}


@pytest.mark.parametrize("profile", PROFILES)
@settings(max_examples=150, deadline=None)
@given(data=st.lists(st.binary(max_size=300), max_size=8))
def test_random_bytes_never_raise(profile, data):
    dec = make_decoder(profile, rate_hz=200)
    for i, b in enumerate(data):
        for c in dec.feed(b, i):
            # whatever random bytes decode to is a well-formed chunk of at least one sample
            assert c.acc.ndim == 2 and c.acc.shape[1] == 3 and len(c.acc) >= 1
    assert dec.malformed <= len(data)  # at most one count per notification


def test_witmotion_counts_a_notification_of_bad_packets_once():
    dec = make_decoder("witmotion", rate_hz=200)
    assert dec.feed(bytes(40), 0) == [] and dec.malformed == 1  # two bad 20-byte packets
    good = GOOD["witmotion"][0]
    assert len(dec.feed(bytes(20) + good, 1)) == 1 and dec.malformed == 2


@pytest.mark.parametrize("profile", PROFILES)
@settings(max_examples=150, deadline=None)
@given(which=st.integers(0, 5), cut=st.integers(0, 400), pos=st.integers(0, 400),
       byte=st.integers(0, 255))
def test_truncated_and_corrupted_packets_never_raise(profile, which, cut, pos, byte):
    dec = make_decoder(profile, rate_hz=200)
    good = GOOD[profile][which % len(GOOD[profile])]
    out = dec.feed(good, 0) + dec.flush()  # a held chunk (Polar ACC waiting for GYRO) is flushed
    assert out
    trunc = good[: cut % (len(good) + 1)]
    before = dec.malformed
    out = dec.feed(trunc, 1)
    if len(trunc) < len(good) and profile != "polar-pmd":
        assert out == [] and dec.malformed == before + 1
    bad = bytearray(good)
    bad[pos % len(bad)] = byte
    dec.feed(bytes(bad), 2)
    # the decoder still decodes a good packet afterwards
    dec.reset()
    assert dec.feed(good, 3) + dec.flush() or profile == "polar-pmd"


@pytest.mark.parametrize("profile", ["wearcap-open", "movesense", "witmotion"])
def test_every_strict_prefix_is_malformed(profile):
    dec = make_decoder(profile, rate_hz=200)
    good = GOOD[profile][0]
    assert dec.feed(good, 0) + dec.flush()
    for n in range(len(good)):
        assert dec.feed(good[:n], n) == []
    assert dec.malformed == len(good) and dec.flush() == []
    assert dec.feed(good, 0) + dec.flush()


def test_polar_truncated_frames_are_malformed():
    from agent.wrist.decode.polar_pmd import PolarDecoder

    dec = PolarDecoder(rate_hz=200)
    acc = GOOD["polar-pmd"][0]
    for n in range(len(acc) - 1):
        dec.feed(acc[:n], n)
    assert dec.malformed >= len(acc) - 12  # a few prefixes end on a whole delta block
