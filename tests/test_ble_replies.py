"""End to end through BlueZ: the band's own words are read and kept. A simulated Polar band
refuses GYRO on its control point (recorded as absent with its reason, never filled); an
open-profile band reports its own scales in its info characteristic (stored, not the
profile's defaults); at a clean stop each band sends what it holds and every sample it took
before the stop command is written."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest

from agent import config
from agent.sim.bluez import missing_tools
from agent.sim.rig import SimRig
from agent.sources import GAP_TOPIC, Message
from agent.wrist.ble import BackoffPolicy
from agent.wrist.imu_batch import decode_payload
from agent.wrist.source import WristSource

pytestmark = pytest.mark.skipif(bool(missing_tools()), reason=f"needs {missing_tools()}")
ACC_SCALE, GYRO_SCALE = 8 * 9.80665 / 32768, 500 * 0.017453292519943295 / 32768


def record(rig: SimRig, band: config.WristBand, samples: int) -> tuple[WristSource, list]:
    src = WristSource(band, rig.cfg.ble, policy=BackoffPolicy(first_s=0.1, cap_s=1.0))
    msgs: list[Message] = []
    src.start()
    deadline = time.monotonic() + 60
    while src.stats["samples"] < samples:
        assert time.monotonic() < deadline, f"gave up waiting; status {src.status()}"
        msgs += src.drain()
        time.sleep(0.05)
    src.stop()
    msgs += src.drain()
    return src, msgs


def test_refused_gyro_info_scales_and_a_clean_stop_through_bluez():
    cfg = config.load_default(config.find_profile("sim", "<test>"))
    polar = replace(cfg.wrist[0], profile="polar-pmd", rate_hz=52)
    cfg = replace(cfg, wrist=[polar, cfg.wrist[1]])
    args = {polar.name: ["--refuse", "gyro"],
            cfg.wrist[1].name: ["--info-scales", f"{ACC_SCALE!r}", f"{GYRO_SCALE!r}"]}
    with SimRig(cfg, band_args=args) as rig:
        src, msgs = record(rig, polar, 52 * 3)
        delivered = rig.stats(polar.name)
        osrc, omsgs = record(rig, cfg.wrist[1], 200 * 2)
        odelivered = rig.stats(cfg.wrist[1].name)

    batches = [m.payload for m in msgs if m.topic.endswith("/imu")]
    reason = "not supported (band status 3 to start)"
    assert batches and all(p["gyro"] is None and p["absent"] == {"gyro": reason}
                           for p in batches)
    assert json.loads(src.segment_metadata()["refused_streams"]) == {"gyro": reason}
    assert all((decode_payload(p)["acc"] != -32768).all() for p in batches)
    # every ACC sample the band sent is written; none waited for a GYRO that never comes
    assert sum(p["n"] for p in batches) == src.stats["samples"]
    sent = delivered["samples"]  # streaming, then what it held at the stop command
    assert sent <= src.stats["samples"] <= sent + delivered["stop_samples"] and sent > 0

    obatches = [m.payload for m in omsgs if m.topic.endswith("/imu")]
    assert all(p["acc_scale"] == pytest.approx(ACC_SCALE) and
               p["gyro_scale"] == pytest.approx(GYRO_SCALE) for p in obatches)
    assert json.loads(osrc.segment_metadata()["band_info"])["acc_scale"] == \
        pytest.approx(ACC_SCALE)
    last = obatches[-1]
    seq = decode_payload(last)["chunks"]["seq"]
    gaps = [m.payload for m in omsgs if m.topic == GAP_TOPIC]
    tail = [g for g in gaps if g["cause"].startswith("stop:")]
    # the partial frame sent at the stop is written, or a gap says the tail may be missing
    assert int(seq[-1]) + last["chunk_n"][-1] - 1 == odelivered["last_sample"] or tail
    assert "absent" not in obatches[0]
    assert not [g for g in gaps if g["lost"] > 0]


def test_time_exchange_through_bluez_and_a_version_1_band_falls_back_to_one_way():
    cfg = config.load_default(config.find_profile("sim", "<test>"))
    v2, v1 = cfg.wrist[0], cfg.wrist[1]
    with SimRig(cfg, band_args={v1.name: ["--profile-version", "1"]}) as rig:
        src2, _msgs2 = record(rig, v2, 200 * 4)
        replies = rig.stats(v2.name)["time_replies"]
        src1, msgs1 = record(rig, v1, 200 * 2)
        assert rig.stats(v1.name)["time_replies"] == 0
    meta2 = src2.segment_metadata()
    assert 5 <= src2.stats["time_exchanges"] <= replies
    assert json.loads(meta2["clock_fit"])["two_way"]["exchanges"] >= 5
    assert json.loads(meta2["band_info"])["time_exchange"] is True
    meta1 = src1.segment_metadata()
    assert src1.stats["time_exchanges"] == 0 and "two_way" not in json.loads(meta1["clock_fit"])
    assert json.loads(meta1["band_info"])["version"] == 1
    assert [m for m in msgs1 if m.topic.endswith("/imu")]  # it streams, timed one-way
