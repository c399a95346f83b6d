"""The head MCU end to end over a real pseudo-terminal: the simulated MCU, pyserial, the
source. Ground truth comes from the simulator; nothing here asserts on timing."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from agent.mcu import protocol as p
from agent.mcu.serial_port import resolve_port
from agent.mcu.source import McuSource
from agent.sim.mcu import SimMcu, SimMcuParams
from agent.sources import GAP_TOPIC
from agent.wrist import imu_batch


def record(sim: SimMcu, src: McuSource, seconds: float, during=None):
    msgs = []
    t = time.monotonic()
    done = False
    while time.monotonic() - t < seconds:
        time.sleep(0.05)
        msgs += src.drain()
        if during is not None and not done and time.monotonic() - t > seconds / 3:
            during()
            done = True
    time.sleep(0.2)
    src.stop()
    msgs += src.drain()
    return msgs


def head_samples(msgs):
    out = [imu_batch.decode_payload(m.payload) for m in msgs if m.topic == "/head/imu"]
    return out


def wait_until(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end and not cond():
        time.sleep(0.05)
    return cond()


@pytest.fixture
def sim(tmp_path):
    s = SimMcu(SimMcuParams(directory=str(tmp_path), seed=11))
    s.start()
    yield s
    s.stop()


def test_records_every_sample_on_a_bounded_timeline(sim):
    src = McuSource(sim.path)
    src.start()
    msgs = record(sim, src, 4.0)
    batches = head_samples(msgs)
    n = sum(len(b["index"]) for b in batches)
    idx = np.concatenate([b["index"] for b in batches])
    assert n > 2000 and np.all(np.diff(idx) == 1)  # 1 kHz, every sample, in order
    assert src.stats["samples_lost"] == 0 and src.decoder.bad_frames == 0
    host = np.concatenate([b["host_ns"] for b in batches])
    assert np.all(np.diff(host) > 0)  # never steps back
    # every stored sample within its batch's stored bound of the truth
    errs, bounds = [], []
    for m, b in zip([m for m in msgs if m.topic == "/head/imu"], batches, strict=True):
        truth = np.array([sim.truth_host_ns(int(d)) for d in b["device_ns"]])
        errs.append(np.abs(b["host_ns"] - truth))
        bounds.append(np.full(len(truth), m.payload["clock"]["error_bound_ns"]))
    e, bd = np.concatenate(errs), np.concatenate(bounds)
    assert np.mean(e <= bd + 1000) >= 0.99  # +1 us: the tick is stored, the residual rounds
    # raw ticks and every exchange are stored, and the fit is in the metadata
    clock = [m for m in msgs if m.topic == "/head/clock"]
    assert clock and sum(len(m.payload["tick"]) for m in clock) >= 10
    meta = src.segment_metadata()
    assert '"two-way band fit' in meta["clock_fit"]
    assert meta["protocol"] == f"1.{p.PROTO_MINOR}"  # the sim speaks this minor
    battery = [m for m in msgs if m.topic == "/head/battery"]
    # one batch per chunk: a slow machine may hold several readings in it, all 80 %
    assert battery and set(battery[0].payload["percent"]) == {80}


def test_garbage_and_truncated_frames_are_counted_and_skipped(sim):
    src = McuSource(sim.path)
    src.start()

    def faults():
        for _ in range(5):
            sim.fault("garbage", 300)
            sim.fault("truncate")
            time.sleep(0.05)

    msgs = record(sim, src, 3.0, during=faults)
    assert src.decoder.bad_frames >= 5  # counted
    batches = head_samples(msgs)
    idx = np.concatenate([b["index"] for b in batches])
    lost = src.stats["samples_lost"]
    # a frame the garbage ran into is lost and counted exactly by the sample numbers
    assert idx[-1] - idx[0] + 1 == len(idx) + lost
    gaps = [m.payload for m in msgs if m.topic == GAP_TOPIC]
    assert sum(g["lost"] for g in gaps) == lost


def test_unplug_and_replug_is_a_gap_of_exactly_the_missing_samples(sim):
    src = McuSource(sim.path)
    src.start()

    def unplug():
        sim.unplug()
        time.sleep(0.4)
        sim.replug()

    msgs = record(sim, src, 4.0, during=unplug)
    assert src.stats["losses"] == 1 and src.stats["opens"] == 2
    gaps = [m.payload for m in msgs if m.topic == GAP_TOPIC]
    assert len(gaps) == 1 and gaps[0]["cause"].startswith("unplugged")
    assert gaps[0]["start_ns"] < gaps[0]["end_ns"]
    batches = head_samples(msgs)
    idx = np.concatenate([b["index"] for b in batches])
    (jump,) = np.flatnonzero(np.diff(idx) != 1)
    missing = int(idx[jump + 1] - idx[jump] - 1)
    # the gap counts exactly the samples missing from the recording: those the MCU took while
    # unplugged, those in flight or in the port's buffer, and those before the new hello
    assert gaps[0]["lost"] == missing >= sim.stats["samples_never_sent"] > 300
    assert src.stats["samples_lost"] == missing


def test_an_incompatible_major_version_is_refused_and_said(tmp_path):
    with SimMcu(SimMcuParams(directory=str(tmp_path), major=2, minor=0)) as sim:
        src = McuSource(sim.path)
        src.start()
        assert wait_until(lambda: (src.drain() or True) and src.status().get("incompatible"))
        src.stop()
        st = src.status()
        assert st["incompatible"] == "protocol 2.0 unsupported" and st["samples"] == 0
        assert st["before_hello"] > 0  # data frames were counted, not used


def test_led_and_haptic_commands_reach_the_mcu(sim):
    src = McuSource(sim.path)
    src.start()
    assert wait_until(lambda: (src.drain() or True) and src.status()["streaming"])
    src.set_led(2, 0xFFA000)
    src.haptic(1, 200)
    assert wait_until(lambda: sim.led_history and sim.haptic_history)
    src.stop()
    assert sim.led_history[-1][1:] == (2, 0xFFA000) and sim.haptic_history[-1][1:] == (1, 200)
    assert sim.stats["accepts"] >= 1 and sim.stats["rx_bad"] == 0


def test_ports_by_path_symlink_and_usb_id(tmp_path, sim):
    link = tmp_path / "wearcap-mcu"
    os.symlink(sim.path, link)
    assert resolve_port(str(link)) == os.path.realpath(sim.path)
    assert resolve_port(str(tmp_path / "absent")) is None
    assert resolve_port("usb:1209:0001") is None  # no such USB device here
    with pytest.raises(ValueError):
        resolve_port("usb:nothex")


def test_button_edges_reach_the_controls_with_mapped_times(sim):
    edges: list[tuple[bool, int]] = []
    src = McuSource(sim.path, on_button=lambda down, t: edges.append((down, t)))
    src.start()
    assert wait_until(lambda: (src.drain() or True) and src.fit.ready)
    t = time.monotonic_ns()
    sim.press(0.3, at_ns=t + 100_000_000)
    assert wait_until(lambda: (src.drain() or True) and len(edges) == 2)
    src.stop()
    (d, t_down), (u, t_up) = edges
    assert d and not u
    assert abs(t_down - (t + 100_000_000)) < src.fit.bound_ns() + 2_000_000
    assert abs((t_up - t_down) - 300_000_000) < 2_000_000
    assert isinstance(p.Button(0, True, 0), p.Button)


@pytest.mark.parametrize("link", ["usb-cdc"])
def test_ping_round_trip_in_ms_over_the_pty(tmp_path, link):
    """status() carries the ping round trip (p50/min/max over the last pings), the figure
    selftest and status show. USB CDC's 1 ms frames make every round trip longer than 1 ms
    (the request waits for a frame, the answer for a later one): a lower bound that no load
    can break; the figures must also be exactly those of the stored exchanges."""
    from agent.selftest import judge_mcu

    with SimMcu(SimMcuParams(directory=str(tmp_path), link=link, seed=5)) as sim:
        src = McuSource(sim.path, ping_hz=20)
        src.start()
        msgs = record(sim, src, 3.0)
    st = src.status()
    rows = [m for m in msgs if m.topic == "/head/clock"]
    rtts = [r - s for m in rows for s, r in zip(m.payload["host_send_ns"],
                                                 m.payload["host_recv_ns"], strict=True)]
    rtts = sorted(rtts[-src.RTT_WINDOW:])
    assert st["rtt_samples"] == len(rtts) >= 10
    assert 1.0 < st["rtt_ms_min"] <= st["rtt_ms_p50"] <= st["rtt_ms_max"]
    assert st["rtt_ms_min"] == round(rtts[0] / 1e6, 3)
    assert st["rtt_ms_max"] == round(rtts[-1] / 1e6, 3)
    assert st["rtt_ms_p50"] == round(rtts[len(rtts) // 2] / 1e6, 3)
    st["streaming"] = True  # stopped now; judge the figures as a running link's
    check = judge_mcu(st)
    assert check.result == "pass"
    assert f"ping round trip {st['rtt_ms_p50']:.2f} ms p50" in check.detail
    assert check.figures["rtt_ms_max"] == st["rtt_ms_max"]
