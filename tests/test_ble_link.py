"""bleak's real BlueZ code against simulated bands on a private BlueZ: streaming, disconnects,
aborted connects, a changed GATT layout and malformed notifications."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from agent import config
from agent.sim.bluez import missing_tools
from agent.sim.rig import SimRig
from agent.sources import GAP_TOPIC, Message
from agent.wrist.ble import BackoffPolicy
from agent.wrist.source import WristSource

pytestmark = pytest.mark.skipif(bool(missing_tools()), reason=f"needs {missing_tools()}")
FAST = BackoffPolicy(first_s=0.1, cap_s=1.0)


@pytest.fixture(scope="module")
def rig() -> Iterator[SimRig]:
    cfg = config.load_default(config.find_profile("sim", "<test>"))
    with SimRig(cfg) as r:
        yield r


class Run:
    """A WristSource on one simulated band, drained like the writer does."""

    def __init__(self, rig: SimRig, name: str) -> None:
        band = next(w for w in rig.cfg.wrist if w.name == name)
        self.rig, self.name = rig, name
        self.src = WristSource(band, rig.cfg.ble, policy=FAST)
        self.msgs: list[Message] = []
        self.base = rig.stats(name)  # band counters are cumulative over the module
        self.src.start()

    def until(self, pred: Callable[[], bool], limit: float = 30.0) -> None:
        deadline = time.monotonic() + limit
        while not pred():
            assert time.monotonic() < deadline, f"gave up waiting; status {self.src.status()}"
            self.msgs += self.src.drain()
            time.sleep(0.05)
        self.msgs += self.src.drain()

    def streaming_samples(self, n: int) -> None:
        start = self.src.stats["samples"]
        self.until(lambda: self.src.stats["samples"] >= start + n)

    def stop(self) -> dict:
        """Stop; what the band did during this run."""
        self.src.stop()
        self.msgs += self.src.drain()
        now = self.rig.stats(self.name)
        delta = {k: now[k] - self.base[k] for k in ("samples", "connections", "malformed_sent")}
        return {**delta, "faults": now["faults"][len(self.base["faults"]):]}

    def gaps(self) -> list[dict]:
        return [m.payload for m in self.msgs if m.topic == GAP_TOPIC]

    def imu(self) -> list[dict]:
        return [m.payload for m in self.msgs if m.topic.endswith("/imu")]


def _indices(payloads: list[dict]) -> list[int]:
    from agent.wrist.imu_batch import decode_payload

    return [int(i) for p in payloads for i in decode_payload(p)["index"]]


def test_discovers_connects_and_streams_without_gaps(rig):
    run = Run(rig, "left")
    run.streaming_samples(400)
    delivered = run.stop()
    assert run.src.stats["samples"] == delivered["samples"]
    idx = _indices(run.imu())
    assert len(idx) == delivered["samples"]
    assert idx == list(range(idx[0], idx[0] + len(idx)))  # no sample missing or repeated
    assert run.gaps() == []
    assert run.src.status()["state"] == "stopped"


def test_forced_disconnect_is_reconnected_and_recorded_as_a_gap(rig):
    run = Run(rig, "right")
    run.streaming_samples(100)
    t_fault = rig.fault("right", "drop") and time.monotonic_ns()
    run.until(lambda: run.src.status()["reconnects"] >= 1)
    run.streaming_samples(100)
    delivered = run.stop()
    assert run.src.stats["samples"] == delivered["samples"]
    (gap,) = run.gaps()
    assert gap["cause"] == "disconnect:link-lost"
    fault_ns = delivered["faults"][-1]["host_ns"]
    assert gap["start_ns"] <= fault_ns <= gap["end_ns"] and fault_ns <= t_fault
    assert gap["lost"] > 0  # the band kept sampling while the link was down


def test_aborted_connects_are_retried(rig):
    run = Run(rig, "left")
    run.streaming_samples(50)
    rig.fault("left", "abort 2")
    rig.fault("left", "drop")
    run.until(lambda: run.src.status()["reconnects"] >= 1)
    run.streaming_samples(50)
    delivered = run.stop()
    assert delivered["connections"] >= 4  # first, two aborted, then one that streams
    assert [f["kind"] for f in delivered["faults"]] == ["drop", "abort", "abort"]
    assert run.src.stats["samples"] == delivered["samples"]


def test_changed_gatt_layout_clears_the_cache_and_reconnects(rig):
    run = Run(rig, "right")
    run.streaming_samples(50)
    rig.fault("right", "firmware")
    run.until(lambda: run.src.status()["reconnects"] >= 1)
    run.streaming_samples(50)
    delivered = run.stop()
    st = run.src.status()
    assert st["cache_clears"] >= 1
    assert run.src.stats["samples"] == delivered["samples"]
    assert [g["cause"] for g in run.gaps()] == ["disconnect:link-lost"]


def test_malformed_notifications_are_counted_and_skipped(rig):
    run = Run(rig, "left")
    run.streaming_samples(50)
    rig.fault("left", "malformed 7")
    run.until(lambda: run.src.status()["malformed"] >= 7)
    run.streaming_samples(50)
    delivered = run.stop()
    assert run.src.status()["malformed"] == delivered["malformed_sent"] == 7
    assert run.src.stats["samples"] == delivered["samples"]
    assert run.gaps() == []
