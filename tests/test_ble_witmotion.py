"""End to end through BlueZ: a simulated WitMotion band (no counter, no device clock) whose
decoder holds ~2 s of notifications back to judge losses. Everything the band delivered is
written by the time the source stops."""

from __future__ import annotations

import itertools
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


def test_witmotion_band_every_delivered_sample_is_written_at_stop():
    cfg = config.load_default(config.find_profile("sim", "<test>"))
    band = replace(cfg.wrist[0], profile="witmotion", rate_hz=100)
    cfg = replace(cfg, wrist=[band])
    with SimRig(cfg) as rig:
        src = WristSource(band, cfg.ble, policy=BackoffPolicy(first_s=0.1, cap_s=1.0))
        msgs: list[Message] = []
        src.start()
        deadline = time.monotonic() + 60
        while src.stats["packets"] < 400:  # ~4 s of notifications
            assert time.monotonic() < deadline, f"gave up waiting; status {src.status()}"
            msgs += src.drain()
            time.sleep(0.05)
        msgs += src.drain()
        held = src.stats["packets"] - src.stats["samples"]
        stop_ns = time.monotonic_ns()
        src.stop()
        msgs += src.drain()
        st = rig.stats(band.name)
        before_stop = rig.fault(band.name, f"delivered {stop_ns}")
    assert held == 0  # nothing waits in the decoder
    assert src.stats["samples"] == src.stats["packets"]
    # everything the band sent before the stop began is written (the band has no stop command:
    # what it sends while its link is being closed may be in flight when it closes)
    sent = before_stop["last_sample"] - before_stop["first_sample"] + 1
    assert sent <= src.stats["samples"] <= st["samples"] + st["stop_samples"]
    delivered = src.stats["samples"]
    idx = [int(i) for m in msgs if m.topic.endswith("/imu")
           for i in decode_payload(m.payload)["index"]]
    assert len(idx) == delivered and idx[0] == 0
    # (noisy, real) arrival times never make up a loss
    gaps = [m.payload for m in msgs if m.topic == GAP_TOPIC
            and not m.payload["cause"].startswith("stop:")]
    assert [g["cause"] for g in gaps] == ["not-connected:connecting"]
    assert idx[-1] + 1 - len(idx) == sum(g["lost"] for g in gaps[1:])
    assert all(b > a for a, b in itertools.pairwise(idx))
