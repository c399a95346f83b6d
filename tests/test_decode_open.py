"""Open wrist profile: the spec's byte-exact examples, round trips, sequence gaps."""

from __future__ import annotations

import re
import struct
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
    info = open_profile.Info.decode(doc_example("info-v1"))
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


def test_doc_v2_info_and_v1_info():
    info = open_profile.Info.decode(doc_example("info"))
    assert (info.version, info.rate_hz, info.acc_fs_g, info.gyro_fs_dps) == (2, 208, 16, 2000)
    assert info.two_way and info.clock_tick_ns == 1000
    assert (info.min_rate_hz, info.max_rate_hz) == (1, 1000)
    assert abs(info.acc_scale - 0.488e-3 * 9.80665) < 1e-9  # the datasheet's, not 16 g/32768
    assert abs(info.gyro_scale - 70e-3 * np.pi / 180) < 1e-9
    assert info.encode() == doc_example("info")
    old = open_profile.Info.decode(doc_example("info-v1"))
    assert old.version == 1 and not old.two_way and old.encode() == doc_example("info-v1")


def test_doc_control_replies_decode_as_documented():
    from agent.wrist.control import decode_reply

    def reply(name: str):
        r = decode_reply("wearcap-open", doc_example(name))
        assert r is not None
        return r

    r = reply("rate-reply")
    assert (r.op, r.ok, struct.unpack("<H", r.params)[0]) == ("set-rate", True, 200)
    assert reply("start-reply").op == "start" and reply("start-reply").ok
    r = reply("stop-reply")
    assert r.op == "stop" and r.ok and struct.unpack("<I", r.params)[0] == 1002
    r = reply("unknown-reply")
    assert (r.op, r.status, r.reason, r.ok) == ("op-0x7f", 1, "unknown command", False)
    r = reply("short-reply")
    assert (r.op, r.status, r.reason) == ("set-rate", 2, "invalid length")


def test_doc_time_exchange_examples():
    from agent.wrist.control import decode_reply

    assert open_profile.time_request(123_456_789_000) == doc_example("time-request")
    r = decode_reply("wearcap-open", doc_example("time-reply"))
    assert r is not None and r.op == "time" and r.ok
    assert open_profile.parse_time_reply(r.params) == (123_456_789_000, 5_250_000, 5_280_000)


def test_doc_mtu_arithmetic():
    assert open_profile.max_samples(23) == 0  # the default MTU carries no sample
    assert open_profile.max_samples(38) == 0 and open_profile.max_samples(39) == 1
    assert open_profile.max_samples(33, gyro=False) == 1
    assert open_profile.max_samples(247) == 18


def test_doc_retransmitted_packet_keeps_its_stale_anchor_and_does_not_move_the_fit():
    from agent.clock.oneway import OneWayFit

    pkt, again = doc_example("data"), doc_example("retransmitted")
    assert pkt == again
    dec = open_profile.OpenDecoder()
    fit = OneWayFit(0)
    base = 1_000_000_000_000
    for k in range(-60, 0):  # a band on a 30 ms interval, 1 ms of latency, up to the example
        fit.add(5_006_000_000 + k * 30_000_000, base + k * 30_000_000 + 1_000_000)
    before = fit.map(5_006_000_000)
    assert before == base + 1_000_000
    # the example's packet was not acknowledged at its event: the host gets it at the next
    (c,) = dec.feed(again, base + 30_000_000 + 1_000_000)
    assert c.tx_device_ns == 5_006_000_000
    fit.add(c.tx_device_ns, c.arrival_ns)
    assert fit.map(5_006_000_000) == before
