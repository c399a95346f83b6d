"""Open wrist profile: the spec's byte-exact examples, round trips, sequence gaps."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from agent.sim.band_model import BandModel, BandParams
from agent.wrist.decode import make_decoder, open_profile
from agent.wrist.profiles import load_profile

DOC = Path(__file__).resolve().parent.parent / "docs" / "wrist-profile.md"


def doc_example(name: str) -> bytes:
    m = re.search(rf"```hex example={name}\n(.*?)```", DOC.read_text(), re.S)
    assert m, f"example {name} missing from {DOC}"
    return bytes.fromhex(m.group(1))


def test_doc_data_example_decodes_to_the_documented_values():
    pkt = doc_example("data")
    assert len(pkt) == 24 + 2 * 12
    dec = open_profile.OpenDecoder()
    (c,) = dec.feed(pkt, 123)
    assert c.seq == 1000 and c.n == 2 and c.arrival_ns == 123
    assert c.device_t0_ns == 5_000_000_000 and c.period_ns == 5_000_000
    assert c.tx_device_ns == 5_006_000_000
    assert c.acc.tolist() == [[100, -200, 2048], [101, -199, 2047]]
    assert c.gyro is not None and c.gyro.tolist() == [[-5, 3, 0], [-4, 3, 1]]
    assert c.device_ns(1) == 5_005_000_000
    # and the encoder produces exactly the documented bytes
    assert open_profile.encode(1000, 5_000_000, 5_000_000, c.acc, c.gyro,
                               tx_us=5_006_000, anchor=True) == pkt


def test_doc_info_and_control_examples():
    info = open_profile.Info.decode(doc_example("info"))
    assert (info.rate_hz, info.acc_fs_g, info.gyro_fs_dps, info.gyro) == (200, 16, 2000, True)
    assert abs(info.acc_scale - 16 * 9.80665 / 32768) < 1e-9
    assert abs(info.gyro_scale - 2000 * np.pi / 180 / 32768) < 1e-9
    assert open_profile.rate_command(200) == doc_example("rate")
    prof = load_profile("wearcap-open")
    assert prof.rate_commands(200) == [doc_example("rate")]
    assert prof.start_commands(200) == [b"\x01"] and prof.stop_commands() == [b"\x02"]
    assert prof.notify_uuid == open_profile.DATA_UUID
    assert prof.info_uuid == open_profile.INFO_UUID


def test_acc_only_packets_and_seq_gaps_count_lost_samples():
    dec = make_decoder("wearcap-open", rate_hz=100)
    a = np.zeros((3, 3), np.int16)
    (c1,) = dec.feed(open_profile.encode(0, 0, 10_000_000, a, None), 1)
    (c2,) = dec.feed(open_profile.encode(3, 30_000, 10_000_000, a, None), 2)
    (c3,) = dec.feed(open_profile.encode(10, 100_000, 10_000_000, a, None), 3)
    assert c1.gyro is None and (c1.lost_before, c2.lost_before, c3.lost_before) == (0, 0, 4)
    assert (c1.index, c2.index, c3.index) == (0, 3, 10)
    # the counter wraps at 2**32 without a false loss
    (_w1,) = dec.feed(open_profile.encode(2**32 - 3, 200_000, 10_000_000, a, None), 4)
    (w2,) = dec.feed(open_profile.encode(0, 230_000, 10_000_000, a, None), 5)
    assert w2.lost_before == 0 and w2.seq == 0 and dec.malformed == 0


def test_stream_one_notification_at_a_time_gives_every_sample_back():
    model = BandModel(BandParams(profile="wearcap-open", seed=5), 0, record=True)
    dec = make_decoder("wearcap-open", rate_hz=200)
    got = {}
    for d in model.deliveries_until(5_000_000_000):
        for c in dec.feed(d.packet, d.host_ns):
            assert c.seq == d.first_sample and c.n == d.n
            for i in range(c.n):
                got[c.index + i] = (c.acc[i].tolist(), c.gyro[i].tolist())
    assert dec.malformed == 0 and len(got) > 900
    assert model.recorded is not None
    for k, (a, g) in got.items():
        assert a == model.recorded[k][0].tolist() and g == model.recorded[k][1].tolist()
    assert sorted(got) == list(range(len(got)))


def test_bad_packets_are_counted_and_skipped():
    dec = open_profile.OpenDecoder()
    good = doc_example("data")
    bad = [b"", good[:23], good[:-1], good + b"\0", b"\x02" + good[1:],
           good[:1] + b"\x00" + good[2:], good[:2] + b"\x80" + good[3:]]
    for b in bad:
        assert dec.feed(b, 0) == []
    assert dec.malformed == len(bad)
    assert len(dec.feed(good, 0)) == 1
